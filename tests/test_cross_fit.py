r"""Cross-fitted teachers (PipelineConfig.teacher_folds): stratified folds, teacher
logits in the feature cache, the distiller's Hinton term on cached logits, and
the pipeline's out-of-fold targets (each training shape's target comes from a
teacher that never trained on it)."""
import json
import shutil

import pytest
import torch
from torch import nn

from pointcmt_pyg.datasets import (AttachImageFeatures, FeatureCache, compute_teacher_features,
                                   stratified_folds)
from pointcmt_pyg.nn import CMPG, CrossModalDistiller, MultiViewTeacher
from pointcmt_pyg.nn.losses import classifier_enhancement_loss
from pointcmt_pyg.pipeline import PipelineConfig, out_of_fold_logits, run_pipeline

from test_pipeline import TINY


# ------------------------------------------------------------------ folds
def test_stratified_folds_partition_every_class_evenly():
    labels = torch.tensor([0] * 7 + [1] * 5 + [2] * 1 + [3] * 12)
    fold = stratified_folds(labels, 3, seed=4)
    assert fold.shape == labels.shape and fold.dtype == torch.long
    assert set(fold.tolist()) <= {0, 1, 2}
    for cls in labels.unique():
        counts = torch.bincount(fold[labels == cls], minlength=3)
        assert int(counts.max() - counts.min()) <= 1          # each class dealt evenly
    sizes = torch.bincount(fold, minlength=3)
    assert int(sizes.max() - sizes.min()) <= 1                 # and the folds overall
    assert torch.equal(fold, stratified_folds(labels, 3, seed=4))
    assert not torch.equal(fold, stratified_folds(labels, 3, seed=5))


@pytest.mark.parametrize("num_folds", [1, 0, 2.0, True, 99])
def test_stratified_folds_rejects_bad_fold_counts(num_folds):
    with pytest.raises(ValueError, match="num_folds"):
        stratified_folds(torch.arange(10) % 2, num_folds)


# ------------------------------------------------------------ cache logits
def test_feature_cache_keeps_logits_through_save_and_load(tmp_path):
    feats, logits = torch.randn(3, 4), torch.randn(3, 5)
    cache = FeatureCache.from_tensor(["a", "b", "c"], feats, {"k": 1}, logits)
    loaded = FeatureCache.load(cache.save(tmp_path / "f.pt"))
    assert torch.equal(loaded.logits, logits) and torch.equal(loaded.features, feats)
    assert torch.equal(loaded.logits_of("b"), logits[1])
    with pytest.raises(KeyError, match="'z'"):
        loaded.logits_of("z")
    plain = FeatureCache.load(FeatureCache.from_tensor(["a"], feats[:1]).save(tmp_path / "p.pt"))
    assert plain.logits is None
    with pytest.raises(KeyError, match="no teacher logits"):
        plain.logits_of("a")


@pytest.mark.parametrize("bad", [torch.randn(2, 5), torch.randn(3), torch.zeros(3, 5, dtype=torch.long),
                                 torch.full((3, 5), float("nan"))])
def test_feature_cache_rejects_bad_logits(bad):
    with pytest.raises(ValueError, match="logits"):
        FeatureCache.from_tensor(["a", "b", "c"], torch.randn(3, 4), logits=bad)


def test_attach_sets_img_logits_only_when_the_cache_has_them():
    from torch_geometric.data import Data
    feats, logits = torch.randn(2, 4), torch.randn(2, 3)
    with_logits = AttachImageFeatures(FeatureCache.from_tensor(["a", "b"], feats, logits=logits))
    d = with_logits(Data(pos=torch.randn(5, 3), sample_id="b"))
    assert torch.equal(d.img_feat, feats[1:2]) and torch.equal(d.img_logits, logits[1:2])
    d = AttachImageFeatures(FeatureCache.from_tensor(["a", "b"], feats))(
        Data(pos=torch.randn(5, 3), sample_id="a"))
    assert "img_logits" not in d


def test_compute_teacher_features_with_logits_is_the_teachers_forward():
    from torch_geometric.data import Data
    torch.manual_seed(0)
    teacher = MultiViewTeacher(4, backbone="resnet18_w16").eval()
    data = [Data(views=torch.rand(1, 2, 1, 16, 16), sample_id=f"s{i}", y=torch.tensor([i % 4]))
            for i in range(5)]
    cache = compute_teacher_features(teacher, data, batch_size=2, progress=False,
                                     with_logits=True)
    views = torch.cat([d.views for d in data])
    with torch.no_grad():
        assert torch.allclose(cache.logits, teacher(views), atol=1e-5)
        assert torch.allclose(cache.features, teacher.features(views), atol=1e-5)
    with pytest.raises(TypeError, match="with_logits"):
        compute_teacher_features(type("T", (), {"features": lambda self, v: v})(), data,
                                 with_logits=True, progress=False)


# ------------------------------------------------------------- distiller
class _Student(nn.Module):
    def __init__(self, dim=8, classes=3):
        super().__init__()
        self.body = nn.Linear(3, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


def test_distiller_hinton_term_uses_cached_logits_as_its_target():
    torch.manual_seed(0)
    teacher = MultiViewTeacher(3, backbone="resnet18_w16")
    distiller = CrossModalDistiller(_Student(teacher.feat_dim), teacher,
                                    CMPG(teacher.feat_dim, num_points=16), recipe="kd")
    distiller.train()
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    f_t, cached = torch.randn(4, teacher.feat_dim), torch.randn(4, 3)
    torch.manual_seed(1)
    out = distiller(x, y=y, img_feat=f_t, img_logits=cached)
    expected = classifier_enhancement_loss(out.logits, cached, weight=1.0, temperature=4.0)
    assert torch.allclose(out.losses["kd"], expected)
    # Without cached logits the target is the teacher's head on the feature;
    # cached logits equal to that head give the same loss.
    with torch.no_grad():
        head_logits = teacher.head(f_t)
    a = distiller(x, y=y, img_feat=f_t).losses["kd"]
    b = distiller(x, y=y, img_feat=f_t, img_logits=head_logits).losses["kd"]
    assert torch.allclose(a, b)
    assert not torch.allclose(a, out.losses["kd"])
    with pytest.raises(ValueError, match="img_logits"):
        distiller(x, y=y, img_feat=f_t, img_logits=torch.randn(4, 5))


def test_cached_logits_teach_without_any_teacher_module():
    """A teacher that is not a MultiViewTeacher (here: none at all) teaches
    through its cached features and logits: the Hinton target is the cached
    logits, the alignment uses the cached feature, and the losses equal those of
    a distiller that holds the teacher whose head gives those logits."""
    torch.manual_seed(0)
    teacher = MultiViewTeacher(3, backbone="resnet18_w16")
    student = _Student(teacher.feat_dim)
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    f_t = torch.randn(4, teacher.feat_dim)
    with torch.no_grad():
        head_logits = teacher.head(f_t)
    twin = _Student(teacher.feat_dim)
    twin.load_state_dict(student.state_dict())
    torch.manual_seed(2)                  # the same projection in both
    bare = CrossModalDistiller(student, teacher_dim=teacher.feat_dim)   # default recipe: KD + alignment
    torch.manual_seed(2)
    held = CrossModalDistiller(twin, teacher)
    bare.train(), held.train()
    a = bare(x, y=y, img_feat=f_t, img_logits=head_logits).losses
    b = held(x, y=y, img_feat=f_t).losses
    assert a.keys() == b.keys() and a["kd"].item() > 0 and a["align"].item() > 0
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    # A batch without the logits has no KD target: a clear error, not a silent 0.
    with pytest.raises(ValueError, match="img_logits.*teacher_classifier|w_kd"):
        bare(x, y=y, img_feat=f_t)
    # ... unless the term is off.
    assert "kd" not in CrossModalDistiller(_Student(teacher.feat_dim), teacher_dim=teacher.feat_dim,
                                           w_kd=0.0).train()(x, y=y, img_feat=f_t).losses


# ---------------------------------------------------- out-of-fold logits
class _ConstTeacher(nn.Module):
    """features = views' mean per shape; head = a fixed offset per teacher."""

    def __init__(self, offset):
        super().__init__()
        self.offset = offset
        self.head = lambda f: f[:, :1].repeat(1, 2) + offset

    def features(self, views):
        return views.flatten(1).mean(1, keepdim=True).repeat(1, 3)


def test_out_of_fold_logits_replace_each_folds_rows_only():
    from torch_geometric.data import Data
    ids = [f"s{i}" for i in range(6)]
    cache = FeatureCache.from_tensor(ids, torch.randn(6, 3), {"m": 1}, torch.zeros(6, 2))
    shapes = [Data(views=torch.full((1, 1, 1, 2, 2), float(i)), sample_id=ids[i]) for i in range(6)]
    folds = [(_ConstTeacher(10.0), [shapes[0], shapes[2]]), (_ConstTeacher(20.0), [shapes[1]])]
    oof = out_of_fold_logits(cache, folds, batch_size=2, device="cpu")
    assert torch.equal(oof.features, cache.features) and oof.metadata == {"m": 1}
    assert oof.logits[0].tolist() == [10.0, 10.0] and oof.logits[2].tolist() == [12.0, 12.0]
    assert oof.logits[1].tolist() == [21.0, 21.0]
    assert torch.equal(oof.logits[3:], torch.zeros(3, 2))      # not in any fold: unchanged
    with pytest.raises(ValueError, match="logits"):
        out_of_fold_logits(FeatureCache.from_tensor(ids, torch.randn(6, 3)), folds, 2, "cpu")


def test_teacher_folds_setting_is_checked_and_recorded_only_when_used():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="teacher_folds"):
            PipelineConfig(teacher_folds=bad, **TINY).resolved()
    assert "teacher_folds" not in PipelineConfig(**TINY).settings("pointcmt")
    crossed = PipelineConfig(teacher_folds=2, **TINY)
    assert crossed.settings("pointcmt")["teacher_folds"] == 2
    assert "teacher_folds" not in crossed.settings("teacher")      # the main teacher is the same
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="teacher_fold_epochs"):
            PipelineConfig(teacher_folds=2, teacher_fold_epochs=bad, **TINY).resolved()


@pytest.mark.parametrize("epochs, folds, fixed, expected", [(5, 2, None, 10), (6, 3, None, 9),
                                                            (5, 4, None, 7), (5, 2, 3, 3)])
def test_fold_teachers_get_the_main_teachers_number_of_steps(epochs, folds, fixed, expected):
    from pointcmt_pyg.pipeline import fold_epochs
    cfg = PipelineConfig(**{**TINY, "teacher_epochs": epochs, "teacher_folds": folds,
                            "teacher_fold_epochs": fixed}).resolved()
    assert fold_epochs(cfg) == expected


def test_pipeline_cross_fit_gives_every_training_shape_an_out_of_fold_target(tmp_path, capsys):
    from pointcmt_pyg.datasets import dataset_labels, train_val_split
    from pointcmt_pyg.nn import load_teacher
    from pointcmt_pyg.pipeline import _with_transform, load_data, teacher_transforms
    cfg = PipelineConfig(out=str(tmp_path), teacher_folds=2, stages=("pointcmt",), **TINY)
    results = run_pipeline(cfg)
    cache = FeatureCache.load(tmp_path / "teacher_features.pt")
    assert cache.logits is not None and cache.metadata["teacher_folds"] == 2
    assert len(results["stages"]["teacher_folds"]) == 2
    assert "2 cross-fitted teachers" in results["table"]

    # Recompute the folds and check each training shape's logits against the
    # teacher that did not train on it; validation shapes keep the main teacher's.
    rcfg = cfg.resolved()
    full, _, _, _ = load_data(rcfg)
    train, val = train_val_split(full, rcfg.val_fraction, rcfg.seed)
    fold_of = stratified_folds(dataset_labels(train), 2, rcfg.seed)
    views = teacher_transforms(rcfg, tmp_path)
    teachers = [load_teacher(tmp_path / f"teacher_fold{k}" / "teacher.pt").eval() for k in (0, 1)]
    main = load_teacher(tmp_path / "teacher" / "teacher.pt").eval()
    for part, folds in ((train, fold_of.tolist()), (val, [None] * len(val))):
        for data, k in zip(_with_transform(part, views), folds):
            with torch.no_grad():
                expected = (main if k is None else teachers[k])(data.views)[0]
                feat = main.features(data.views)[0]
            assert torch.allclose(cache.logits_of(data.sample_id), expected, atol=1e-4)
            assert torch.allclose(cache[data.sample_id], feat, atol=1e-4)
    for k in (0, 1):                       # fold k's teacher trained on the other fold only
        settings = json.loads((tmp_path / f"teacher_fold{k}" / "settings.json").read_text())
        assert settings["fold"] == k and settings["teacher_folds"] == 2
        assert settings["teacher_epochs"] == 2      # the main teacher's steps on half the data

    # Resuming reuses every teacher and the cache; turning cross-fitting off
    # recomputes the cache (no logits) and retrains the PointCMT student.
    copy = tmp_path.parent / (tmp_path.name + "_copy")
    shutil.copytree(tmp_path, copy)
    capsys.readouterr()
    run_pipeline(PipelineConfig(**{**cfg.__dict__, "out": str(copy), "resume": True}))
    log = capsys.readouterr().out
    assert "teacher_fold0: reusing" in log and "teacher_fold1: reusing" in log
    assert "pointcmt: reusing" in log
    run_pipeline(PipelineConfig(**{**cfg.__dict__, "out": str(copy), "resume": True,
                                   "teacher_folds": 1}))
    log = capsys.readouterr().out
    assert "recomputing" in log and "pointcmt: reusing" not in log
    assert FeatureCache.load(copy / "teacher_features.pt").logits is None
