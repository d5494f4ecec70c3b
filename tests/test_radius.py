"""Radius search: exact neighbour lists against an independent brute force
(numpy), the documented truncation (lowest indices first), PyG 2.8 edge layout
for radius / radius_graph, opcheck, torch.compile, bad inputs, torch_cluster
and CUDA cross-checks."""
import numpy as np
import pytest
import torch

from conftest import TORCH_CLUSTER_SKIP

import pointcmt_pyg.ops as ops
from pointcmt_pyg.ops import _reference

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DTYPES = [torch.float32, torch.float64]


def seq_sqdist(points: np.ndarray, q: np.ndarray) -> np.ndarray:
    diff = points[:, 0] - q[0]
    acc = diff * diff
    for d in range(1, points.shape[1]):
        diff = points[:, d] - q[d]
        acc = acc + diff * diff
    return acc


def brute_radius(x, y, r, counts_x, counts_y, max_num, skip_self=False):
    """Per query: rows of x in its cloud with squared distance < r*r (r*r in
    double, rounded to the dtype), ascending index, at most max_num."""
    xs, ys = x.numpy(), y.numpy()
    r2 = xs.dtype.type(r * r)
    px, py = np.cumsum([0] + counts_x), np.cumsum([0] + counts_y)
    out = []
    for b in range(len(counts_y)):
        for i in range(py[b], py[b + 1]):
            pts = xs[px[b]:px[b + 1]]
            hits = [px[b] + j for j in np.nonzero(seq_sqdist(pts, ys[i]) < r2)[0] if not (skip_self and px[b] + j == i)]
            out.append([int(h) for h in hits[:max_num]])
    return out


def padded(lists, width):
    return [row + [-1] * (width - len(row)) for row in lists]


def edges_from(lists):
    return [[i for i, row in enumerate(lists) for _ in row], [j for row in lists for j in row]]


def cloud(counts, dim, dtype, ties=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(sum(counts), dim, generator=gen, dtype=dtype)
    if ties:
        x = (x * 4).round() / 4
    return x, torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts, dtype=torch.long))


def test_hand_made():
    x = torch.tensor([[0.0], [0.5], [1.0], [3.0]])
    y = torch.tensor([[0.4], [3.0]])
    assert ops.radius(x, y, 0.7).tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]
    # More than max_num_neighbors in range: the lowest indices are kept.
    assert ops.radius(x, y, 0.7, max_num_neighbors=2).tolist() == [[0, 0, 1], [0, 1, 3]]
    # The radius is exclusive: a point at distance exactly r is out.
    assert ops.radius(x, torch.tensor([[0.0]]), 0.5).tolist() == [[0], [0]]
    # PyG's docstring example.
    x = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
    y = torch.tensor([[-1.0, 0.0], [1.0, 0.0]])
    assert ops.radius(x, y, 1.5).tolist() == [[0, 0, 1, 1], [0, 1, 2, 3]]
    assert ops.radius_graph(x, 2.5).tolist() == [[1, 2, 0, 3, 0, 3, 1, 2], [0, 0, 1, 1, 2, 2, 3, 3]]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [1, 3, 9])
@pytest.mark.parametrize("ties", [False, True])
def test_matches_brute_force_on_ragged_batches(dtype, dim, ties):
    counts_x, counts_y = [1, 150, 3, 70, 0, 9], [2, 25, 4, 30, 3, 1]
    x, bx = cloud(counts_x, dim, dtype, ties, seed=dim)
    y, by = cloud(counts_y, dim, dtype, ties, seed=dim + 100)
    ptr_x = torch.tensor(np.cumsum([0] + counts_x))
    ptr_y = torch.tensor(np.cumsum([0] + counts_y))
    r = {1: 0.05, 3: 0.25, 9: 0.8}[dim]
    for max_num in (1, 5, 200):
        want = brute_radius(x, y, r, counts_x, counts_y, max_num)
        got = torch.ops.pointcmt.radius(x, y, ptr_x, ptr_y, r, max_num)
        assert got.tolist() == padded(want, max_num)
        assert torch.equal(got, _reference.radius_reference(x, y, ptr_x, ptr_y, r, max_num))
        edges = ops.radius(x, y, r, bx, by, max_num_neighbors=max_num, batch_size=len(counts_x))
        assert edges.tolist() == edges_from(want)
    assert ops.radius(x, y, r, bx, by, max_num_neighbors=None, batch_size=6).tolist() == \
        edges_from(brute_radius(x, y, r, counts_x, counts_y, 10**9))


@pytest.mark.parametrize("loop", [False, True])
@pytest.mark.parametrize("flow", ["source_to_target", "target_to_source"])
def test_radius_graph_is_pyg_semantics(loop, flow):
    counts = [60, 1, 25]
    x, batch = cloud(counts, 3, torch.float32, ties=True, seed=4)
    for max_num in (3, 32):
        # The point itself never counts towards max_num_neighbors without loops.
        lists = brute_radius(x, x, 0.4, counts, counts, max_num, skip_self=not loop)
        rows, cols = edges_from(lists)
        want = [cols, rows] if flow == "source_to_target" else [rows, cols]
        got = ops.radius_graph(x, 0.4, batch, loop=loop, max_num_neighbors=max_num, flow=flow)
        assert got.tolist() == want


def test_one_point_clouds_and_far_clouds_stay_apart():
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.1, 0.0]])
    batch = torch.tensor([0, 1, 1])
    assert ops.radius_graph(x, 1.0, batch, loop=True).tolist() == [[0, 1, 2, 1, 2], [0, 1, 1, 2, 2]]
    assert ops.radius_graph(x, 1.0, batch).tolist() == [[2, 1], [1, 2]]


def test_opcheck():
    x, _ = cloud([7, 12], 3, torch.float32, ties=True)
    y, _ = cloud([3, 5], 3, torch.float32, seed=1)
    args = (x, y, torch.tensor([0, 7, 19]), torch.tensor([0, 3, 8]), 0.5, 4)
    torch.library.opcheck(torch.ops.pointcmt.radius.default, args)


def test_torch_compile_fullgraph():
    x, batch = cloud([20, 30, 14], 3, torch.float32)
    fn = lambda p, b: (ops.radius(p, p[:10], 0.3),  # noqa: E731
                       ops.radius_graph(p, 0.3, b, max_num_neighbors=8, batch_size=3))
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        got = torch.compile(fn, fullgraph=True, backend="aot_eager")(x, batch)
    want = fn(x, batch)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize("call, error, match", [
    (lambda: ops.radius(torch.rand(4, 3), torch.rand(2, 2), 0.1), ValueError, "'x' and 'y'"),
    (lambda: ops.radius(torch.rand(4, 3), torch.rand(2, 3).double(), 0.1), TypeError, "same dtype"),
    (lambda: ops.radius(torch.rand(4, 3), torch.rand(2, 3), 0.0), ValueError, "'r'"),
    (lambda: ops.radius(torch.rand(4, 3), torch.rand(2, 3), -1.0), ValueError, "'r'"),
    (lambda: ops.radius(torch.rand(4, 3), torch.rand(2, 3), float("inf")), ValueError, "'r'"),
    (lambda: ops.radius(torch.rand(4, 3), torch.rand(2, 3), "big"), TypeError, "'r'"),
    (lambda: ops.radius(torch.rand(4, 3), torch.rand(2, 3), 0.1, max_num_neighbors=0), ValueError,
     "'max_num_neighbors'"),
    (lambda: ops.radius(torch.rand(4, 3), torch.rand(2, 3), 0.1, max_num_neighbors=2.5), TypeError,
     "'max_num_neighbors'"),
    (lambda: ops.radius(torch.rand(4, 3), torch.rand(2, 3), 0.1, torch.tensor([1, 1, 0, 0])), ValueError,
     "sorted"),
    (lambda: ops.radius(torch.rand(4), torch.rand(2), 0.1), ValueError, "'x'"),
    (lambda: ops.radius(torch.rand(4, 3), torch.tensor([[0.0, float("inf"), 0.0]]), 0.1), ValueError, "NaN"),
    (lambda: ops.radius_graph(torch.rand(4, 3), 0.1, flow="sideways"), ValueError, "'flow'"),
    (lambda: ops.radius_graph(torch.rand(4, 3), 0.1, loop="no"), TypeError, "'loop'"),
    (lambda: ops.radius_graph(torch.rand(4, 3).int(), 0.1), TypeError, "'x'"),
])
def test_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call()


def _sorted_edges(edge_index):
    order = np.lexsort((edge_index[1].numpy(), edge_index[0].numpy()))
    return edge_index[:, torch.from_numpy(order)]


def test_agrees_with_torch_cluster():
    torch_cluster = pytest.importorskip("torch_cluster", reason=TORCH_CLUSTER_SKIP)
    x, bx = cloud([100, 37, 64], 3, torch.float64, seed=31)
    y, by = cloud([20, 10, 30], 3, torch.float64, seed=32)
    # Without truncation the neighbour sets agree (torch_cluster's order differs).
    ours = ops.radius(x, y, 0.3, bx, by, max_num_neighbors=1000)
    theirs = torch_cluster.radius(x, y, 0.3, bx, by, max_num_neighbors=1000)
    assert torch.equal(_sorted_edges(ours), _sorted_edges(theirs))
    ours = ops.radius_graph(x, 0.3, bx, max_num_neighbors=1000)
    theirs = torch_cluster.radius_graph(x, 0.3, bx, max_num_neighbors=1000)
    assert torch.equal(_sorted_edges(ours), _sorted_edges(theirs))


@cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ties", [False, True])
def test_cuda_matches_cpu(dtype, ties):
    counts_x, counts_y = [1, 300, 5, 1024, 0, 77], [2, 100, 4, 512, 3, 50]
    for dim, r in ((1, 0.01), (3, 0.2), (16, 1.0)):
        x, _ = cloud(counts_x, dim, dtype, ties, seed=dim)
        y, _ = cloud(counts_y, dim, dtype, ties, seed=dim + 1)
        px, py = torch.tensor(np.cumsum([0] + counts_x)), torch.tensor(np.cumsum([0] + counts_y))
        for max_num in (1, 64, 300):
            want = torch.ops.pointcmt.radius(x, y, px, py, r, max_num)
            got = torch.ops.pointcmt.radius(x.cuda(), y.cuda(), px.cuda(), py.cuda(), r, max_num)
            assert torch.equal(got.cpu(), want)


# ----------------------------------------------------------------------------- the CPU grid search (D <= 3)
def grid_clouds(kind, dim, dtype, seed):
    """Ragged clouds (with an empty and a one-point cloud) laid out to stress
    the grid of the CPU kernel: uniform, tight clusters far apart, many
    duplicates, far outliers, points on a plane, points on a lattice whose
    spacing equals the radius (distances exactly r, out of range)."""
    gen = torch.Generator().manual_seed(seed)
    counts = [300, 0, 7, 1024, 1, 513]
    n = sum(counts)
    if kind == "uniform":
        x = torch.rand(n, dim, generator=gen, dtype=dtype)
    elif kind == "clusters":
        centres = torch.randn(5, dim, generator=gen, dtype=dtype) * 50
        x = centres[torch.randint(0, 5, (n,), generator=gen)] + 0.05 * torch.randn(n, dim, generator=gen, dtype=dtype)
    elif kind == "duplicates":
        x = torch.randint(0, 3, (n, dim), generator=gen).to(dtype) / 8
    elif kind == "outliers":
        x = torch.rand(n, dim, generator=gen, dtype=dtype)
        x[torch.randint(0, n, (12,), generator=gen)] *= torch.tensor(1e5, dtype=dtype)
        x[3] = -3e4
    elif kind == "flat":
        x = torch.rand(n, dim, generator=gen, dtype=dtype)
        x[:, -1] = 0.25
    else:  # lattice of spacing 0.125 (exact in binary)
        x = torch.randint(0, 12, (n, dim), generator=gen).to(dtype) * 0.125
    return x, counts


@pytest.mark.skipif(ops.backend() != "extension",
                    reason="compiled grid search vs the reference: nothing to compare "
                           "on the reference path")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("kind", ["uniform", "clusters", "duplicates", "outliers", "flat", "lattice"])
def test_grid_search_is_exact(dtype, dim, kind):
    x, counts = grid_clouds(kind, dim, dtype, seed=dim)
    px = torch.tensor(np.cumsum([0] + counts))
    y = x.clone()
    y[1::3] = y[1::3] * 1.01 + 0.003
    y[5] = 1e6  # far outside its cloud
    for r in (1e-3, 0.125, 0.2, 0.5, 1e6):
        for max_num in (1, 16, 64, 2000):
            want = _reference.radius_reference(x, y, px, px, r, max_num)
            assert torch.equal(torch.ops.pointcmt.radius(x, y, px, px, r, max_num), want)


def test_grid_search_against_numpy_on_a_realistic_batch():
    # The benchmark's workload shape (512 centres per 1024-point cloud, r = 0.2),
    # with max_num_neighbors below the largest neighbourhood so rows are cut.
    counts, counts_y = [1024] * 6, [512] * 6
    x, _ = cloud(counts, 3, torch.float32, seed=7)
    y = torch.cat([x[i * 1024:i * 1024 + 512] for i in range(6)])
    got = torch.ops.pointcmt.radius(x, y, torch.tensor(np.cumsum([0] + counts)),
                                    torch.tensor(np.cumsum([0] + counts_y)), 0.2, 32)
    want = brute_radius(x, y, 0.2, counts, counts_y, 32)
    assert got.tolist() == padded(want, 32)
    assert max(len(row) for row in want) == 32 > min(len(row) for row in want)


def test_infinite_points_match_the_reference():
    x = torch.rand(200, 3)
    x[7] = float("inf")
    ptr, ptr_y = torch.tensor([0, 200]), torch.tensor([0, 50])
    y = x[8:58]
    want = _reference.radius_reference(x, y, ptr, ptr_y, 0.3, 32)
    assert torch.equal(torch.ops.pointcmt.radius(x, y, ptr, ptr_y, 0.3, 32), want)
