r"""ScanObjectNN (real scanned objects, 15 classes) from the official h5 files.

The official release (`Uy et al., ICCV 2019 <https://hkust-vgd.github.io/scanobjectnn/>`_;
distributed after a terms-of-use form, so never downloaded here) holds
``h5_files/main_split[_nobg]/*.h5`` with ``data`` [N, 2048, 3] float32,
``label`` [N] and, in some files, ``mask`` [N, 2048] (per-point object /
background labels). The variants used in PointCMT
(`Yan et al., NeurIPS 2022 <https://arxiv.org/abs/2210.04208>`_) are:

=============  ==========================================================
``OBJ_ONLY``   ``main_split_nobg/{training,test}_objectdataset.h5``
``OBJ_BG``     ``main_split/{training,test}_objectdataset.h5``
``PB_T50_RS``  ``main_split/{training,test}_objectdataset_augmentedrot_scale75.h5``
=============  ==========================================================

The up axis of ScanObjectNN is y (index 1).
"""
import os
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch
from torch_geometric.data import Data

from .base import PointCloudDataset, make_data
from .root import default_data_root

__all__ = ["ScanObjectNN", "SCANOBJECTNN_CLASSES", "SCANOBJECTNN_FILES"]

#: Class names in label order (the official order, not alphabetical).
SCANOBJECTNN_CLASSES = ["bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf", "table",
                        "bed", "pillow", "sink", "sofa", "toilet"]

#: Variant -> (sub-folder, training file, test file), as in the official release.
SCANOBJECTNN_FILES = {
    "OBJ_ONLY": ("main_split_nobg", "training_objectdataset.h5", "test_objectdataset.h5"),
    "OBJ_BG": ("main_split", "training_objectdataset.h5", "test_objectdataset.h5"),
    "PB_T50_RS": ("main_split", "training_objectdataset_augmentedrot_scale75.h5",
                  "test_objectdataset_augmentedrot_scale75.h5"),
}


class ScanObjectNN(PointCloudDataset):
    r"""ScanObjectNN classification data read from one official h5 file (kept in memory).

    Args:
        root: The ``h5_files`` folder of the release, or a folder containing it
            (:obj:`None`: ``<data root>/ScanObjectNN``, see
            :func:`~pointcmt_pyg.datasets.default_data_root`).
        variant: ``"OBJ_ONLY"``, ``"OBJ_BG"`` or ``"PB_T50_RS"``.
        split: ``"train"`` or ``"test"``.
        num_points: Keep the first :obj:`num_points` of the stored 2048 points
            (the convention of the official code); :obj:`None` keeps all.
        transform: PyG transform applied on every access.
        pre_transform: Transform applied on every access before :obj:`transform`.

    Each sample is ``Data(pos, y, sample_id="<variant>/<split>/<index>")`` plus
    ``mask`` [num_points] long when the file has one. The index is the row in
    the (immutable) official file, hence stable.

    Raises:
        FileNotFoundError: The h5 file is not under :obj:`root` (the message
            says where it should be).
        ValueError: Naming the file, when it is not readable h5, lacks
            ``data``/``label``, has inconsistent shapes or labels outside
            ``0..14``.
    """

    def __init__(self, root: Optional[Union[str, os.PathLike]] = None, variant: str = "PB_T50_RS",
                 split: str = "train", num_points: Optional[int] = 1024, transform: Optional[Callable] = None,
                 pre_transform: Optional[Callable] = None) -> None:
        if variant not in SCANOBJECTNN_FILES:
            raise ValueError(f"variant must be one of {sorted(SCANOBJECTNN_FILES)}, got {variant!r}")
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if num_points is not None and (isinstance(num_points, bool) or not isinstance(num_points, int) or num_points <= 0):
            raise ValueError(f"num_points must be a positive int or None, got {num_points!r}")
        root_path = (default_data_root() / "ScanObjectNN") if root is None else Path(root).expanduser()
        super().__init__(str(root_path), transform=transform, pre_transform=pre_transform)
        self.variant, self.split, self.num_points = variant, split, num_points
        sub, train_file, test_file = SCANOBJECTNN_FILES[variant]
        name = train_file if split == "train" else test_file
        candidates = [root_path / sub / name, root_path / "h5_files" / sub / name, root_path / name]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            raise FileNotFoundError(
                f"ScanObjectNN {variant} {split} file not found: expected {candidates[0]} (or under "
                f"{root_path / 'h5_files'}). Request the official h5_files from "
                f"https://hkust-vgd.github.io/scanobjectnn/ and extract them there.")
        self.path = path
        data, label, mask = self._read(path)
        if num_points is not None:
            if num_points > data.shape[1]:
                raise ValueError(f"num_points={num_points} exceeds the {data.shape[1]} points per object in {path}")
            data = data[:, :num_points]
            mask = mask[:, :num_points] if mask is not None else None
        self._pos = torch.from_numpy(np.ascontiguousarray(data[..., :3], dtype=np.float32))
        self._mask = torch.from_numpy(mask.astype(np.int64)) if mask is not None else None
        self._classes = list(SCANOBJECTNN_CLASSES)
        self._labels = torch.from_numpy(label)
        self._sample_ids = [f"{variant}/{split}/{i:05d}" for i in range(len(label))]

    @staticmethod
    def _read(path: Path):
        try:
            import h5py
        except ImportError:  # pragma: no cover - depends on the install
            raise ImportError("ScanObjectNN needs h5py (pip install h5py, or pointcmt-pyg[pointcmt])") from None
        try:
            with h5py.File(path, "r") as f:
                keys = list(f.keys())
                if "data" not in f or "label" not in f:
                    raise ValueError(f"{path}: expected h5 datasets 'data' and 'label', found {keys}")
                data, label = np.asarray(f["data"][()]), np.asarray(f["label"][()])
                mask = np.asarray(f["mask"][()]) if "mask" in f else None
        except OSError as e:
            raise ValueError(f"{path}: not a readable h5 file ({e})") from None
        if data.ndim != 3 or data.shape[2] < 3 or data.shape[0] == 0:
            raise ValueError(f"{path}: 'data' must have shape [N, P, >=3] with N > 0, got {list(data.shape)}")
        if not np.issubdtype(data.dtype, np.floating) or not np.isfinite(data[..., :3]).all():
            raise ValueError(f"{path}: 'data' must hold finite floats, got dtype {data.dtype}")
        label = label.reshape(-1) if label.ndim == 2 and label.shape[1] == 1 else label
        if label.ndim != 1 or label.shape[0] != data.shape[0]:
            raise ValueError(f"{path}: 'label' must have shape [{data.shape[0]}], got {list(label.shape)}")
        if np.issubdtype(label.dtype, np.floating) and np.all(label == np.round(label)):
            label = label.astype(np.int64)
        if not np.issubdtype(label.dtype, np.integer):
            raise ValueError(f"{path}: 'label' must hold integers, got dtype {label.dtype}")
        label = label.astype(np.int64)
        bad = (label < 0) | (label >= len(SCANOBJECTNN_CLASSES))
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"{path}: label {int(label[i])} of object {i} does not match the "
                             f"{len(SCANOBJECTNN_CLASSES)} ScanObjectNN classes (0..{len(SCANOBJECTNN_CLASSES) - 1})")
        if mask is not None and mask.shape != data.shape[:2]:
            raise ValueError(f"{path}: 'mask' must have shape {list(data.shape[:2])}, got {list(mask.shape)}")
        return data, label, mask

    def _load(self, idx: int) -> Data:
        extra = {"mask": self._mask[idx].clone()} if self._mask is not None else {}
        return make_data(self._pos[idx].clone(), int(self._labels[idx]), self._sample_ids[idx], **extra)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({len(self)}, variant={self.variant!r}, split={self.split!r})"
