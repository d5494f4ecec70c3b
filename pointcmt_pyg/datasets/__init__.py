r"""Point-cloud datasets and transforms yielding PyG ``Data(pos, y, sample_id[, mesh_pos, mesh_face])``.

Used by the PointCMT pipeline (`Yan et al., NeurIPS 2022 <https://arxiv.org/abs/2210.04208>`_).
"""
from .root import DATA_ENV, default_data_root, resolve_root
from .base import PointCloudDataset, stable_seed
from .transforms import (
    Jitter,
    NormalizeBoundingBox,
    RandomRotateUp,
    RandomScale,
    RandomScan,
    RandomShift,
    SamplePoints,
    SampleSurface,
    normalize_bbox,
    sample_surface,
    scan_points,
)
from .split import dataset_labels, stratified_folds, stratified_split, subset, train_val_split
from .folder import PointCloudFolder, read_shape
from .modelnet import MODELNET10_CLASSES, MODELNET40_CLASSES, ModelNet, read_off
from .scanobjectnn import SCANOBJECTNN_CLASSES, SCANOBJECTNN_FILES, ScanObjectNN
from .synthetic import SYNTHETIC_CLASSES, SyntheticShapes

__all__ = [
    "DATA_ENV",
    "default_data_root",
    "resolve_root",
    "PointCloudDataset",
    "stable_seed",
    "normalize_bbox",
    "sample_surface",
    "scan_points",
    "NormalizeBoundingBox",
    "RandomScan",
    "RandomScale",
    "RandomShift",
    "Jitter",
    "RandomRotateUp",
    "SamplePoints",
    "SampleSurface",
    "stratified_folds",
    "stratified_split",
    "train_val_split",
    "subset",
    "dataset_labels",
    "PointCloudFolder",
    "read_shape",
    "read_off",
    "ModelNet",
    "MODELNET10_CLASSES",
    "MODELNET40_CLASSES",
    "ScanObjectNN",
    "SCANOBJECTNN_CLASSES",
    "SCANOBJECTNN_FILES",
    "SyntheticShapes",
    "SYNTHETIC_CLASSES",
]

# The teacher-feature cache is owned by another module; export it when present.
try:
    from .features import *  # noqa: F401,F403
    from .features import __all__ as _features_all
except ImportError:  # pragma: no cover - module not written yet
    _features_all = []
__all__ += list(_features_all)
