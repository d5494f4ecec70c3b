"""Tests of pointcmt_pyg.models: the PyG example classifiers on our ops, our
DynamicEdgeConv, and the torch.ops.pyg patch (use_pointcmt_ops).

References are PyG's own modules: EdgeConv on a kNN graph built by brute
force, and the example architectures assembled from PyG layers (run through
the patch where they call pyg-lib operators).
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.nn import BatchNorm1d, Linear, ReLU, Sequential

import torch_geometric.typing as pyg_typing
from torch_geometric.data import Batch, Data
from torch_geometric.nn import (MLP, EdgeConv, PointNetConv, PointTransformerConv, global_max_pool,
                                global_mean_pool)
from torch_geometric.nn import DynamicEdgeConv as PygDynamicEdgeConv
from torch_geometric.utils import scatter

from pointcmt_pyg import ops
from pointcmt_pyg.models import (DGCNN, MODELS, DynamicEdgeConv, PointNet2, PointNet2MSG, PointTransformer,
                                 get_model, list_models, pointcmt_ops_active, use_pointcmt_ops)
from pointcmt_pyg.models.pyg_patch import PYG_SCHEMAS

NUM_CLASSES = 5

#: With pyg-lib installed the patch serves nothing; tests of what it serves skip.
needs_no_pyg_lib = pytest.mark.skipif(pyg_typing.WITH_PYG_LIB,
                                      reason="pyg-lib is installed: its operators are used, not patched")

#: The parameter every model applies first to the input points.
FIRST_LAYER = {
    "pointnet2": "sa1_module.conv.local_nn.lins.0.weight",
    "pointnet2_fc512": "sa1_module.conv.local_nn.lins.0.weight",
    "pointnet2_msg": "sa1_module.convs.0.local_nn.lins.0.weight",
    "dgcnn": "conv1.nn.lins.0.weight",
    "point_transformer": "mlp_input.0.weight",
}


def _clouds(sizes=(256, 200), seed=0, with_x=0):
    gen = torch.Generator().manual_seed(seed)
    data = []
    for n in sizes:
        d = Data(pos=torch.rand(n, 3, generator=gen) * 2 - 1)
        if with_x:
            d.x = torch.rand(n, with_x, generator=gen)
        data.append(d)
    return Batch.from_data_list(data)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------- models
@pytest.mark.parametrize("name", sorted(FIRST_LAYER))
def test_forward_backward(name):
    torch.manual_seed(0)
    model = get_model(name, NUM_CLASSES)
    data = _clouds()
    logits = model(data)
    assert logits.shape == (2, NUM_CLASSES)
    assert torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.tensor([1, 3])).backward()
    grads = dict(model.named_parameters())
    first = grads[FIRST_LAYER[name]].grad
    assert first is not None and torch.isfinite(first).all() and first.abs().sum() > 0
    head_grad = [p.grad for p in model.mlp.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in head_grad[:1])


@pytest.mark.parametrize("name", sorted(FIRST_LAYER))
def test_head_is_mlp_on_global_feature(name):
    torch.manual_seed(0)
    model = get_model(name, NUM_CLASSES).eval()
    data = _clouds()
    with torch.no_grad():
        feat = model.features(data)
        logits = model(data)
    assert feat.shape == (2, model.feat_dim)
    torch.testing.assert_close(model.mlp(feat), logits)
    # The head's input is what a forward hook on `mlp` sees (how the distiller taps it).
    seen = []
    handle = model.mlp.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    with torch.no_grad():
        model(data)
    handle.remove()
    torch.testing.assert_close(seen[0], feat)


@pytest.mark.parametrize("name", sorted(FIRST_LAYER))
def test_eval_deterministic_and_independent_of_batch(name):
    torch.manual_seed(0)
    model = get_model(name, NUM_CLASSES)
    model(_clouds(seed=3))  # one training step's worth of BatchNorm statistics
    model.eval()
    data = _clouds(seed=1)
    with torch.no_grad():
        a = model(data)
        b = model(data)
        alone = model(Batch.from_data_list([data.get_example(1)]))
    assert torch.equal(a, b)
    torch.testing.assert_close(alone[0], a[1], atol=1e-5, rtol=1e-4)


def test_training_fps_start_is_random_but_seeded():
    model = PointNet2(NUM_CLASSES)
    model.mlp.dropout = [0.0, 0.0, 0.0]  # the head's dropout is not what is tested here
    data = _clouds()
    torch.manual_seed(5)
    a = model(data)
    torch.manual_seed(5)
    b = model(data)
    torch.manual_seed(6)
    c = model(data)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("cls,kwargs", [(PointNet2, {}), (PointNet2MSG, {}), (DGCNN, {"k": 8}),
                                        (PointTransformer, {"dim_model": (16, 32), "k": 8})])
def test_point_features_are_used(cls, kwargs):
    torch.manual_seed(0)
    model = cls(NUM_CLASSES, in_channels=2, **kwargs).eval()
    data = _clouds(with_x=2)
    with torch.no_grad():
        a = model(data)
        data.x = data.x + 1.0
        b = model(data)
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="in_channels=2"):
        model(_clouds())  # no data.x
    with pytest.raises(ValueError, match="in_channels=2"):
        model(_clouds(with_x=3))


def test_positions_only_model_ignores_x():
    torch.manual_seed(0)
    model = DGCNN(NUM_CLASSES, k=8).eval()
    data = _clouds(with_x=4)
    with torch.no_grad():
        a = model(data)
        del data.x
        b = model(data)
    torch.testing.assert_close(a, b)


def test_single_cloud_without_batch_vector():
    torch.manual_seed(0)
    model = PointNet2(NUM_CLASSES).eval()
    with torch.no_grad():
        out = model(Data(pos=torch.rand(128, 3)))
    assert out.shape == (1, NUM_CLASSES)


def test_feat_dims():
    assert PointNet2(3).feat_dim == 1024
    assert PointNet2MSG(3).feat_dim == 512
    assert DGCNN(3).feat_dim == 1024
    assert PointTransformer(3).feat_dim == 512
    assert isinstance(PointNet2MSG(3).mlp, Linear) and PointNet2MSG(3).mlp.in_features == 512
    assert PointNet2(3, head="fc512").feat_dim == 512
    fc512 = PointNet2(3, head="fc512")
    assert isinstance(fc512.mlp, Linear) and fc512.mlp.in_features == 512


def test_fc512_head_is_pointcmt_student_head_on_the_same_set_abstractions():
    torch.manual_seed(0)
    pyg = PointNet2(NUM_CLASSES).eval()
    ours = get_model("pointnet2_fc512", NUM_CLASSES)
    assert ours.head == "fc512" and pyg.head == "pyg" and pyg.fc is None
    # Same set-abstraction parameters; the head is FC(1024 -> 512, no bias)-BN-ReLU, then one linear layer.
    trunk = {k: v for k, v in pyg.state_dict().items() if not k.startswith("mlp.")}
    missing, unexpected = ours.load_state_dict(trunk, strict=False)
    assert not unexpected and sorted(missing) == ["fc.0.weight", "fc.1.bias", "fc.1.running_mean",
                                                  "fc.1.running_var", "fc.1.weight", "mlp.bias", "mlp.weight"]
    assert [type(m) for m in ours.fc] == [Linear, BatchNorm1d, ReLU] and ours.fc[0].bias is None
    assert (ours.fc[0].in_features, ours.fc[0].out_features) == (1024, 512)
    assert not any(isinstance(m, torch.nn.Dropout) for m in ours.modules())
    ours.eval()
    data = _clouds()
    with torch.no_grad():
        expected = ours.fc(pyg.features(data))
        torch.testing.assert_close(ours.features(data), expected)
        torch.testing.assert_close(ours(data), ours.mlp(expected))
    # PyG's example state_dict is unchanged by the option.
    assert "fc.0.weight" not in pyg.state_dict()


def test_fc512_student_needs_no_projection_in_the_distiller():
    from pointcmt_pyg.nn import CMPG, CrossModalDistiller
    torch.manual_seed(0)
    cmpg = CMPG(in_dim=512, num_points=64)
    wrapped = CrossModalDistiller(get_model("pointnet2_fc512", NUM_CLASSES), cmpg=cmpg, teacher_dim=512,
                                  recipe="official")
    assert wrapped.student_to_teacher is None and wrapped.teacher_to_student is None
    wrapped = CrossModalDistiller(get_model("pointnet2", NUM_CLASSES), cmpg=cmpg, teacher_dim=512,
                                  recipe="official")
    assert wrapped.student_to_teacher is not None


def test_msg_layer_sizes_match_official_pointnet2_msg():
    model = PointNet2MSG(40)
    sa1, sa2 = model.sa1_module, model.sa2_module
    assert sa1.radii == [0.1, 0.2, 0.4] and sa1.max_num_neighbors == [16, 32, 128]
    assert sa2.radii == [0.2, 0.4, 0.8] and sa2.max_num_neighbors == [32, 64, 128]
    widths = [[lin.out_channels for lin in conv.local_nn.lins] for conv in sa1.convs]
    assert widths == [[32, 32, 64], [64, 64, 128], [64, 96, 128]]
    assert [conv.local_nn.lins[0].in_channels for conv in sa2.convs] == [323] * 3
    widths = [[lin.out_channels for lin in conv.local_nn.lins] for conv in sa2.convs]
    assert widths == [[64, 64, 128], [128, 128, 256], [128, 128, 256]]
    assert [lin.out_channels for lin in model.sa3_module.nn.lins] == [256, 512, 1024]
    assert model.sa3_module.nn.lins[0].in_channels == 640 + 3
    # Every shared-MLP layer is Linear(no bias)+BN+ReLU, as 1x1 convs in the official code.
    assert all(lin.bias is None for lin in sa1.convs[0].local_nn.lins)
    assert len(sa1.convs[0].local_nn.norms) == 3


# ------------------------------------------------------------------ registry
def test_registry():
    assert list_models() == ["dgcnn", "point_transformer", "pointnet2", "pointnet2_fc512", "pointnet2_msg"]
    assert set(MODELS) == set(FIRST_LAYER)
    assert isinstance(get_model("PointNet2-MSG", 4), PointNet2MSG)
    model = get_model("dgcnn", 4, k=7)
    assert model.conv1.k == 7 and model.mlp.channel_list[-1] == 4
    with pytest.raises(ValueError, match="known models: dgcnn, point_transformer"):
        get_model("pointnet3", 4)
    with pytest.raises(TypeError, match="'name'"):
        get_model(3, 4)
    with pytest.raises(TypeError):
        get_model("dgcnn", 4, not_an_argument=1)


@pytest.mark.parametrize("name", sorted(FIRST_LAYER))
def test_bad_arguments(name):
    with pytest.raises(ValueError, match="num_classes"):
        get_model(name, 0)
    with pytest.raises(ValueError, match="in_channels"):
        get_model(name, 3, in_channels=-1)


def test_pointnet2_head_arguments():
    with pytest.raises(ValueError, match="'head'"):
        PointNet2(3, head="fc256")
    with pytest.raises(ValueError, match="'dropout'"):
        PointNet2(3, head="fc512", dropout=0.1)
    assert PointNet2(3, dropout=0.1).mlp.dropout[:2] == [0.1, 0.1]
    assert PointNet2(3).mlp.dropout[:2] == [0.5, 0.5]


def test_bad_inputs_name_the_field():
    model = PointNet2(NUM_CLASSES)
    with pytest.raises(TypeError, match="data.pos"):
        model(Data(x=torch.rand(10, 3)))
    with pytest.raises(ValueError, match=r"data.pos.*\[N, 3\]"):
        model(Data(pos=torch.rand(10, 2)))
    with pytest.raises(TypeError, match="data.pos"):
        model(Data(pos=torch.ones(10, 3, dtype=torch.long)))
    pos = torch.rand(10, 3)
    pos[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model(Data(pos=pos))
    with pytest.raises(ValueError, match="data.batch"):
        model(Data(pos=torch.rand(10, 3), batch=torch.zeros(9, dtype=torch.long)))
    with pytest.raises(TypeError, match="data.batch"):
        model(Data(pos=torch.rand(10, 3), batch=torch.zeros(10)))
    with pytest.raises(ValueError, match="data.pos.*empty"):
        model(Data(pos=torch.zeros(0, 3)))


# ------------------------------------------------------------ DynamicEdgeConv
def _brute_force_knn_edges(x, batch, k):
    """Edges (neighbour j -> centre i) to the k nearest rows of i's cloud, itself included."""
    dist = torch.cdist(x.double(), x.double())
    dist[batch.view(-1, 1) != batch.view(1, -1)] = float("inf")
    idx = dist.topk(k, dim=1, largest=False).indices
    centre = torch.arange(x.shape[0]).view(-1, 1).expand_as(idx)
    return torch.stack([idx.reshape(-1), centre.reshape(-1)], dim=0)


@pytest.mark.parametrize("aggr", ["max", "mean", "add"])
@pytest.mark.parametrize("dim", [3, 16])
def test_dynamic_edge_conv_equals_edge_conv_on_brute_force_knn(aggr, dim):
    torch.manual_seed(0)
    x = torch.randn(70, dim)
    batch = torch.tensor([0] * 30 + [1] * 40)
    ours = DynamicEdgeConv(MLP([2 * dim, 32, 8]), k=6, aggr=aggr)
    reference = EdgeConv(MLP([2 * dim, 32, 8]), aggr=aggr)
    reference.load_state_dict(ours.state_dict())
    ours.eval()
    reference.eval()
    expected = reference(x, _brute_force_knn_edges(x, batch, 6))
    torch.testing.assert_close(ours(x, batch), expected)
    torch.testing.assert_close(ours(x, batch, batch_size=2), expected)


def test_dynamic_edge_conv_bipartite_and_gradients():
    torch.manual_seed(0)
    src, dst = torch.randn(40, 4), torch.randn(10, 4)
    b_src = torch.tensor([0] * 25 + [1] * 15)
    b_dst = torch.tensor([0] * 4 + [1] * 6)
    conv = DynamicEdgeConv(Linear(8, 5), k=3)
    out = conv((src, dst), (b_src, b_dst))
    assert out.shape == (10, 5)
    # Reference: neighbours of each dst among the src rows of its cloud.
    dist = torch.cdist(dst, src)
    dist[b_dst.view(-1, 1) != b_src.view(1, -1)] = float("inf")
    nbr = dist.topk(3, dim=1, largest=False).indices
    msg = conv.nn(torch.cat([dst.unsqueeze(1).expand(-1, 3, -1), src[nbr] - dst.unsqueeze(1)], dim=-1))
    torch.testing.assert_close(out, msg.max(dim=1).values)
    x = torch.randn(30, 3, requires_grad=True)
    DynamicEdgeConv(Linear(6, 4), k=5)(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="'k'"):
        DynamicEdgeConv(Linear(6, 4), k=0)
    with pytest.raises(ValueError, match="static graphs"):
        conv(torch.randn(3, 4, 2))


# --------------------------------------------------------- reference models
class _RefSAModule(torch.nn.Module):
    """PyG example's SAModule, with PyG's own fps/radius (pyg-lib or the patch)."""

    def __init__(self, ratio, r, nn):
        super().__init__()
        self.ratio, self.r = ratio, r
        self.conv = PointNetConv(nn, add_self_loops=False)

    def forward(self, x, pos, batch):
        from torch_geometric.nn import fps, radius
        idx = fps(pos, batch, ratio=self.ratio)
        row, col = radius(pos, pos[idx], self.r, batch, batch[idx], max_num_neighbors=64)
        x = self.conv((x, None if x is None else x[idx]), (pos, pos[idx]), torch.stack([col, row], dim=0))
        return x, pos[idx], batch[idx]


class _RefGlobalSAModule(torch.nn.Module):
    def __init__(self, nn):
        super().__init__()
        self.nn = nn

    def forward(self, x, pos, batch):
        return global_max_pool(self.nn(torch.cat([x, pos], dim=1)), batch)


class _RefPointNet2(torch.nn.Module):
    """examples/pointnet2_classification.py's Net (logits instead of log-softmax)."""

    def __init__(self, num_classes):
        super().__init__()
        self.sa1_module = _RefSAModule(0.5, 0.2, MLP([3, 64, 64, 128]))
        self.sa2_module = _RefSAModule(0.25, 0.4, MLP([128 + 3, 128, 128, 256]))
        self.sa3_module = _RefGlobalSAModule(MLP([256 + 3, 256, 512, 1024]))
        self.mlp = MLP([1024, 512, 256, num_classes], dropout=0.5, norm=None)

    def forward(self, data):
        out = self.sa1_module(data.x, data.pos, data.batch)
        out = self.sa2_module(*out)
        return self.mlp(self.sa3_module(*out))


class _RefDGCNN(torch.nn.Module):
    """examples/dgcnn_classification.py's Net with PyG's DynamicEdgeConv."""

    def __init__(self, out_channels, k=20, aggr="max"):
        super().__init__()
        self.conv1 = PygDynamicEdgeConv(MLP([2 * 3, 64, 64, 64]), k, aggr)
        self.conv2 = PygDynamicEdgeConv(MLP([2 * 64, 128]), k, aggr)
        self.lin1 = Linear(128 + 64, 1024)
        self.mlp = MLP([1024, 512, 256, out_channels], dropout=0.5, norm=None)

    def forward(self, data):
        x1 = self.conv1(data.pos, data.batch)
        x2 = self.conv2(x1, data.batch)
        return self.mlp(global_max_pool(self.lin1(torch.cat([x1, x2], dim=1)), data.batch))


class _RefTransformerBlock(torch.nn.Module):
    def __init__(self, in_channels, out_channels, hidden_channels):
        super().__init__()
        self.lin_in = Linear(in_channels, hidden_channels)
        self.lin_out = Linear(out_channels, out_channels)
        self.pos_nn = Sequential(Linear(3, 64), ReLU(), Linear(64, out_channels))
        self.attn_nn = Sequential(Linear(out_channels, 64), ReLU(), Linear(64, out_channels))
        self.transformer = PointTransformerConv(hidden_channels, out_channels, pos_nn=self.pos_nn,
                                                attn_nn=self.attn_nn)

    def forward(self, x, pos, edge_index):
        return self.lin_out(self.transformer(self.lin_in(x).relu(), pos, edge_index)).relu()


class _RefPointTransformer(torch.nn.Module):
    """examples/point_transformer_classification.py's Net on PyG's fps/knn/knn_graph."""

    def __init__(self, num_classes, dim_model=(32, 64, 128, 256, 512), k=16):
        super().__init__()
        self.k = k
        self.mlp_input = Sequential(Linear(1, dim_model[0]), BatchNorm1d(dim_model[0]), ReLU())
        self.transformer_input = _RefTransformerBlock(dim_model[0], dim_model[0], dim_model[0])
        self.transformers_down = torch.nn.ModuleList()
        self.mlp_down = torch.nn.ModuleList()
        for i in range(len(dim_model) - 1):
            self.mlp_down.append(Sequential(Linear(dim_model[i], dim_model[i + 1]),
                                            BatchNorm1d(dim_model[i + 1]), ReLU()))
            self.transformers_down.append(_RefTransformerBlock(dim_model[i + 1], dim_model[i + 1],
                                                               dim_model[i + 1]))
        self.lin = Sequential(Linear(dim_model[-1], 64), ReLU(), Linear(64, 64), ReLU(),
                              Linear(64, num_classes))

    def forward(self, data):
        from torch_geometric.nn import fps, knn, knn_graph
        pos, batch = data.pos, data.batch
        x = self.mlp_input(torch.ones((pos.shape[0], 1)))
        x = self.transformer_input(x, pos, knn_graph(pos, k=self.k, batch=batch))
        for mlp_down, block in zip(self.mlp_down, self.transformers_down):
            idx = fps(pos, ratio=0.25, batch=batch)
            sub_batch = batch[idx]
            nbr = knn(pos, pos[idx], k=self.k, batch_x=batch, batch_y=sub_batch)
            x = scatter(mlp_down(x)[nbr[1]], nbr[0], dim=0, dim_size=idx.shape[0], reduce="max")
            pos, batch = pos[idx], sub_batch
            x = block(x, pos, knn_graph(pos, k=self.k, batch=batch))
        return self.lin(global_mean_pool(x, batch))


def _num_params(module):
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_and_state_dicts_equal_pyg_examples():
    with use_pointcmt_ops():  # PyG's DynamicEdgeConv cannot be built without pyg-lib otherwise
        pairs = [(_RefPointNet2(10), PointNet2(10)), (_RefDGCNN(10), DGCNN(10)),
                 (_RefPointTransformer(10), PointTransformer(10))]
    for reference, ours in pairs:
        assert _num_params(ours) == _num_params(reference)
        names = [k.replace("lin.", "mlp.", 1) if k.startswith("lin.") else k for k in reference.state_dict()]
        assert names == list(ours.state_dict())
    assert _num_params(pairs[0][1]) == 1_463_626


# Exact equality of RNG-driven forwards (random FPS starts) holds where both
# sides run our fps, i.e. through the patch.
@needs_no_pyg_lib
def test_pointnet2_equals_pyg_example():
    torch.manual_seed(0)
    reference = _RefPointNet2(10)
    ours = PointNet2(10)
    ours.load_state_dict(reference.state_dict())  # strict: same names and shapes
    data = _clouds()
    ours.train()
    reference.train()
    with use_pointcmt_ops():
        # Training mode: random FPS starts and head dropout drawn from one seed.
        torch.manual_seed(1)
        expected = reference(data)
        torch.manual_seed(1)
        got = ours(data)
    torch.testing.assert_close(got, expected)


def test_dgcnn_equals_pyg_example_with_pyg_dynamic_edge_conv():
    torch.manual_seed(0)
    with use_pointcmt_ops():
        reference = _RefDGCNN(10, k=20)
        ours = DGCNN(10, k=20)
        data = _clouds()
        reference(data)  # BatchNorm running statistics, then copied over
        ours.load_state_dict(reference.state_dict())
        ours.eval()
        reference.eval()
        with torch.no_grad():
            torch.testing.assert_close(ours(data), reference(data))


@needs_no_pyg_lib
def test_point_transformer_equals_pyg_example():
    torch.manual_seed(0)
    reference = _RefPointTransformer(10)
    ours = PointTransformer(10)
    state = {k.replace("lin.", "mlp.", 1) if k.startswith("lin.") else k: v
             for k, v in reference.state_dict().items()}
    ours.load_state_dict(state)
    data = _clouds()
    with use_pointcmt_ops():
        torch.manual_seed(2)
        expected = reference(data)
        torch.manual_seed(2)
        got = ours(data)
    torch.testing.assert_close(got, expected)


# ----------------------------------------------------------------- the patch


@needs_no_pyg_lib
def test_patch_scopes_pyg_functions_and_restores():
    from torch_geometric.nn import fps, knn_graph  # imported before patching on purpose
    x = torch.rand(40, 3)
    assert not pointcmt_ops_active()
    with pytest.raises(ImportError):
        fps(x)
    with pytest.raises(ImportError):
        PygDynamicEdgeConv(MLP([6, 4]), 3)
    with use_pointcmt_ops() as patch:
        assert pointcmt_ops_active()
        assert sorted(patch.provided) == sorted(PYG_SCHEMAS)
        assert pyg_typing.WITH_FPS and pyg_typing.WITH_KNN and pyg_typing.WITH_RADIUS
        with use_pointcmt_ops():  # nested: still on after the inner one ends
            pass
        assert pointcmt_ops_active()
        assert knn_graph(x, 4).shape == (2, 160)
    assert not pointcmt_ops_active()
    assert not pyg_typing.WITH_FPS and not pyg_typing.WITH_KNN
    assert not hasattr(torch.ops.pyg, "knn")
    with pytest.raises(ImportError):
        knn_graph(x, 4)
    patch = use_pointcmt_ops()  # process-wide form, undone explicitly
    try:
        assert fps(x, ratio=0.25).shape == (10,)
    finally:
        patch.undo()
        patch.undo()  # idempotent
    assert not pointcmt_ops_active()


@needs_no_pyg_lib
def test_patched_pyg_functions_agree_with_ours():
    from torch_geometric.nn import fps, knn, knn_graph, nearest, radius, radius_graph
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(90, 3, generator=gen)
    batch = torch.tensor([0] * 50 + [1] * 40)
    # Contiguous copies: PyG's index2ptr miscounts a strided batch vector.
    y, batch_y = x[::7].clone(), batch[::7].clone()
    with use_pointcmt_ops():
        torch.manual_seed(4)
        got = fps(x, batch, ratio=0.3)
        torch.manual_seed(4)
        assert torch.equal(got, ops.fps(x, batch, ratio=0.3))
        assert torch.equal(fps(x, batch, 0.3, random_start=False),
                           ops.fps(x, batch, 0.3, random_start=False))
        assert torch.equal(knn(x, y, 5, batch, batch_y), ops.knn(x, y, 5, batch, batch_y))
        assert torch.equal(knn(x, y, 5), ops.knn(x, y, 5))
        assert torch.equal(knn_graph(x, 6, batch, loop=True), ops.knn_graph(x, 6, batch, loop=True))
        assert torch.equal(radius(x, y, 0.3, batch, batch_y, max_num_neighbors=8),
                           ops.radius(x, y, 0.3, batch, batch_y, max_num_neighbors=8))
        # radius_graph goes through pyg::radius(ignore_same_index=True).
        for loop in (False, True):
            for flow in ("source_to_target", "target_to_source"):
                assert torch.equal(radius_graph(x, 0.4, batch, loop=loop, max_num_neighbors=5, flow=flow),
                                   ops.radius_graph(x, 0.4, batch, loop=loop, max_num_neighbors=5, flow=flow))
        # nearest: index of the closest row of x in the same cloud, by brute force.
        dist = torch.cdist(y, x)
        dist[batch_y.view(-1, 1) != batch.view(1, -1)] = float("inf")
        assert torch.equal(nearest(y, x, batch_y, batch), torch.cdist(x, y).masked_fill(
            batch.view(-1, 1) != batch_y.view(1, -1), float("inf")).argmin(dim=1))
        assert torch.equal(nearest(x, y, batch, batch_y), dist.argmin(dim=1))


@needs_no_pyg_lib
def test_patched_pyg_dynamic_edge_conv_equals_ours():
    torch.manual_seed(0)
    x = torch.randn(60, 8)
    batch = torch.tensor([0] * 25 + [1] * 35)
    with use_pointcmt_ops():
        pyg_conv = PygDynamicEdgeConv(MLP([16, 32, 12]), k=7).eval()
        ours = DynamicEdgeConv(MLP([16, 32, 12]), k=7).eval()
        ours.load_state_dict(pyg_conv.state_dict())
        torch.testing.assert_close(pyg_conv(x, batch), ours(x, batch))
    # A PyG layer built under the patch needs the patch again to run.
    with pytest.raises(AttributeError):
        pyg_conv(x, batch)


@needs_no_pyg_lib
def test_patched_operators_pass_opcheck():
    from torch.library import opcheck
    x = torch.rand(20, 3)
    ptr = torch.tensor([0, 8, 20])
    with use_pointcmt_ops():
        cases = [
            (torch.ops.pyg.knn.default, (x, x, ptr, ptr, 3)),
            (torch.ops.pyg.radius.default, (x, x, ptr, ptr, 0.4, 5, 1, True)),
            (torch.ops.pyg.fps.default, (x, ptr, 0.5, False)),
            (torch.ops.pyg.nearest.default, (x, x[:5], ptr, torch.tensor([0, 3, 5]))),
        ]
        for op, args in cases:
            opcheck(op, args, test_utils=("test_schema", "test_faketensor"))


# ------------------------------------------------------------------ PointNet2MSG against a hand-built scale
def _naive_fps(points: np.ndarray, m: int) -> list:
    """Farthest point sampling from the first point, ties to the lowest index."""
    chosen, dist = [0], ((points - points[0]) ** 2).sum(1)
    for _ in range(m - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, ((points - points[nxt]) ** 2).sum(1))
    return chosen


def _mlp_by_hand(mlp, h: np.ndarray) -> np.ndarray:
    """PyG MLP in eval mode written out: Linear (no bias), BatchNorm with running
    statistics, ReLU, on every layer."""
    for lin, norm in zip(mlp.lins, mlp.norms):
        bn = norm.module
        h = h @ lin.weight.detach().double().numpy().T
        h = ((h - bn.running_mean.double().numpy()) / np.sqrt(bn.running_var.double().numpy() + bn.eps)
             * bn.weight.detach().double().numpy() + bn.bias.detach().double().numpy())
        h = np.maximum(h, 0.0)
    return h


def test_msg_first_set_abstraction_matches_a_hand_built_reference():
    """One multi-scale set abstraction of PointNet2MSG (eval mode) against numpy: FPS from the
    first point, every point within each radius (no truncation at these sizes), the shared
    MLP on ``pos_j - pos_i``, max over the neighbours, the three scales concatenated."""
    torch.manual_seed(0)
    model = PointNet2MSG(NUM_CLASSES).eval()
    for conv in model.sa1_module.convs:      # non-trivial BatchNorm statistics
        for norm in conv.local_nn.norms:
            bn = norm.module
            bn.running_mean.uniform_(-0.1, 0.1)
            bn.running_var.uniform_(0.5, 1.5)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.1, 0.1)
    data = _clouds(sizes=(64, 48), seed=3)
    data.pos = (data.pos + 1) / 2             # the unit cube, as in the radii's scale
    with torch.no_grad():
        x, pos, batch = model.sa1_module(None, data.pos, data.batch, 2)
    expected_x, expected_pos = [], []
    for cloud in range(2):
        pts = data.pos[data.batch == cloud].double().numpy()
        centres = _naive_fps(pts, int(np.ceil(0.5 * len(pts))))
        for c in centres:
            feats = []
            for r, k, conv in zip(model.sa1_module.radii, model.sa1_module.max_num_neighbors,
                                  model.sa1_module.convs):
                near = np.nonzero(((pts - pts[c]) ** 2).sum(1) <= r * r)[0]
                assert 0 < len(near) <= k
                feats.append(_mlp_by_hand(conv.local_nn, pts[near] - pts[c]).max(0))
            expected_x.append(np.concatenate(feats))
            expected_pos.append(pts[c])
    assert torch.equal(batch, torch.tensor([0] * 32 + [1] * 24))
    torch.testing.assert_close(pos.double(), torch.tensor(np.array(expected_pos)))
    torch.testing.assert_close(x.double(), torch.tensor(np.array(expected_x)), rtol=1e-4, atol=1e-5)
    assert x.shape == (56, 64 + 128 + 128)


def test_msg_loss_falls_in_a_few_steps():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    clouds = []
    for i in range(8):                        # two classes: a flat slab and a tall column
        p = torch.rand(64, 3, generator=gen)
        p = p * (torch.tensor([1.0, 1.0, 0.1]) if i % 2 == 0 else torch.tensor([0.1, 0.1, 1.0]))
        clouds.append(Data(pos=p * 2 - 1, y=torch.tensor([i % 2])))
    batch = Batch.from_data_list(clouds)
    model = PointNet2MSG(2).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        loss = F.cross_entropy(model(batch), batch.y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
