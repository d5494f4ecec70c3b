r"""Common base for the point-cloud classification datasets of this package.

Every dataset yields :class:`torch_geometric.data.Data` objects with

* ``pos`` [N, 3] float32 point coordinates,
* ``y`` [1] long class index,
* ``sample_id`` str, stable across runs and machines (caches are keyed by it),
* ``mesh_pos`` [Nv, 3] float32 and ``mesh_face`` [F, 3] long when the sample has a mesh,

and exposes ``classes`` (class names, index = label), ``num_classes``,
``labels`` (all labels, without reading any sample) and ``sample_ids``.
Subsets made with ``dataset[idx]`` (PyG ``index_select``) keep these views
consistent.
"""
import copy
import hashlib
from typing import Callable, List, Optional, Sequence

import torch
from torch import Tensor
from torch_geometric.data import Data, Dataset

__all__ = ["PointCloudDataset", "stable_seed"]


def stable_seed(*parts: object) -> int:
    r"""A 63-bit integer seed derived from :obj:`parts` (independent of Python's
    per-process string hashing, so identical across runs and machines)."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little") >> 1


class PointCloudDataset(Dataset):
    r"""Base class: subclasses fill :obj:`_classes`, :obj:`_labels`,
    :obj:`_sample_ids` and implement :meth:`_load(i)` for the *raw* index
    :obj:`i` (before any subset view)."""

    _classes: List[str]
    _labels: Tensor
    _sample_ids: List[str]

    def __init__(self, root: Optional[str] = None, transform: Optional[Callable] = None,
                 pre_transform: Optional[Callable] = None) -> None:
        super().__init__(root, transform=transform, pre_transform=None, log=False)
        if pre_transform is not None and not callable(pre_transform):
            raise TypeError(f"pre_transform must be callable, got {type(pre_transform).__name__}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")
        # Applied on every load (our datasets read lazily); kept under PyG's name.
        self.pre_transform = pre_transform

    # PyG's Dataset asks for these; nothing is downloaded or processed by the base.
    @property
    def raw_file_names(self) -> List[str]:
        return []

    @property
    def processed_file_names(self) -> List[str]:
        return []

    @property
    def classes(self) -> List[str]:
        r"""Class names; ``classes[y]`` is the name of label ``y``."""
        return list(self._classes)

    @property
    def num_classes(self) -> int:
        r"""Number of classes of the whole dataset (also for subsets)."""
        return len(self._classes)

    @property
    def labels(self) -> Tensor:
        r"""Labels [len(self)] long of this (view of the) dataset, read without loading samples."""
        return self._labels[torch.as_tensor(list(self.indices()), dtype=torch.long)]

    @property
    def sample_ids(self) -> List[str]:
        r"""Sample ids of this (view of the) dataset, in order."""
        return [self._sample_ids[i] for i in self.indices()]

    def len(self) -> int:
        return len(self._sample_ids)

    def get(self, idx: int) -> Data:
        data = self._load(idx)
        if self.pre_transform is not None:
            data = self.pre_transform(data)
        return data

    def _load(self, idx: int) -> Data:  # pragma: no cover - abstract
        raise NotImplementedError

    def class_counts(self) -> Tensor:
        r"""Number of samples per class [num_classes] in this (view of the) dataset."""
        return torch.bincount(self.labels, minlength=self.num_classes)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({len(self)}, num_classes={self.num_classes})"


def make_data(pos: Tensor, label: int, sample_id: str, mesh_pos: Optional[Tensor] = None,
              mesh_face: Optional[Tensor] = None, **extra) -> Data:
    r"""Builds the per-sample :class:`Data` with the package's dtypes."""
    data = Data(pos=pos.to(torch.float32).contiguous(), y=torch.tensor([int(label)], dtype=torch.long))
    data.sample_id = sample_id
    if mesh_pos is not None:
        data.mesh_pos = mesh_pos.to(torch.float32).contiguous()
        data.mesh_face = mesh_face.to(torch.long).contiguous()
    for key, value in extra.items():
        data[key] = value
    return data


def check_sample_ids_unique(sample_ids: Sequence[str], sources: Optional[Sequence[object]] = None) -> None:
    r"""Raises a ValueError naming the first duplicated id (and its two sources, e.g. files)."""
    if len(set(sample_ids)) == len(sample_ids):
        return
    first = {}
    for i, s in enumerate(sample_ids):
        if s in first:
            where = f" ({sources[first[s]]} and {sources[i]})" if sources is not None else ""
            raise ValueError(f"duplicate sample_id {s!r}{where}: sample ids must be unique")
        first[s] = i


def shallow(data: Data) -> Data:
    r"""A shallow copy, so that callers cannot mutate cached samples' attributes."""
    return copy.copy(data)
