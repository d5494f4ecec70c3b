"""The ops as a true torch-cluster drop-in (issue 9, point 2): callers compiled
with ``torch.jit.script``, and every dtype torch-cluster's own tests use.

The fixed cases are those of torch-cluster's fps/knn/radius tests (two
squares, a skipped cloud id, coincident points, ``ptr`` given as a list or a
tensor, a tensor ``ratio``), written here for our ops, each run eagerly and
through ``torch.jit.script``; random ragged clouds then check that the
scripted path (:mod:`pointcmt_pyg.ops._script`) returns exactly the eager
result, and a scripted module survives ``torch.jit.save`` / ``load``.
"""
import io
import warnings

import pytest
import scipy.spatial
import torch
from torch import Tensor

from pointcmt_pyg.ops import fps, knn, knn_graph, radius, radius_graph

from conftest import cuda

warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated", category=FutureWarning)
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
DEVICES = ["cpu", pytest.param("cuda", marks=cuda)]
SQUARES = [[-1, -1], [-1, 1], [1, 1], [1, -1], [-2, -2], [-2, 2], [2, 2], [2, -2]]
TWICE = [[-1, -1], [-1, 1], [1, 1], [1, -1]] * 2


def _edges(edge_index: Tensor):
    return set(map(tuple, edge_index.t().tolist()))


def _both(fn):
    """The eager op and its ``torch.jit.script`` compilation."""
    return [fn, torch.jit.script(fn)]


@torch.jit.script
def _scripted_caller(x: Tensor, ratio: Tensor) -> Tensor:
    # A scripted function calling the op, compiled at import (as torch-cluster's test_fps.py does).
    return fps(x, None, ratio, False)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fps_fixed_cases_eager_and_scripted(dtype, device):
    x = torch.tensor(SQUARES, dtype=dtype, device=device)
    batch = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1], device=device)
    for op in _both(fps):
        assert op(x, batch, random_start=False).tolist() == [0, 2, 4, 6]
        assert op(x, batch, 0.5, False).tolist() == [0, 2, 4, 6]
        assert op(x, batch, torch.tensor(0.5, device=device), False).tolist() == [0, 2, 4, 6]
        assert op(x, batch, torch.tensor([0.5, 0.5], device=device), False).tolist() == [0, 2, 4, 6]
        assert op(x, ptr=[0, 4, 8], ratio=0.5, random_start=False).tolist() == [0, 2, 4, 6]
        assert op(x, ptr=torch.tensor([0, 4, 8], device=device), ratio=0.5,
                  random_start=False).tolist() == [0, 2, 4, 6]
        # One cloud of 8: from point 0 the farthest are the outer square's corners.
        assert op(x, random_start=False).tolist() == [0, 6, 5, 7]
        assert op(x, None, torch.tensor([0.5], device=device), False).tolist() == [0, 6, 5, 7]
    assert _scripted_caller(x, torch.tensor([0.5], device=device)).tolist() == [0, 6, 5, 7]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_knn_fixed_cases_eager_and_scripted(dtype, device):
    x = torch.tensor(TWICE, dtype=dtype, device=device)
    y = torch.tensor([[1, 0], [-1, 0]], dtype=dtype, device=device)
    for op in _both(knn):
        assert _edges(op(x, y, 2)) == {(0, 2), (0, 3), (1, 0), (1, 1)}
        batch_x = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1], device=device)
        assert _edges(op(x, y, 2, batch_x, torch.tensor([0, 1], device=device))) == \
            {(0, 2), (0, 3), (1, 4), (1, 5)}
        # A skipped cloud id (no cloud 1).
        assert _edges(op(x, y, 2, batch_x * 2, torch.tensor([0, 2], device=device))) == \
            {(0, 2), (0, 3), (1, 4), (1, 5)}
    square = x[:4]
    ring = {(0, 1), (0, 3), (1, 0), (1, 2), (2, 1), (2, 3), (3, 0), (3, 2)}
    for op in _both(knn_graph):
        assert _edges(op(square, 2, flow="target_to_source")) == ring
        assert _edges(op(square, 2, flow="source_to_target")) == {(j, i) for i, j in ring}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_radius_fixed_cases_eager_and_scripted(dtype, device):
    x = torch.tensor(TWICE, dtype=dtype, device=device)
    y = torch.tensor([[0, 0], [0, 1]], dtype=dtype, device=device)
    batch_x = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1], device=device)
    for op in _both(radius):
        assert _edges(op(x, y, 2.0, max_num_neighbors=4)) == \
            {(0, 0), (0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 5), (1, 6)}
        assert _edges(op(x, y, 2.0, batch_x, torch.tensor([0, 1], device=device),
                         max_num_neighbors=4)) == {(0, 0), (0, 1), (0, 2), (0, 3), (1, 5), (1, 6)}
        assert _edges(op(x, y, 2.0, batch_x * 2, torch.tensor([0, 2], device=device),
                         max_num_neighbors=4)) == {(0, 0), (0, 1), (0, 2), (0, 3), (1, 5), (1, 6)}
    square = x[:4]
    ring = {(0, 1), (0, 3), (1, 0), (1, 2), (2, 1), (2, 3), (3, 0), (3, 2)}
    for op in _both(radius_graph):
        assert _edges(op(square, 2.5, flow="target_to_source")) == ring
        assert _edges(op(square, 2.5, flow="source_to_target")) == {(j, i) for i, j in ring}
        # One neighbour each, also among coincident points and per cloud.
        degree = torch.unique(op(square, 100.0, max_num_neighbors=1)[1], return_counts=True)[1]
        assert degree.tolist() == [1, 1, 1, 1]
        same = torch.full((4, 2), -1.0, dtype=dtype, device=device)
        assert torch.unique(op(same, 100.0, max_num_neighbors=1)[1],
                            return_counts=True)[1].tolist() == [1, 1, 1, 1]
        edges = op(x, 100.0, batch_x, max_num_neighbors=1)
        assert (edges[0] // 4).tolist() == batch_x.tolist()


def test_knn_graph_and_radius_graph_match_a_kd_tree_when_scripted():
    x = torch.randn(1000, 3)
    tree = scipy.spatial.cKDTree(x.numpy())
    _, col = tree.query(x.numpy(), k=5)
    truth = {(i, j) for i, row in enumerate(col) for j in row}
    assert _edges(torch.jit.script(knn_graph)(x, 5, None, True, "target_to_source")) == truth
    balls = tree.query_ball_point(x.numpy(), r=0.5)
    truth = {(i, j) for i, row in enumerate(balls) for j in row}
    assert _edges(torch.jit.script(radius_graph)(x, 0.5, None, True, 2000,
                                                 "target_to_source")) == truth


def _ragged(dtype, device, sizes=(40, 1, 0, 75, 3), dim=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(sum(sizes), dim, generator=g).to(dtype=dtype, device=device)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)).to(device)
    return x, batch


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_scripted_ops_equal_the_eager_ops_on_ragged_clouds(dtype, device):
    x, batch = _ragged(dtype, device)
    y, batch_y = _ragged(dtype, device, sizes=(5, 2, 0, 9, 1), seed=1)
    s_knn, s_graph = torch.jit.script(knn), torch.jit.script(knn_graph)
    s_radius, s_rgraph = torch.jit.script(radius), torch.jit.script(radius_graph)
    s_fps = torch.jit.script(fps)
    for k in (1, 4, 50):   # 50: more than any cloud holds
        assert torch.equal(s_knn(x, y, k, batch, batch_y), knn(x, y, k, batch, batch_y))
        for loop in (False, True):
            for flow in ("source_to_target", "target_to_source"):
                assert torch.equal(s_graph(x, k, batch, loop, flow),
                                   knn_graph(x, k, batch, loop, flow))
    assert torch.equal(s_knn(x, y, 3, batch, batch_y, True), knn(x, y, 3, batch, batch_y, True))
    for max_num in (None, 1, 7):
        assert torch.equal(s_radius(x, y, 0.9, batch, batch_y, max_num),
                           radius(x, y, 0.9, batch, batch_y, max_num))
        for loop in (False, True):
            assert torch.equal(s_rgraph(x, 0.9, batch, loop, max_num),
                               radius_graph(x, 0.9, batch, loop, max_num))
    ptr = [0, 40, 41, 41, 116, 119]
    for ratio in (0.25, 1.0, torch.tensor(0.3, device=device),
                  torch.tensor([0.1, 1.0, 0.5, 0.33, 0.7], device=device)):
        assert torch.equal(s_fps(x, batch, ratio, False), fps(x, batch, ratio, False))
        assert torch.equal(s_fps(x, None, ratio, False, None, ptr),
                           fps(x, None, ratio, False, None, ptr))
    torch.manual_seed(3)
    scripted = s_fps(x, batch, 0.5, True)
    torch.manual_seed(3)
    assert torch.equal(scripted, fps(x, batch, 0.5, True))   # the same draws of torch's RNG


class _Grouping(torch.nn.Module):
    """A PointNet++-style grouping step, as a scripted model would hold it."""

    def forward(self, pos: Tensor, batch: Tensor) -> Tensor:
        idx = fps(pos, batch, 0.5, False)
        edges = radius(pos, pos[idx], 0.6, batch, batch[idx], 8)
        return torch.cat([edges, knn_graph(pos, 3, batch)], dim=1)


def test_a_scripted_module_calling_the_ops_saves_loads_and_matches_eager():
    pos, batch = _ragged(torch.float32, "cpu", sizes=(30, 12, 50))
    module = _Grouping()
    scripted = torch.jit.script(module)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    expected = module(pos, batch)
    assert torch.equal(scripted(pos, batch), expected)
    assert torch.equal(loaded(pos, batch), expected)
    # The loaded module holds compiled code that calls torch.ops.pointcmt, no Python callbacks.
    graph = str(loaded.inlined_graph)
    assert all(f"pointcmt::{op}" in graph for op in ("fps", "knn", "radius"))
    assert "prim::PythonOp" not in graph


def test_scripted_ops_raise_errors_naming_the_argument():
    x = torch.randn(10, 3)
    with pytest.raises(torch.jit.Error, match="'k' must be >= 1"):
        torch.jit.script(knn)(x, x, 0)
    with pytest.raises(torch.jit.Error, match="'r' must be a positive finite radius"):
        torch.jit.script(radius)(x, x, -1.0)
    with pytest.raises(torch.jit.Error, match="'flow' must be 'source_to_target'"):
        torch.jit.script(knn_graph)(x, 2, None, False, "up")
    with pytest.raises(torch.jit.Error, match="'batch' must be sorted"):
        torch.jit.script(radius_graph)(x, 0.5, torch.tensor([1] * 5 + [0] * 5))
    with pytest.raises(torch.jit.Error, match=r"'ratio' must lie in \(0, 1\]"):
        torch.jit.script(fps)(x, None, 1.5)
    with pytest.raises(torch.jit.Error, match="'x' and 'y' must have the same dtype"):
        torch.jit.script(knn)(x, x.double(), 2)
    with pytest.raises(torch.jit.Error, match="'x' contains NaN or Inf"):
        torch.jit.script(knn)(x.clone().fill_(float("nan")), x, 2)
    with pytest.raises(torch.jit.Error, match="'max_num_neighbors' must be >= 1"):
        torch.jit.script(radius)(x, x, 0.5, None, None, 0)
    # Eager mode keeps its own messages (and Python exception types).
    with pytest.raises(ValueError, match=r"'k' must be >= 1 \(got 0\)"):
        knn(x, x, 0)
    with pytest.raises(TypeError, match="'k' must be an int"):
        knn(x, x, 2.0)
