r"""Pure-PyTorch Earth Mover's Distance by auction with epsilon scaling: the
reference beside the C++/CUDA kernels and the fallback when the extension is
not built.

Bertsekas' auction (`"Auction algorithms for network flow problems", 1988`)
solves the assignment problem :math:`\min_\sigma \sum_i c_{i\sigma(i)}` with
:math:`c_{ij} = \|x_i - y_j\|^2`. Persons (rows of ``x``) bid for objects
(rows of ``y``); object prices :math:`p_j` are dual variables, so every state
certifies a lower bound on the optimum,

.. math::
    L(p) = \sum_i m_i - \sum_j p_j \le \mathrm{OPT}, \qquad
    m_i = \min_j (c_{ij} + p_j),

and for a bijection the reported ``gap = cost - L(p)`` equals the sum of the
per-person slacks :math:`c_{i\sigma(i)} + p_{\sigma(i)} - m_i \ge 0`; it bounds
``cost - OPT`` from above.

This version bids Jacobi-style (all unassigned persons at once, vectorised over
the batch; the highest bid wins an object, ties to the lowest person). Each
epsilon phase runs to a full assignment; then the duals are *tightened* (every
object's price drops by the largest amount that changes no :math:`m_i`, which
removes slack for free) and the run stops when ``gap <= eps * cost``. Otherwise
the persons whose slack exceeds the next (10x smaller) epsilon bid again.
After ``max_iters`` bidding rounds in total the remaining persons take the
cheapest remaining objects (a bijection still; the gap stays honest).
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

#: First epsilon as a fraction of the squared diagonal of the bounding box.
EPS0_FRACTION = 4e-3
#: Epsilon reduction per phase.
THETA = 10.0


def _complete_greedily(cost: Tensor, person_to_obj: Tensor, obj_to_person: Tensor) -> None:
    """Matches every unassigned person, in order, to the cheapest unassigned
    object (in place). Only used when the bidding budget runs out."""
    B, N, _ = cost.shape
    for b in range(B):
        free_persons = (person_to_obj[b] < 0).nonzero().flatten().tolist()
        if not free_persons:
            continue
        taken = obj_to_person[b] >= 0
        for i in free_persons:
            j = int(cost[b, i].masked_fill(taken, float("inf")).argmin())
            person_to_obj[b, i] = j
            obj_to_person[b, j] = i
            taken[j] = True


def _slacks(cost: Tensor, prices: Tensor, person_to_obj: Tensor, batches: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-person minimum value m_i and slack for the listed batch elements
    (zeros elsewhere), in float64."""
    rowmin = torch.zeros_like(prices)
    slack = torch.zeros_like(prices)
    for b in batches.tolist():
        values = cost[b] + prices[b][None, :]
        rowmin[b] = values.amin(1)
        slack[b] = (values.gather(1, person_to_obj[b][:, None]).squeeze(1) - rowmin[b]).clamp_min(0)
    return rowmin, slack


def _tighten(cost: Tensor, prices: Tensor, rowmin: Tensor, slack: Tensor, person_to_obj: Tensor,
             obj_to_person: Tensor, batches: Tensor) -> None:
    """Lowers every object's price by min_k (c_kj + p_j - m_k) (for the owner k
    this is its slack), in place for the listed batch elements."""
    for b in batches.tolist():
        delta = (cost[b] + prices[b][None, :] - rowmin[b][:, None]).amin(0).clamp_min(0)
        delta = torch.minimum(delta, slack[b][obj_to_person[b]])
        prices[b] -= delta
        slack[b] -= delta[person_to_obj[b]]
        slack[b].clamp_min_(0)


def emd_reference(x: Tensor, y: Tensor, eps: float, max_iters: int) -> Tuple[Tensor, Tensor, Tensor]:
    """The ``pointcmt::emd`` op in plain torch (see :mod:`pointcmt_pyg.ops.emd`)."""
    B, N, D = x.shape
    device = x.device
    if N == 0 or B == 0:
        return x.new_zeros((B, N)), torch.zeros((B, N), dtype=torch.long, device=device), x.new_zeros((B,))
    xd, yd = x.double(), y.double()
    lo = torch.minimum(xd.amin(1), yd.amin(1))
    hi = torch.maximum(xd.amax(1), yd.amax(1))
    ext2 = (hi - lo).square().sum(-1)  # (B,)
    centre = 0.5 * (lo + hi)
    xd = xd - centre[:, None, :]
    yd = yd - centre[:, None, :]
    # (B, N, N) squared distances in float64, summed over coordinates in order.
    cost = (xd[:, :, None, 0] - yd[:, None, :, 0]).square()
    for d in range(1, D):
        cost = cost + (xd[:, :, None, d] - yd[:, None, :, d]).square()

    prices = torch.zeros(B, N, dtype=torch.float64, device=device)
    person_to_obj = torch.full((B, N), -1, dtype=torch.long, device=device)
    obj_to_person = torch.full((B, N), -1, dtype=torch.long, device=device)
    gap = torch.zeros(B, dtype=torch.float64, device=device)
    # Trivial pairs (one point, or all points equal): the identity is optimal.
    trivial = (ext2 == 0) | (N == 1)
    ident = torch.arange(N, device=device).expand(B, N)
    person_to_obj[trivial] = ident[trivial]
    obj_to_person[trivial] = ident[trivial]
    active = ~trivial
    eps_phase = ext2 * EPS0_FRACTION
    target_rel = float(eps)
    rounds = 0
    while bool(active.any()):
        # ---- bidding until every active pair is fully assigned (or out of rounds)
        while True:
            bb, ii = ((person_to_obj < 0) & active[:, None]).nonzero(as_tuple=True)
            if bb.numel() == 0 or rounds >= max_iters:
                break
            rounds += 1
            values = cost[bb, ii] + prices[bb]  # (F, N)
            if N > 1:
                top = values.topk(2, dim=1, largest=False)
                w1, w2, j1 = top.values[:, 0], top.values[:, 1], top.indices[:, 0]
            else:
                w1 = w2 = values[:, 0]
                j1 = torch.zeros_like(ii)
            bid = prices[bb, j1] + (w2 - w1) + eps_phase[bb]
            key = bb * N + j1
            best = torch.full((B * N,), -float("inf"), dtype=torch.float64, device=device)
            best.scatter_reduce_(0, key, bid, reduce="amax")
            wins = bid == best[key]
            winner = torch.full((B * N,), N, dtype=torch.long, device=device)
            winner.scatter_reduce_(0, key[wins], ii[wins], reduce="amin")
            won = winner < N
            wb, wj = won.nonzero(as_tuple=True)[0] // N, won.nonzero(as_tuple=True)[0] % N
            new_owner = winner[won]
            old_owner = obj_to_person[wb, wj]
            evicted = old_owner >= 0
            person_to_obj[wb[evicted], old_owner[evicted]] = -1
            person_to_obj[wb, new_owner] = wj
            obj_to_person[wb, wj] = new_owner
            prices[wb, wj] = best[won]
        exhausted = bool(((person_to_obj < 0) & active[:, None]).any())
        if exhausted:
            _complete_greedily(cost, person_to_obj, obj_to_person)
        # ---- certify: slacks, tightening, stop test
        assigned_cost = cost.gather(2, person_to_obj[..., None]).squeeze(2).sum(1)
        rowmin, slack = _slacks(cost, prices, person_to_obj, active.nonzero().flatten())
        target = target_rel * assigned_cost
        loose = active & (slack.sum(1) > target)
        _tighten(cost, prices, rowmin, slack, person_to_obj, obj_to_person, loose.nonzero().flatten())
        new_gap = slack.sum(1)
        gap = torch.where(active, new_gap, gap)
        precision_floor = 1e-13 * torch.maximum(assigned_cost / N, 1e-6 * ext2)
        finished = (new_gap <= target) | (eps_phase <= precision_floor)
        if exhausted:
            break
        active = active & ~finished
        # ---- next phase: smaller epsilon, release the persons outside eps-CS
        eps_phase = torch.maximum(eps_phase / THETA, precision_floor)
        release = active[:, None] & (slack > eps_phase[:, None])
        rb, ri = release.nonzero(as_tuple=True)
        obj_to_person[rb, person_to_obj[rb, ri]] = -1
        person_to_obj[rb, ri] = -1
        prices -= torch.where(active, prices.amin(1), torch.zeros_like(gap))[:, None]
    dist = (x - y.gather(1, person_to_obj[..., None].expand(-1, -1, D))).square().sum(2)
    gap_out = gap.to(x.dtype)
    # Never round the bound down when storing it in float32.
    gap_out = torch.where(gap_out.double() < gap, torch.nextafter(gap_out, torch.full_like(gap_out, float("inf"))),
                          gap_out)
    return dist, person_to_obj, gap_out
