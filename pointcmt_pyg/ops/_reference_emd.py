r"""Pure-PyTorch Earth Mover's Distance by auction with epsilon scaling: the
reference beside the C++/CUDA kernels and the fallback when the extension is
not built.

Bertsekas' auction (`"Auction algorithms for network flow problems", 1988`)
solves the assignment problem :math:`\min_\sigma \sum_i c_{i\sigma(i)}` with
:math:`c_{ij} = \|x_i - y_j\|^2`. Persons (rows of ``x``) bid for objects
(rows of ``y``); object prices :math:`p_j` are dual variables, so every state
certifies a lower bound on the optimum,

.. math::
    L(p) = \sum_i \min_j (c_{ij} + p_j) - \sum_j p_j \le \mathrm{OPT},

and the reported ``gap = cost - L(p)`` bounds ``cost - OPT`` from above. This
version bids Jacobi-style (all unassigned persons at once, vectorised over the
batch) and runs each epsilon phase to a full assignment; it stops as soon as
``gap <= eps * cost`` (or ``max_iters`` bidding rounds in total, then the
remaining persons are matched to the remaining objects by cheapest cost, which
keeps the assignment a bijection; the gap stays honest).
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor


def _dual_bound(cost: Tensor, prices: Tensor) -> Tensor:
    """L(p) per batch element, in float64."""
    return (cost + prices[:, None, :]).amin(dim=2).sum(1) - prices.sum(1)


def _complete(cost: Tensor, person_to_obj: Tensor) -> None:
    """Matches every unassigned person to the cheapest unassigned object, in
    person order (in place). Never needed when the auction converges."""
    B, N, _ = cost.shape
    for b in range(B):
        free_p = (person_to_obj[b] < 0).nonzero().flatten().tolist()
        if not free_p:
            continue
        taken = torch.zeros(N, dtype=torch.bool, device=cost.device)
        taken[person_to_obj[b][person_to_obj[b] >= 0]] = True
        for i in free_p:
            row = cost[b, i].masked_fill(taken, float("inf"))
            j = int(row.argmin())
            person_to_obj[b, i] = j
            taken[j] = True


def emd_reference(x: Tensor, y: Tensor, eps: float, max_iters: int) -> Tuple[Tensor, Tensor, Tensor]:
    """The ``pointcmt::emd`` op in plain torch (see :mod:`pointcmt_pyg.ops.emd`)."""
    B, N, _ = x.shape
    device = x.device
    if N == 0 or B == 0:
        return (x.new_zeros((B, N)), torch.zeros((B, N), dtype=torch.long, device=device), x.new_zeros((B,)))
    xd, yd = x.double(), y.double()
    # (B, N, N) squared distances in float64 (the reported ones are recomputed
    # exactly from the matched pairs below).
    cost = (xd.square().sum(-1)[:, :, None] + yd.square().sum(-1)[:, None, :]
            - 2.0 * xd @ yd.transpose(1, 2)).clamp_min_(0)
    prices = torch.zeros(B, N, dtype=torch.float64, device=device)
    person_to_obj = torch.full((B, N), -1, dtype=torch.long, device=device)
    obj_to_person = torch.full((B, N), -1, dtype=torch.long, device=device)
    persons = torch.arange(N, device=device).expand(B, N)
    scale = float(cost.amax())
    eps_phase = max(scale / 8.0, 1e-300)
    target_rel = max(float(eps), 0.0)
    rounds = 0
    done = torch.zeros(B, dtype=torch.bool, device=device)  # frozen: certified or exhausted
    gap = torch.zeros(B, dtype=torch.float64, device=device)
    while True:
        # A new epsilon phase restarts the assignment of the unfinished pairs (prices are kept).
        person_to_obj[~done] = -1
        obj_to_person[~done] = -1
        while rounds < max_iters:
            free = (person_to_obj < 0) & ~done[:, None]
            if not bool(free.any()):
                break
            rounds += 1
            value = -(cost + prices[:, None, :])  # benefit minus price
            if N > 1:
                top2 = value.topk(2, dim=2)
                best_val, best_obj, second_val = top2.values[..., 0], top2.indices[..., 0], top2.values[..., 1]
            else:
                best_val = value[..., 0]
                best_obj = torch.zeros((B, 1), dtype=torch.long, device=device)
                second_val = best_val
            bid = prices.gather(1, best_obj) + (best_val - second_val) + eps_phase
            bid = torch.where(free, bid, torch.full_like(bid, -float("inf")))
            # The highest bid wins each object (ties: the lowest person index).
            best_bid = torch.full((B, N), -float("inf"), dtype=torch.float64, device=device)
            best_bid.scatter_reduce_(1, best_obj, bid, reduce="amax")
            is_winner = free & (bid == best_bid.gather(1, best_obj))
            winner = torch.full((B, N), N, dtype=torch.long, device=device)
            winner.scatter_reduce_(1, best_obj, torch.where(is_winner, persons, N), reduce="amin")
            bb, jj = (winner < N).nonzero(as_tuple=True)
            new_owner = winner[bb, jj]
            old_owner = obj_to_person[bb, jj]
            evicted = old_owner >= 0
            person_to_obj[bb[evicted], old_owner[evicted]] = -1
            person_to_obj[bb, new_owner] = jj
            obj_to_person[bb, jj] = new_owner
            prices[bb, jj] = best_bid[bb, jj]
        exhausted = bool(((person_to_obj < 0) & ~done[:, None]).any())
        if exhausted:  # out of bidding rounds: complete the bijection honestly
            _complete(cost, person_to_obj)
        assigned_cost = cost.gather(2, person_to_obj[..., None]).squeeze(2).sum(1)
        gap = torch.where(done, gap, (assigned_cost - _dual_bound(cost, prices)).clamp_min(0))
        done = done | (gap <= target_rel * assigned_cost) | (eps_phase <= 1e-12 * scale)
        if exhausted or bool(done.all()) or rounds >= max_iters:
            break
        eps_phase /= 5.0
    dist = (x - y.gather(1, person_to_obj[..., None].expand(-1, -1, x.shape[2]))).square().sum(2)
    return dist, person_to_obj, gap.to(x.dtype)
