r"""Classification metrics for PointCMT training (`paper
<https://arxiv.org/abs/2210.04208>`_): confusion matrix, overall accuracy (OA)
and mean class accuracy (mAcc), accumulated over batches and summed across
ranks when training runs under :mod:`torch.distributed`.

Conventions: ``confusion[i, j]`` counts samples of true class ``i`` predicted as
class ``j``. The mean class accuracy averages the per-class recall over the
classes that occur in the evaluated set (a class with no sample has no
accuracy and is left out of the mean, as in the PointNet++/PointCMT
evaluation scripts).

:func:`mcnemar_exact` compares two classifiers on the same samples: the exact
McNemar test on the samples that exactly one of them gets right.
"""
import math
from typing import Dict, Optional, Sequence, Union

import torch
from torch import Tensor

__all__ = [
    "confusion_matrix",
    "overall_accuracy",
    "class_accuracies",
    "mean_class_accuracy",
    "MetricAccumulator",
    "mcnemar_exact",
]


def _as_correct(name: str, value: Union[Tensor, Sequence[bool]]) -> Tensor:
    try:
        flags = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a 1-d sequence of booleans (or 0/1), got "
                        f"{type(value).__name__}") from None
    if flags.dim() != 1:
        raise ValueError(f"{name} must be 1-d (one flag per sample), got shape {list(flags.shape)}")
    if flags.numel() == 0:
        return flags.bool()                  # [] is a float tensor to torch
    if flags.dtype != torch.bool:
        if flags.is_floating_point() or flags.is_complex() or \
                not bool(((flags == 0) | (flags == 1)).all()):
            raise ValueError(f"{name} must hold booleans or 0/1 integers")
        flags = flags.bool()
    return flags


def mcnemar_exact(correct_a: Union[Tensor, Sequence[bool]],
                  correct_b: Union[Tensor, Sequence[bool]]) -> Dict[str, float]:
    r"""Exact McNemar test of two classifiers scored on the same samples
    (`McNemar, 1947 <https://doi.org/10.1007/BF02295996>`_).

    Only the discordant samples count: ``only_a`` that ``a`` gets right and
    ``b`` wrong, ``only_b`` the reverse. Under the null hypothesis (equal
    accuracy) each discordant sample falls either way with probability 1/2, so
    the two-sided p-value is ``min(1, 2 * P[Binomial(n, 1/2) <= min(only_a,
    only_b)])`` with ``n = only_a + only_b`` (``1`` when ``n = 0``), computed
    exactly. A paired test on one test set answers "is this difference beyond
    the chance of which shapes happen to be in the set"; it says nothing about
    the spread over training seeds.

    Args:
        correct_a, correct_b: Per-sample flags (bool, or 0/1 ints), the same
            samples in the same order.

    Returns:
        dict: ``num_samples``, ``only_a``, ``only_b`` and ``p_value``.

    Example:
        >>> mcnemar_exact([1, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0])["p_value"]
        0.0625
    """
    a, b = _as_correct("correct_a", correct_a), _as_correct("correct_b", correct_b)
    if a.numel() != b.numel():
        raise ValueError(f"correct_a and correct_b must score the same samples, got "
                         f"{a.numel()} and {b.numel()} flags")
    only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
    n, k = only_a + only_b, min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1))
    p_value = 1.0 if n == 0 else min(1.0, 2 * tail / (1 << n))   # exact integers, one rounding
    return {"num_samples": int(a.numel()), "only_a": only_a, "only_b": only_b,
            "p_value": p_value}


def _check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return num_classes


def _check_labels(name: str, labels: Tensor, num_classes: int) -> Tensor:
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {labels.dtype}")
    labels = labels.reshape(-1).long()
    if labels.numel() > 0:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name} out of range: found {bad}, expected 0..{num_classes - 1} "
                             f"(num_classes={num_classes})")
    return labels


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    r"""Confusion matrix of integer predictions against integer targets.

    Args:
        pred (Tensor): Predicted classes, any shape (flattened).
        target (Tensor): True classes, the same number of entries as ``pred``.
        num_classes (int): Number of classes ``C``.

    Returns:
        Tensor: ``[C, C]`` int64 counts, ``confusion[true, predicted]``, on the
        device of ``target``.

    Raises:
        ValueError: Sizes differ or a label is outside ``0..C-1``.
        TypeError: Labels are not integer tensors.
    """
    num_classes = _check_num_classes(num_classes)
    pred = _check_labels("pred", pred, num_classes)
    target = _check_labels("target", target, num_classes)
    if pred.numel() != target.numel():
        raise ValueError(f"pred has {pred.numel()} entries but target has {target.numel()}")
    pred = pred.to(target.device)
    flat = target * num_classes + pred
    return torch.bincount(flat, minlength=num_classes * num_classes).view(
        num_classes, num_classes)


def _check_confusion(confusion: Tensor) -> Tensor:
    if not isinstance(confusion, Tensor):
        raise TypeError(f"confusion must be a torch.Tensor, got {type(confusion).__name__}")
    if confusion.dim() != 2 or confusion.size(0) != confusion.size(1):
        raise ValueError(f"confusion must be a square [C, C] matrix, got {list(confusion.shape)}")
    return confusion


def overall_accuracy(confusion: Tensor) -> float:
    r"""OA: correctly classified samples over all samples (``nan`` when empty)."""
    confusion = _check_confusion(confusion)
    total = int(confusion.sum())
    return float(int(confusion.diagonal().sum()) / total) if total > 0 else float("nan")


def class_accuracies(confusion: Tensor) -> Tensor:
    r"""Per-class accuracy (recall) ``[C]`` float64; ``nan`` for a class with no sample."""
    confusion = _check_confusion(confusion).double()
    support = confusion.sum(dim=1)
    acc = confusion.diagonal() / support
    return torch.where(support > 0, acc, torch.full_like(acc, float("nan")))


def mean_class_accuracy(confusion: Tensor) -> float:
    r"""mAcc: the mean of :func:`class_accuracies` over the classes that have
    samples (``nan`` when there is none)."""
    acc = class_accuracies(confusion)
    present = ~torch.isnan(acc)
    return float(acc[present].mean()) if bool(present.any()) else float("nan")


class MetricAccumulator:
    r"""Accumulates loss and (optionally) a confusion matrix over batches.

    The loss is averaged per sample: each batch contributes ``loss * count``,
    where ``count`` is its number of labels (or the count given). Call
    :meth:`reduce` under :mod:`torch.distributed` to sum the counts of every
    rank before :meth:`compute`, so the metrics equal those of one process
    seeing all the shards.

    Args:
        num_classes (int, optional): Number of classes; taken from the width
            of the first logits when ``None``.
    """

    def __init__(self, num_classes: Optional[int] = None) -> None:
        self.num_classes = None if num_classes is None else _check_num_classes(num_classes)
        self.confusion: Optional[Tensor] = None
        self.loss_sum = 0.0
        self.loss_count = 0
        self.num_samples = 0

    def update(self, loss: Optional[Tensor] = None, logits: Optional[Tensor] = None,
               labels: Optional[Tensor] = None, count: Optional[int] = None) -> None:
        r"""Adds one batch.

        Args:
            loss (Tensor, optional): Mean loss of the batch (a scalar).
            logits (Tensor, optional): ``[B, C]`` scores; the prediction is the argmax.
            labels (Tensor, optional): ``[B]`` true classes.
            count (int, optional): Samples in the batch, used to weight the
                loss when there are no labels (default: ``len(labels)`` or 1).
        """
        if logits is not None and labels is not None:
            if not isinstance(logits, Tensor) or logits.dim() != 2:
                shape = list(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
                raise ValueError(f"logits must be a [B, C] tensor, got {shape}")
            if self.num_classes is None:
                self.num_classes = int(logits.size(1))
            elif logits.size(1) != self.num_classes:
                raise ValueError(f"logits have {logits.size(1)} classes, expected "
                                 f"num_classes={self.num_classes}")
            if labels.numel() != logits.size(0):
                raise ValueError(f"labels have {labels.numel()} entries but logits have "
                                 f"{logits.size(0)} rows")
            batch = confusion_matrix(logits.detach().argmax(dim=1), labels.detach(),
                                     self.num_classes).cpu()
            self.confusion = batch if self.confusion is None else self.confusion + batch
        if count is None:
            count = int(labels.numel()) if labels is not None else 1
        self.num_samples += int(count)
        if loss is not None:
            value = float(loss.detach()) if isinstance(loss, Tensor) else float(loss)
            self.loss_sum += value * count
            self.loss_count += int(count)

    def reduce(self, device: Optional[torch.device] = None) -> "MetricAccumulator":
        r"""Sums the state over all ranks (a no-op without an initialised
        process group). Every rank must call it. Returns ``self``."""
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self
        device = torch.device("cpu") if device is None else torch.device(device)
        # Agree on the class count first (a rank may have seen no labelled batch).
        c = torch.tensor([self.num_classes or 0, 1 if self.confusion is not None else 0],
                         dtype=torch.float64, device=device)
        dist.all_reduce(c, op=dist.ReduceOp.MAX)
        num_classes, has_confusion = int(c[0]), bool(c[1])
        scalars = torch.tensor([self.loss_sum, self.loss_count, self.num_samples],
                               dtype=torch.float64, device=device)
        dist.all_reduce(scalars)
        self.loss_sum = float(scalars[0])
        self.loss_count = int(round(float(scalars[1])))
        self.num_samples = int(round(float(scalars[2])))
        if has_confusion:
            if self.num_classes is not None and self.num_classes != num_classes:
                raise ValueError(f"ranks disagree on num_classes ({self.num_classes} here, "
                                 f"{num_classes} elsewhere)")
            self.num_classes = num_classes
            conf = (self.confusion if self.confusion is not None
                    else torch.zeros(num_classes, num_classes, dtype=torch.long)).to(device)
            dist.all_reduce(conf)
            self.confusion = conf.cpu()
        return self

    def compute(self) -> Dict[str, object]:
        r"""``{"loss", "oa", "macc", "confusion", "num_samples"}``; ``loss`` is
        ``None`` without losses, ``oa``/``macc``/``confusion`` ``None`` without labels."""
        loss = self.loss_sum / self.loss_count if self.loss_count > 0 else None
        if self.confusion is None:
            return {"loss": loss, "oa": None, "macc": None, "confusion": None,
                    "num_samples": self.num_samples}
        return {"loss": loss, "oa": overall_accuracy(self.confusion),
                "macc": mean_class_accuracy(self.confusion), "confusion": self.confusion,
                "num_samples": self.num_samples}
