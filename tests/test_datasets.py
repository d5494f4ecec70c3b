import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pointcmt_pyg.datasets import default_data_root, stratified_split, subset, train_val_split
from pointcmt_pyg.datasets.base import PointCloudDataset, make_data


# --------------------------------------------------------------------------- root
def test_default_data_root_prefers_env(monkeypatch, tmp_path):
    monkeypatch.setenv("POINTCMT_DATA", str(tmp_path))
    assert default_data_root() == tmp_path
    monkeypatch.delenv("POINTCMT_DATA")
    assert default_data_root().parts[-2:] == ("shared", "data")


# --------------------------------------------------------------------------- split
def test_stratified_split_proportions_and_determinism():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20 + [3] * 1)[torch.randperm(101)]
    tr, va = stratified_split(labels, 0.2, seed=7)
    assert torch.bincount(labels[va], minlength=4).tolist() == [10, 6, 4, 0]
    assert torch.bincount(labels[tr], minlength=4).tolist() == [40, 24, 16, 1]
    assert sorted(torch.cat([tr, va]).tolist()) == list(range(101))
    tr2, va2 = stratified_split(labels.numpy(), 0.2, seed=7)
    assert torch.equal(tr, tr2) and torch.equal(va, va2)
    _, va3 = stratified_split(labels.tolist(), 0.2, seed=8)
    assert not torch.equal(va, va3)


def test_stratified_split_small_classes_and_zero_fraction():
    labels = [0, 0, 1, 2, 2, 2]
    tr, va = stratified_split(labels, 0.1, seed=0)
    # At least one per class with >= 2 samples, never the only sample of a class.
    assert sorted(np.array(labels)[va.numpy()].tolist()) == [0, 2]
    tr, va = stratified_split(labels, 0.0, seed=0)
    assert va.numel() == 0 and tr.tolist() == list(range(6))


@pytest.mark.parametrize("frac", [1.0, -0.1, "0.1", True])
def test_stratified_split_rejects_bad_fraction(frac):
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split([0, 1], frac)


def test_stratified_split_rejects_bad_labels():
    with pytest.raises(TypeError, match="labels"):
        stratified_split(torch.tensor([0.5, 1.0]), 0.5)
    with pytest.raises(ValueError, match="labels"):
        stratified_split([0, -1], 0.5)
    with pytest.raises(TypeError, match="labels"):
        stratified_split("abc", 0.5)


class _Toy(PointCloudDataset):
    def __init__(self, labels):
        super().__init__()
        self._classes = ["a", "b", "c"]
        self._labels = torch.tensor(labels)
        self._sample_ids = [f"s{i}" for i in range(len(labels))]

    def _load(self, idx):
        return make_data(torch.full((4, 3), float(idx)), int(self._labels[idx]), self._sample_ids[idx])


def test_train_val_split_gives_consistent_views():
    ds = _Toy([0] * 10 + [1] * 10 + [2] * 10)
    tr, va = train_val_split(ds, 0.3, seed=1)
    assert len(tr) == 21 and len(va) == 9
    assert va.class_counts().tolist() == [3, 3, 3]
    assert tr.num_classes == 3 and va.classes == ["a", "b", "c"]
    assert set(tr.sample_ids).isdisjoint(va.sample_ids)
    for i in range(len(va)):
        data = va[i]
        assert data.sample_id == va.sample_ids[i] and int(data.y) == int(va.labels[i])
    sub = subset(ds, [2, 0])
    assert sub.sample_ids == ["s2", "s0"]
    with pytest.raises(IndexError):
        subset(ds, [30])
