"""Padded neighbour lists ``(M, width)`` to PyG's ``[2, E]`` edge index.

The kNN and radius kernels write each query's neighbours into a fixed-width
row, padded with ``-1``. PyG wants the kept entries flattened query by query.
This is a measurable share of a CPU search (tens of thousands of queries), so
it avoids boolean indexing, which runs ``nonzero`` once per indexed tensor,
and ``masked_select``, slow on sparse masks.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def padded_to_edges(idx: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    r"""Flattens the kept entries of a padded neighbour list.

    Args:
        idx (torch.Tensor): ``(M, width)`` int64 neighbour indices, ``-1`` in
            unused slots.
        mask (torch.Tensor, optional): ``(M, width)`` bool, the entries to
            keep. ``None`` keeps every entry ``>= 0``.

    Returns:
        torch.Tensor: ``[2, E]`` int64: row 0 the query (row of ``idx``), row
        1 the neighbour, in row-major order of ``idx``.
    """
    if mask is None:
        mask = idx >= 0
        # Every slot used (every cloud has >= k points): no compaction at all.
        # A data-dependent branch, so not under torch.compile.
        if not torch.compiler.is_compiling() and bool(mask.all()):
            num_queries, width = idx.shape
            row = torch.arange(num_queries, device=idx.device, dtype=idx.dtype)
            return torch.stack([row.view(-1, 1).expand(num_queries, width).reshape(-1),
                                idx.reshape(-1)], dim=0)
    # One nonzero over the mask, then a gather: measured faster on CPU than
    # boolean indexing (a nonzero per tensor) and than masked_select (slow on
    # sparse masks: 15 ms vs 0.7 ms at 6 % fill of 16384 x 64).
    kept = mask.nonzero()
    row = kept[:, 0]
    return torch.stack([row, idx[row, kept[:, 1]]], dim=0)
