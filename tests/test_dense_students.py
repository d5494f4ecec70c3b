"""The dense grouping of the students (issue 9, point 3) against PyG's message
passing, which stays as the reference (``grouping="message_passing"``).

Same parameters, same inputs, same random draws: outputs, every gradient and
the batch-norm statistics must agree to float64 rounding, in train and eval
mode, on ragged clouds whose neighbourhoods leave padded slots empty, and on
clouds smaller than DGCNN's ``k``.
"""
import copy

import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.nn import MLP

from pointcmt_pyg.models import get_model
from pointcmt_pyg.models._dense import (GROUPINGS, dense_global_max_pool, max_over_slots, mlp_after_first_linear,
                                        mlp_max, slot_edges, stats_and_segment_max)
from pointcmt_pyg.ops import knn, knn_padded, radius, radius_padded

MODELS = ["pointnet2", "pointnet2_msg", "dgcnn"]


def _batch(sizes, seed=0, duplicate=False):
    g = torch.Generator().manual_seed(seed)
    clouds = []
    for i, n in enumerate(sizes):
        pos = torch.rand(n, 3, generator=g, dtype=torch.float64) * 2 - 1
        if duplicate:                       # exact duplicates: tied maxima
            pos[n // 2:] = pos[:n - n // 2]
        clouds.append(Data(pos=pos, y=torch.tensor([i % 5])))
    return Batch.from_data_list(clouds)


def _randomize_norms(model):
    """Batch norms as after some training (random statistics and affine
    parameters): at initialisation (mean 0, variance 1, bias 0) a zero input
    row, e.g. a point's own edge in the first set abstraction, gives an
    exactly zero pre-activation, where ReLU's gradient flips with the last
    bit of rounding (the split first layer rounds differently)."""
    g = torch.Generator().manual_seed(11)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=g) * 0.3)


def _pair(name, **kwargs):
    torch.manual_seed(0)
    reference = get_model(name, 5, grouping="message_passing", **kwargs).double()
    _randomize_norms(reference)
    dense = get_model(name, 5, grouping="dense", **kwargs).double()
    dense.load_state_dict(reference.state_dict())
    assert list(dense.state_dict()) == list(reference.state_dict())
    return reference, dense


def _run(model, data, train):
    model.train(train)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(7)           # the same FPS starts and dropout masks
    out = model(data)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    return out.detach(), grads, {k: v.clone() for k, v in model.state_dict().items()}


def _assert_same(reference, dense, data, train):
    out_r, grad_r, state_r = _run(reference, data, train)
    out_d, grad_d, state_d = _run(dense, data, train)
    torch.testing.assert_close(out_d, out_r, rtol=1e-9, atol=1e-10)
    # Gradients within rounding of the largest gradient of their tensor (the
    # biases before a batch norm have true gradient 0 and carry only noise).
    scale = max(g.abs().max().item() for g in grad_r.values())
    for key in grad_r:
        torch.testing.assert_close(grad_d[key], grad_r[key], rtol=1e-7, atol=1e-9 * scale,
                                   msg=lambda m: f"{key}: {m}")
    for key in state_r:            # running means and variances of every batch norm
        torch.testing.assert_close(state_d[key], state_r[key], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_dense_grouping_equals_message_passing(name, train):
    reference, dense = _pair(name)
    # Ragged clouds: sparse ones leave most neighbour slots empty, dense ones fill them.
    data = _batch([300, 40, 700, 90])
    _assert_same(reference, dense, data, train)


@pytest.mark.parametrize("name", MODELS)
def test_dense_grouping_equals_message_passing_with_tied_neighbours(name):
    reference, dense = _pair(name)
    _assert_same(reference, dense, _batch([120, 64], seed=3, duplicate=True), True)


def test_dgcnn_dense_on_clouds_smaller_than_k():
    reference, dense = _pair("dgcnn", k=20)
    _assert_same(reference, dense, _batch([12, 30, 5], seed=1), True)


@pytest.mark.parametrize("name", MODELS)
def test_a_training_run_is_the_same_with_either_grouping(name):
    reference, dense = _pair(name)
    data = _batch([200, 150, 260], seed=2)
    for model in (reference, dense):
        # Plain SGD: Adam would blow the rounding noise of the zero gradients
        # of the biases before each batch norm up to full-size steps.
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        for step in range(3):
            torch.manual_seed(step)
            loss = torch.nn.functional.cross_entropy(model(data), data.y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(dense.state_dict()[key], value, rtol=1e-6, atol=1e-8)


def test_padded_searches_hold_exactly_the_edges_of_the_flat_ones():
    data = _batch([50, 7, 120])
    pos, batch = data.pos, data.batch
    centres = torch.arange(0, pos.shape[0], 3)
    slots = radius_padded(pos, pos[centres], 0.4, batch, batch[centres], max_num_neighbors=16)
    row, col = radius(pos, pos[centres], 0.4, batch, batch[centres], max_num_neighbors=16)
    keep = slots >= 0
    assert slots.shape == (centres.numel(), 16)
    assert torch.equal(keep.nonzero()[:, 0], row) and torch.equal(slots[keep], col)
    assert torch.equal(keep, torch.arange(16) < keep.sum(1, keepdim=True))   # left-packed
    slots = knn_padded(pos, pos, 10, batch, batch)
    row, col = knn(pos, pos, 10, batch, batch)
    keep = slots >= 0
    assert torch.equal(keep.nonzero()[:, 0], row) and torch.equal(slots[keep], col)
    assert int((~keep).sum()) == 7 * 3          # the 7-point cloud: 3 empty slots per point


def test_slot_edges_and_max_over_slots_against_a_loop():
    slots = torch.tensor([[4, 2, -1], [0, -1, -1], [1, 3, 5], [-1, -1, -1]])
    centre, neighbour, ptr = slot_edges(slots)
    assert centre.tolist() == [0, 0, 1, 2, 2, 2] and ptr.tolist() == [0, 2, 3, 6, 6]
    assert neighbour.tolist() == [4, 2, 0, 1, 3, 5]
    values = torch.randn(6, 4, requires_grad=True)
    out = max_over_slots(values, ptr)
    expected = torch.stack([values[0:2].max(0).values, values[2], values[3:6].max(0).values,
                            torch.zeros(4)])          # no neighbours: 0, as PyG's max
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    assert values.grad.sum().item() == 12.0 and set(values.grad.unique().tolist()) <= {0.0, 1.0}
    # Every slot used.
    centre, neighbour, ptr = slot_edges(torch.tensor([[1, 0], [0, 1]]))
    assert centre.tolist() == [0, 0, 1, 1] and neighbour.tolist() == [1, 0, 0, 1] and ptr.tolist() == [0, 2, 4]
    # Slots that are not left-packed (a -1 between neighbours) keep the slot order.
    centre, neighbour, ptr = slot_edges(torch.tensor([[-1, 3, 1], [2, -1, 0]]))
    assert centre.tolist() == [0, 0, 1, 1] and neighbour.tolist() == [3, 1, 2, 0] and ptr.tolist() == [0, 2, 4]


@pytest.mark.parametrize("sizes, size", [([64, 64, 64], None), ([30, 1, 77, 5], None),
                                         ([30, 0, 12], 5), ([9], 1)],
                         ids=["equal", "ragged", "empty clouds", "one cloud"])
def test_dense_global_max_pool_equals_pyg(sizes, size):
    from torch_geometric.nn import global_max_pool
    g = torch.Generator().manual_seed(len(sizes))
    batch = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    x = torch.randn(batch.numel(), 6, generator=g, dtype=torch.float64)   # no ties
    weights = torch.randn(size or len(sizes), 6, generator=g, dtype=torch.float64)
    grads = []
    for pool in (global_max_pool, dense_global_max_pool):
        leaf = x.clone().requires_grad_()
        out = pool(leaf, batch, size=size)
        (out * weights).sum().backward()
        grads.append((out.detach(), leaf.grad))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=0, atol=0)
    torch.testing.assert_close(grads[1][1], grads[0][1], rtol=0, atol=0)


def test_dense_global_max_pool_ties_and_unsorted_batches():
    # Exactly equal maxima: the whole gradient goes to the first of them.
    x = torch.tensor([[1.0], [3.0], [3.0], [2.0], [2.0]], requires_grad=True)
    out = dense_global_max_pool(x, torch.tensor([0, 0, 0, 1, 1]))
    out.sum().backward()
    assert out.flatten().tolist() == [3.0, 2.0]
    assert x.grad.flatten().tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]
    # An unsorted batch vector (not a PyG Batch) is pooled by PyG's own function.
    from torch_geometric.nn import global_max_pool
    batch = torch.tensor([1, 0, 1, 0, 2])
    x = torch.randn(5, 3)
    torch.testing.assert_close(dense_global_max_pool(x, batch), global_max_pool(x, batch))


def test_unknown_grouping_is_an_error_naming_the_argument():
    assert GROUPINGS == ("dense", "message_passing")
    with pytest.raises(ValueError, match="'grouping' must be one of"):
        get_model("pointnet2", 5, grouping="sparse")
    with pytest.raises(ValueError, match="'grouping' must be one of"):
        get_model("dgcnn", 5, grouping="fast")


# ---------------------------------------------------- the max before batch norm and ReLU
def _ragged_ptr(counts):
    return torch.cat([torch.zeros(1, dtype=torch.long), torch.tensor(counts).cumsum(0)])


def test_stats_and_segment_max_against_torch_with_gradients():
    g = torch.Generator().manual_seed(5)
    z = torch.randn(23, 6, generator=g, dtype=torch.float64, requires_grad=True)
    ptr = _ragged_ptr([4, 0, 7, 1, 11])           # an empty segment included
    mean, var, best, arg = stats_and_segment_max(z, ptr)
    var_t, mean_t = torch.var_mean(z, dim=0, correction=0)
    rows = [z[ptr[m]:ptr[m + 1]] for m in range(5)]
    best_t = torch.stack([r.max(0).values if len(r) else torch.zeros(6, dtype=z.dtype) for r in rows])
    torch.testing.assert_close(mean, mean_t)
    torch.testing.assert_close(var, var_t)
    torch.testing.assert_close(best, best_t)
    assert torch.equal(arg[1], torch.full((6,), -1))
    w = [torch.randn(t.shape, generator=g, dtype=z.dtype) for t in (mean, var, best)]
    grad = torch.autograd.grad(sum((t * wi).sum() for t, wi in zip((mean, var, best), w)), z)[0]
    grad_t = torch.autograd.grad(sum((t * wi).sum() for t, wi in zip((mean_t, var_t, best_t), w)), z)[0]
    torch.testing.assert_close(grad, grad_t)
    assert torch.autograd.gradcheck(lambda t: stats_and_segment_max(t, ptr)[:3], (z,))


def test_stats_are_torch_batch_norms_bit_for_bit():
    # The statistics the max-before-batch-norm path normalises with are those
    # F.batch_norm computes on the same float32 edges (the reference's).
    g = torch.Generator().manual_seed(8)
    z = torch.randn(50_000, 24, generator=g) * 3 + 5
    ptr = _ragged_ptr([20_000, 0, 30_000])
    mean, var, _, _ = stats_and_segment_max(z, ptr)
    _, bn_mean, bn_invstd = torch.ops.aten.native_batch_norm(z, None, None, None, None, True, 0.1, 1e-5)
    assert torch.equal(mean, bn_mean)
    torch.testing.assert_close(torch.rsqrt(var + 1e-5), bn_invstd, rtol=1e-6, atol=0)
    torch.manual_seed(8)        # running statistics: those of the reference path, in float32
    mlp = MLP([24, 24, 24], plain_last=False, bias=False)
    twin = copy.deepcopy(mlp)
    mlp_max(mlp, z, ptr), max_over_slots(mlp_after_first_linear(twin, z), ptr)
    ours, theirs = mlp.norms[-1].module, twin.norms[-1].module
    assert torch.equal(ours.running_mean, theirs.running_mean)
    torch.testing.assert_close(ours.running_var, theirs.running_var, rtol=1e-6, atol=0)


@pytest.mark.parametrize("norm", ["batch_norm", None])
def test_the_in_place_relu_leaves_the_callers_rows_alone(norm):
    torch.manual_seed(2)
    mlp = MLP([5, 8, 7, 9], norm=norm)
    h = torch.randn(30, 8, requires_grad=True)
    kept = h.detach().clone()
    out = mlp_after_first_linear(mlp, h)
    assert torch.equal(h.detach(), kept)
    # the same numbers and gradients as PyG's own layers after lins[0]
    twin = copy.deepcopy(mlp)
    x = h.detach().clone().requires_grad_()
    y = x
    for i, lin in enumerate(twin.lins):
        y = lin(y) if i else y
        if i < len(twin.lins) - 1:
            y = twin.act(twin.norms[i](y))
    torch.testing.assert_close(out, y, rtol=0, atol=0)
    w = torch.randn(out.shape)
    (out * w).sum().backward(), (y * w).sum().backward()
    torch.testing.assert_close(h.grad, x.grad, rtol=0, atol=0)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_mlp_max_equals_the_mlp_then_the_max(train, momentum):
    """Negative batch-norm scales (a channel's minimum), an empty segment, ties
    from duplicated rows, running statistics with either momentum."""
    torch.manual_seed(3)
    mlp = MLP([5, 8, 7, 9], plain_last=False, bias=False).double()
    for norm in mlp.norms:
        norm.module.momentum = momentum
    _randomize_norms(mlp)
    mlp.norms[-1].module.weight.data[::2] *= -1          # gamma < 0 on every other channel
    twin = copy.deepcopy(mlp)
    h = torch.randn(40, 8, dtype=torch.float64)
    h[30:34] = h[20:24]                                   # tied maxima
    ptr = _ragged_ptr([6, 0, 12, 1, 21])
    mlp.train(train), twin.train(train)
    for step in range(2):                                 # running statistics accumulate
        a, b = h.clone().requires_grad_(), h.clone().requires_grad_()
        out = mlp_max(mlp, a, ptr)
        ref = max_over_slots(mlp_after_first_linear(twin, b), ptr)
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
        assert torch.equal(out[1], torch.zeros(9, dtype=out.dtype))
        w = torch.randn(out.shape, dtype=out.dtype)
        (out * w).sum().backward()
        (ref * w).sum().backward()
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)
        for (name, p), q in zip(mlp.named_parameters(), twin.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-12, msg=lambda m: f"{name}: {m}")
        for (name, v), u in zip(mlp.state_dict().items(), twin.state_dict().values()):
            torch.testing.assert_close(v, u, rtol=1e-12, atol=1e-14, msg=lambda m: f"{name}: {m}")


def test_mlp_max_keeps_the_edges_normalised_where_it_does_not_commute():
    torch.manual_seed(0)
    h = torch.randn(10, 8)
    ptr = _ragged_ptr([4, 6])
    plain_last = MLP([5, 8, 9], bias=False)                          # last layer without norm
    single = MLP([8, 9], plain_last=False, bias=False)               # only the (split) first layer
    for mlp, rows in ((plain_last, h), (single, torch.randn(10, 9))):
        torch.testing.assert_close(mlp_max(mlp, rows, ptr),
                                   max_over_slots(mlp_after_first_linear(mlp, rows), ptr))
    mlp = MLP([5, 8, 9], plain_last=False, bias=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mlp_max(mlp, h, ptr)
        ref = max_over_slots(mlp_after_first_linear(mlp, h), ptr)
    assert out.dtype == ref.dtype
    torch.testing.assert_close(out, ref)


def test_msg_dense_with_negative_batch_norm_scales():
    reference, dense = _pair("pointnet2_msg")
    for model in (reference, dense):
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.weight.data[1::3] *= -1
    _assert_same(reference, dense, _batch([300, 40, 700, 90]), True)
    _assert_same(reference, dense, _batch([300, 40, 700, 90]), False)


def test_mlp_max_compiles_to_the_same_numbers():
    # The students train through torch.compile (--compile): the max before the
    # batch norm, its statistics' update and its one-pass backward must trace.
    import torch._inductor.config as inductor_config
    torch.manual_seed(4)
    mlp = MLP([5, 8, 7, 9], plain_last=False, bias=False)
    _randomize_norms(mlp)
    mlp.norms[-1].module.weight.data[::3] *= -1
    twin = copy.deepcopy(mlp)
    compiled = torch.compile(lambda h, ptr: mlp_max(twin, h, ptr), dynamic=True)
    with inductor_config.patch(fallback_random=True):
        for counts in ([6, 0, 12, 1, 21], [3, 9, 4]):      # a second shape: dynamic
            ptr = _ragged_ptr(counts)
            h = torch.randn(int(ptr[-1]), 8)
            a, b = h.clone().requires_grad_(), h.clone().requires_grad_()
            out, ref = compiled(b, ptr), mlp_max(mlp, a, ptr)
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
            w = torch.randn(out.shape)
            (out * w).sum().backward()
            (ref * w).sum().backward()
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-5)
            for p, q in zip(mlp.parameters(), twin.parameters()):
                torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5)
            for u, v in zip(mlp.buffers(), twin.buffers()):
                torch.testing.assert_close(v, u)
