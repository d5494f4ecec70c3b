r"""Farthest point sampling (FPS), the sampler of PointNet++ (`Qi et al.,
"PointNet++: Deep Hierarchical Feature Learning on Point Sets in a Metric
Space" <https://arxiv.org/abs/1706.02413>`_), used by the PointCMT students
(`<https://arxiv.org/abs/2210.04208>`_).

:func:`fps` is a drop-in replacement for ``torch_geometric.nn.fps`` (PyG 2.8)
and accepts ``torch_cluster.fps``'s ``ptr`` and tensor ``ratio`` as well;
:func:`fps_dense` is the same sampler on a padded ``(B, N, D)`` batch.

The result is exact: the indices of the naive algorithm (start at the first
point of each cloud unless ``random_start``, then repeatedly the point farthest
from the set sampled so far, ties to the lowest index).
"""
from __future__ import annotations

import math
import struct
from typing import List, Optional, Union

import torch
from torch import Tensor

from . import _ext
from ._threads import serial_torch_ops
from ._script import fps_script
from ._reference import fps_reference, register_device_fallback
from ._validation import _tracing, batch_to_ptr, check_points, check_ptr, compute_dtype

_ext.register_reference("fps", fps_reference)
register_device_fallback("fps", fps_reference)


@torch.library.register_fake("pointcmt::fps")
def _fps_fake(x: Tensor, ptr: Tensor, out_ptr: Tensor, start: Tensor, num_out: int) -> Tensor:
    torch._check(num_out >= 0)
    return x.new_empty((num_out,), dtype=torch.long)


def _float32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


def _check_ratio(ratio: Union[float, Tensor, None], num_clouds: int, device: torch.device) -> Union[float, Tensor]:
    if ratio is None:
        return 0.5
    if isinstance(ratio, Tensor):
        if not ratio.is_floating_point():
            raise TypeError(f"'ratio' must be a floating-point tensor (got {ratio.dtype})")
        if ratio.dim() > 1 or (ratio.dim() == 1 and ratio.numel() not in (1, num_clouds)):
            raise ValueError(f"'ratio' must be a scalar or hold one value per cloud ({num_clouds}), "
                             f"got shape {tuple(ratio.shape)}")
        if ratio.device != device:
            raise ValueError(f"'ratio' must be on the same device as 'x' ({device}), got {ratio.device}")
        if not _tracing() and bool(((ratio <= 0) | (ratio > 1) | ratio.isnan()).any()):
            raise ValueError(f"'ratio' must lie in (0, 1] (got {ratio.tolist()})")
        return ratio
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
        raise TypeError(f"'ratio' must be a float or a tensor (got {type(ratio).__name__})")
    if not 0.0 < float(ratio) <= 1.0:
        raise ValueError(f"'ratio' must lie in (0, 1] (got {ratio})")
    return float(ratio)


def _start_indices(counts: Tensor, random_start: bool) -> Tensor:
    """Local start index per cloud: 0, or uniform in [0, n) from torch's RNG."""
    if not random_start:
        return torch.zeros_like(counts)
    start = (torch.rand(counts.shape, dtype=torch.float64, device=counts.device) * counts).long()
    return torch.minimum(start, (counts - 1).clamp(min=0))


def fps(
    x: Tensor,
    batch: Optional[Tensor] = None,
    ratio: Optional[Union[float, Tensor]] = 0.5,
    random_start: bool = True,
    batch_size: Optional[int] = None,
    ptr: Optional[Union[Tensor, List[int]]] = None,
) -> Tensor:
    r"""Samples ``ceil(ratio * n)`` points of every cloud by farthest point
    sampling; same arguments and result as ``torch_geometric.nn.fps``.

    Args:
        x (torch.Tensor): Points ``(N, D)`` of any dimension ``D`` (float32 or
            float64; float16 and bfloat16 are computed in float32); a tensor with
            more dimensions is flattened to ``(N, -1)``.
        batch (torch.Tensor, optional): Sorted cloud id of every point
            ``(N,)``. ``None``: one cloud. (default: ``None``)
        ratio (float or torch.Tensor): Sampling ratio in ``(0, 1]``, one value
            or one per cloud. Cloud ``b`` with ``n_b`` points gives
            ``ceil(ratio * n_b)`` samples (computed in float32 for a float
            ratio, as PyG does). (default: ``0.5``)
        random_start (bool): Start every cloud at a uniformly drawn point (from
            torch's generator, so ``torch.manual_seed`` makes it reproducible)
            instead of its first point. (default: ``True``)
        batch_size (int, optional): The number of clouds ``B``; needed under
            ``torch.compile`` when ``batch`` is given. (default: ``None``)
        ptr (torch.Tensor or list, optional): CSR offsets ``(B + 1,)`` of the
            clouds instead of ``batch`` (as in ``torch_cluster``); takes
            precedence over ``batch``. (default: ``None``)

    Returns:
        torch.Tensor: ``(sum_b ceil(ratio * n_b),)`` int64 indices into ``x``,
        cloud by cloud, each cloud's in sampling order.

    Callers compiled with ``torch.jit.script`` get the same result
    (:mod:`pointcmt_pyg.ops._script`).
    """
    if not torch.jit.is_scripting():
        return _fps_eager(x, batch, ratio, random_start, batch_size, ptr)
    return fps_script(x, batch, ratio, random_start, batch_size, ptr)


@torch.jit.unused
@serial_torch_ops
def _fps_eager(x: Tensor, batch: Optional[Tensor], ratio: Optional[Union[float, Tensor]],
               random_start: bool, batch_size: Optional[int],
               ptr: Optional[Union[Tensor, List[int]]]) -> Tensor:
    if isinstance(x, Tensor) and x.dim() > 2:
        x = x.reshape(x.shape[0], -1)
    check_points(x, "x")
    x = compute_dtype(x)
    if not isinstance(random_start, bool):
        raise TypeError(f"'random_start' must be a bool (got {type(random_start).__name__})")
    num_points = x.shape[0]
    static_count = None
    if ptr is not None:
        if isinstance(ptr, (list, tuple)):
            ptr = torch.tensor(ptr, dtype=torch.long, device=x.device)
        ptr = check_ptr(ptr, num_points, x.device, "ptr")
    else:
        ptr = batch_to_ptr(batch, num_points, x.device, "batch", batch_size)
    num_clouds = ptr.numel() - 1
    ratio = _check_ratio(ratio, num_clouds, x.device)
    counts = ptr[1:] - ptr[:-1]
    if isinstance(ratio, Tensor):
        num_samples = torch.ceil(counts.to(ratio.dtype) * ratio).long()
    else:
        num_samples = torch.ceil(counts.to(torch.float32) * ratio).long()
        if ptr.numel() == 2 and not isinstance(num_points, torch.SymInt):
            # One cloud of static size: the count needs no data (torch.compile friendly).
            static_count = int(math.ceil(_float32(_float32(float(num_points)) * _float32(ratio))))
    out_ptr = torch.zeros(num_clouds + 1, dtype=torch.long, device=x.device)
    out_ptr[1:] = torch.cumsum(num_samples, 0)
    num_out = static_count if static_count is not None else int(out_ptr[-1])
    start = _start_indices(counts, random_start)
    return torch.ops.pointcmt.fps(x.contiguous(), ptr, out_ptr, start, num_out)


@serial_torch_ops
def fps_dense(
    x: Tensor,
    num_samples: int,
    lengths: Optional[Tensor] = None,
    random_start: bool = False,
) -> Tensor:
    r"""Farthest point sampling on a padded batch.

    Args:
        x (torch.Tensor): Points ``(B, N, D)``, float32 or float64 (float16 and bfloat16 are computed in float32).
        num_samples (int): Number of samples ``K >= 1`` per cloud.
        lengths (torch.Tensor, optional): Number of valid points of every cloud
            ``(B,)`` (the first ``lengths[b]`` rows of ``x[b]``); ``None``: all
            ``N``. (default: ``None``)
        random_start (bool): Start at a uniformly drawn valid point instead of
            the first one. (default: ``False``)

    Returns:
        torch.Tensor: ``(B, K)`` int64 indices into ``x[b]``, in sampling
        order; a cloud with fewer than ``K`` points gives all of its points
        (in farthest-first order) followed by ``-1``.
    """
    check_points(x, "x", ndim=3)
    x = compute_dtype(x)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int):
        raise TypeError(f"'num_samples' must be an int (got {type(num_samples).__name__})")
    if num_samples < 1:
        raise ValueError(f"'num_samples' must be >= 1 (got {num_samples})")
    if not isinstance(random_start, bool):
        raise TypeError(f"'random_start' must be a bool (got {type(random_start).__name__})")
    num_clouds, num_points, dim = x.shape
    device = x.device
    if lengths is None:
        take = min(num_samples, num_points)
        ptr = torch.arange(num_clouds + 1, device=device) * num_points
        out_ptr = torch.arange(num_clouds + 1, device=device) * take
        counts = torch.full((num_clouds,), num_points, dtype=torch.long, device=device)
        start = _start_indices(counts, random_start)
        idx = torch.ops.pointcmt.fps(x.reshape(-1, dim).contiguous(), ptr, out_ptr, start, num_clouds * take)
        idx = idx.view(num_clouds, take) - ptr[:-1, None]
        if take < num_samples:
            pad = torch.full((num_clouds, num_samples - take), -1, dtype=torch.long, device=device)
            idx = torch.cat([idx, pad], dim=1)
        return idx

    if not isinstance(lengths, Tensor):
        raise TypeError(f"'lengths' must be a torch.Tensor (got {type(lengths).__name__})")
    if lengths.dim() != 1 or lengths.numel() != num_clouds:
        raise ValueError(f"'lengths' must have shape ({num_clouds},), got {tuple(lengths.shape)}")
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool or lengths.is_complex():
        raise TypeError(f"'lengths' must be an integer tensor (got {lengths.dtype})")
    if lengths.device != device:
        raise ValueError(f"'lengths' must be on the same device as 'x' ({device}), got {lengths.device}")
    lengths = lengths.long()
    if not _tracing() and bool(((lengths < 1) | (lengths > num_points)).any()):
        raise ValueError(f"'lengths' must lie in [1, {num_points}] (got {lengths.tolist()})")
    valid = torch.arange(num_points, device=device)[None, :] < lengths[:, None]
    packed = x[valid]
    ptr = torch.zeros(num_clouds + 1, dtype=torch.long, device=device)
    ptr[1:] = torch.cumsum(lengths, 0)
    take = torch.clamp(lengths, max=num_samples)
    out_ptr = torch.zeros(num_clouds + 1, dtype=torch.long, device=device)
    out_ptr[1:] = torch.cumsum(take, 0)
    start = _start_indices(lengths, random_start)
    idx = torch.ops.pointcmt.fps(packed.contiguous(), ptr, out_ptr, start, int(out_ptr[-1]))
    cloud = torch.repeat_interleave(torch.arange(num_clouds, device=device), take)
    slot = torch.arange(idx.numel(), device=device) - out_ptr[:-1][cloud]
    out = torch.full((num_clouds, num_samples), -1, dtype=torch.long, device=device)
    out[cloud, slot] = idx - ptr[:-1][cloud]
    return out
