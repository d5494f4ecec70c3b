"""The three PointCMT stages on tiny synthetic data (CPU), CMPG targets, and the plots."""
import struct

import pytest
import torch
from torch import nn
from torch_geometric.data import Batch, Data
from torch_geometric.nn import global_max_pool

from pointcmt_pyg.datasets.transforms import normalize_bbox
from pointcmt_pyg.ops import fps_dense
from pointcmt_pyg.train import History, load_checkpoint, seed_everything
from pointcmt_pyg.train.plots import plot_confusion_matrix, plot_training_curves
from pointcmt_pyg.train.stages import (cmpg_targets, resample_points, train_cmpg,
                                       train_student, train_teacher)

NUM_CLASSES = 3
VIEWS, SIDE, FEAT, POINTS = 2, 8, 16, 32


# ------------------------------------------------------------------ stand-ins
class TinyTeacher(nn.Module):
    """The MultiViewTeacher contract: features(views) max over views, head, feat_dim."""

    def __init__(self):
        super().__init__()
        self.in_channels, self.feat_dim = 1, FEAT
        self.backbone = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, FEAT))
        self.head = nn.Linear(FEAT, NUM_CLASSES)

    def features(self, views):
        b, v = views.shape[:2]
        return self.backbone(views.flatten(0, 1)).view(b, v, -1).amax(dim=1)

    def forward(self, views):
        return self.head(self.features(views))


class TinyCMPG(nn.Module):
    """The CMPG contract: [B, D] -> [B, P, 3], with in_dim."""

    def __init__(self, num_points=POINTS):
        super().__init__()
        self.in_dim, self.num_points = FEAT, num_points
        self.lin = nn.Linear(FEAT, 3 * num_points)

    def forward(self, f):
        return self.lin(f).view(f.size(0), self.num_points, 3)


class TinyStudent(nn.Module):
    def __init__(self):
        super().__init__()
        self.point = nn.Sequential(nn.Linear(3, 32), nn.ReLU(), nn.Linear(32, 32))
        self.head = nn.Linear(32, NUM_CLASSES)

    def forward(self, data):
        return self.head(global_max_pool(self.point(data.pos), data.batch))


def shape(label, g, n=POINTS):
    """Class 0: a flat square, 1: a thin bar, 2: a cube (anisotropic boxes)."""
    extent = torch.tensor([[1.0, 1.0, 0.05], [1.0, 0.1, 0.1], [0.7, 0.7, 0.7]])[label]
    pos = (torch.rand(n, 3, generator=g) - 0.5) * extent
    return pos + 0.3 * torch.randn(1, 3, generator=g)


def render(pos):
    """Two silhouettes (xy and xz projections) as [1, V, 1, H, W]."""
    out = torch.zeros(VIEWS, 1, SIDE, SIDE)
    p = normalize_bbox(pos)
    idx = ((p + 0.5).clamp(0, 0.999) * SIDE).long()
    out[0, 0, idx[:, 0], idx[:, 1]] = 1.0
    out[1, 0, idx[:, 0], idx[:, 2]] = 1.0
    return out.unsqueeze(0)


def make_set(num, seed, teacher=None):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(num):
        y = i % NUM_CLASSES
        pos = shape(y, g)
        data = Data(pos=pos, y=torch.tensor([y]), views=render(pos), sample_id=f"s{seed}_{i}")
        if teacher is not None:
            with torch.no_grad():
                data.img_feat = teacher.features(data.views)
        out.append(data)
    return out


# ------------------------------------------------------------------ stage I
def test_train_teacher_learns_and_selects_on_validation(tmp_path):
    seed_everything(0)
    teacher = TinyTeacher()
    result = train_teacher(teacher, make_set(30, 1), make_set(12, 2), epochs=6, batch_size=6,
                           lr=1e-2, device="cpu", out_dir=tmp_path, progress=False)
    h = result.history
    assert result.model is teacher
    assert h["train_loss"][-1] < h["train_loss"][0]
    assert max(h["val_oa"]) > 0.6                       # chance: 1/3
    assert h.best_metric == max(h["val_oa"])
    assert h.best_epoch == h["val_oa"].index(max(h["val_oa"])) + 1
    assert (tmp_path / "teacher.pt").is_file() and (tmp_path / "last.pt").is_file()
    # The per-step cosine schedule ended near min_lr_ratio * lr.
    assert result.trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4, rel=1e-6)


def test_train_teacher_rejects_bad_views():
    data = make_set(4, 3)
    for d in data:
        d.views = d.views[0]                 # [V, C, H, W]: collates to [B*V, C, H, W]
    with pytest.raises(ValueError, match=r"views must be \[B, V, C, H, W\]"):
        train_teacher(TinyTeacher(), data, epochs=1, batch_size=2, device="cpu", progress=False)
    data = make_set(4, 3)
    for d in data:
        del d.views
    with pytest.raises(ValueError, match="no `views`"):
        train_teacher(TinyTeacher(), data, epochs=1, batch_size=2, device="cpu", progress=False)
    data = make_set(4, 3)
    for d in data:
        d.views = d.views.expand(-1, -1, 3, -1, -1).clone()
    with pytest.raises(ValueError, match="3 channels, the teacher takes 1"):
        train_teacher(TinyTeacher(), data, epochs=1, batch_size=2, device="cpu", progress=False)
    with pytest.raises(ValueError, match="label_smoothing"):
        train_teacher(TinyTeacher(), data, label_smoothing=1.0, device="cpu")


class KilledAfter(list):
    """A dataset whose item fetches raise KeyboardInterrupt after `limit` fetches."""

    def __init__(self, items, limit):
        super().__init__(items)
        self.limit, self.fetches = limit, 0

    def __getitem__(self, index):
        self.fetches += 1
        if self.fetches > self.limit:
            raise KeyboardInterrupt("killed")
        return super().__getitem__(index)


def _kill_and_resume(train_fn, make_model, train, val, tmp_path, init_seed, lr=1e-2):
    """Trains 3 epochs uninterrupted (tmp_path/full); then the same run killed in epoch 2
    after 5 fetches of its 12 training shapes, resumed by a 'new process' with another
    initialisation (tmp_path/run). Returns both results."""
    kwargs = dict(epochs=3, batch_size=4, lr=lr, device="cpu", progress=False, seed=3)
    seed_everything(init_seed)
    full = train_fn(make_model(), train, val, out_dir=tmp_path / "full", **kwargs)
    seed_everything(init_seed)
    with pytest.raises(KeyboardInterrupt):
        train_fn(make_model(), KilledAfter(train, len(train) + 5), val, out_dir=tmp_path / "run", **kwargs)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1
    seed_everything(99)
    resumed = train_fn(make_model(), train, val, out_dir=tmp_path / "run", resume=True, **kwargs)
    assert resumed.history["train_loss"] == full.history["train_loss"]
    return full, resumed


def test_train_teacher_kill_and_resume_matches_an_uninterrupted_run(tmp_path):
    train, val = make_set(12, 1), make_set(6, 2)
    full, resumed = _kill_and_resume(train_teacher, TinyTeacher, train, val, tmp_path, init_seed=0)
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


# ------------------------------------------------------------------ stage II
def test_resample_points_is_deterministic():
    g = torch.Generator().manual_seed(0)
    pos = torch.rand(10, 3, generator=g)
    assert resample_points(pos, 10) is pos
    assert torch.equal(resample_points(pos, 13), pos[[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]])
    sub = resample_points(pos, 4)
    assert torch.equal(sub, pos[fps_dense(pos[None], 4, random_start=False)[0]])
    assert torch.equal(sub[0], pos[0])                  # FPS from the first point
    # The second pick is the point farthest from point 0.
    assert torch.equal(sub[1], pos[(pos - pos[0]).norm(dim=1).argmax()])
    with pytest.raises(ValueError, match="pos"):
        resample_points(torch.zeros(0, 3), 4)


def test_cmpg_targets_normalise_each_shape_by_its_bounding_box():
    a = torch.tensor([[0.0, 0, 0], [2, 0, 0], [2, 1, 0], [0, 1, 4]])       # centre (1, .5, 2), extent 4
    b = torch.tensor([[5.0, 5, 5], [6, 5, 5], [5, 7, 5]])                  # centre (5.5, 6, 5), extent 2
    pos = torch.cat([a, b])
    batch = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    out = cmpg_targets(pos, batch, num_points=4)
    assert out.shape == (2, 4, 3)
    # Hand computation: (p - centre) / largest extent.
    assert torch.allclose(out[0], (a - torch.tensor([1.0, 0.5, 2.0])) / 4)
    expected_b = (b[[0, 1, 2, 0]] - torch.tensor([5.5, 6.0, 5.0])) / 2
    assert torch.allclose(out[1], expected_b)
    # Interleaved batch order gives the same result.
    perm = torch.tensor([4, 0, 5, 1, 2, 6, 3])
    assert torch.equal(cmpg_targets(pos[perm], batch[perm], num_points=4), out)
    # Equal sizes larger than P take the batched FPS path.
    big = torch.rand(2, 9, 3)
    out = cmpg_targets(big.view(-1, 3), torch.arange(2).repeat_interleave(9), num_points=5)
    idx = fps_dense(big, 5, random_start=False)
    assert torch.allclose(out, normalize_bbox(torch.gather(big, 1, idx[..., None].expand(-1, -1, 3))))


def test_cmpg_step_targets_the_whole_surface_when_the_batch_has_it():
    # Single-view scans carry complete_pos [1, N, 3]: the CMPG learns the whole surface, not the scan.
    from pointcmt_pyg.ops import emd_loss
    from pointcmt_pyg.train.stages import cmpg_step
    torch.manual_seed(0)
    cmpg = nn.Sequential(nn.Linear(4, 8 * 3), nn.Unflatten(1, (8, 3)))
    samples = [Data(pos=torch.rand(6, 3), complete_pos=torch.rand(1, 8, 3) * 2, img_feat=torch.randn(1, 4))
               for _ in range(3)]
    batch = Batch.from_data_list(samples)
    loss, _, _ = cmpg_step(cmpg, batch)
    pred = normalize_bbox(cmpg(batch.img_feat))
    whole = cmpg_targets(batch.complete_pos.reshape(-1, 3), torch.arange(3).repeat_interleave(8), 8)
    torch.testing.assert_close(loss, emd_loss(pred, whole, reduction="mean", sqrt=True))
    scan = cmpg_targets(batch.pos, batch.batch, 8)
    assert not torch.allclose(loss, emd_loss(pred, scan, reduction="mean", sqrt=True))
    # Without complete_pos the target is the points themselves.
    plain = Batch.from_data_list([Data(pos=d.pos, img_feat=d.img_feat) for d in samples])
    torch.testing.assert_close(cmpg_step(cmpg, plain)[0], emd_loss(pred, scan, reduction="mean", sqrt=True))
    bad = Batch.from_data_list([Data(pos=d.pos, complete_pos=torch.rand(8, 3), img_feat=d.img_feat)
                                for d in samples])
    with pytest.raises(ValueError, match="complete_pos"):
        cmpg_step(cmpg, bad)


def test_train_cmpg_loss_falls_from_cached_features(tmp_path):
    seed_everything(0)
    teacher = TinyTeacher()
    train, val = make_set(24, 4, teacher), make_set(9, 5, teacher)
    seed_everything(1)
    cmpg = TinyCMPG()
    before = [p.clone() for p in teacher.parameters()]
    result = train_cmpg(cmpg, train, val, epochs=6, batch_size=6, lr=2e-2, device="cpu",
                        out_dir=tmp_path, progress=False)
    h = result.history
    assert h.select == "val_loss" and h["train_acc"] == [None] * 6
    # (two random samples of the same box are ~0.1 apart: the floor is not 0)
    assert h["train_loss"][-1] < 0.9 * h["train_loss"][0]
    assert h["val_loss"][-1] < h["val_loss"][0]
    assert h.best_metric == min(h["val_loss"])
    assert (tmp_path / "cmpg.pt").is_file()
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))


def test_train_cmpg_computes_features_from_views_with_a_frozen_teacher():
    seed_everything(0)
    teacher = TinyTeacher()
    data = make_set(6, 6)                                  # views, no img_feat
    seed_everything(1)
    cmpg = TinyCMPG(num_points=20)                         # fewer points than the shapes
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    result = train_cmpg(cmpg, data, data, teacher=teacher, epochs=2, batch_size=3, lr=1e-2,
                        device="cpu", progress=False)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert not any(p.requires_grad for p in teacher.parameters())
    assert len(result.history) == 2
    with pytest.raises(ValueError, match="no img_feat"):
        train_cmpg(TinyCMPG(), data, epochs=1, batch_size=3, device="cpu", progress=False)
    wide = TinyCMPG()
    wide.in_dim = FEAT + 1
    with pytest.raises(ValueError, match="feature sizes do not fit"):
        train_cmpg(wide, data, teacher=teacher, epochs=1, device="cpu", progress=False)


def _assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


def test_train_cmpg_kill_and_resume_matches_an_uninterrupted_run(tmp_path):
    seed_everything(0)
    teacher = TinyTeacher()
    train, val = make_set(12, 4, teacher), make_set(6, 5, teacher)
    full, resumed = _kill_and_resume(train_cmpg, TinyCMPG, train, val, tmp_path, init_seed=1)
    assert resumed.history["val_loss"] == full.history["val_loss"]
    _assert_same_state(full.model, resumed.model)
    # cmpg.pt (a plain state_dict for a non-package CMPG) is the selected model of both runs.
    saved_full = torch.load(tmp_path / "full" / "cmpg.pt", weights_only=True)
    saved_resumed = torch.load(tmp_path / "run" / "cmpg.pt", weights_only=True)
    assert all(torch.equal(saved_full[k], saved_resumed[k]) for k in saved_full)


# ------------------------------------------------------------------ stage III
def test_train_student_plain_and_with_pointcmt(tmp_path):
    from pointcmt_pyg.nn.distiller import CrossModalDistiller
    seed_everything(0)
    teacher = TinyTeacher()
    train, val = make_set(30, 7, teacher), make_set(12, 8, teacher)

    seed_everything(2)
    plain = TinyStudent()
    base = train_student(plain, train, val, epochs=3, batch_size=6, lr=5e-3, device="cpu",
                         out_dir=tmp_path / "plain", progress=False)
    assert base.history["train_loss"][-1] < base.history["train_loss"][0]

    seed_everything(2)
    student = TinyStudent()
    cmpg = TinyCMPG()
    frozen = {k: v.clone() for k, v in cmpg.state_dict().items()}
    model = CrossModalDistiller(student, teacher=teacher, cmpg=cmpg)
    result = train_student(model, train, val, epochs=3, batch_size=6, lr=5e-3, device="cpu",
                           out_dir=tmp_path / "cmt", progress=False)
    h = result.history
    assert result.model is model and h["train_loss"][-1] < h["train_loss"][0]
    # The PointCMT loss is larger than the plain CE (feature + classifier terms
    # on top of the same smoothed CE) on the same data and init.
    assert h["train_loss"][0] > base.history["train_loss"][0]
    assert all(torch.equal(frozen[k], v) for k, v in cmpg.state_dict().items())
    saved = load_checkpoint(tmp_path / "cmt" / "student.pt")
    assert saved.keys() == student.state_dict().keys()      # the plain student's weights
    assert torch.equal(saved["head.weight"], student.head.weight)
    # Validation loss of both runs is the same smoothed CE, so they compare.
    assert h["val_loss"][0] is not None and base.history["val_loss"][0] is not None


def test_train_student_pointcmt_kill_and_resume_matches_an_uninterrupted_run(tmp_path):
    """The distiller resumes exactly: its warm-up counter ``num_steps`` (a buffer), the
    projections between the student's (32) and the teacher's (16) feature sizes, and the
    student, against a run that was never interrupted."""
    from pointcmt_pyg.nn.distiller import CrossModalDistiller
    seed_everything(0)
    teacher = TinyTeacher()
    cmpg = TinyCMPG()
    train, val = make_set(12, 7, teacher), make_set(6, 8, teacher)
    def distiller():
        # official: CE-through-projection term too; warm-up spans the kill (3 steps per epoch)
        return CrossModalDistiller(TinyStudent(), teacher=teacher, cmpg=cmpg, recipe="official",
                                   warmup_steps=5)

    full, resumed = _kill_and_resume(train_student, distiller, train, val, tmp_path, init_seed=2, lr=5e-3)
    assert full.model.teacher_to_student is not None and full.model.student_to_teacher is not None
    last_full = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    assert int(last_full["num_steps"]) == 9           # 3 epochs x 3 batches
    _assert_same_state(full.model, resumed.model)     # the selected model
    last_resumed = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    assert last_full.keys() == last_resumed.keys()     # the last one, counter included
    for name in last_full:
        assert torch.equal(last_full[name], last_resumed[name]), name


# ------------------------------------------------------------------ plots
def _png_size(path):
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", raw[16:24])


def test_plots_write_pngs(tmp_path):
    a = History([{"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "val_oa": 0.4},
                 {"epoch": 2, "train_loss": 0.5, "train_acc": 0.8, "val_oa": 0.6}],
                best_epoch=2, best_metric=0.6)
    b = [{"epoch": 1, "train_loss": 1.2, "train_acc": 0.4, "val_oa": 0.3}]
    one = plot_training_curves(a, tmp_path / "one.png")
    both = plot_training_curves({"baseline": b, "PointCMT": a}, tmp_path / "sub" / "both.png",
                                metrics=("train_loss", "val_oa"))
    w1, h1 = _png_size(one)
    w2, h2 = _png_size(both)
    assert w1 > w2 and h1 == h2                 # three panels vs two, same height
    conf = torch.tensor([[5, 1, 0], [0, 3, 3], [0, 0, 0]])
    w, h = _png_size(plot_confusion_matrix(conf, tmp_path / "conf.png",
                                           class_names=["a", "b", "c"]))
    assert w > 100 and h > 100
    with pytest.raises(ValueError, match="square"):
        plot_confusion_matrix(torch.zeros(2, 3), tmp_path / "x.png")
    with pytest.raises(ValueError, match="class_names"):
        plot_confusion_matrix(conf, tmp_path / "x.png", class_names=["a"])
    with pytest.raises(ValueError, match="val_macc"):
        plot_training_curves(b, tmp_path / "x.png", metrics=("val_macc",))
    with pytest.raises(TypeError, match="run"):
        plot_training_curves(3, tmp_path / "x.png")


def test_three_stages_with_the_package_teacher_and_cmpg(tmp_path):
    """MultiViewTeacher -> CMPG -> CrossModalDistiller, artifacts reloadable."""
    from pointcmt_pyg.nn.cmpg import CMPG, load_cmpg
    from pointcmt_pyg.nn.distiller import CrossModalDistiller
    from pointcmt_pyg.nn.teacher import MultiViewTeacher, load_teacher

    train, val = make_set(12, 12), make_set(6, 13)
    seed_everything(0)
    teacher = MultiViewTeacher(NUM_CLASSES, backbone="resnet18", in_channels=1)
    stage1 = train_teacher(teacher, train, val, epochs=2, batch_size=6, device="cpu",
                           out_dir=tmp_path / "teacher", progress=False)
    assert stage1.history["train_loss"][1] < stage1.history["train_loss"][0]
    reloaded = load_teacher(tmp_path / "teacher" / "teacher.pt")
    teacher.eval()
    views = torch.cat([d.views for d in val])
    with torch.no_grad():
        assert torch.equal(reloaded(views), teacher(views))   # the selected weights

    seed_everything(1)
    cmpg = CMPG(in_dim=teacher.feat_dim, num_points=16)
    stage2 = train_cmpg(cmpg, train, val, teacher=teacher, epochs=2, batch_size=6, lr=1e-2,
                        device="cpu", out_dir=tmp_path / "cmpg", progress=False)
    assert stage2.history["val_loss"][1] < stage2.history["val_loss"][0]
    cmpg_back = load_cmpg(tmp_path / "cmpg" / "cmpg.pt")
    f = torch.randn(2, teacher.feat_dim)
    cmpg.eval()
    assert torch.equal(cmpg_back(f), cmpg(f))

    seed_everything(2)
    model = CrossModalDistiller(TinyStudent(), teacher, cmpg)     # views online, 32 -> 512
    stage3 = train_student(model, train, val, epochs=1, batch_size=6, device="cpu",
                           out_dir=tmp_path / "student", progress=False)
    # The saved student is the plain model, and its accuracy, counted here one shape at a
    # time, is what the run reported for validation.
    student = TinyStudent()
    student.load_state_dict(torch.load(tmp_path / "student" / "student.pt", weights_only=True))
    student.eval()
    with torch.no_grad():
        correct = sum(int(student(Batch.from_data_list([d])).argmax()) == int(d.y) for d in val)
    assert stage3.history["val_oa"][0] == pytest.approx(correct / len(val))
