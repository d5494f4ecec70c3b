r"""The dense grouping path of the students' set abstraction and EdgeConv
(issue 9): the same math as PyG's message passing with max aggregation,
computed without a scatter.

PyG computes a PointNet / EdgeConv layer edge by edge: it gathers the inputs
of every edge, runs the shared MLP on them, and takes the maximum per centre
with ``scatter_reduce(..., "amax")``, whose backward (ties, counts, a gather
and several passes over all edges) was half of a PointNet++ training step
here. This path:

1. **splits the first linear layer** (exact algebra): PointNet++'s
   ``W [x_j, pos_j - pos_i] + b = (W_x x_j + W_p pos_j) + (b - W_p pos_i)``
   and EdgeConv's ``W [x_i, x_j - x_i] + b = ((W_a - W_b) x_i + b) + W_b x_j``
   run once per point and once per centre, then are gathered per edge (``K``
   times fewer multiplications in the widest layer);
2. runs the rest of the MLP on the same edge rows as PyG (so batch norm sees
   exactly the same values and statistics);
3. takes the max over every centre's edges, which the neighbour search
   leaves as contiguous rows (:func:`pointcmt_pyg.ops.segment_max` over their
   CSR offsets: the max and its row in one pass, no padded ``[centres, K, C]``
   block, whose fill, copy and backward gather were a quarter of a PointNet++
   step); its backward sends each gradient to the first maximal edge. PyG's
   ``amax`` splits the gradient evenly between exactly equal maxima; the
   parameters' gradients are the same either way (tied edges have identical
   inputs), and only exactly duplicated neighbours can see a different share
   of an input gradient.
4. when the MLP is **one linear layer** (DGCNN's second EdgeConv), skips the
   block altogether: rounding is monotone, so ``max_j fl(a_i + b_j) =
   fl(a_i + max_j b_j)`` bit for bit, and :func:`pointcmt_pyg.ops.gather_max`
   takes the max of the neighbours' rows ``b_j`` in place (forward 8x, backward
   3x faster than gather, add and the max over the edges on 32 x 1,024 points,
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
from ..ops.segment_max import segment_max

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


def slot_edges(slots: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    r"""The edges of padded neighbour slots ``[M, K]`` (``-1`` = empty).

    Returns:
        ``(centre, neighbour, ptr)``: the ``E`` edges in row-major order (so
        every centre's edges are contiguous, in slot order) and their CSR
        offsets ``ptr [M + 1]``: centre ``m`` has edges ``ptr[m] .. ptr[m + 1] - 1``.
    """
    num_centres = slots.shape[0]
    valid = slots >= 0
    counts = valid.sum(dim=1)
    ptr = torch.zeros(num_centres + 1, dtype=torch.long, device=slots.device)
    torch.cumsum(counts, 0, out=ptr[1:])
    centre = torch.arange(num_centres, device=slots.device)
    if bool(valid.all()):
        return centre.repeat_interleave(slots.shape[1]), slots.reshape(-1), ptr
    return centre.repeat_interleave(counts), slots[valid], ptr


def max_over_slots(edge_out: Tensor, ptr: Tensor) -> Tensor:
    r"""Per-centre maximum of the edge outputs ``[E, C]`` laid out by
    :func:`slot_edges` (a centre without any neighbour gets ``0``, as PyG's
    max aggregation). The gradient of each output goes to the first edge
    reaching the maximum."""
    return segment_max(edge_out, ptr)[0]


def dense_point_conv(mlp: MLP, x_src: Optional[Tensor], pos_src: Tensor, pos_dst: Tensor,
                     slots: Tensor) -> Tensor:
    r"""``PointNetConv(mlp)`` with max aggregation over the neighbour slots
    ``[M, K]`` of every centre ``pos_dst[i]``: ``max_j mlp([x_j, pos_j - pos_i])``."""
    centre, neighbour, ptr = slot_edges(slots)
    w_x, w_pos, bias = split_first_linear(mlp, 0 if x_src is None else x_src.shape[1])
    per_point = F.linear(pos_src, w_pos)
    if x_src is not None:
        per_point = per_point + F.linear(x_src, w_x)
    # b - W_p pos_i, computed with -W_p: the same numbers (negation is exact)
    # and an add instead of a subtraction, whose backward negates an [E, C]
    # gradient (3 % of a PointNet++ step).
    per_centre = F.linear(pos_dst, -w_pos, bias)
    h = per_point.index_select(0, neighbour) + per_centre.index_select(0, centre)
    return max_over_slots(mlp_after_first_linear(mlp, h), ptr)


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
    centre, neighbour, ptr = slot_edges(slots)
    h = per_centre.index_select(0, centre) + per_neighbour.index_select(0, neighbour)
    return max_over_slots(mlp_after_first_linear(mlp, h), ptr)


def dense_global_max_pool(x: Tensor, batch: Tensor, size: Optional[int] = None) -> Tensor:
    r"""``torch_geometric.nn.global_max_pool(x, batch, size)`` for a sorted
    ``batch`` vector (as every PyG ``Batch`` has), as a max over each cloud's
    contiguous rows.

    The forward is PyG's; the backward sends each gradient to the first row
    reaching the maximum (:func:`pointcmt_pyg.ops.segment_max` over each
    cloud's rows) instead of through ``scatter_reduce``'s backward,
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
    ptr = torch.zeros(num_clouds + 1, dtype=torch.long, device=batch.device)
    torch.cumsum(torch.bincount(batch, minlength=num_clouds), 0, out=ptr[1:])
    return max_over_slots(x, ptr)


def global_max_pool_for(grouping: str):
    r"""The global max pooling of a model built with ``grouping``:
    :func:`dense_global_max_pool` for ``"dense"``, PyG's for the reference."""
    return dense_global_max_pool if check_grouping(grouping) == "dense" else global_max_pool
