"""Padded neighbour lists ``(M, width)`` to PyG's ``[2, E]`` edge index.

The kNN and radius kernels write each query's neighbours into a fixed-width
row, padded with ``-1``. PyG wants the kept entries flattened query by query.
On the CPU this is as much work as a radius search itself when done with
torch ops (a mask, ``nonzero``, a gather, a stack: the slots are read and
written several times), so there the extension's one-pass
``pointcmt::slots_to_edges`` does it; other devices, the pure-PyTorch backend
and ``torch.compile`` use :func:`slots_to_edges_torch`, the reference it is
tested against.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import _ext


def slots_to_edges_torch(idx: Tensor, skip_self: bool = False, max_kept: Optional[int] = None,
                         neighbour_first: bool = False) -> Tensor:
    r"""The torch version of :func:`padded_to_edges` (same arguments and
    result), for any device and under ``torch.compile``."""
    edges = _query_first_edges(idx, skip_self, max_kept)
    return edges.flip([0]) if neighbour_first else edges


def _query_first_edges(idx: Tensor, skip_self: bool, max_kept: Optional[int]) -> Tensor:
    width = idx.shape[1]
    if (skip_self and width > 1 and (max_kept is None or max_kept >= width - 1)
            and not torch.compiler.is_compiling()):
        # kNN graphs: every point is its own nearest and every row is full, so
        # dropping the first column drops exactly the self-loops.
        own = torch.arange(idx.shape[0], device=idx.device).view(-1, 1)
        if bool(((idx[:, :1] == own) & (idx[:, -1:] >= 0)).all()):
            return _query_first_edges(idx[:, 1:].contiguous(), False, None)
    if not skip_self and (max_kept is None or max_kept >= width):
        mask = idx >= 0
        # Every slot used (every cloud has >= k points): no compaction at all.
        # A data-dependent branch, so not under torch.compile.
        if not torch.compiler.is_compiling() and bool(mask.all()):
            num_queries = idx.shape[0]
            row = torch.arange(num_queries, device=idx.device, dtype=idx.dtype)
            return torch.stack([row.view(-1, 1).expand(num_queries, width).reshape(-1),
                                idx.reshape(-1)], dim=0)
    else:
        mask = idx >= 0
        if skip_self:
            mask = mask & (idx != torch.arange(idx.shape[0], device=idx.device).view(-1, 1))
        if max_kept is not None and max_kept < width:
            mask = mask & (torch.cumsum(mask.to(torch.int32), dim=1) <= max_kept)
    # One nonzero over the mask, then a gather: measured faster on CPU than
    # boolean indexing (a nonzero per tensor) and than masked_select (slow on
    # sparse masks: 15 ms vs 0.7 ms at 6 % fill of 16384 x 64).
    kept = mask.nonzero()
    row = kept[:, 0]
    return torch.stack([row, idx[row, kept[:, 1]]], dim=0)


if _ext.backend() == "extension":
    @torch.library.register_fake("pointcmt::slots_to_edges")
    def _slots_to_edges_fake(idx: Tensor, skip_self: bool, max_kept: int, neighbour_first: bool) -> Tensor:
        return idx.new_empty((2, torch.library.get_ctx().new_dynamic_size()))


def padded_to_edges(idx: Tensor, skip_self: bool = False, max_kept: Optional[int] = None,
                    neighbour_first: bool = False) -> Tensor:
    r"""Flattens the kept entries of a padded neighbour list.

    Args:
        idx (torch.Tensor): ``(M, width)`` int64 neighbour indices, ``-1`` in
            unused slots.
        skip_self (bool): Drop ``idx[i, j] == i`` (a graph's self-loops, when
            queries and points are the same rows). (default: ``False``)
        max_kept (int, optional): Keep at most this many entries per row, the
            first ones in slot order. ``None``: all.
        neighbour_first (bool): Swap the two rows (PyG's
            ``flow="source_to_target"`` graphs). (default: ``False``)

    Returns:
        torch.Tensor: ``[2, E]`` int64: row 0 the query (row of ``idx``), row
        1 the neighbour, in row-major order of ``idx``, keeping the entries
        ``>= 0`` (and not the row itself when ``skip_self``); the two rows
        swapped when ``neighbour_first``.
    """
    if (idx.device.type == "cpu" and _ext.backend() == "extension"
            and not torch.compiler.is_compiling()):
        width = idx.shape[1]
        keep = width if max_kept is None else min(max_kept, width)
        return torch.ops.pointcmt.slots_to_edges(idx, skip_self, keep, neighbour_first)
    return slots_to_edges_torch(idx, skip_self, max_kept, neighbour_first)
