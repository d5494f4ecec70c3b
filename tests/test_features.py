"""Tests for pointcmt_pyg.datasets.features: the teacher feature cache."""
import random

import pytest
import torch
from torch import nn
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader

from pointcmt_pyg.datasets.features import (AttachImageFeatures, FeatureCache,
                                            compute_teacher_features)

V, C, H, W, D = 3, 1, 4, 4, 6


class StandInTeacher(nn.Module):
    def __init__(self):
        super().__init__()
        self.feat_dim = D
        self.lin = nn.Linear(C * H * W, D)

    def features(self, views):
        return self.lin(views.flatten(2)).amax(dim=1)


def make_dataset(n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [Data(pos=torch.rand(5, 3, generator=g), y=torch.tensor([i % 3]),
                 views=torch.rand(1, V, C, H, W, generator=g), sample_id=f"chair_{i:04d}.off")
            for i in range(n)]


def own_feature(teacher, data):
    with torch.no_grad():
        return teacher.features(data.views)[0]


def test_compute_matches_per_sample_teacher_features():
    teacher, dataset = StandInTeacher(), make_dataset()
    cache = compute_teacher_features(teacher, dataset, batch_size=3, progress=False)
    assert len(cache) == len(dataset) and cache.feat_dim == D
    assert cache.ids == [d.sample_id for d in dataset]
    for d in dataset:
        assert torch.allclose(cache[d.sample_id], own_feature(teacher, d), atol=1e-6)
    assert not cache.features.requires_grad


def test_ids_survive_reordering_of_the_dataset():
    teacher, dataset = StandInTeacher(), make_dataset(n=9)
    cache = compute_teacher_features(teacher, dataset, batch_size=4, progress=False)
    shuffled = dataset[:]
    random.Random(1).shuffle(shuffled)
    assert [d.sample_id for d in shuffled] != [d.sample_id for d in dataset]
    # The cache computed on another order holds the same feature per id.
    cache2 = compute_teacher_features(teacher, shuffled, batch_size=2, progress=False)
    for sid in cache:
        assert torch.allclose(cache[sid], cache2[sid], atol=1e-6)
    # Attaching to a re-ordered (and filtered) dataset gives each shape its own feature.
    attach = AttachImageFeatures(cache)
    for d in shuffled[::2]:
        out = attach(d)
        assert out.img_feat.shape == (1, D)
        assert torch.allclose(out.img_feat[0], own_feature(teacher, d), atol=1e-6)
        assert "img_feat" not in d  # the transform does not modify its input


def test_attached_features_collate_to_batch_rows():
    teacher, dataset = StandInTeacher(), make_dataset()
    attach = AttachImageFeatures(compute_teacher_features(teacher, dataset, progress=False))
    batch = Batch.from_data_list([attach(d) for d in reversed(dataset)])
    assert batch.img_feat.shape == (len(dataset), D)
    with torch.no_grad():
        assert torch.allclose(batch.img_feat, teacher.features(batch.views), atol=1e-6)


def test_save_load_roundtrip_atomic(tmp_path):
    teacher, dataset = StandInTeacher(), make_dataset()
    cache = compute_teacher_features(teacher, dataset, progress=False,
                                     metadata={"backbone": "stand-in"})
    path = cache.save(tmp_path / "sub" / "features.pt")
    assert sorted(p.name for p in path.parent.iterdir()) == ["features.pt"]  # no temp left
    loaded = FeatureCache.load(path)
    assert loaded.ids == cache.ids and torch.equal(loaded.features, cache.features)
    assert loaded.metadata["backbone"] == "stand-in"
    # Overwrite in place; the transform also takes a path.
    cache.save(path)
    out = AttachImageFeatures(str(path))(dataset[2])
    assert torch.equal(out.img_feat[0], cache[dataset[2].sample_id])


def test_load_rejects_other_files(tmp_path):
    torch.save({"something": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a pointcmt_pyg feature cache"):
        FeatureCache.load(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        FeatureCache.load(tmp_path / "missing.pt")


def test_loader_input_and_views_fn():
    teacher, dataset = StandInTeacher(), make_dataset()
    loader = DataLoader(dataset, batch_size=2, shuffle=True)
    cache = compute_teacher_features(teacher, loader, progress=False)
    for d in dataset:
        assert torch.allclose(cache[d.sample_id], own_feature(teacher, d), atol=1e-6)
    stripped = [Data(pos=d.pos, sample_id=d.sample_id, v=d.views) for d in dataset]
    cache2 = compute_teacher_features(teacher, stripped, views_fn=lambda b: b.v, progress=False)
    assert torch.allclose(cache2.features, cache.features[[cache.ids.index(i) for i in cache2.ids]])


def test_missing_id_is_a_clear_error():
    teacher, dataset = StandInTeacher(), make_dataset()
    attach = AttachImageFeatures(compute_teacher_features(teacher, dataset[:3], progress=False))
    with pytest.raises(KeyError, match="chair_0005.off"):
        attach(dataset[5])
    lenient = AttachImageFeatures(attach.cache, required=False)
    assert "img_feat" not in lenient(dataset[5])
    with pytest.raises(KeyError, match="chair_0005.off"):
        attach.cache["chair_0005.off"]
    with pytest.raises(ValueError, match="sample_id"):
        attach(Data(pos=torch.zeros(1, 3)))


def test_ids_are_never_positional():
    teacher = StandInTeacher()
    dataset = make_dataset(n=2)
    dataset[1].sample_id = 1
    with pytest.raises(TypeError, match="sample_id must be a str"):
        compute_teacher_features(teacher, dataset, progress=False)
    with pytest.raises(TypeError, match="sample_id must be a str"):
        FeatureCache({0: torch.zeros(D)})
    no_ids = [Data(views=d.views) for d in make_dataset(n=2)]
    with pytest.raises(TypeError, match="sample_id"):
        compute_teacher_features(teacher, no_ids, progress=False)


def test_duplicate_ids_and_bad_views_are_errors():
    teacher = StandInTeacher()
    dataset = make_dataset(n=3)
    dataset[2].sample_id = dataset[0].sample_id
    with pytest.raises(ValueError, match="duplicate sample_id 'chair_0000.off'"):
        compute_teacher_features(teacher, dataset, progress=False)
    flat = [Data(views=torch.rand(V, C, H, W), sample_id=f"s{i}") for i in range(2)]
    with pytest.raises(ValueError, match=r"views must be \[B, V, C, H, W\]"):
        compute_teacher_features(teacher, flat, progress=False)
    with pytest.raises(ValueError, match="no views"):
        compute_teacher_features(teacher, [Data(pos=torch.zeros(1, 3), sample_id="a")],
                                 progress=False)
    with pytest.raises(ValueError, match="2 ids but 3"):
        FeatureCache.from_tensor(["a", "b"], torch.zeros(3, D))


def test_teacher_mode_is_restored():
    teacher = StandInTeacher().train()
    compute_teacher_features(teacher, make_dataset(n=2), progress=False)
    assert teacher.training
