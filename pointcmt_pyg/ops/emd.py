r"""Earth Mover's Distance between equal-size point sets, the loss of the
PointCMT CMPG and of its feature enhancement (`Yan et al., NeurIPS 2022
<https://arxiv.org/abs/2210.04208>`_).

:func:`emd` solves the assignment problem between ``x[b]`` and ``y[b]``
(``N`` points each, any ``N``, any dimension) with squared Euclidean costs by
an auction with epsilon scaling, and returns a *certified* result: a true
bijection, the squared distance of every point to its match, and an upper bound
on how far the total cost is from the optimum (from the auction prices, which
are dual variables). It is differentiable with respect to both inputs (the
assignment is held fixed, as usual for EMD losses):
:math:`\partial d_i / \partial x_i = 2 (x_i - y_{\sigma(i)})` and the mirror
for :math:`y`.

:func:`emd_loss` turns it into a loss, with a NaN-free square root at zero
distance (the official code's ``sqrt`` gives NaN gradients there).
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from . import _ext
from ._threads import serial_torch_ops
from ._reference import register_device_fallback
from ._reference_emd import emd_reference
from ._validation import check_points, check_same, compute_dtype

#: Default target relative gap: stop once the certified gap <= eps * cost.
DEFAULT_EPS = 1e-3
#: Default cap on bidding rounds over all epsilon phases.
DEFAULT_MAX_ITERS = 100_000

_ext.register_reference("emd", emd_reference)
register_device_fallback("emd", emd_reference)


@torch.library.register_fake("pointcmt::emd")
def _emd_fake(x: Tensor, y: Tensor, eps: float, max_iters: int) -> Tuple[Tensor, Tensor, Tensor]:
    B, N = x.shape[0], x.shape[1]
    return x.new_empty((B, N)), x.new_empty((B, N), dtype=torch.long), x.new_empty((B,))


def _setup_context(ctx, inputs, output) -> None:
    x, y, _, _ = inputs
    _, assignment, _ = output
    ctx.save_for_backward(x, y, assignment)
    ctx.mark_non_differentiable(assignment, output[2])


def _backward(ctx, grad_dist: Tensor, grad_assignment, grad_gap):
    x, y, assignment = ctx.saved_tensors
    grad_x = grad_y = None
    if grad_dist is None:
        return None, None, None, None
    matched = y.gather(1, assignment[..., None].expand(-1, -1, y.shape[2]))
    g = 2.0 * (x - matched) * grad_dist[..., None]
    if ctx.needs_input_grad[0]:
        grad_x = g
    if ctx.needs_input_grad[1]:
        grad_y = torch.zeros_like(y).scatter_add(1, assignment[..., None].expand(-1, -1, y.shape[2]), -g)
    return grad_x, grad_y, None, None


torch.library.register_autograd("pointcmt::emd", _backward, setup_context=_setup_context)


@serial_torch_ops
def emd(x: Tensor, y: Tensor, eps: float = DEFAULT_EPS,
        max_iters: int = DEFAULT_MAX_ITERS) -> Tuple[Tensor, Tensor, Tensor]:
    r"""Earth Mover's Distance (optimal bijection, squared Euclidean cost).

    Args:
        x (Tensor): ``(B, N, D)`` float32/float64 points (float16 and bfloat16
            are solved in float32, and the distances returned in float32).
        y (Tensor): ``(B, N, D)`` points, same dtype and device.
        eps (float): Target relative gap: the auction stops when its certified
            gap is at most ``eps * cost`` for every pair. (default: ``1e-3``;
            ``0`` runs to the arithmetic's resolution: ~1e-8 relative for
            float32 inputs on CPU, whose bids are computed in float32, ~1e-13
            for float64)
        max_iters (int): Safety cap on the bidding work, in rounds of at most
            ``N`` bids (the CPU kernel bids one point at a time and stops after
            ``max_iters * N`` bids; the CUDA kernel and the pure-torch
            reference count synchronous rounds). When reached, each point
            still unmatched takes the nearest point still free (in index
            order): a bijection all the same, and ``gap`` stays an honest
            bound on how far from optimal the result is. The default never
            binds in practice.

    Returns:
        ``(dist, assignment, gap)``: ``dist`` ``(B, N)`` squared distance of
        ``x[b, i]`` to its match ``y[b, assignment[b, i]]``; ``assignment``
        ``(B, N)`` int64, a permutation of ``0..N-1`` per row; ``gap`` ``(B,)``
        an upper bound on ``dist[b].sum() - optimal cost``.

    Raises:
        TypeError / ValueError: naming the argument, for non-tensors, wrong
            rank, dtype, mixed dtypes or devices, different shapes, NaN/Inf,
            empty sets, ``eps < 0`` or ``max_iters < 1``.
    """
    for value, name in ((x, "x"), (y, "y")):
        if not isinstance(value, Tensor):
            raise TypeError(f"'{name}' must be a torch.Tensor (got {type(value).__name__})")
    check_same(x, y, "x", "y", dim=False)  # devices first: the finiteness check reads values
    check_points(x, "x", ndim=3)
    check_points(y, "y", ndim=3)
    check_same(x, y, "x", "y")
    if x.shape != y.shape:
        raise ValueError(f"'x' and 'y' must have the same shape (B, N, D) (got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}): the EMD here matches equal-size sets")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise ValueError(f"'eps' must be a number >= 0 (got {eps!r})")
    if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1:
        raise ValueError(f"'max_iters' must be an int >= 1 (got {max_iters!r})")
    x, y = compute_dtype(x), compute_dtype(y)    # half precision: solved in float32
    return torch.ops.pointcmt.emd(x.contiguous(), y.contiguous(), float(eps), int(max_iters))


def _safe_sqrt(d: Tensor) -> Tensor:
    """sqrt with a zero (not NaN/inf) gradient at 0."""
    positive = d > 0
    return torch.where(positive, torch.where(positive, d, torch.ones_like(d)).sqrt(), torch.zeros_like(d))


@serial_torch_ops
def emd_loss(x: Tensor, y: Tensor, reduction: str = "mean", sqrt: bool = False,
             eps: float = DEFAULT_EPS, max_iters: int = DEFAULT_MAX_ITERS) -> Tensor:
    r"""EMD loss: the mean over points of the squared distance to the matched
    point (``sqrt=True``: of the distance, as PointCMT), per cloud, reduced.

    Args:
        x, y (Tensor): ``(B, N, D)`` point sets (see :func:`emd`).
        reduction (str): ``"mean"`` over the batch, ``"sum"``, or ``"none"``
            (``(B,)``).
        sqrt (bool): Use distances instead of squared distances; the gradient
            at zero distance is zero, never NaN.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"'reduction' must be 'mean', 'sum' or 'none' (got {reduction!r})")
    dist = emd(x, y, eps=eps, max_iters=max_iters)[0]
    if sqrt:
        dist = _safe_sqrt(dist)
    per_cloud = dist.mean(1)
    if reduction == "mean":
        return per_cloud.mean()
    if reduction == "sum":
        return per_cloud.sum()
    return per_cloud
