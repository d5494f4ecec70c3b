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

5. when the MLP **ends in batch norm and ReLU** (PointNet++ MSG's shared
   MLPs, as the official ones), takes the max *before* them: per channel,
   batch norm is ``a z + b`` with ``a = gamma / sqrt(var + eps)``, and for
   ``a >= 0`` both it and ReLU are non-decreasing, so
   ``max_j relu(a z_j + b) = relu(a max_j z_j + b)`` (a channel with
   ``gamma < 0`` takes its minimum instead: the last linear layer's rows of
   those channels are negated, an exact operation, and the max taken). The
   statistics still come from every edge, computed by torch's own batch-norm
   statistics kernel (the mean bit for bit that of ``F.batch_norm``), but the
   normalisation and ReLU run on the ``[centres, C]`` maxima instead of the
   ``[E, C]`` edges, and the backward of the statistics and of the max is one
   pass over the edges (:func:`stats_and_segment_max`). Only an edge where the
   maximum is tied can receive its gradient in a different share, as in 3.

The ReLU of every hidden layer on the edges runs in place on the norm's (or
linear layer's) fresh output, whose backward does not read it: one ``[E, C]``
block fewer per layer, the same numbers.

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
           "slot_edges", "max_over_slots", "stats_and_segment_max", "mlp_max",
           "dense_point_conv", "dense_edge_conv", "dense_global_max_pool", "dense_global_mlp_max",
           "global_max_pool_for", "GROUPINGS"]

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


def mlp_after_first_linear(mlp: MLP, h: Tensor, num_layers: Optional[int] = None) -> Tensor:
    r"""The rest of ``mlp`` applied to ``h``, the output of its first linear
    layer (the steps of ``torch_geometric.nn.MLP.forward`` after ``lins[0]``);
    with ``num_layers``, only its first ``num_layers`` layers (each with its
    norm, activation and dropout)."""
    num_hidden = len(mlp.norms)   # plain_last: one norm (or Identity) per hidden layer
    for i in range(len(mlp.lins) if num_layers is None else num_layers):
        if i > 0:
            h = mlp.lins[i](h)
        if i < num_hidden:
            fresh = i > 0 or not isinstance(mlp.norms[i], Identity)
            h = mlp.norms[i](h)
            if mlp.act is not None:
                # In place on a tensor made here (the norm's or the linear
                # layer's output, which their backward does not read): one
                # [E, C] block fewer per layer, the same numbers.
                h = torch.relu_(h) if fresh else mlp.act(h)
            h = F.dropout(h, p=mlp.dropout[i], training=mlp.training)
    if mlp.plain_last and num_layers is None:
        h = F.dropout(h, p=mlp.dropout[-1], training=mlp.training)
    return h


class _StatsAndSegmentMax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: Tensor, ptr: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        # torch's own batch-norm statistics (the mean bit for bit those of
        # F.batch_norm, which the message-passing reference runs): one pass
        # over the rows, 20x faster than var_mean over dim 0 on [10^6, 96].
        mean, var = torch.batch_norm_update_stats(z, None, None, 0.0)
        best, arg = segment_max(z, ptr)
        ctx.save_for_backward(z, mean, arg)
        ctx.mark_non_differentiable(arg)
        return mean, var, best, arg

    @staticmethod
    def backward(ctx, grad_mean: Tensor, grad_var: Tensor, grad_best: Tensor,
                 _grad_arg: Optional[Tensor]) -> Tuple[Optional[Tensor], None]:
        if not ctx.needs_input_grad[0]:
            return None, None
        z, mean, arg = ctx.saved_tensors
        n = z.shape[0]
        # d mean / dz = 1 / n, d var / dz = 2 (z - mean) / n: one pass
        # g_z = z * a + (grad_mean / n - mean * a) with a = 2 grad_var / n.
        a = grad_var * (2.0 / n)
        # (The [1, C] term expanded to z's shape: the same numbers, and 4x
        # faster than addcmul's broadcast of a [1, C] first argument.)
        grad_z = torch.addcmul((grad_mean / n - mean * a).unsqueeze(0).expand_as(z), z, a.unsqueeze(0))
        # Each maximum's gradient goes to its (first) edge; empty segments have none.
        found = arg >= 0
        grad_z.scatter_add_(0, arg.clamp_min(0), torch.where(found, grad_best, grad_best.new_zeros(())))
        return grad_z, None


def stats_and_segment_max(z: Tensor, ptr: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""The per-channel mean and biased variance of the edge rows ``z [E, C]``
    (batch norm's training statistics) and their per-segment maximum and
    winning row (:func:`pointcmt_pyg.ops.segment_max` over the CSR offsets
    ``ptr``), with one backward pass over ``z`` for all three.

    Returns:
        ``(mean [C], var [C], max [M, C], arg [M, C])``.
    """
    return _StatsAndSegmentMax.apply(z, ptr)


def _batch_norm_of(norm: Module) -> Optional[Module]:
    module = getattr(norm, "module", norm)       # PyG's BatchNorm wraps torch's
    return module if isinstance(module, torch.nn.BatchNorm1d) and module.affine else None


def _commutes_with_max(mlp: MLP, h: Tensor) -> bool:
    r"""Whether :func:`mlp_max` may take the max before ``mlp``'s last batch
    norm and ReLU: a last layer ``Linear -> BatchNorm1d (affine) -> ReLU``
    without dropout, at least one layer before it (the split first layer is
    not negated), more than one row, and float32 or float64 (under bf16 and
    float16 autocast the normalisation of the edges is kept as it is)."""
    if mlp.plain_last or len(mlp.lins) < 2 or len(mlp.norms) != len(mlp.lins):
        return False
    if not isinstance(mlp.act, ReLU) or (mlp.training and float(mlp.dropout[-1]) != 0.0):
        return False
    if h.dtype not in (torch.float32, torch.float64) or h.shape[0] < 2:
        return False
    if torch.is_autocast_enabled(h.device.type):
        return False
    return _batch_norm_of(mlp.norms[-1]) is not None


def mlp_max(mlp: MLP, h: Tensor, ptr: Tensor) -> Tensor:
    r"""``max_over_slots(mlp_after_first_linear(mlp, h), ptr)``: the rest of
    ``mlp`` on the edge rows ``h`` (the output of its first linear layer), then
    the maximum over every segment of ``ptr``; when the MLP ends in batch norm
    and ReLU, with the maximum taken before them (point 5 of this module)."""
    if not _commutes_with_max(mlp, h):
        return max_over_slots(mlp_after_first_linear(mlp, h), ptr)
    last = len(mlp.lins) - 1
    h = mlp_after_first_linear(mlp, h, num_layers=last)
    bn = _batch_norm_of(mlp.norms[last])
    lin = mlp.lins[last]
    # Channels with gamma < 0 take their minimum: negate their rows of the
    # last linear layer (exact), so that every channel takes a maximum.
    flip = torch.where(bn.weight < 0, -1.0, 1.0).to(h.dtype)
    z = F.linear(h, lin.weight * flip.unsqueeze(1), None if lin.bias is None else lin.bias * flip)
    use_batch_stats = bn.training or bn.running_mean is None
    if use_batch_stats:
        mean, var, best, arg = stats_and_segment_max(z, ptr)
        if bn.training and bn.track_running_stats and bn.running_mean is not None:
            with torch.no_grad():
                bn.num_batches_tracked.add_(1)
                factor = (1.0 / float(bn.num_batches_tracked) if bn.momentum is None
                          else bn.momentum)
                n = z.shape[0]
                bn.running_mean.mul_(1 - factor).add_(mean * flip, alpha=factor)
                bn.running_var.mul_(1 - factor).add_(var * (n / (n - 1)), alpha=factor)
    else:
        best, arg = segment_max(z, ptr)
        mean, var = bn.running_mean * flip, bn.running_var
    scale = bn.weight * flip * torch.rsqrt(var + bn.eps)
    out = torch.relu((best - mean) * scale + bn.bias)
    # A centre without edges gets 0, as PyG's max aggregation.
    return torch.where(arg[:, :1] >= 0, out, out.new_zeros(())) if out.shape[1] else out


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
    return mlp_max(mlp, h, ptr)


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
    return mlp_max(mlp, h, ptr)


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
    ptr = _cloud_ptr(batch, num_clouds) if x.dim() == 2 else None
    if ptr is None:
        return global_max_pool(x, batch, size=num_clouds)
    return max_over_slots(x, ptr)


def _cloud_ptr(batch: Tensor, num_clouds: int) -> Optional[Tensor]:
    r"""CSR offsets of each cloud's rows for a sorted ``batch`` (else ``None``)."""
    if batch.numel() == 0 or num_clouds == 0 or bool((batch[1:] < batch[:-1]).any()):
        return None
    ptr = torch.zeros(num_clouds + 1, dtype=torch.long, device=batch.device)
    torch.cumsum(torch.bincount(batch, minlength=num_clouds), 0, out=ptr[1:])
    return ptr


def dense_global_mlp_max(mlp: Module, x: Tensor, batch: Tensor, size: Optional[int] = None) -> Tensor:
    r"""``global_max_pool(mlp(x), batch, size)`` for a sorted ``batch``, with
    the maximum taken before the MLP's last batch norm and ReLU where it
    ends in them (:func:`mlp_max`); otherwise :func:`dense_global_max_pool`
    of ``mlp(x)``."""
    num_clouds = (int(batch.max()) + 1 if batch.numel() else 0) if size is None else int(size)
    ptr = _cloud_ptr(batch, num_clouds) if x.dim() == 2 else None
    if ptr is None or not supports_dense(mlp):
        return dense_global_max_pool(mlp(x), batch, size=num_clouds)
    return mlp_max(mlp, mlp.lins[0](x), ptr)


def global_max_pool_for(grouping: str):
    r"""The global max pooling of a model built with ``grouping``:
    :func:`dense_global_max_pool` for ``"dense"``, PyG's for the reference."""
    return dense_global_max_pool if check_grouping(grouping) == "dense" else global_max_pool
