"""Padded neighbour slots -> edge index: the extension's one-pass CPU op
``pointcmt::slots_to_edges`` against the torch version and a naive loop."""
from __future__ import annotations

import pytest
import torch

from pointcmt_pyg.ops import _ext
from pointcmt_pyg.ops._edges import padded_to_edges, slots_to_edges_torch

needs_ext = pytest.mark.skipif(_ext.backend() != "extension", reason="compiled extension not loaded")


def naive_edges(idx: torch.Tensor, skip_self: bool, max_kept, neighbour_first: bool) -> torch.Tensor:
    rows, cols = [], []
    for i, row in enumerate(idx.tolist()):
        kept = [v for v in row if v >= 0 and not (skip_self and v == i)]
        if max_kept is not None:
            kept = kept[:max_kept]
        rows += [i] * len(kept)
        cols += kept
    edges = torch.tensor([rows, cols], dtype=torch.long).view(2, -1)
    return edges.flip([0]) if neighbour_first else edges


def random_slots(rows: int, width: int, seed: int, fill: float = 0.6) -> torch.Tensor:
    """Neighbour lists with -1 anywhere (not only in the tails), self entries and
    repeated values."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, max(rows, 1), (rows, width), generator=g)
    idx[torch.rand(rows, width, generator=g) > fill] = -1
    own = torch.arange(rows).view(-1, 1).expand(rows, width)
    self_slot = torch.rand(rows, width, generator=g) < 0.1
    return torch.where(self_slot, own, idx)


CASES = [(0, 4), (1, 1), (7, 1), (33, 5), (200, 64), (1000, 21)]


@pytest.mark.parametrize("rows,width", CASES)
@pytest.mark.parametrize("skip_self", [False, True])
@pytest.mark.parametrize("max_kept", [None, 0, 1, 3, 100])
@pytest.mark.parametrize("neighbour_first", [False, True])
def test_torch_version_matches_naive(rows, width, skip_self, max_kept, neighbour_first):
    idx = random_slots(rows, width, seed=rows * 7 + width)
    got = slots_to_edges_torch(idx, skip_self, max_kept, neighbour_first)
    assert torch.equal(got, naive_edges(idx, skip_self, max_kept, neighbour_first))


@needs_ext
@pytest.mark.parametrize("rows,width", CASES)
@pytest.mark.parametrize("skip_self", [False, True])
@pytest.mark.parametrize("max_kept", [None, 0, 1, 3, 100])
@pytest.mark.parametrize("neighbour_first", [False, True])
def test_cpu_op_matches_naive(rows, width, skip_self, max_kept, neighbour_first):
    idx = random_slots(rows, width, seed=rows * 5 + width + 1)
    got = padded_to_edges(idx, skip_self, max_kept, neighbour_first)   # the extension's op on CPU
    assert got.dtype == torch.long and got.is_contiguous()
    assert torch.equal(got, naive_edges(idx, skip_self, max_kept, neighbour_first))


@needs_ext
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_cpu_op_same_result_on_any_thread_count(threads):
    # 20,000 rows: many parallel chunks of ~16k slots each.
    idx = random_slots(20000, 40, seed=3)
    expected = slots_to_edges_torch(idx, True, 25, True)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert torch.equal(padded_to_edges(idx, True, 25, True), expected)
    finally:
        torch.set_num_threads(old)


def test_knn_graph_fast_path_equals_the_general_path():
    # Full kNN rows with the point itself first: the torch version drops the
    # first column without a mask; the result must be that of the mask.
    g = torch.Generator().manual_seed(0)
    rows, width = 50, 6
    own = torch.arange(rows).view(-1, 1)
    others = (own + 1 + torch.randint(0, rows - 1, (rows, width - 1), generator=g)) % rows   # never i
    idx = torch.cat([own, others], dim=1)
    assert torch.equal(slots_to_edges_torch(idx, True), naive_edges(idx, True, None, False))
    # One row without itself in front: the general path must take over.
    idx[3, 0] = 7
    assert torch.equal(slots_to_edges_torch(idx, True), naive_edges(idx, True, None, False))


@needs_ext
def test_cpu_op_rejects_bad_input_naming_the_argument():
    op = torch.ops.pointcmt.slots_to_edges
    with pytest.raises(RuntimeError, match="'idx' must be int64"):
        op(torch.zeros(3, 2, dtype=torch.int32), False, 2, False)
    with pytest.raises(RuntimeError, match="'idx' must have shape"):
        op(torch.zeros(3, dtype=torch.long), False, 2, False)
    with pytest.raises(RuntimeError, match="'max_kept' must be >= 0"):
        op(torch.zeros(3, 2, dtype=torch.long), False, -1, False)


@needs_ext
def test_cpu_op_under_torch_compile_fake_kernel():
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    with FakeTensorMode(shape_env=ShapeEnv()):
        out = torch.ops.pointcmt.slots_to_edges(torch.empty(5, 3, dtype=torch.long), True, 2, False)
    assert out.shape[0] == 2 and out.dtype == torch.long
