"""Tests for pointcmt_pyg.nn.losses: each term against a hand computation."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from pointcmt_pyg.nn.losses import (classifier_enhancement_loss, feature_enhancement_loss,
                                    label_smoothing_cross_entropy, sqrt_emd)


def reference_sqrt_emd(x: np.ndarray, y: np.ndarray) -> float:
    """Exact EMD by the Hungarian method on squared distances; mean matched distance."""
    values = []
    for xb, yb in zip(x, y):
        sq = ((xb[:, None, :] - yb[None, :, :]) ** 2).sum(-1)
        rows, cols = linear_sum_assignment(sq)
        values.append(np.sqrt(sq[rows, cols]).mean())
    return float(np.mean(values))


def reference_bbox_normalize(p: np.ndarray) -> np.ndarray:
    lo, hi = p.min(axis=1, keepdims=True), p.max(axis=1, keepdims=True)
    return (p - (lo + hi) / 2) / (hi - lo).max(axis=2, keepdims=True)


class ReshapeCMPG(nn.Module):
    """A CMPG stand-in: one fixed linear map [B, D] -> [B, P, 3]."""

    def __init__(self, in_dim: int, num_points: int):
        super().__init__()
        self.in_dim, self.num_points = in_dim, num_points
        self.lin = nn.Linear(in_dim, 3 * num_points, bias=False)

    def forward(self, f):
        return self.lin(f).view(f.size(0), self.num_points, 3)


# ----------------------------------------------------------------- CE
def test_label_smoothing_ce_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
    target = torch.tensor([0, 1])
    eps = 0.2
    expected = 0.0
    for row, t in zip(logits.tolist(), target.tolist()):
        lse = math.log(sum(math.exp(v) for v in row))
        logp = [v - lse for v in row]
        expected += -sum(((1 - eps) if c == t else eps / 2) * logp[c] for c in range(3))
    expected /= 2
    got = label_smoothing_cross_entropy(logits, target, eps)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_label_smoothing_ce_relations_to_torch():
    torch.manual_seed(1)
    logits, target = torch.randn(5, 7), torch.randint(0, 7, (5,))
    assert torch.allclose(label_smoothing_cross_entropy(logits, target, 0.0),
                          F.cross_entropy(logits, target))
    # Official eps over C-1 classes == torch's label_smoothing eps * C / (C - 1).
    assert torch.allclose(label_smoothing_cross_entropy(logits, target, 0.2),
                          F.cross_entropy(logits, target, label_smoothing=0.2 * 7 / 6), atol=1e-6)


def test_label_smoothing_ce_bad_input():
    with pytest.raises(ValueError, match="smoothing"):
        label_smoothing_cross_entropy(torch.randn(2, 3), torch.tensor([0, 1]), 1.0)
    with pytest.raises(ValueError, match="target"):
        label_smoothing_cross_entropy(torch.randn(2, 3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="logits"):
        label_smoothing_cross_entropy(torch.randn(6), torch.tensor([0]))


# ----------------------------------------------------------------- KL
def test_classifier_enhancement_matches_hand_computation():
    s = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]])
    t = torch.tensor([[0.0, 2.0, 0.0], [1.0, -1.0, 0.0]])
    for temp in (1.0, 2.5):
        expected = 0.0
        for srow, trow in zip(s.tolist(), t.tolist()):
            ps = np.exp(np.array(srow) / temp); ps /= ps.sum()
            pt = np.exp(np.array(trow) / temp); pt /= pt.sum()
            expected += float((pt * np.log(pt / ps)).sum())
        expected = 9.6 * temp**2 * expected / 2
        got = classifier_enhancement_loss(s, t, weight=9.6, temperature=temp)
        assert got.item() == pytest.approx(expected, rel=1e-5)


def test_classifier_enhancement_default_matches_official_scale_at_batch_32():
    torch.manual_seed(2)
    s, t = torch.randn(32, 40), torch.randn(32, 40)
    official = 0.3 * F.kl_div(s.softmax(1).log(), t.softmax(1), reduction="sum")
    assert torch.allclose(classifier_enhancement_loss(s, t), official, rtol=1e-5)


def test_classifier_enhancement_gradient_reaches_both_sides():
    s = torch.randn(4, 5, requires_grad=True)
    t = torch.randn(4, 5, requires_grad=True)
    classifier_enhancement_loss(s, t).backward()
    assert s.grad.abs().sum() > 0 and t.grad.abs().sum() > 0


def test_classifier_enhancement_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        classifier_enhancement_loss(torch.randn(2, 3), torch.randn(2, 4))
    with pytest.raises(ValueError, match="temperature"):
        classifier_enhancement_loss(torch.randn(2, 3), torch.randn(2, 3), temperature=0.0)


# ----------------------------------------------------------------- points
def test_sqrt_emd_matches_hungarian():
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(2, 10, 3, generator=g), torch.rand(2, 10, 3, generator=g)
    expected = reference_sqrt_emd(x.double().numpy(), y.double().numpy())
    assert sqrt_emd(x, y).item() == pytest.approx(expected, rel=2e-3, abs=1e-4)


def test_sqrt_emd_nan_safe_at_zero():
    x = torch.rand(2, 6, 3, requires_grad=True)
    loss = sqrt_emd(x, x.detach().clone())
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("normalize", [False, True])
def test_feature_enhancement_matches_hand_computation(normalize):
    torch.manual_seed(4)
    cmpg = ReshapeCMPG(in_dim=6, num_points=8).requires_grad_(False)
    f_s = torch.randn(3, 6, requires_grad=True)
    f_t = torch.randn(3, 6, requires_grad=True)
    got = feature_enhancement_loss(f_s, f_t, cmpg, weight=30.0, normalize_points=normalize)
    ps, pt = cmpg(f_s).detach().double().numpy(), cmpg(f_t).detach().double().numpy()
    if normalize:
        ps, pt = reference_bbox_normalize(ps), reference_bbox_normalize(pt)
    expected = 30.0 * reference_sqrt_emd(ps, pt)
    assert got.item() == pytest.approx(expected, rel=2e-3, abs=1e-4)
    got.backward()
    assert f_s.grad is not None and f_s.grad.abs().sum() > 0
    assert f_t.grad is None  # teacher branch has no graph


def test_feature_enhancement_bad_input():
    cmpg = ReshapeCMPG(in_dim=6, num_points=8)
    with pytest.raises(ValueError, match="same shape"):
        feature_enhancement_loss(torch.randn(2, 6), torch.randn(3, 6), cmpg)

    class Flat(nn.Module):
        def forward(self, f):
            return f

    with pytest.raises(ValueError, match=r"\[B, P, 3\]"):
        feature_enhancement_loss(torch.randn(2, 6), torch.randn(2, 6), Flat())


def test_feature_enhancement_emd_eps_reaches_the_op(monkeypatch):
    """``emd_eps`` is the certified gap of the feature term's assignment: it must reach
    the EMD op unchanged, and ``None`` must leave the op's default (1e-3) in place."""
    import sys

    emd_module = sys.modules["pointcmt_pyg.ops.emd"]
    seen = []
    real = emd_module.emd

    def spy(x, y, eps, max_iters):
        seen.append(eps)
        return real(x, y, eps=eps, max_iters=max_iters)

    monkeypatch.setattr(emd_module, "emd", spy)
    torch.manual_seed(5)
    cmpg = ReshapeCMPG(in_dim=6, num_points=64).requires_grad_(False)
    f_s, f_t = torch.randn(2, 6), torch.randn(2, 6)
    loose = feature_enhancement_loss(f_s, f_t, cmpg, emd_eps=0.05)
    tight = feature_enhancement_loss(f_s, f_t, cmpg)
    assert seen == [0.05, 1e-3] and emd_module.DEFAULT_EPS == 1e-3
    # A 5 %-certified assignment moves the (square-rooted) loss by little, never below 0.
    assert loose.item() == pytest.approx(tight.item(), rel=0.05)


def test_feature_alignment_loss_known_values_and_errors():
    from pointcmt_pyg.nn import feature_alignment_loss
    t = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    s_same = t * torch.tensor([[2.0], [0.5], [1.0]])             # same directions, other norms
    s_orth = torch.tensor([[0.0, 5.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert feature_alignment_loss(s_same, t).item() == pytest.approx(0.0, abs=1e-7)
    assert feature_alignment_loss(-s_same, t, weight=3.0).item() == pytest.approx(6.0)
    assert feature_alignment_loss(s_orth, t).item() == pytest.approx(1.0)
    # A per-sample mean: one aligned, one opposite, one orthogonal row -> (0 + 2 + 1) / 3.
    mixed = torch.stack([s_same[0], -s_same[1], s_orth[2]])
    assert feature_alignment_loss(mixed, t).item() == pytest.approx(1.0)
    # The teacher side is a constant.
    s = s_orth.clone().requires_grad_(True)
    tt = t.clone().requires_grad_(True)
    feature_alignment_loss(s, tt).backward()
    assert s.grad is not None and tt.grad is None
    with pytest.raises(ValueError, match="student_feature and teacher_feature"):
        feature_alignment_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="student_feature and teacher_feature"):
        feature_alignment_loss(torch.zeros(3), torch.zeros(3))


def test_feature_alignment_loss_centred():
    from pointcmt_pyg.nn import feature_alignment_loss
    t = torch.tensor([[1.0, 2.0], [3.0, 2.0]])         # batch mean (2, 2): centred rows (-1, 0), (1, 0)
    s = torch.tensor([[5.0, 1.0], [5.0, 3.0]])         # batch mean (5, 2): centred rows (0, -1), (0, 1)
    assert feature_alignment_loss(s, t, center=True).item() == pytest.approx(1.0)     # orthogonal
    s2 = torch.tensor([[0.0, 7.0], [4.0, 7.0]])        # centred rows (-2, 0), (2, 0): aligned
    assert feature_alignment_loss(s2, t, center=True).item() == pytest.approx(0.0, abs=1e-7)
    # One shape alone has no batch to be centred against: the term is 0, and the
    # student's side still gets a (zero) gradient, as DDP needs.
    one = torch.tensor([[3.0, -1.0]], requires_grad=True)
    loss = feature_alignment_loss(one, torch.tensor([[1.0, 2.0]]), weight=4.0, center=True)
    assert loss.item() == 0.0
    loss.backward()
    assert one.grad is not None and torch.equal(one.grad, torch.zeros_like(one))
