"""Argument checks shared by the ops: clear errors naming the argument, never a
crash in a kernel or silent garbage.

Data-dependent checks (NaN/Inf, sortedness) are skipped while
``torch.compile`` traces (they would need the values); everything shape-,
dtype- and device-related is always checked.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float32, torch.float64)
#: Accepted too, and computed in float32 (see :func:`compute_dtype`).
HALF_DTYPES = (torch.float16, torch.bfloat16)


def _tracing() -> bool:
    return torch.compiler.is_compiling()


def check_points(x: Tensor, name: str, ndim: int = 2, allow_empty: bool = False) -> None:
    """Checks a floating tensor of points (float32/float64, or float16/bfloat16,
    which the ops compute in float32) of rank ``ndim`` with finite values."""
    if not isinstance(x, Tensor):
        raise TypeError(f"'{name}' must be a torch.Tensor (got {type(x).__name__})")
    if x.dim() != ndim:
        want = "(N, D)" if ndim == 2 else "(B, N, D)"
        raise ValueError(f"'{name}' must have shape {want}, got a tensor of shape {tuple(x.shape)}")
    if x.dtype not in FLOAT_DTYPES + HALF_DTYPES:
        raise TypeError(f"'{name}' must be float32, float64, float16 or bfloat16 (got {x.dtype})")
    if x.shape[-1] < 1:
        raise ValueError(f"'{name}' must have at least one coordinate (D >= 1), got shape {tuple(x.shape)}")
    if not allow_empty and x.numel() == 0:
        raise ValueError(f"'{name}' is empty (shape {tuple(x.shape)}): a point cloud needs at least one point")
    if not _tracing() and x.numel() > 0 and not bool(torch.isfinite(x).all()):
        raise ValueError(f"'{name}' contains NaN or Inf values")


def compute_dtype(x: Tensor) -> Tensor:
    """The tensor an op computes with: float16 and bfloat16 points (mixed
    precision, e.g. under ``torch.autocast``) are converted to float32, so that
    distances are computed and compared in float32 (indices, ties to the lower
    index, are those of the float32 values of the half-precision points);
    float32 and float64 pass unchanged."""
    return x.float() if x.dtype in HALF_DTYPES else x


def check_same(a: Tensor, b: Tensor, name_a: str, name_b: str, dim: bool = True) -> None:
    """Checks that two point tensors share dtype, device and (optionally) D."""
    if a.dtype != b.dtype:
        raise TypeError(f"'{name_a}' and '{name_b}' must have the same dtype (got {a.dtype} and {b.dtype})")
    if a.device != b.device:
        raise ValueError(f"'{name_a}' and '{name_b}' must be on the same device (got {a.device} and {b.device})")
    if dim and a.shape[-1] != b.shape[-1]:
        raise ValueError(f"'{name_a}' and '{name_b}' must have the same number of coordinates D "
                         f"(got {a.shape[-1]} and {b.shape[-1]})")


def batch_to_ptr(batch: Optional[Tensor], num_points: int, device: torch.device, name: str = "batch",
                 batch_size: Optional[int] = None) -> Tensor:
    """Turns a PyG ``batch`` vector (sorted cloud ids per point) into a CSR ``ptr``.

    Returns an int64 tensor of size ``B + 1`` on ``device``. ``batch=None`` is one
    cloud. Clouds with no points are allowed (they own an empty range) except
    that the whole input must not be empty.
    """
    if batch is None:
        if batch_size is not None and batch_size != 1:
            raise ValueError(f"'batch_size' is {batch_size} but '{name}' is None (one cloud)")
        return torch.tensor([0, num_points], dtype=torch.long, device=device)
    if not isinstance(batch, Tensor):
        raise TypeError(f"'{name}' must be a torch.Tensor of cloud ids (got {type(batch).__name__})")
    if batch.dim() != 1 or batch.numel() != num_points:
        raise ValueError(f"'{name}' must be a vector with one entry per point ({num_points}), "
                         f"got shape {tuple(batch.shape)}")
    if batch.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"'{name}' must be an integer tensor (got {batch.dtype})")
    if batch.device != device:
        raise ValueError(f"'{name}' must be on the same device as the points ({device}), got {batch.device}")
    batch = batch.long()
    if batch_size is None:
        if _tracing():
            raise ValueError(f"pass 'batch_size' (or 'ptr') when calling with '{name}' under torch.compile")
        batch_size = int(batch.max()) + 1 if num_points > 0 else 1
    if not _tracing() and num_points > 0:
        if bool((batch[1:] < batch[:-1]).any()):
            raise ValueError(f"'{name}' must be sorted (points of one cloud contiguous, ids ascending)")
        if int(batch[0]) < 0 or int(batch[-1]) >= batch_size:
            raise ValueError(f"'{name}' has cloud ids outside [0, {batch_size})")
    counts = torch.bincount(batch, minlength=batch_size)[:batch_size]
    ptr = torch.zeros(batch_size + 1, dtype=torch.long, device=device)
    ptr[1:] = torch.cumsum(counts, 0)
    return ptr


def check_ptr(ptr: Tensor, num_points: int, device: torch.device, name: str = "ptr") -> Tensor:
    """Checks a CSR ``ptr`` (int, size B+1, starts at 0, non-decreasing, ends at N)."""
    if not isinstance(ptr, Tensor):
        raise TypeError(f"'{name}' must be a torch.Tensor (got {type(ptr).__name__})")
    if ptr.dim() != 1 or ptr.numel() < 2:
        raise ValueError(f"'{name}' must be a vector of size B + 1 >= 2, got shape {tuple(ptr.shape)}")
    if ptr.device != device:
        raise ValueError(f"'{name}' must be on the same device as the points ({device}), got {ptr.device}")
    ptr = ptr.long()
    if not _tracing():
        if int(ptr[0]) != 0 or int(ptr[-1]) != num_points or bool((ptr[1:] < ptr[:-1]).any()):
            raise ValueError(f"'{name}' must start at 0, be non-decreasing and end at the number of "
                             f"points ({num_points})")
    return ptr.contiguous()


def check_same_num_clouds(ptr_x: Tensor, ptr_y: Tensor) -> Tuple[Tensor, Tensor]:
    """Pads the shorter ``ptr`` so both describe the same number of clouds (a
    trailing cloud of ``x`` with no queries, or the reverse, is legal in PyG)."""
    bx, by = ptr_x.numel(), ptr_y.numel()
    if bx < by:
        ptr_x = torch.cat([ptr_x, ptr_x[-1:].expand(by - bx)])
    elif by < bx:
        ptr_y = torch.cat([ptr_y, ptr_y[-1:].expand(bx - by)])
    return ptr_x, ptr_y
