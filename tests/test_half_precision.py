"""float16 / bfloat16 points (mixed precision, torch.autocast): every op accepts them and
computes in float32, so the results are exactly the op's results on the float32 values of
the half-precision points; models train a step under CPU bf16 autocast."""
import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Batch, Data

import pointcmt_pyg.ops as ops
from pointcmt_pyg.models import get_model

HALVES = [torch.float16, torch.bfloat16]


def _clouds(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(60, 3, generator=g).to(dtype)
    batch = torch.tensor([0] * 25 + [1] * 35)
    return x, batch


@pytest.mark.parametrize("dtype", HALVES, ids=["f16", "bf16"])
def test_point_ops_on_half_points_equal_the_ops_on_their_float32_values(dtype):
    x, batch = _clouds(dtype)
    ref = x.float()                         # exactly representable: the same points
    assert torch.equal(ops.fps(x, batch, 0.5, random_start=False), ops.fps(ref, batch, 0.5, random_start=False))
    assert torch.equal(ops.knn(x, x, 6, batch, batch), ops.knn(ref, ref, 6, batch, batch))
    assert torch.equal(ops.knn_graph(x, 5, batch, cosine=True), ops.knn_graph(ref, 5, batch, cosine=True))
    assert torch.equal(ops.radius(x, x, 0.3, batch, batch, 16), ops.radius(ref, ref, 0.3, batch, batch, 16))
    assert torch.equal(ops.radius_graph(x, 0.3, batch), ops.radius_graph(ref, 0.3, batch))
    dense = x[:50].view(2, 25, 3)
    assert torch.equal(ops.fps_dense(dense, 7, random_start=False), ops.fps_dense(dense.float(), 7, random_start=False))
    dist, idx = ops.knn_dense(dense, dense, 4)
    ref_dist, ref_idx = ops.knn_dense(dense.float(), dense.float(), 4)
    assert torch.equal(idx, ref_idx) and torch.equal(dist, ref_dist) and dist.dtype == torch.float32


@pytest.mark.parametrize("dtype", HALVES, ids=["f16", "bf16"])
def test_emd_on_half_points_is_solved_in_float32_with_gradients_in_half(dtype):
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, 32, 3, generator=g).to(dtype).requires_grad_(True)
    b = torch.rand(2, 32, 3, generator=g).to(dtype)
    dist, assignment, gap = ops.emd(a, b)
    ref = ops.emd(a.detach().float(), b.float())
    assert dist.dtype == torch.float32 and torch.equal(assignment, ref[1]) and torch.equal(dist, ref[0])
    ops.emd_loss(a, b, sqrt=True).backward()
    assert a.grad.dtype == dtype and torch.isfinite(a.grad.float()).all() and a.grad.float().abs().sum() > 0


def test_mixed_half_dtypes_are_still_an_error_naming_the_arguments():
    x = torch.rand(10, 3)
    with pytest.raises(TypeError, match="'x' and 'y' must have the same dtype"):
        ops.knn(x.half(), x.bfloat16(), 2)


@pytest.mark.parametrize("name", ["pointnet2", "dgcnn"])
def test_students_train_a_step_under_cpu_bf16_autocast(name):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(2)
    data = Batch.from_data_list([Data(pos=torch.rand(64, 3, generator=g), y=torch.tensor([i % 3]))
                                 for i in range(4)])
    model = get_model(name, 3, **({"k": 8} if name == "dgcnn" else {}))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    before = [p.detach().clone() for p in model.parameters()]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(data)
        loss = F.cross_entropy(logits.float(), data.y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
