r"""Training for the three PointCMT stages (`paper <https://arxiv.org/abs/2210.04208>`_):
one :class:`Trainer` (progress bars, OA/mAcc, seeds, atomic checkpoints, exact
resume, selection on a validation split, ``torchrun``/DDP), metrics, and the
stage functions :func:`train_teacher`, :func:`train_cmpg`, :func:`train_student`.
"""
from .checkpoint import atomic_save, atomic_write_text, load_checkpoint
from .metrics import (MetricAccumulator, class_accuracies, confusion_matrix,
                      mcnemar_exact, mean_class_accuracy, overall_accuracy)
from .cpu_memory import retain_freed_memory
from .trainer import History, Trainer, default_step, epoch_seed, seed_everything
from .stages import StageResult, train_cmpg, train_student, train_teacher
from .plots import plot_confusion_matrix, plot_training_curves
from . import distributed

__all__ = [
    "Trainer",
    "History",
    "default_step",
    "seed_everything",
    "epoch_seed",
    "atomic_save",
    "atomic_write_text",
    "load_checkpoint",
    "confusion_matrix",
    "overall_accuracy",
    "class_accuracies",
    "mean_class_accuracy",
    "mcnemar_exact",
    "MetricAccumulator",
    "StageResult",
    "train_teacher",
    "train_cmpg",
    "train_student",
    "plot_training_curves",
    "plot_confusion_matrix",
    "retain_freed_memory",
    "distributed",
]
