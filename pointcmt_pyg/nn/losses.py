r"""The three loss terms of PointCMT's stage III (`paper
<https://arxiv.org/abs/2210.04208>`_), as plain functions.

:class:`~pointcmt_pyg.nn.distiller.CrossModalDistiller` calls exactly these; they
are public so that a custom training loop can use them directly.

With :math:`f_s \in \mathbb{R}^{B \times D}` the student's global feature (the
input of its classifier head :math:`h`), :math:`f_t` the frozen teacher's image
feature, :math:`G` the frozen cross-modal point generator (CMPG) and
:math:`\mathcal{N}` the bounding-box normalisation of a point set
(:func:`~pointcmt_pyg.datasets.transforms.normalize_bbox`: centre
:math:`(\min + \max) / 2`, divide by the largest extent):

.. math::

    \mathcal{L} = \mathcal{L}_{ce}
        + w_{fe} \, \frac{1}{B} \sum_b \frac{1}{P} \sum_i
          \sqrt{\lVert \mathcal{N}(G(f_s))_{b,i} - \mathcal{N}(G(f_t))_{b,\sigma_b(i)} \rVert^2}
        + w_{ce} \, T^2 \, \frac{1}{B} \sum_b
          \mathrm{KL}\big(\mathrm{softmax}(h(f_t)_b / T) \,\Vert\,
                          \mathrm{softmax}(h(f_s)_b / T)\big)

where :math:`\sigma_b` is the optimal one-to-one assignment (Earth Mover's
Distance) between the two generated point sets of sample :math:`b`.

Correspondence with the official code (``train_pointcmt.py`` of
ZhanHeshen/PointCMT):

* cross-entropy: the official ``smooth_loss`` gives the true class
  :math:`1 - \varepsilon` and every other class :math:`\varepsilon / (C - 1)`
  (:math:`\varepsilon = 0.2`), averaged over the batch.
  :func:`label_smoothing_cross_entropy` is that loss. (PyTorch's
  ``F.cross_entropy(label_smoothing=e)`` spreads :math:`e / C` over *all*
  classes instead; the two agree for :math:`e = \varepsilon C / (C - 1)`.)
* feature enhancement: ``30 * sqrt(emd(pc_dec, mv_dec)).mean(1).mean()`` after
  normalising both generated clouds; the official normalisation (``scale()``)
  mis-centres the box, ours centres it at ``(min + max) / 2`` and divides by
  the largest extent. Weight 30, a mean over the batch, so no batch-size
  dependence.
* classifier enhancement: ``0.3 * F.kl_div(log p_s, p_t, reduction="sum")``,
  summed over the batch. At the official batch size of 32 this is
  :math:`0.3 \times 32 = 9.6` times the per-sample mean, so our default is
  ``w_ce = 9.6`` with ``reduction="batchmean"``: the same loss at batch 32 and
  a scale that no longer changes with the batch size. The official code has no
  temperature (:math:`T = 1`); the :math:`T^2` factor keeps gradient magnitudes
  comparable across temperatures (Hinton et al., 2015).
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "label_smoothing_cross_entropy",
    "sqrt_emd",
    "feature_enhancement_loss",
    "classifier_enhancement_loss",
    "feature_alignment_loss",
]


def _check_feature_pair(student_feature: Tensor, teacher_feature: Tensor) -> None:
    if student_feature.dim() != 2 or teacher_feature.shape != student_feature.shape:
        raise ValueError(
            "student_feature and teacher_feature must both be [B, D] with the same shape, "
            f"got {tuple(student_feature.shape)} and {tuple(teacher_feature.shape)}")


def label_smoothing_cross_entropy(logits: Tensor, target: Tensor,
                                  smoothing: float = 0.2) -> Tensor:
    r"""Cross-entropy against smoothed one-hot targets, as the official code.

    .. math::

        q_{b,c} = \begin{cases} 1 - \varepsilon & c = y_b \\
                                \varepsilon / (C - 1) & c \neq y_b \end{cases},
        \qquad
        \mathcal{L}_{ce} = -\frac{1}{B} \sum_b \sum_c q_{b,c}
                           \log \mathrm{softmax}(z_b)_c

    Args:
        logits (Tensor): Scores ``[B, C]`` (raw logits or log-probabilities;
            ``log_softmax`` is idempotent).
        target (Tensor): Class indices ``[B]`` (integer dtype).
        smoothing (float): :math:`\varepsilon \in [0, 1)`; ``0`` is plain
            cross-entropy. (default: ``0.2``)

    Returns:
        Tensor: The scalar loss.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be [B, C], got shape {tuple(logits.shape)}")
    if target.dim() != 1 or target.numel() != logits.size(0):
        raise ValueError(f"target must be [B] with B = {logits.size(0)} "
                         f"(rows of logits), got shape {tuple(target.shape)}")
    if not (0.0 <= smoothing < 1.0):
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    num_classes = logits.size(1)
    log_prob = F.log_softmax(logits, dim=1)
    if smoothing == 0.0 or num_classes == 1:
        return F.nll_loss(log_prob, target)
    off = smoothing / (num_classes - 1)
    q = torch.full_like(log_prob, off)
    q.scatter_(1, target.view(-1, 1), 1.0 - smoothing)
    return -(q * log_prob).sum(dim=1).mean()


def sqrt_emd(x: Tensor, y: Tensor, eps: Optional[float] = None) -> Tensor:
    r"""Mean over the batch and the points of the matched point distance:
    :math:`\frac{1}{BP}\sum_{b,i} \lVert x_{b,i} - y_{b,\sigma_b(i)} \rVert`
    with :math:`\sigma_b` the EMD assignment (``pointcmt_pyg.ops.emd_loss``
    with ``sqrt=True``, NaN-safe at zero distance).

    Args:
        x (Tensor): ``[B, P, 3]``.
        y (Tensor): ``[B, P, 3]``.
        eps (float, optional): The assignment's certified relative gap
            (:func:`pointcmt_pyg.ops.emd`; default: its ``DEFAULT_EPS``).
    """
    from ..ops import emd_loss  # imported lazily: ops may be built after us

    if eps is None:
        return emd_loss(x, y, reduction="mean", sqrt=True)
    return emd_loss(x, y, reduction="mean", sqrt=True, eps=eps)


def feature_enhancement_loss(student_feature: Tensor, teacher_feature: Tensor,
                             cmpg: nn.Module, weight: float = 30.0,
                             normalize_points: bool = True,
                             emd_eps: Optional[float] = None) -> Tensor:
    r"""Feature enhancement: the EMD between the point clouds the frozen CMPG
    generates from the student's and from the teacher's feature.

    .. math::

        \mathcal{L}_{fe} = w_{fe} \, \frac{1}{B} \sum_b \frac{1}{P} \sum_i
            \big\lVert \mathcal{N}(G(f_s))_{b,i}
                     - \mathcal{N}(G(f_t))_{b,\sigma_b(i)} \big\rVert

    The teacher branch runs under ``torch.no_grad()``; the student branch
    carries gradient to :math:`f_s` through :math:`G` (whose parameters the
    caller freezes and keeps in eval mode, so its dropout is off).

    Args:
        student_feature (Tensor): ``[B, D]``, already mapped into the CMPG's
            input space.
        teacher_feature (Tensor): ``[B, D]``.
        cmpg (nn.Module): Maps ``[B, D]`` to ``[B, P, 3]``.
        weight (float): :math:`w_{fe}`. (default: ``30.0``, official)
        normalize_points (bool): Apply
            :func:`~pointcmt_pyg.datasets.transforms.normalize_bbox` to both
            generated clouds first, as the official code does (the CMPG is
            trained against normalised shapes). (default: ``True``)
        emd_eps (float, optional): Certified relative gap of the EMD
            assignment (default: :data:`pointcmt_pyg.ops.emd.DEFAULT_EPS`).
            A looser gap is cheaper where the auction needs many rounds
            (CUDA, unrelated clouds early in training).

    Returns:
        Tensor: The weighted scalar loss.
    """
    _check_feature_pair(student_feature, teacher_feature)
    with torch.no_grad():
        teacher_points = cmpg(teacher_feature)
    student_points = cmpg(student_feature)
    if student_points.dim() != 3 or student_points.size(-1) != 3:
        raise ValueError(f"cmpg must return [B, P, 3] points, got shape "
                         f"{tuple(student_points.shape)}")
    if normalize_points:
        from ..datasets.transforms import normalize_bbox  # the one normalisation helper

        student_points = normalize_bbox(student_points)
        teacher_points = normalize_bbox(teacher_points)
    # EMD in float32 even under autocast.
    return weight * sqrt_emd(student_points.float(), teacher_points.detach().float(), eps=emd_eps)


def classifier_enhancement_loss(student_logits: Tensor, teacher_logits: Tensor,
                                weight: float = 9.6,
                                temperature: float = 1.0) -> Tensor:
    r"""Classifier enhancement: KL divergence from the head's prediction on the
    teacher feature to its prediction on the student feature.

    .. math::

        \mathcal{L}_{ce\text{-}enh} = w_{ce} \, T^2 \, \frac{1}{B} \sum_b \sum_c
            p^t_{b,c} \big(\log p^t_{b,c} - \log p^s_{b,c}\big),
        \quad p^t = \mathrm{softmax}(h(f_t) / T),\;
              p^s = \mathrm{softmax}(h(f_s) / T)

    Gradient flows into both arguments (as in the official code, where the
    head also learns from the image features through ``teacher_logits``);
    detach ``teacher_logits`` to treat it as a fixed target.

    Args:
        student_logits (Tensor): :math:`h(f_s)`, ``[B, C]``.
        teacher_logits (Tensor): :math:`h(f_t)`, ``[B, C]``.
        weight (float): :math:`w_{ce}` for a per-sample mean; the official
            ``0.3`` with a sum over a batch of 32 equals ``9.6``.
            (default: ``9.6``)
        temperature (float): :math:`T > 0`. (default: ``1.0``, official)

    Returns:
        Tensor: The weighted scalar loss.
    """
    if student_logits.dim() != 2 or teacher_logits.shape != student_logits.shape:
        raise ValueError(
            "student_logits and teacher_logits must both be [B, C] with the same "
            f"shape, got {tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return weight * temperature**2 * kl


def feature_alignment_loss(student_feature: Tensor, teacher_feature: Tensor,
                           weight: float = 1.0, center: bool = False) -> Tensor:
    r"""Direct feature alignment: one minus the cosine similarity between the
    student's feature (projected to the teacher's size) and the frozen
    teacher's image feature, a per-sample mean.

    .. math::

        \mathcal{L}_{align} = w_{align} \, \frac{1}{B} \sum_b
            \Big(1 - \frac{\langle f_{s,b}, f_{t,b} \rangle}
                            {\lVert f_{s,b} \rVert \, \lVert f_{t,b} \rVert}\Big)

    Not part of PointCMT: it asks the student's feature to point where the
    teacher's does, without the CMPG in between (the CMPG's EMD compares
    coarse point clouds, which may drop what separates classes); with
    ``center=True`` it gave the largest gain measured in this project
    (RESULTS.md, session 22). It is
    the cosine form of feature-regression distillation
    (`FitNets <https://arxiv.org/abs/1412.6550>`_; across modalities:
    `Gupta et al., 2016 <https://arxiv.org/abs/1507.00448>`_). Scale-free, so
    its size does not depend on the feature norms; in ``[0, 2]``.

    The teacher feature is a constant (no gradient); a zero vector on either
    side counts as cosine ``0`` (PyTorch's ``eps`` of ``1e-8``).

    With ``center=True`` each side first loses its batch mean
    (:math:`f_{t,b} - \bar f_t`, likewise the student's), so the cosine
    compares what sets one shape apart from the others in its batch. Image
    features after a ReLU and a max over views are non-negative and share a
    large common direction: on ModelNet10 two *random* shapes' teacher
    features already have ``1 - cos = 0.12`` (RESULTS.md, session 22), so
    without centring most of the term is paid off by matching that common
    direction. A batch of one shape has nothing to be set apart from: there
    the centred term is ``0`` (still connected to the student's graph, so that
    every parameter gets a gradient, as DistributedDataParallel expects), which
    is what a last, one-shape batch of an epoch or of a process's shard gets.

    Args:
        student_feature (Tensor): ``[B, D]``, already in the teacher's size.
        teacher_feature (Tensor): ``[B, D]``.
        weight (float): :math:`w_{align}`. (default: ``1.0``)
        center (bool): Subtract each side's batch mean first. (default:
            ``False``)

    Returns:
        Tensor: The weighted scalar loss.
    """
    _check_feature_pair(student_feature, teacher_feature)
    f_s, f_t = student_feature.float(), teacher_feature.detach().float()
    if center:
        if f_s.size(0) < 2:
            return 0.0 * f_s.sum()           # no other shape to differ from
        f_s, f_t = f_s - f_s.mean(0, keepdim=True), f_t - f_t.mean(0, keepdim=True)
    cos = F.cosine_similarity(f_s, f_t, dim=1, eps=1e-8)
    return weight * (1.0 - cos).mean()
