"""k nearest neighbours: exact neighbours and distances against an
independent brute force (numpy), PyG 2.8 edge layout for knn / knn_graph, the
dense form, cosine distance, opcheck, torch.compile, bad inputs, torch_cluster
and CUDA cross-checks."""
import numpy as np
import pytest
import torch

from conftest import TORCH_CLUSTER_SKIP

import pointcmt_pyg.ops as ops
from pointcmt_pyg.ops import _reference
from pointcmt_pyg.ops._edges import padded_to_edges

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DTYPES = [torch.float32, torch.float64]


def seq_sqdist(points: np.ndarray, q: np.ndarray) -> np.ndarray:
    diff = points[:, 0] - q[0]
    acc = diff * diff
    for d in range(1, points.shape[1]):
        diff = points[:, d] - q[d]
        acc = acc + diff * diff
    return acc


def seq_norm(points: np.ndarray) -> np.ndarray:
    acc = points[:, 0] * points[:, 0]
    for d in range(1, points.shape[1]):
        acc = acc + points[:, d] * points[:, d]
    return np.sqrt(acc)


def cosine_dist(points: np.ndarray, q: np.ndarray) -> np.ndarray:
    dot = points[:, 0] * q[0]
    for d in range(1, points.shape[1]):
        dot = dot + points[:, d] * q[d]
    denom = seq_norm(q[None])[0] * seq_norm(points)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, 1 - dot / np.where(denom > 0, denom, 1), np.ones_like(dot))


def brute_knn(x, y, k, counts_x, counts_y, cosine=False):
    """Padded (dist, idx) sorted by (dist, idx), -1 / inf when missing."""
    xs, ys = x.numpy(), y.numpy()
    dist = np.full((len(ys), k), np.inf, dtype=xs.dtype)
    idx = np.full((len(ys), k), -1, dtype=np.int64)
    px, py = np.cumsum([0] + counts_x), np.cumsum([0] + counts_y)
    for b in range(len(counts_y)):
        pts = xs[px[b]:px[b + 1]]
        for i in range(py[b], py[b + 1]):
            if len(pts) == 0:
                continue
            d = cosine_dist(pts, ys[i]) if cosine else seq_sqdist(pts, ys[i])
            order = np.lexsort((np.arange(len(pts)), d))[:k]
            dist[i, :len(order)] = d[order]
            idx[i, :len(order)] = order + px[b]
    return dist, idx


def edges_from(idx):
    rows, cols = [], []
    for i, row in enumerate(idx):
        for j in row:
            if j >= 0:
                rows.append(i)
                cols.append(int(j))
    return [rows, cols]


def cloud(counts, dim, dtype, ties=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(sum(counts), dim, generator=gen, dtype=dtype)
    if ties:
        x = (x * 3).round() / 3
    return x, torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts, dtype=torch.long))


def test_hand_made():
    x = torch.tensor([[0.0], [1.0], [3.0], [6.0]])
    y = torch.tensor([[2.1], [0.0]])
    assert ops.knn(x, y, 2).tolist() == [[0, 0, 1, 1], [2, 1, 0, 1]]
    # Query 0.5 is as far from 0 as from 1: the lower index wins.
    assert ops.knn(x, torch.tensor([[0.5]]), 1).tolist() == [[0], [0]]
    # PyG's docstring example.
    x = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
    y = torch.tensor([[-1.0, 0.0], [1.0, 0.0]])
    assert ops.knn(x, y, 2).tolist() == [[0, 0, 1, 1], [0, 1, 2, 3]]
    assert ops.knn_graph(x, 2, loop=False).tolist() == [[1, 2, 0, 3, 0, 3, 1, 2], [0, 0, 1, 1, 2, 2, 3, 3]]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [1, 3, 16])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("cosine", [False, True])
def test_matches_brute_force_on_ragged_batches(dtype, dim, ties, cosine):
    counts_x, counts_y = [1, 40, 3, 70, 0, 9], [2, 25, 4, 30, 3, 1]
    x, bx = cloud(counts_x, dim, dtype, ties, seed=dim)
    y, by = cloud(counts_y, dim, dtype, ties, seed=dim + 100)
    if cosine:
        x[5] = 0  # a zero vector: similarity 0, distance 1
    ptr_x = torch.tensor(np.cumsum([0] + counts_x))
    ptr_y = torch.tensor(np.cumsum([0] + counts_y))
    for k in (1, 4, 50):
        want_d, want_i = brute_knn(x, y, k, counts_x, counts_y, cosine)
        dist, idx = torch.ops.pointcmt.knn(x, y, ptr_x, ptr_y, k, cosine)
        assert idx.tolist() == want_i.tolist()
        assert np.array_equal(dist.numpy(), want_d)  # bit for bit
        ref_d, ref_i = _reference.knn_reference(x, y, ptr_x, ptr_y, k, cosine)
        assert torch.equal(idx, ref_i) and torch.equal(dist, ref_d)
        edges = ops.knn(x, y, k, bx, by, cosine=cosine, batch_size=len(counts_x))
        assert edges.tolist() == edges_from(want_i)


def test_clouds_smaller_than_k_and_trailing_clouds():
    x = torch.tensor([[0.0], [1.0], [5.0]])
    y = torch.tensor([[0.0], [5.0]])
    # Cloud 1 of x has one point: the query there gets one neighbour only.
    assert ops.knn(x, y, 2, torch.tensor([0, 0, 1]), torch.tensor([0, 1])).tolist() == [[0, 0, 1], [0, 1, 2]]
    # x has a trailing cloud with no queries.
    assert ops.knn(x, y[:1], 1, torch.tensor([0, 0, 1]), torch.tensor([0])).tolist() == [[0], [0]]


@pytest.mark.parametrize("loop", [False, True])
@pytest.mark.parametrize("flow", ["source_to_target", "target_to_source"])
@pytest.mark.parametrize("counts,ties", [([30, 1, 12], True), ([30, 12], False)])  # the second: every row full
def test_knn_graph_is_pyg_semantics(loop, flow, counts, ties):
    x, batch = cloud(counts, 3, torch.float32, ties=ties, seed=4)
    k = 5
    _, idx = brute_knn(x, x, k if loop else k + 1, counts, counts)
    rows, cols = edges_from(idx)
    if not loop:
        keep = [r != c for r, c in zip(rows, cols)]
        rows = [r for r, kp in zip(rows, keep) if kp]
        cols = [c for c, kp in zip(cols, keep) if kp]
    want = [cols, rows] if flow == "source_to_target" else [rows, cols]
    assert ops.knn_graph(x, k, batch, loop=loop, flow=flow).tolist() == want


@pytest.mark.parametrize("seed", range(4))
def test_padded_to_edges_matches_boolean_indexing(seed):
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, 50, (40, 7), generator=gen)
    row = torch.arange(40).view(-1, 1).expand(40, 7)
    assert torch.equal(padded_to_edges(idx), torch.stack([row.reshape(-1), idx.reshape(-1)]))
    lengths = torch.randint(0, 8, (40, 1), generator=gen)
    idx = torch.where(torch.arange(7) < lengths, idx, torch.full_like(idx, -1))  # -1 padding, as the kernels write
    want = torch.stack([row[idx >= 0], idx[idx >= 0]])
    assert torch.equal(padded_to_edges(idx), want)
    mask = (idx >= 0) & (idx != row)            # skip_self: a graph without self-loops
    assert torch.equal(padded_to_edges(idx, skip_self=True), torch.stack([row[mask], idx[mask]]))
    assert padded_to_edges(idx[:0]).shape == (2, 0)


def test_knn_graph_duplicates_keep_pyg_edge_count():
    # Three copies of one point and k=1: point 2's two nearest are 0 and 1
    # (ties to the lower index), neither is itself, so PyG keeps both edges.
    x = torch.zeros(3, 2)
    edges = ops.knn_graph(x, 1, flow="target_to_source")
    assert edges.tolist() == [[0, 1, 2, 2], [1, 0, 0, 1]]


def test_knn_dense_matches_packed_and_pads():
    x = torch.rand(3, 10, 4, dtype=torch.float64)
    y = torch.rand(3, 6, 4, dtype=torch.float64)
    dist, idx = ops.knn_dense(x, y, 4)
    assert dist.shape == idx.shape == (3, 6, 4)
    for b in range(3):
        want_d, want_i = brute_knn(x[b], y[b], 4, [10], [6])
        assert idx[b].tolist() == want_i.tolist() and np.array_equal(dist[b].numpy(), want_d)
    dist, idx = ops.knn_dense(x, y, 12)
    assert (idx[..., 10:] == -1).all() and torch.isinf(dist[..., 10:]).all()
    assert idx[..., :10].sort(dim=-1).values.tolist() == [[list(range(10))] * 6] * 3
    cd, ci = ops.knn_dense(x, y, 3, cosine=True)
    want_d, want_i = brute_knn(x[1], y[1], 3, [10], [6], cosine=True)
    assert ci[1].tolist() == want_i.tolist() and np.array_equal(cd[1].numpy(), want_d)


def test_opcheck():
    x, _ = cloud([7, 12], 3, torch.float32, ties=True)
    y, _ = cloud([3, 5], 3, torch.float32, seed=1)
    for cosine in (False, True):
        args = (x, y, torch.tensor([0, 7, 19]), torch.tensor([0, 3, 8]), 9, cosine)
        torch.library.opcheck(torch.ops.pointcmt.knn.default, args)


def test_torch_compile_fullgraph():
    x = torch.rand(64, 3)

    def search(points):
        dense = points.view(4, 16, 3)
        return ops.knn(points, points[:10], 5), ops.knn_dense(dense, dense, 4)[1]

    compiled = torch.compile(search, fullgraph=True, backend="aot_eager")
    got, want = compiled(x), search(x)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_torch_compile_batched_graph_with_dynamic_output_shapes():
    x, batch = cloud([20, 30, 14], 3, torch.float32)
    fn = lambda p, b: ops.knn_graph(p, 6, b, batch_size=3)  # noqa: E731
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        got = torch.compile(fn, fullgraph=True, backend="aot_eager")(x, batch)
    assert torch.equal(got, fn(x, batch))


@pytest.mark.parametrize("call, error, match", [
    (lambda: ops.knn(torch.rand(4, 3), torch.rand(2, 2), 1), ValueError, "'x' and 'y'"),
    (lambda: ops.knn(torch.rand(4, 3), torch.rand(2, 3).double(), 1), TypeError, "same dtype"),
    (lambda: ops.knn(torch.rand(4, 3), torch.rand(2, 3), 0), ValueError, "'k'"),
    (lambda: ops.knn(torch.rand(4, 3), torch.rand(2, 3), 2.0), TypeError, "'k'"),
    (lambda: ops.knn(torch.rand(4, 3, 1), torch.rand(2, 3), 1), ValueError, "'x'"),
    (lambda: ops.knn(torch.rand(4, 3), torch.rand(0, 3), 1), ValueError, "'y'"),
    (lambda: ops.knn(torch.rand(4, 3).int(), torch.rand(2, 3).int(), 1), TypeError, "'x'"),
    (lambda: ops.knn(torch.tensor([[float("nan")]]), torch.rand(2, 1), 1), ValueError, "NaN"),
    (lambda: ops.knn(torch.rand(4, 3), torch.rand(2, 3), 1, torch.tensor([0, 1, 0, 1])), ValueError, "sorted"),
    (lambda: ops.knn(torch.rand(4, 3), torch.rand(2, 3), 1, None, torch.tensor([0])), ValueError, "'batch_y'"),
    (lambda: ops.knn(torch.rand(4, 3), torch.rand(2, 3), 1, cosine=1), TypeError, "'cosine'"),
    (lambda: ops.knn_graph(torch.rand(4, 3), 2, flow="up"), ValueError, "'flow'"),
    (lambda: ops.knn_graph(torch.rand(4, 3), -1), ValueError, "'k'"),
    (lambda: ops.knn_graph(torch.rand(4, 3), 2, loop=None), TypeError, "'loop'"),
    (lambda: ops.knn_dense(torch.rand(2, 4, 3), torch.rand(3, 4, 3), 2), ValueError, "clouds"),
    (lambda: ops.knn_dense(torch.rand(4, 3), torch.rand(4, 3), 2), ValueError, "'x'"),
])
def test_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_agrees_with_torch_cluster():
    torch_cluster = pytest.importorskip("torch_cluster", reason=TORCH_CLUSTER_SKIP)
    x, bx = cloud([100, 37, 64], 3, torch.float64, seed=21)
    y, by = cloud([20, 10, 30], 3, torch.float64, seed=22)
    assert torch.equal(ops.knn(x, y, 8, bx, by), torch_cluster.knn(x, y, 8, bx, by))
    for loop in (False, True):
        assert torch.equal(ops.knn_graph(x, 6, bx, loop=loop), torch_cluster.knn_graph(x, 6, bx, loop=loop))


@cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("cosine", [False, True])
def test_cuda_matches_cpu(dtype, ties, cosine):
    counts_x, counts_y = [1, 300, 5, 1024, 0, 77], [2, 100, 4, 1024, 3, 50]
    for dim in (1, 3, 64):
        x, _ = cloud(counts_x, dim, dtype, ties, seed=dim)
        y, _ = cloud(counts_y, dim, dtype, ties, seed=dim + 1)
        px, py = torch.tensor(np.cumsum([0] + counts_x)), torch.tensor(np.cumsum([0] + counts_y))
        for k in (1, 20, 40):
            want = torch.ops.pointcmt.knn(x, y, px, py, k, cosine)
            got = torch.ops.pointcmt.knn(x.cuda(), y.cuda(), px.cuda(), py.cuda(), k, cosine)
            assert torch.equal(got[1].cpu(), want[1]) and torch.equal(got[0].cpu(), want[0])
    dense = torch.rand(4, 1024, 3, dtype=dtype)
    assert torch.equal(ops.knn_dense(dense.cuda(), dense.cuda(), 20)[1].cpu(), ops.knn_dense(dense, dense, 20)[1])


# ----------------------------------------------------------------------------- the CPU grid search (D <= 3)
def grid_clouds(kind, dim, dtype, seed):
    """Ragged clouds (with an empty one and one smaller than k) laid out to
    stress the grid of the CPU kernel: uniform, tight clusters far apart,
    many duplicates, far outliers, and points on a plane (a flat axis)."""
    gen = torch.Generator().manual_seed(seed)
    counts = [300, 0, 7, 1024, 1, 513]
    n = sum(counts)
    if kind == "uniform":
        x = torch.rand(n, dim, generator=gen, dtype=dtype)
    elif kind == "clusters":
        centres = torch.randn(5, dim, generator=gen, dtype=dtype) * 50
        x = centres[torch.randint(0, 5, (n,), generator=gen)] + 1e-3 * torch.randn(n, dim, generator=gen, dtype=dtype)
    elif kind == "duplicates":
        x = torch.randint(0, 3, (n, dim), generator=gen).to(dtype) / 2
    elif kind == "outliers":
        x = torch.rand(n, dim, generator=gen, dtype=dtype)
        x[torch.randint(0, n, (12,), generator=gen)] *= torch.tensor(1e5, dtype=dtype)
        x[3] = -3e4
    else:  # flat: the last coordinate is constant
        x = torch.rand(n, dim, generator=gen, dtype=dtype)
        x[:, -1] = 0.25
    return x, counts


@pytest.mark.skipif(ops.backend() != "extension",
                    reason="compiled grid search vs the reference: nothing to compare "
                           "on the reference path")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("kind", ["uniform", "clusters", "duplicates", "outliers", "flat"])
def test_grid_search_is_exact(dtype, dim, kind):
    x, counts = grid_clouds(kind, dim, dtype, seed=dim)
    px = torch.tensor(np.cumsum([0] + counts))
    # Queries: the points themselves, and other points in the same clouds
    # (some far outside the cloud's bounding box).
    y = x.clone()
    y[1::3] = y[1::3] * 1.01 + 0.003
    y[5] = 1e6
    for k in (1, 8, 20, 40, 1100):
        want_d, want_i = _reference.knn_reference(x, y, px, px, k, False)
        dist, idx = torch.ops.pointcmt.knn(x, y, px, px, k, False)
        assert torch.equal(idx, want_i) and torch.equal(dist, want_d)


def test_grid_search_against_numpy_on_a_realistic_batch():
    # The benchmark's workload shape: 8 clouds of 1024 points, k = 20.
    x, batch = cloud([1024] * 8, 3, torch.float32, seed=7)
    counts = [1024] * 8
    want_d, want_i = brute_knn(x, x, 20, counts, counts)
    dist, idx = torch.ops.pointcmt.knn(x, x, torch.tensor(np.cumsum([0] + counts)),
                                       torch.tensor(np.cumsum([0] + counts)), 20, False)
    assert idx.tolist() == want_i.tolist() and np.array_equal(dist.numpy(), want_d)
    assert ops.knn(x, x, 20, batch, batch).tolist() == edges_from(want_i)


def test_infinite_points_match_the_reference():
    # The raw op (no NaN check in front of it) falls back to the brute force
    # for a cloud with an infinite coordinate: same result as the reference.
    x = torch.rand(200, 3)
    x[7] = float("inf")
    ptr, ptr_y = torch.tensor([0, 200]), torch.tensor([0, 50])
    y = x[8:58]
    dist, idx = torch.ops.pointcmt.knn(x, y, ptr, ptr_y, 5, False)
    want_d, want_i = _reference.knn_reference(x, y, ptr, ptr_y, 5, False)
    assert torch.equal(idx, want_i) and torch.equal(dist, want_d)
    far = torch.ops.pointcmt.knn(x, y, ptr, ptr_y, 200, False)
    assert far[1][:, -1].eq(7).all() and torch.isinf(far[0][:, -1]).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cosine", [False, True])
def test_high_dimensional_features_match_brute_force(dtype, cosine):
    # DGCNN's case: 64-d features, clouds of sizes that are not multiples of the
    # kernel's point groups or query tiles, queries of several clouds per tile.
    counts = [1024, 3, 301, 17]
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(sum(counts), 64, generator=gen, dtype=dtype)
    ptr = torch.tensor(np.cumsum([0] + counts))
    want_d, want_i = brute_knn(x, x, 20, counts, counts, cosine)
    dist, idx = torch.ops.pointcmt.knn(x, x, ptr, ptr, 20, cosine)
    assert idx.tolist() == want_i.tolist()
    assert np.array_equal(dist.numpy(), want_d)


def test_same_result_on_any_number_of_threads():
    # The CPU kernels split queries over torch's intra-op threads in chunks
    # claimed dynamically: the output must not depend on the split.
    x, batch = cloud([1024, 300, 1024, 7], 3, torch.float32, seed=5)
    f = torch.randn(x.shape[0], 64, generator=torch.Generator().manual_seed(6))
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, max(2, before)):
            torch.set_num_threads(threads)
            results.append((ops.knn(x, x, 20, batch, batch), ops.knn(f, f, 20, batch, batch),
                            ops.radius(x, x, 0.1, batch, batch, max_num_neighbors=16),
                            ops.fps(x, batch, 0.5, random_start=False)))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*results):
        assert torch.equal(a, b)


_ISA_CHILD = r"""
import sys
import numpy as np
import torch
sys.path.insert(0, sys.argv[1])
import pointcmt_pyg.ops  # noqa: F401  (loads the extension)
from pointcmt_pyg.ops import _reference
from test_knn import grid_clouds
checked = 0
for dtype in (torch.float32, torch.float64):
    for kind in ("uniform", "clusters", "duplicates", "outliers", "flat"):
        for dim in (2, 3):
            x, counts = grid_clouds(kind, dim, dtype, seed=dim + 10)
            px = torch.tensor(np.cumsum([0] + counts))
            y = x.clone()
            y[1::3] = y[1::3] * 1.01 + 0.003
            for k in (1, 20, 40, 200):
                want = _reference.knn_reference(x, y, px, px, k, False)
                got = torch.ops.pointcmt.knn(x, y, px, px, k, False)
                assert torch.equal(got[1], want[1]), (kind, dim, k, dtype)
                assert torch.equal(got[0], want[0]), (kind, dim, k, dtype)
                checked += 1
print("checked", checked)
"""


@pytest.mark.skipif(ops.backend() != "extension",
                    reason="compiled grid search vs the reference: nothing to compare "
                           "on the reference path")
@pytest.mark.parametrize("isa", ["scalar", "avx2", "avx512"])
def test_grid_selection_is_exact_on_every_instruction_set(isa):
    # The float32 grid search picks the k nearest of a block with a threshold
    # pass and a rank count in a scalar, an AVX2 and an AVX-512 form (the
    # widest the CPU has, capped by POINTCMT_CPU_ISA, read once per process:
    # hence a child process per cap). Each must give the reference's indices
    # and distances, ties to the lower index, through the ranked path (few
    # candidates) and the insertion path (k = 200: over the ranked limit).
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, POINTCMT_CPU_ISA=isa, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _ISA_CHILD, root], env=env, capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.abspath(__file__)), timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "checked 80" in out.stdout


@pytest.mark.skipif(ops.backend() != "extension", reason="the variable is read by the compiled kernels")
def test_unknown_instruction_set_cap_is_a_clear_error():
    import os
    import subprocess
    import sys
    code = ("import torch, pointcmt_pyg.ops as ops\n"
            "x = torch.rand(500, 3)\n"
            "ops.knn(x, x, 4)\n")
    env = dict(os.environ, POINTCMT_CPU_ISA="sse9")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode != 0
    assert "POINTCMT_CPU_ISA must be scalar, avx2 or avx512, got 'sse9'" in out.stderr
