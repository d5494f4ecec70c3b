r"""Neural-network pieces of PointCMT (`paper <https://arxiv.org/abs/2210.04208>`_):
the multi-view image teacher, the cross-modal point generator (CMPG), the
:class:`CrossModalDistiller` that wraps any PyG classifier, and the losses."""
from .teacher import (RESNET_BACKBONES, MultiViewTeacher, adapt_first_conv, load_teacher,
                      save_teacher)
from .cmpg import CMPG, load_cmpg, save_cmpg
from .losses import (classifier_enhancement_loss, feature_alignment_loss,
                     feature_enhancement_loss, label_smoothing_cross_entropy, sqrt_emd)
from .distiller import CrossModalDistiller, DistillerOutput, find_head

__all__ = [
    "MultiViewTeacher",
    "RESNET_BACKBONES",
    "adapt_first_conv",
    "save_teacher",
    "load_teacher",
    "CMPG",
    "save_cmpg",
    "load_cmpg",
    "CrossModalDistiller",
    "DistillerOutput",
    "find_head",
    "label_smoothing_cross_entropy",
    "sqrt_emd",
    "feature_enhancement_loss",
    "classifier_enhancement_loss",
    "feature_alignment_loss",
]
