r"""Reads ``(x, pos, batch, num_clouds)`` off a PyG ``Data``/``Batch`` with
argument checks shared by every model in :mod:`pointcmt_pyg.models`.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
from torch import Tensor

__all__ = ["unpack_cloud_batch"]


def unpack_cloud_batch(data: Any, model_name: str) -> Tuple[Optional[Tensor], Tensor, Tensor, int]:
    r"""Returns ``(x, pos, batch, num_clouds)`` of a batch of point clouds.

    Args:
        data: A PyG ``Data``/``Batch`` (or any object) with ``pos`` ``[N, 3]``
            float32/float64, optional ``batch`` ``[N]`` (sorted cloud ids;
            ``None`` = one cloud) and optional per-point features ``x``
            ``[N, F]``.
        model_name (str): Named in error messages.

    Raises:
        TypeError: ``data`` has no ``pos``, or a field has the wrong type/dtype.
        ValueError: A field has the wrong shape or ``pos`` holds NaN/Inf.
    """
    pos = getattr(data, "pos", None)
    if pos is None:
        raise TypeError(f"{model_name}: 'data' must carry point positions 'data.pos' "
                        f"(got {type(data).__name__} without 'pos')")
    if not isinstance(pos, Tensor):
        raise TypeError(f"{model_name}: 'data.pos' must be a torch.Tensor (got {type(pos).__name__})")
    if pos.dim() != 2 or pos.shape[1] != 3:
        raise ValueError(f"{model_name}: 'data.pos' must have shape [N, 3], got {tuple(pos.shape)}")
    if not pos.is_floating_point():
        raise TypeError(f"{model_name}: 'data.pos' must be a floating-point tensor (got {pos.dtype})")
    if pos.shape[0] == 0:
        raise ValueError(f"{model_name}: 'data.pos' is empty: a point cloud needs at least one point")
    if not torch.compiler.is_compiling() and not bool(torch.isfinite(pos).all()):
        raise ValueError(f"{model_name}: 'data.pos' contains NaN or Inf values")

    batch = getattr(data, "batch", None)
    if batch is None:
        batch = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
        num_clouds = 1
    else:
        if not isinstance(batch, Tensor):
            raise TypeError(f"{model_name}: 'data.batch' must be a torch.Tensor (got {type(batch).__name__})")
        if batch.dtype != torch.long:
            raise TypeError(f"{model_name}: 'data.batch' must be int64 (got {batch.dtype})")
        if batch.shape != (pos.shape[0],):
            raise ValueError(f"{model_name}: 'data.batch' must have shape [N] = [{pos.shape[0]}] like "
                             f"'data.pos', got {tuple(batch.shape)}")
        num_graphs = getattr(data, "num_graphs", None)
        num_clouds = int(num_graphs) if isinstance(num_graphs, int) else int(batch.max()) + 1

    x = getattr(data, "x", None)
    if x is not None:
        if not isinstance(x, Tensor):
            raise TypeError(f"{model_name}: 'data.x' must be a torch.Tensor or None (got {type(x).__name__})")
        if x.dim() == 1:
            x = x.view(-1, 1)
        if x.dim() != 2 or x.shape[0] != pos.shape[0]:
            raise ValueError(f"{model_name}: 'data.x' must have shape [N, F] with N = {pos.shape[0]} "
                             f"(as 'data.pos'), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{model_name}: 'data.x' must be a floating-point tensor (got {x.dtype})")
    return x, pos, batch, num_clouds
