"""Farthest point sampling: exact indices against an independent naive
implementation (numpy), PyG semantics, the dense form, opcheck, torch.compile,
bad inputs, torch_cluster and CUDA cross-checks."""
import math

import numpy as np
import pytest
import torch

from conftest import TORCH_CLUSTER_SKIP

import pointcmt_pyg.ops as ops
from pointcmt_pyg.ops import _reference

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DTYPES = [torch.float32, torch.float64]


def naive_fps(points: np.ndarray, num_samples: int, start: int = 0) -> list:
    """The textbook algorithm: running min distance, first maximum wins."""
    n, dim = points.shape
    dist = np.full(n, np.inf, dtype=points.dtype)
    out, current = [], start
    for step in range(num_samples):
        out.append(current)
        if step + 1 == num_samples:
            break
        diff = points[:, 0] - points[current, 0]
        acc = diff * diff
        for d in range(1, dim):
            diff = points[:, d] - points[current, d]
            acc = acc + diff * diff
        dist = np.minimum(dist, acc)
        current = int(np.argmax(dist))
    return out


def ragged_batch(counts, dim, dtype, ties=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(sum(counts), dim, generator=gen, dtype=dtype)
    if ties:  # coarse grid: many duplicate points and equal distances
        x = (x * 3).round() / 3
    batch = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    return x, batch


def expected_fps(x, counts, ratio, starts=None):
    out, first = [], 0
    for b, n in enumerate(counts):
        if n > 0:
            k = math.ceil(np.float32(n) * np.float32(ratio))
            start = 0 if starts is None else starts[b]
            out += [first + i for i in naive_fps(x[first:first + n].numpy(), k, start)]
        first += n
    return out


def test_hand_made_line_and_square():
    # Line 0, 1, 2, 10: from 0 the farthest is 10, then 2 (min-dist 2 > 1).
    # Square from corner 0: opposite corner 2, then 1 and 3 tie -> lower index 1.
    x = torch.tensor([[0., 0], [1, 0], [2, 0], [10, 0], [0, 0], [1, 0], [1, 1], [0, 1]])
    batch = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    assert ops.fps(x, batch, ratio=0.75, random_start=False).tolist() == [0, 3, 2, 4, 6, 5]
    assert ops.fps(x, ratio=1.0, random_start=False, ptr=[0, 4, 8]).tolist() == [0, 3, 2, 1, 4, 6, 5, 7]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [1, 3, 7])
@pytest.mark.parametrize("ties", [False, True])
def test_matches_naive_on_ragged_batches(dtype, dim, ties):
    counts = [1, 37, 5, 64, 2, 1, 19]
    x, batch = ragged_batch(counts, dim, dtype, ties, seed=dim)
    for ratio in (0.3, 0.5, 1.0):
        got = ops.fps(x, batch, ratio=ratio, random_start=False)
        assert got.tolist() == expected_fps(x, counts, ratio)


def test_raw_op_matches_reference_with_starts():
    counts = [9, 1, 30, 4]
    x, _ = ragged_batch(counts, 3, torch.float32, ties=True, seed=3)
    ptr = torch.tensor([0, 9, 10, 40, 44])
    out_ptr = torch.tensor([0, 9, 10, 25, 26])
    start = torch.tensor([8, 0, 17, 3])
    got = torch.ops.pointcmt.fps(x, ptr, out_ptr, start, 26)
    ref = _reference.fps_reference(x, ptr, out_ptr, start, 26)
    assert torch.equal(got, ref)
    want = naive_fps(x[:9].numpy(), 9, 8) + [9] + [10 + i for i in naive_fps(x[10:40].numpy(), 15, 17)] + [43]
    assert got.tolist() == want


def test_counts_are_ceil_ratio_n_per_cloud():
    counts = [10, 3, 7, 1]
    x, batch = ragged_batch(counts, 2, torch.float32)
    idx = ops.fps(x, batch, ratio=0.3, random_start=False)
    per_cloud = torch.bincount(batch[idx], minlength=4).tolist()
    assert per_cloud == [3, 1, 3, 1]  # ceil(0.3 * n) as PyG computes it (float32)
    # Samples of one cloud are distinct points of that cloud while n allows it.
    for b in range(4):
        sel = idx[batch[idx] == b]
        assert sel.unique().numel() == sel.numel()


def test_tensor_ratio_per_cloud_and_empty_cloud():
    counts = [8, 0, 6]
    x, batch = ragged_batch(counts, 3, torch.float64)
    idx = ops.fps(x, batch, ratio=torch.tensor([0.25, 0.5, 1.0], dtype=torch.float64), random_start=False,
                  batch_size=3)
    first = naive_fps(x[:8].numpy(), 2)
    second = [8 + i for i in naive_fps(x[8:].numpy(), 6)]
    assert idx.tolist() == first + second


def test_one_point_clouds_and_high_dim_input_flattened():
    x = torch.rand(3, 2, 2)  # PyG flattens trailing dimensions
    batch = torch.tensor([0, 1, 2])
    assert ops.fps(x, batch, ratio=0.5, random_start=True).tolist() == [0, 1, 2]
    flat = x.reshape(3, 4)
    assert torch.equal(ops.fps(x, ratio=1.0, random_start=False), ops.fps(flat, ratio=1.0, random_start=False))


def test_random_start_is_reproducible_and_exact_from_its_start():
    counts = [50, 40, 30, 60, 20, 45, 35, 55]
    x, batch = ragged_batch(counts, 3, torch.float32, seed=7)
    torch.manual_seed(123)
    a = ops.fps(x, batch, ratio=0.5)
    torch.manual_seed(123)
    b = ops.fps(x, batch, ratio=0.5)
    assert torch.equal(a, b)
    torch.manual_seed(124)
    c = ops.fps(x, batch, ratio=0.5)
    assert not torch.equal(a, c)  # 8 clouds: identical starts by chance ~ 1e-13
    # Whatever the start, the rest is the naive sequence from that start.
    ptr = np.concatenate([[0], np.cumsum(counts)])
    out_ptr = np.concatenate([[0], np.cumsum([math.ceil(n * 0.5) for n in counts])])
    starts = [int(a[out_ptr[b]]) - ptr[b] for b in range(len(counts))]
    assert all(0 <= s < n for s, n in zip(starts, counts))
    assert a.tolist() == expected_fps(x, counts, 0.5, starts)


def test_fps_dense_matches_packed_and_pads():
    x = torch.rand(3, 20, 3)
    idx = ops.fps_dense(x, 6)
    assert idx.shape == (3, 6)
    for b in range(3):
        assert idx[b].tolist() == naive_fps(x[b].numpy(), 6)
    lengths = torch.tensor([20, 4, 11])
    idx = ops.fps_dense(x, 6, lengths=lengths)
    assert idx[0].tolist() == naive_fps(x[0].numpy(), 6)
    assert idx[1].tolist() == naive_fps(x[1, :4].numpy(), 4) + [-1, -1]
    assert idx[2].tolist() == naive_fps(x[2, :11].numpy(), 6)
    wide = ops.fps_dense(x[:, :4], 6)
    assert (wide[:, 4:] == -1).all() and wide[:, :4].sort(dim=1).values.tolist() == [[0, 1, 2, 3]] * 3
    torch.manual_seed(5)
    r1 = ops.fps_dense(x, 5, random_start=True)
    torch.manual_seed(5)
    assert torch.equal(r1, ops.fps_dense(x, 5, random_start=True))
    assert r1[0].tolist() == naive_fps(x[0].numpy(), 5, int(r1[0, 0]))


def test_opcheck():
    x, _ = ragged_batch([7, 12], 3, torch.float32, ties=True)
    args = (x, torch.tensor([0, 7, 19]), torch.tensor([0, 4, 10]), torch.tensor([0, 3]), 10)
    torch.library.opcheck(torch.ops.pointcmt.fps.default, args)


def test_torch_compile_fullgraph():
    x = torch.rand(4, 16, 3)

    def sample(points):
        return ops.fps(points.reshape(-1, 3), ratio=0.25, random_start=False), ops.fps_dense(points, 5)

    compiled = torch.compile(sample, fullgraph=True, backend="aot_eager")
    got, want = compiled(x), sample(x)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize("call, error, match", [
    (lambda: ops.fps([[0.0, 1.0]]), TypeError, "'x'"),
    (lambda: ops.fps(torch.rand(5)), ValueError, "'x'"),
    (lambda: ops.fps(torch.rand(5, 3).long()), TypeError, "'x'"),
    (lambda: ops.fps(torch.rand(0, 3)), ValueError, "'x'"),
    (lambda: ops.fps(torch.tensor([[0.0, float("nan")]])), ValueError, "NaN"),
    (lambda: ops.fps(torch.tensor([[0.0, float("inf")]])), ValueError, "NaN or Inf"),
    (lambda: ops.fps(torch.rand(5, 3), ratio=0.0), ValueError, "'ratio'"),
    (lambda: ops.fps(torch.rand(5, 3), ratio=1.5), ValueError, "'ratio'"),
    (lambda: ops.fps(torch.rand(5, 3), ratio="half"), TypeError, "'ratio'"),
    (lambda: ops.fps(torch.rand(5, 3), ratio=torch.tensor([0.5, 2.0])), ValueError, "'ratio'"),
    (lambda: ops.fps(torch.rand(4, 3), torch.tensor([1, 0, 0, 1])), ValueError, "sorted"),
    (lambda: ops.fps(torch.rand(4, 3), torch.tensor([0, 0, 1])), ValueError, "'batch'"),
    (lambda: ops.fps(torch.rand(4, 3), torch.tensor([0.0, 0, 1, 1])), TypeError, "'batch'"),
    (lambda: ops.fps(torch.rand(4, 3), ptr=[0, 3]), ValueError, "'ptr'"),
    (lambda: ops.fps(torch.rand(4, 3), random_start=1), TypeError, "'random_start'"),
    (lambda: ops.fps_dense(torch.rand(4, 3), 2), ValueError, "'x'"),
    (lambda: ops.fps_dense(torch.rand(2, 4, 3), 0), ValueError, "'num_samples'"),
    (lambda: ops.fps_dense(torch.rand(2, 4, 3), 2.0), TypeError, "'num_samples'"),
    (lambda: ops.fps_dense(torch.rand(2, 4, 3), 2, lengths=torch.tensor([4, 5])), ValueError, "'lengths'"),
    (lambda: ops.fps_dense(torch.rand(2, 4, 3), 2, lengths=torch.tensor([4])), ValueError, "'lengths'"),
])
def test_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_agrees_with_torch_cluster():
    torch_cluster = pytest.importorskip("torch_cluster", reason=TORCH_CLUSTER_SKIP)
    counts = [100, 37, 64]
    x, batch = ragged_batch(counts, 3, torch.float64, seed=11)
    ours = ops.fps(x, batch, ratio=0.5, random_start=False)
    theirs = torch_cluster.fps(x, batch, ratio=0.5, random_start=False)
    assert torch.equal(ours, theirs)


@cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ties", [False, True])
def test_cuda_matches_cpu(dtype, ties):
    counts = [1, 300, 5, 1024, 77, 2]
    for dim in (1, 3, 6):
        x, batch = ragged_batch(counts, dim, dtype, ties, seed=dim)
        ptr = torch.tensor(np.concatenate([[0], np.cumsum(counts)]))
        out_ptr = torch.tensor(np.concatenate([[0], np.cumsum([math.ceil(n * 0.7) for n in counts])]))
        start = torch.tensor([0, 299, 4, 512, 1, 1])
        want = torch.ops.pointcmt.fps(x, ptr, out_ptr, start, int(out_ptr[-1]))
        got = torch.ops.pointcmt.fps(x.cuda(), ptr.cuda(), out_ptr.cuda(), start.cuda(), int(out_ptr[-1]))
        assert torch.equal(got.cpu(), want)
        assert torch.equal(ops.fps(x.cuda(), batch.cuda(), 0.5, False).cpu(), ops.fps(x, batch, 0.5, False))
    dense = torch.rand(4, 2048, 3, dtype=dtype)
    assert torch.equal(ops.fps_dense(dense.cuda(), 512).cpu(), ops.fps_dense(dense, 512))


def test_batch_of_many_clouds_matches_naive():
    # Clouds are spread over threads: every cloud still gets its own exact result.
    counts = [1024, 3, 517, 0, 1024, 64, 1, 900, 256, 1024]
    x, batch = ragged_batch(counts, 3, torch.float32, seed=11)
    got = ops.fps(x, batch, 0.5, random_start=False, batch_size=len(counts))
    assert got.tolist() == expected_fps(x, counts, 0.5)
