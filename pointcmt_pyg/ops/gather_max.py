r"""Max over gathered rows: the aggregation of the dense EdgeConv whose MLP is a
single linear layer (:mod:`pointcmt_pyg.models._dense`, issue 9).

DGCNN's second EdgeConv is ``max_j W [x_i, x_j - x_i] + b``. Its one linear
layer splits into a per-centre and a per-neighbour term, ``a_i + b_j``, and
rounding is monotone, so ``max_j fl(a_i + b_j) = fl(a_i + max_j b_j)`` exactly:
the max only needs the neighbours' rows ``b_j``. :func:`gather_max` computes
``max_k values[slots[m, k]]`` without building the ``[M, K, C]`` block of
gathered rows (for 32 clouds of 1,024 points, ``k = 20`` and ``C = 128``:
335 MB forward, the same again backward), and returns the winning row, so the
gradient is a scatter-add of ``[M, C]`` values.

Semantics (the reference, the CPU and the CUDA kernels agree): slots ``< 0``
are empty; the row kept is the one of the first slot reaching the maximum
(a NaN wins, the first NaN, as in ``torch.max``); a centre without a valid
slot gets ``0`` and ``arg = -1`` (PyG's max aggregation of no messages).
Float32 and float64 run on the kernels; other dtypes (float16 and bfloat16
under autocast) on the reference, with the same result.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from . import _ext
from ._reference import register_device_fallback

__all__ = ["gather_max", "gather_max_reference"]

_KERNEL_DTYPES = (torch.float32, torch.float64)


def gather_max_reference(values: Tensor, slots: Tensor) -> Tuple[Tensor, Tensor]:
    r"""Pure-PyTorch ``pointcmt::gather_max``: ``torch.max`` over the block
    ``values[slots]`` ``[M, K, C]``, empty slots left out."""
    num_centres, num_slots = slots.shape
    channels = values.shape[1]
    if num_slots == 0:                     # no slots: zeros, still attached to the graph of values
        return (values.new_zeros((num_centres, channels)) + 0 * values.sum(),
                torch.full((num_centres, channels), -1, dtype=torch.long, device=values.device))
    valid = slots >= 0
    block = values[slots.clamp(min=0)]                                     # [M, K, C]
    block = block.masked_fill(~valid.unsqueeze(2), float("-inf"))
    best, slot = block.max(dim=1)
    # An empty slot can only win a column whose valid entries are all -inf (or
    # a centre without valid slots): the first valid slot holds that maximum.
    first_valid = valid.to(torch.uint8).argmax(dim=1, keepdim=True)        # [M, 1]
    slot_valid = valid.gather(1, slot)
    slot = torch.where(slot_valid, slot, first_valid.expand_as(slot))
    arg = slots.gather(1, slot)
    has_slot = valid.any(dim=1, keepdim=True)
    best = torch.where(has_slot, best, best.new_zeros(()))
    arg = torch.where(has_slot, arg, arg.new_full((), -1))
    return best, arg


_ext.register_reference("gather_max", gather_max_reference)
register_device_fallback("gather_max", gather_max_reference)


@torch.library.register_fake("pointcmt::gather_max")
def _gather_max_fake(values: Tensor, slots: Tensor) -> Tuple[Tensor, Tensor]:
    m, c = slots.shape[0], values.shape[1]
    return values.new_empty((m, c)), values.new_empty((m, c), dtype=torch.long)


def _setup_context(ctx, inputs, output) -> None:
    values, _ = inputs
    _, arg = output
    ctx.save_for_backward(arg)
    ctx.num_rows = values.shape[0]
    ctx.mark_non_differentiable(arg)


def _scatter_grad(grad: Tensor, arg: Tensor, num_rows: int) -> Tensor:
    grad = torch.where(arg >= 0, grad, grad.new_zeros(()))
    return grad.new_zeros((num_rows, grad.shape[1])).scatter_add_(0, arg.clamp(min=0), grad)


def _backward(ctx, grad_out: Tensor, grad_arg):
    (arg,) = ctx.saved_tensors
    if grad_out is None:
        return None, None
    return _scatter_grad(grad_out, arg, ctx.num_rows), None


torch.library.register_autograd("pointcmt::gather_max", _backward, setup_context=_setup_context)


def _check(values: Tensor, slots: Tensor) -> None:
    if not isinstance(values, Tensor):
        raise TypeError(f"'values' must be a tensor, got {type(values).__name__}")
    if not isinstance(slots, Tensor):
        raise TypeError(f"'slots' must be a tensor, got {type(slots).__name__}")
    if values.dim() != 2:
        raise ValueError(f"'values' must have shape (N, C), got {tuple(values.shape)}")
    if not values.is_floating_point():
        raise TypeError(f"'values' must be a floating-point tensor, got {values.dtype}")
    if slots.dim() != 2 or slots.dtype != torch.long:
        raise ValueError(f"'slots' must be an int64 tensor of shape (M, K), got {slots.dtype} "
                         f"{tuple(slots.shape)}")
    if slots.device != values.device:
        raise ValueError(f"'slots' is on {slots.device} but 'values' on {values.device}")
    if not torch.compiler.is_compiling() and slots.numel() and int(slots.max()) >= values.shape[0]:
        raise ValueError(f"'slots' must index rows of 'values' (-1 = empty, at most {values.shape[0] - 1}), "
                         f"got {int(slots.max())}")


def gather_max(values: Tensor, slots: Tensor) -> Tuple[Tensor, Tensor]:
    r"""``max_k values[slots[m, k]]`` for every centre ``m``, differentiable
    in ``values``.

    Args:
        values (Tensor): ``[N, C]`` floating point, the rows to gather.
        slots (Tensor): ``[M, K]`` int64 row indices into ``values``, ``-1``
            for an empty slot (e.g. :func:`~pointcmt_pyg.ops.knn_padded`).

    Returns:
        ``(out, arg)``, both ``[M, C]``: the maxima and the row of ``values``
        reaching each (int64), from the first slot that does; ``0`` and ``-1``
        for a centre without a valid slot. The gradient of ``out`` goes to
        ``values[arg]``.

    Raises:
        TypeError, ValueError: For arguments of the wrong kind, shape or
            device, or a slot past the rows of ``values`` (the message names
            the argument).
    """
    _check(values, slots)
    if values.dtype not in _KERNEL_DTYPES:
        return gather_max_reference(values, slots)
    return torch.ops.pointcmt.gather_max(values.contiguous(), slots.contiguous())
