r"""The dense grouping path of the students' set abstraction and EdgeConv
(issue 9): the same math as PyG's message passing with max aggregation,
computed without a scatter.

PyG computes a PointNet / EdgeConv layer edge by edge: it gathers the inputs
of every edge, runs the shared MLP on them, and takes the maximum per centre
with ``scatter_reduce(..., "amax")``, whose backward (ties, counts, a gather
and several passes over all edges) was half of a PointNet++ training step
here. This path:

1. **splits the first linear layer** (exact algebra): PointNet++'s
   ``W [x_j, pos_j - pos_i] + b = (W_x x_j + W_p pos_j) - (W_p pos_i - b)``
   and EdgeConv's ``W [x_i, x_j - x_i] + b = ((W_a - W_b) x_i + b) + W_b x_j``
   run once per point and once per centre, then are gathered per edge (``K``
   times fewer multiplications in the widest layer);
2. runs the rest of the MLP on the same edge rows as PyG (so batch norm sees
   exactly the same values and statistics);
3. writes the edge outputs into the padded ``[centres, K, C]`` block of the
   neighbour search (empty slots ``-inf``) and takes ``max`` over ``K``
   (:func:`pointcmt_pyg.ops.slot_max`: the max and its slot in one pass); its
   backward sends each gradient to the first maximal slot. PyG's ``amax``
   splits the gradient evenly between exactly equal maxima; the parameters'
   gradients are the same either way (tied edges have identical inputs), and
   only exactly duplicated neighbours can see a different share of an input
   gradient.
4. when the MLP is **one linear layer** (DGCNN's second EdgeConv), skips the
   block altogether: rounding is monotone, so ``max_j fl(a_i + b_j) =
   fl(a_i + max_j b_j)`` bit for bit, and :func:`pointcmt_pyg.ops.gather_max`
   takes the max of the neighbours' rows ``b_j`` in place (forward 8x, backward
   3x faster than gather, add and :func:`slot_max` on 32 x 1,024 points,
   ``k = 20``, 128 channels). Its gradient goes to the first neighbour with the
   largest ``b_j``; the block path picks the first with the largest rounded sum,
   which differs only where two different ``b_j`` round to the same sum.

Only the standard MLPs of the models here (``torch_geometric.nn.MLP`` with
ReLU after batch norm or no norm, and a plain last layer) take this path;
:func:`supports_dense` says whether an MLP does.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Identity, Module, ReLU

from torch_geometric.nn import MLP, global_max_pool

from ..ops.gather_max import gather_max
from ..ops.slot_max import slot_max, slot_max_backward

__all__ = ["supports_dense", "mlp_after_first_linear", "split_first_linear",
           "slot_edges", "max_over_slots", "dense_point_conv", "dense_edge_conv",
           "dense_global_max_pool", "global_max_pool_for", "GROUPINGS"]

#: The implementations of the grouping layers: ``"dense"`` (this module) and
#: ``"message_passing"`` (PyG's, the reference the tests compare against).
GROUPINGS = ("dense", "message_passing")


def check_grouping(grouping: str) -> str:
    if grouping not in GROUPINGS:
        raise ValueError(f"'grouping' must be one of {GROUPINGS} (got {grouping!r})")
    return grouping


def supports_dense(mlp: Module) -> bool:
    r"""Whether ``mlp`` is a ``torch_geometric.nn.MLP`` this path computes
    exactly: ReLU (or no activation) after a norm that works row by row."""
    if not isinstance(mlp, MLP) or mlp.act_first:
        return False
    if mlp.act is not None and not isinstance(mlp.act, ReLU):
        return False
    return not mlp.supports_norm_batch or all(isinstance(n, Identity) for n in mlp.norms)


def split_first_linear(mlp: MLP, split: int) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    r"""``(W[:, :split], W[:, split:], b)`` of the MLP's first linear layer."""
    lin = mlp.lins[0]
    weight = lin.weight
    return weight[:, :split], weight[:, split:], lin.bias


def is_single_linear(mlp: MLP) -> bool:
    r"""Whether ``mlp`` is one linear layer and nothing after it that acts per
    edge (no norm, no activation, no dropout while training)."""
    return (len(mlp.lins) == 1 and len(mlp.norms) == 0
            and (not mlp.training or float(mlp.dropout[-1]) == 0.0))


def mlp_after_first_linear(mlp: MLP, h: Tensor) -> Tensor:
    r"""The rest of ``mlp`` applied to ``h``, the output of its first linear
    layer (the steps of ``torch_geometric.nn.MLP.forward`` after ``lins[0]``)."""
    num_hidden = len(mlp.norms)   # plain_last: one norm (or Identity) per hidden layer
    for i in range(len(mlp.lins)):
        if i > 0:
            h = mlp.lins[i](h)
        if i < num_hidden:
            h = mlp.norms[i](h)
            if mlp.act is not None:
                h = mlp.act(h)
            h = F.dropout(h, p=mlp.dropout[i], training=mlp.training)
    if mlp.plain_last:
        h = F.dropout(h, p=mlp.dropout[-1], training=mlp.training)
    return h


def slot_edges(slots: Tensor) -> Tuple[Tensor, Tensor, Optional[Tensor], int]:
    r"""The edges of padded neighbour slots ``[M, K]`` (``-1`` = empty,
    neighbours first in every row).

    Returns:
        ``(centre, neighbour, flat, width)``: the ``E`` edges in row-major
        order, their flat positions in the ``[M, width]`` block (``None`` when
        every slot is used), and ``width``, the used columns (the largest
        neighbour count).
    """
    num_centres = slots.shape[0]
    valid = slots >= 0
    counts = valid.sum(dim=1)
    width = max(1, int(counts.max())) if num_centres else 1
    if width < slots.shape[1]:
        slots, valid = slots[:, :width], valid[:, :width]
    if bool(valid.all()):
        centre = torch.arange(num_centres, device=slots.device).repeat_interleave(width)
        return centre, slots.reshape(-1), None, width
    flat = valid.reshape(-1).nonzero().squeeze(1)
    return flat // width, slots.reshape(-1)[flat], flat, width


class _SlotMax(torch.autograd.Function):
    """Max over the slots of every centre (``pointcmt::slot_max``: the max and
    its slot in one pass); the backward writes the block's gradient in one
    pass (``pointcmt::slot_max_backward``) and, for a padded block, keeps the
    rows of the real edges. No ``[M, K, C]`` zero fill, no scatter."""

    @staticmethod
    def forward(ctx, edge_out: Tensor, num_centres: int, width: int,  # type: ignore[override]
                flat: Optional[Tensor]) -> Tensor:
        channels = edge_out.shape[1]
        if flat is None:
            block = edge_out.view(num_centres, width, channels)
        else:
            block = edge_out.new_full((num_centres * width, channels), float("-inf"))
            block.index_put_((flat,), edge_out)
            block = block.view(num_centres, width, channels)
        values, slot = slot_max(block)                                   # [M, C] each
        if flat is not None:
            # Neighbours are left-packed: a centre has an edge iff its slot 0 does.
            has_edge = torch.zeros(num_centres, dtype=torch.bool, device=flat.device)
            has_edge[flat[flat % width == 0] // width] = True
            if not bool(has_edge.all()):      # a centre without neighbours: 0, as in PyG
                values = values.masked_fill(~has_edge.unsqueeze(1), 0.0)
        ctx.save_for_backward(slot, flat)
        ctx.width = width
        return values

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        slot, flat = ctx.saved_tensors
        grad_block = slot_max_backward(grad, slot, ctx.width)           # [M, W, C]
        grad_edges = grad_block.view(-1, grad.shape[1])
        if flat is not None:                  # padded slots (and empty centres) drop out
            grad_edges = grad_edges.index_select(0, flat)
        return grad_edges, None, None, None


def max_over_slots(edge_out: Tensor, num_centres: int, width: int,
                   flat: Optional[Tensor]) -> Tensor:
    r"""Per-centre maximum of the edge outputs ``[E, C]`` laid out by
    :func:`slot_edges` (empty slots are ``-inf``; a centre without any
    neighbour gets ``0``, as PyG's max aggregation). The gradient of each
    output goes to the first edge reaching the maximum."""
    return _SlotMax.apply(edge_out, num_centres, width, flat)


def dense_point_conv(mlp: MLP, x_src: Optional[Tensor], pos_src: Tensor, pos_dst: Tensor,
                     slots: Tensor) -> Tensor:
    r"""``PointNetConv(mlp)`` with max aggregation over the neighbour slots
    ``[M, K]`` of every centre ``pos_dst[i]``: ``max_j mlp([x_j, pos_j - pos_i])``."""
    centre, neighbour, flat, width = slot_edges(slots)
    w_x, w_pos, bias = split_first_linear(mlp, 0 if x_src is None else x_src.shape[1])
    per_point = F.linear(pos_src, w_pos)
    if x_src is not None:
        per_point = per_point + F.linear(x_src, w_x)
    per_centre = F.linear(pos_dst, w_pos, None if bias is None else -bias)
    h = per_point.index_select(0, neighbour) - per_centre.index_select(0, centre)
    return max_over_slots(mlp_after_first_linear(mlp, h), slots.shape[0], width, flat)


def dense_edge_conv(mlp: MLP, x_src: Tensor, x_dst: Tensor, slots: Tensor) -> Tensor:
    r"""``EdgeConv(mlp)`` with max aggregation over the neighbour slots
    ``[M, K]`` of every centre ``x_dst[i]``: ``max_j mlp([x_i, x_j - x_i])``."""
    w_i, w_diff, bias = split_first_linear(mlp, x_dst.shape[1])
    per_centre = F.linear(x_dst, w_i - w_diff, bias)
    per_neighbour = F.linear(x_src, w_diff)
    if is_single_linear(mlp):
        # max_j fl(a_i + b_j) = fl(a_i + max_j b_j): rounding is monotone, so
        # the max needs only the neighbours' rows, and no [E, C] block.
        best, arg = gather_max(per_neighbour, slots)
        out = per_centre + best
        return torch.where(arg[:, :1] >= 0, out, out.new_zeros(())) if out.shape[1] else out
    centre, neighbour, flat, width = slot_edges(slots)
    h = per_centre.index_select(0, centre) + per_neighbour.index_select(0, neighbour)
    return max_over_slots(mlp_after_first_linear(mlp, h), slots.shape[0], width, flat)


def dense_global_max_pool(x: Tensor, batch: Tensor, size: Optional[int] = None) -> Tensor:
    r"""``torch_geometric.nn.global_max_pool(x, batch, size)`` for a sorted
    ``batch`` vector (as every PyG ``Batch`` has), as a max over each cloud's
    rows laid out in a padded ``[clouds, largest cloud, C]`` block (a plain
    ``view`` when all clouds have the same size).

    The forward is PyG's; the backward sends each gradient to the first row
    reaching the maximum instead of through ``scatter_reduce``'s backward,
    which was 12 % of a DGCNN training step (1,024 points x 1,024 channels
    per cloud). Exactly equal maxima in one cloud and channel get all of
    the gradient on the first of them rather than an equal share. An
    unsorted ``batch`` falls back to PyG's pooling; an empty cloud gives 0.
    """
    if size is None:
        num_clouds = int(batch.max()) + 1 if batch.numel() else 0
    else:
        num_clouds = int(size)
    if batch.numel() == 0 or num_clouds == 0 or x.dim() != 2 or bool((batch[1:] < batch[:-1]).any()):
        return global_max_pool(x, batch, size=num_clouds)
    counts = torch.bincount(batch, minlength=num_clouds)
    width = int(counts.max())
    if bool((counts == width).all()):
        flat = None
    else:
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(batch.numel(), device=batch.device) - starts.index_select(0, batch)
        flat = batch * width + rank
    return max_over_slots(x, num_clouds, width, flat)


def global_max_pool_for(grouping: str):
    r"""The global max pooling of a model built with ``grouping``:
    :func:`dense_global_max_pool` for ``"dense"``, PyG's for the reference."""
    return dense_global_max_pool if check_grouping(grouping) == "dense" else global_max_pool
