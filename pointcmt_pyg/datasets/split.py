r"""Seeded, stratified train/validation carve-outs of a training split.

Model selection must never look at a test split: carve a validation set from
the training data instead, with the same class proportions
(:func:`stratified_split`) and get PyG dataset views of both parts
(:func:`train_val_split`).
"""
from typing import Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Dataset

__all__ = ["stratified_split", "stratified_folds", "train_val_split", "subset", "dataset_labels"]


def _as_label_tensor(labels: Union[Tensor, np.ndarray, Sequence[int]]) -> Tensor:
    if isinstance(labels, Tensor):
        t = labels
    elif isinstance(labels, (np.ndarray, list, tuple, range)):
        t = torch.as_tensor(np.asarray(labels))
    else:
        raise TypeError(f"labels must be a tensor, array or sequence of ints, got {type(labels).__name__}")
    if t.dim() != 1:
        t = t.reshape(-1) if t.dim() == 2 and t.size(1) == 1 else t
    if t.dim() != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {list(t.shape)}")
    if t.numel() and (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool):
        raise TypeError(f"labels must be integers, got dtype {t.dtype}")
    if t.numel() and int(t.min()) < 0:
        raise ValueError(f"labels must be non-negative, got minimum {int(t.min())}")
    return t.long()


def stratified_split(labels: Union[Tensor, np.ndarray, Sequence[int]], val_fraction: float = 0.1,
                     seed: int = 0) -> Tuple[Tensor, Tensor]:
    r"""Splits indices into train/validation parts with the class proportions
    of :obj:`labels` kept in both.

    For every class with ``n`` samples, ``round(val_fraction * n)`` of them
    (chosen by a permutation seeded with :obj:`seed`) go to validation,
    but at least one when ``val_fraction > 0`` and ``n >= 2``, and never all
    of them (a class with one sample stays in train).

    Args:
        labels: Class label per sample [N].
        val_fraction: Fraction in ``[0, 1)`` to hold out.
        seed: Seed of the permutation (same seed and labels: same split).

    Returns:
        ``(train_idx, val_idx)``: sorted LongTensors, disjoint, covering ``0..N-1``.
    """
    y = _as_label_tensor(labels)
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not (0 <= val_fraction < 1):
        raise ValueError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    gen = torch.Generator().manual_seed(int(seed))
    val_parts = []
    for cls in torch.unique(y).tolist():
        members = (y == cls).nonzero().flatten()
        n = members.numel()
        k = int(round(val_fraction * n))
        if val_fraction > 0 and n >= 2:
            k = max(k, 1)
        k = min(k, n - 1)
        if k > 0:
            perm = torch.randperm(n, generator=gen)
            val_parts.append(members[perm[:k]])
    is_val = torch.zeros(y.numel(), dtype=torch.bool)
    if val_parts:
        is_val[torch.cat(val_parts)] = True
    return (~is_val).nonzero().flatten(), is_val.nonzero().flatten()


def stratified_folds(labels: Union[Tensor, np.ndarray, Sequence[int]], num_folds: int,
                     seed: int = 0) -> Tensor:
    r"""Assigns every sample to one of ``num_folds`` folds with the class
    proportions kept in each (for cross-fitting: a model trained on all folds
    but ``k`` predicts the samples of fold ``k``, none of which it has seen).

    The members of each class are permuted (seeded) and dealt to the folds in
    turn, continuing from the fold where the previous class stopped, so fold
    sizes differ by at most one.

    Args:
        labels: Class label per sample [N].
        num_folds (int): Number of folds, at least 2 and at most N.
        seed (int): Seed of the permutations (same seed and labels: same folds).

    Returns:
        LongTensor [N]: the fold of each sample, in ``0..num_folds-1``.
    """
    y = _as_label_tensor(labels)
    if isinstance(num_folds, bool) or not isinstance(num_folds, (int, np.integer)) \
            or not 2 <= num_folds <= max(2, y.numel()):
        raise ValueError(f"num_folds must be an int in [2, {max(2, y.numel())}] (the number of "
                         f"samples), got {num_folds!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    gen = torch.Generator().manual_seed(int(seed))
    fold = torch.empty(y.numel(), dtype=torch.long)
    start = 0
    for cls in torch.unique(y).tolist():
        members = (y == cls).nonzero().flatten()
        members = members[torch.randperm(members.numel(), generator=gen)]
        fold[members] = (torch.arange(members.numel()) + start) % int(num_folds)
        start = (start + members.numel()) % int(num_folds)
    return fold


def dataset_labels(dataset: Dataset) -> Tensor:
    r"""Labels [len(dataset)] of a dataset: its ``labels`` attribute when it has
    one (every dataset of this package), else read sample by sample."""
    labels = getattr(dataset, "labels", None)
    if isinstance(labels, Tensor):
        return labels.long().reshape(-1)
    return torch.cat([dataset[i].y.reshape(-1)[:1] for i in range(len(dataset))]).long()


def subset(dataset: Dataset, idx: Union[Tensor, Sequence[int]]) -> Dataset:
    r"""A PyG view of :obj:`dataset` restricted to :obj:`idx` (no copy of the
    data; transforms, ``classes`` and ``num_classes`` are kept)."""
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset must be a torch_geometric.data.Dataset, got {type(dataset).__name__}")
    idx_t = torch.as_tensor(idx, dtype=torch.long).reshape(-1)
    if idx_t.numel() and (int(idx_t.min()) < -len(dataset) or int(idx_t.max()) >= len(dataset)):
        raise IndexError(f"idx out of range for a dataset of {len(dataset)} samples")
    return dataset.index_select(idx_t)


def train_val_split(dataset: Dataset, val_fraction: float = 0.1, seed: int = 0) -> Tuple[Dataset, Dataset]:
    r"""Seeded stratified carve of a validation view out of a training dataset.

    Returns:
        ``(train_view, val_view)`` as PyG dataset views (see :func:`subset`).
    """
    train_idx, val_idx = stratified_split(dataset_labels(dataset), val_fraction, seed)
    return subset(dataset, train_idx), subset(dataset, val_idx)
