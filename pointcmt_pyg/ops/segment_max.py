r"""Max over the rows of every segment of a CSR layout, with the winning row:
the aggregation of the dense students' grouping (:mod:`pointcmt_pyg.models._dense`,
issue 9).

For rows ``src [E, C]`` and offsets ``ptr [M + 1]`` (``ptr[0] = 0``,
``ptr[M] = E``, non-decreasing), segment ``m`` is rows ``ptr[m] .. ptr[m + 1] - 1``
and :func:`segment_max` returns, per segment and channel, the maximum and the
first row reaching it (absolute row index; a NaN wins, the first NaN, as in
``torch.max``); an empty segment gets ``0`` and row ``-1``, as PyG's max
aggregation gives a node without edges. It is ``torch_scatter.segment_max_csr``
with the ties and the empty segments pinned down.

The edges of a neighbour search come grouped by centre, so this is
:func:`~pointcmt_pyg.ops.slot_max` without the padded ``[M, W, C]`` block: on
PointNet++'s set abstraction that block's ``-inf`` fill, the copy of the edges
into it and the gather of its used rows in the backward were a quarter of a
training step on CPU (``bench/step_profile.py``). The gradient goes to the
winning row only; ``segment_max_backward`` writes the ``[E, C]`` gradient in one
pass.

Float32 and float64 run on the kernels; other dtypes (float16 and bfloat16
under autocast) on the reference, with the same result.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from . import _ext
from ._reference import register_device_fallback

__all__ = ["segment_max", "segment_max_reference", "segment_max_backward_reference"]

_KERNEL_DTYPES = (torch.float32, torch.float64)


def segment_max_reference(src: Tensor, ptr: Tensor) -> Tuple[Tensor, Tensor]:
    r"""Pure-PyTorch ``pointcmt::segment_max``: the rows laid out in a padded
    ``[M, W, C]`` block (``-inf`` in unused slots), ``torch.max`` over the
    slots, the slot turned into a row; empty segments get ``0`` and ``-1``."""
    num_segments, channels = ptr.numel() - 1, src.shape[1]
    counts = ptr[1:] - ptr[:-1]
    width = max(1, int(counts.max())) if num_segments > 0 else 1
    segment = torch.repeat_interleave(torch.arange(num_segments, device=src.device), counts)
    slot = torch.arange(src.shape[0], device=src.device) - ptr[:-1].index_select(0, segment)
    block = src.new_full((num_segments, width, channels), float("-inf"))
    block[segment, slot] = src
    values, best = block.max(dim=1)
    arg = best + ptr[:-1].unsqueeze(1)
    empty = (counts == 0).unsqueeze(1)
    return values.masked_fill(empty, 0.0), arg.masked_fill(empty, -1)


def segment_max_backward_reference(grad: Tensor, arg: Tensor, ptr: Tensor, num_rows: int) -> Tensor:
    r"""Pure-PyTorch ``pointcmt::segment_max_backward``: ``[num_rows, C]`` with
    ``grad[m, c]`` at row ``arg[m, c]`` (column ``c``) and zeros elsewhere."""
    out = grad.new_zeros((num_rows, grad.shape[1]))
    keep = arg >= 0
    channel = torch.arange(grad.shape[1], device=grad.device).expand_as(arg)
    out[arg[keep], channel[keep]] = grad[keep]
    return out


_ext.register_reference("segment_max", segment_max_reference)
_ext.register_reference("segment_max_backward", segment_max_backward_reference)
register_device_fallback("segment_max", segment_max_reference)
register_device_fallback("segment_max_backward", segment_max_backward_reference)


@torch.library.register_fake("pointcmt::segment_max")
def _segment_max_fake(src: Tensor, ptr: Tensor) -> Tuple[Tensor, Tensor]:
    m, c = ptr.shape[0] - 1, src.shape[1]
    return src.new_empty((m, c)), src.new_empty((m, c), dtype=torch.long)


@torch.library.register_fake("pointcmt::segment_max_backward")
def _segment_max_backward_fake(grad: Tensor, arg: Tensor, ptr: Tensor, num_rows: int) -> Tensor:
    return grad.new_empty((num_rows, grad.shape[1]))


def _setup_context(ctx, inputs, output) -> None:
    src, ptr = inputs
    _, arg = output
    ctx.save_for_backward(arg, ptr)
    ctx.num_rows = src.shape[0]
    ctx.mark_non_differentiable(arg)


def _backward(ctx, grad_values: Tensor, grad_arg):
    arg, ptr = ctx.saved_tensors
    if grad_values is None:
        return None, None
    return torch.ops.pointcmt.segment_max_backward(grad_values.contiguous(), arg, ptr, ctx.num_rows), None


torch.library.register_autograd("pointcmt::segment_max", _backward, setup_context=_setup_context)


def _check(src: Tensor, ptr: Tensor) -> None:
    if not isinstance(src, Tensor):
        raise TypeError(f"'src' must be a tensor, got {type(src).__name__}")
    if not isinstance(ptr, Tensor):
        raise TypeError(f"'ptr' must be a tensor, got {type(ptr).__name__}")
    if src.dim() != 2:
        raise ValueError(f"'src' must have shape (E, C), got {tuple(src.shape)}")
    if not src.is_floating_point():
        raise TypeError(f"'src' must be a floating-point tensor, got {src.dtype}")
    if ptr.dim() != 1 or ptr.numel() < 1 or ptr.dtype != torch.long:
        raise ValueError(f"'ptr' must be a 1-d int64 tensor of M + 1 >= 1 offsets, got {ptr.dtype} "
                         f"{tuple(ptr.shape)}")
    if ptr.device != src.device:
        raise ValueError(f"'ptr' must be on the device of 'src' ({src.device}), got {ptr.device}")
    # The offsets' values: read where they live on the CPU (on a GPU the reads
    # would synchronise, and under torch.compile they are data-dependent; the
    # CPU kernel checks them again, the CUDA kernels trust them).
    if ptr.device.type == "cpu" and not torch.compiler.is_compiling():
        if int(ptr[0]) != 0 or int(ptr[-1]) != src.shape[0]:
            raise ValueError(f"'ptr' must start at 0 and end at the {src.shape[0]} rows of 'src', got "
                             f"{int(ptr[0])} .. {int(ptr[-1])}")
        if ptr.numel() > 1 and bool((ptr[1:] < ptr[:-1]).any()):
            raise ValueError("'ptr' must be non-decreasing")


def segment_max(src: Tensor, ptr: Tensor) -> Tuple[Tensor, Tensor]:
    r"""Per-segment maximum of the rows of ``src``, differentiable.

    Args:
        src (Tensor): ``[E, C]`` floating point.
        ptr (Tensor): ``[M + 1]`` int64 offsets, ``ptr[0] = 0``, ``ptr[M] = E``,
            non-decreasing: segment ``m`` is rows ``ptr[m] .. ptr[m + 1] - 1``.

    Returns:
        ``(values, arg)``, both ``[M, C]``: the maxima (``0`` for an empty
        segment) and the first row reaching each (int64; ``-1`` for an empty
        segment). The gradient of ``values`` goes to that row.

    Raises:
        TypeError, ValueError: For a ``src`` that is not a 2-d float tensor or
            offsets that do not describe its rows (the message names the argument).
    """
    _check(src, ptr)
    if src.dtype not in _KERNEL_DTYPES:
        return _ReferenceSegmentMax.apply(src, ptr)
    return torch.ops.pointcmt.segment_max(src.contiguous(), ptr.contiguous())


class _ReferenceSegmentMax(torch.autograd.Function):
    """The reference with the op's gradient (winning row only), for the dtypes
    the kernels do not take."""

    @staticmethod
    def forward(ctx, src: Tensor, ptr: Tensor):  # type: ignore[override]
        values, arg = segment_max_reference(src, ptr)
        ctx.save_for_backward(arg, ptr)
        ctx.num_rows = src.shape[0]
        ctx.mark_non_differentiable(arg)
        return values, arg

    @staticmethod
    def backward(ctx, grad_values: Tensor, grad_arg):  # type: ignore[override]
        arg, ptr = ctx.saved_tensors
        return segment_max_backward_reference(grad_values, arg, ptr, ctx.num_rows), None
