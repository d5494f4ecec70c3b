r"""Max over the slots of a padded block, with its slot: the aggregation of the
dense students' grouping (:mod:`pointcmt_pyg.models._dense`, issue 9).

For a block ``[M, W, C]`` (``M`` centres, ``W`` neighbour slots, ``C``
channels) :func:`slot_max` returns ``torch.max(block, dim=1)``: the maximum of
every centre and channel and the first slot reaching it (a NaN wins, the
first NaN). The compiled kernels do it in one pass over the block, where
torch's index-returning reduction over a middle axis costs 5-10x its plain
``amax`` on CPU (BENCHMARKS.md). Its gradient goes to the winning slot only
(``slot_max_backward`` writes the whole ``[M, W, C]`` gradient in one pass).

Float32 and float64 run on the kernels; other dtypes (float16 and bfloat16
under autocast) on ``torch.max``, with the same result.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from . import _ext
from ._reference import register_device_fallback

__all__ = ["slot_max", "slot_max_backward", "slot_max_reference", "slot_max_backward_reference"]

_KERNEL_DTYPES = (torch.float32, torch.float64)


def slot_max_reference(block: Tensor) -> Tuple[Tensor, Tensor]:
    r"""Pure-PyTorch ``pointcmt::slot_max``: ``torch.max(block, dim=1)``."""
    values, slot = block.max(dim=1)
    return values, slot


def slot_max_backward_reference(grad: Tensor, slot: Tensor, width: int) -> Tensor:
    r"""Pure-PyTorch ``pointcmt::slot_max_backward``: ``[M, width, C]`` with
    ``grad[m, c]`` at slot ``slot[m, c]`` and zeros elsewhere."""
    out = grad.new_zeros((grad.shape[0], width, grad.shape[1]))
    return out.scatter_(1, slot.unsqueeze(1), grad.unsqueeze(1))


_ext.register_reference("slot_max", slot_max_reference)
_ext.register_reference("slot_max_backward", slot_max_backward_reference)
register_device_fallback("slot_max", slot_max_reference)
register_device_fallback("slot_max_backward", slot_max_backward_reference)


@torch.library.register_fake("pointcmt::slot_max")
def _slot_max_fake(block: Tensor) -> Tuple[Tensor, Tensor]:
    m, _, c = block.shape
    return block.new_empty((m, c)), block.new_empty((m, c), dtype=torch.long)


@torch.library.register_fake("pointcmt::slot_max_backward")
def _slot_max_backward_fake(grad: Tensor, slot: Tensor, width: int) -> Tensor:
    return grad.new_empty((grad.shape[0], width, grad.shape[1]))


def _setup_context(ctx, inputs, output) -> None:
    (block,) = inputs
    _, slot = output
    ctx.save_for_backward(slot)
    ctx.width = block.shape[1]
    ctx.mark_non_differentiable(slot)


def _backward(ctx, grad_values: Tensor, grad_slot):
    (slot,) = ctx.saved_tensors
    if grad_values is None:
        return None
    return torch.ops.pointcmt.slot_max_backward(grad_values.contiguous(), slot, ctx.width)


torch.library.register_autograd("pointcmt::slot_max", _backward, setup_context=_setup_context)


def _check_block(block: Tensor) -> None:
    if not isinstance(block, Tensor):
        raise TypeError(f"'block' must be a tensor, got {type(block).__name__}")
    if block.dim() != 3:
        raise ValueError(f"'block' must have shape (M, W, C), got {tuple(block.shape)}")
    if block.shape[1] < 1:
        raise ValueError("'block' needs at least one slot (W >= 1)")
    if not block.is_floating_point():
        raise TypeError(f"'block' must be a floating-point tensor, got {block.dtype}")


def slot_max(block: Tensor) -> Tuple[Tensor, Tensor]:
    r"""``torch.max(block, dim=1)`` of a block ``[M, W, C]``, differentiable.

    Args:
        block (Tensor): ``[M, W, C]`` floating point, ``W >= 1`` (padded
            slots hold ``-inf``).

    Returns:
        ``(values, slot)``, both ``[M, C]``: the maxima and the first slot
        reaching each (int64). The gradient of ``values`` goes to that slot.

    Raises:
        TypeError, ValueError: For a block that is not a 3-d float tensor with
            at least one slot (the message names ``block``).
    """
    _check_block(block)
    if block.dtype not in _KERNEL_DTYPES:
        return slot_max_reference(block)
    return torch.ops.pointcmt.slot_max(block.contiguous())


def slot_max_backward(grad: Tensor, slot: Tensor, width: int) -> Tensor:
    r"""The gradient of :func:`slot_max` with respect to the block:
    ``[M, width, C]``, ``grad[m, c]`` at ``slot[m, c]``, zeros elsewhere."""
    if grad.dtype not in _KERNEL_DTYPES:
        return slot_max_backward_reference(grad, slot, width)
    return torch.ops.pointcmt.slot_max_backward(grad.contiguous(), slot.contiguous(), int(width))
