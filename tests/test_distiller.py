"""Tests for pointcmt_pyg.nn.distiller.CrossModalDistiller."""
import copy

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torch_geometric.data import Batch, Data
from torch_geometric.nn import MLP, global_max_pool

from pointcmt_pyg.nn.distiller import CrossModalDistiller as _Distiller
from pointcmt_pyg.nn.distiller import DistillerOutput, find_head
from pointcmt_pyg.nn.losses import classifier_enhancement_loss


def CrossModalDistiller(*args, **kwargs):
    """The distiller with recipe="official" unless a test names another: the
    tests of this file pin the official loss (weights 30 / 9.6, T = 1, no KD
    term) and the projection behaviour; tests/test_recipes.py covers the
    other recipes and the default."""
    kwargs.setdefault("recipe", "official")
    return _Distiller(*args, **kwargs)


NUM_CLASSES, V, C, H, W = 4, 2, 1, 4, 4


# ---------------------------------------------------------------- stand-ins
class DataNet(nn.Module):
    """Tiny PointNet-like PyG model: forward(data), head = PyG MLP called `mlp`."""

    def __init__(self, dim=8, num_classes=NUM_CLASSES):
        super().__init__()
        self.point = nn.Sequential(nn.Linear(3, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.mlp = MLP([dim, 6, num_classes], norm=None, dropout=0.0)

    def forward(self, data):
        return self.mlp(global_max_pool(self.point(data.pos), data.batch))


class XPosBatchNet(nn.Module):
    """forward(x, pos, batch); no head-like name, so the last Linear (`lin2`) is the head."""

    def __init__(self, dim=8, num_classes=NUM_CLASSES):
        super().__init__()
        self.lin1 = nn.Linear(4, dim)
        self.lin2 = nn.Linear(dim, num_classes)

    def forward(self, x, pos, batch):
        h = torch.relu(self.lin1(torch.cat([x, pos], dim=1)))
        return self.lin2(global_max_pool(h, batch)).log_softmax(dim=-1)


class StandInTeacher(nn.Module):
    """features(views [B, V, C, H, W]) -> [B, feat_dim]: per-view linear map, max over views."""

    def __init__(self, feat_dim=8, forbid=False):
        super().__init__()
        self.feat_dim, self.in_channels, self.forbid = feat_dim, C, forbid
        self.lin = nn.Linear(C * H * W, feat_dim)
        self.calls = 0

    def features(self, views):
        if self.forbid:
            raise AssertionError("the teacher must not run here")
        self.calls += 1
        return self.lin(views.flatten(2)).amax(dim=1)


class StandInCMPG(nn.Module):
    """Dropout + Linear(no bias) -> [B, P, 3], as the paper's CMPG (small)."""

    def __init__(self, in_dim=8, num_points=6):
        super().__init__()
        self.in_dim, self.num_points = in_dim, num_points
        self.drop = nn.Dropout(0.5)
        self.lin = nn.Linear(in_dim, 3 * num_points, bias=False)

    def forward(self, f):
        return self.lin(self.drop(f)).view(f.size(0), self.num_points, 3)


def make_batch(num_graphs=3, points=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    data = [Data(pos=torch.rand(points, 3, generator=g),
                 x=torch.rand(points, 1, generator=g),
                 y=torch.tensor([i % NUM_CLASSES]),
                 views=torch.rand(1, V, C, H, W, generator=g),
                 sample_id=f"shape_{i}") for i in range(num_graphs)]
    return Batch.from_data_list(data)


def reference_sqrt_emd(x, y):
    out = []
    for xb, yb in zip(x, y):
        sq = ((xb[:, None] - yb[None]) ** 2).sum(-1)
        r, c = linear_sum_assignment(sq)
        out.append(np.sqrt(sq[r, c]).mean())
    return float(np.mean(out))


def bbox_normalize(p):
    lo, hi = p.min(axis=1, keepdims=True), p.max(axis=1, keepdims=True)
    return (p - (lo + hi) / 2) / (hi - lo).max(axis=2, keepdims=True)


# ---------------------------------------------------------------- the wrap
def test_three_line_wrap_with_data_input():
    teacher, cmpg = StandInTeacher(), StandInCMPG()
    model = CrossModalDistiller(DataNet(), teacher, cmpg)
    out = model(make_batch())
    assert isinstance(out, DistillerOutput)
    assert model.head_name == "mlp" and out.logits.shape == (3, NUM_CLASSES)
    assert set(out.losses) == {"ce", "feature", "classifier"}
    assert torch.allclose(out.loss, out.losses["ce"] + out.losses["feature"]
                          + out.losses["classifier"])
    assert all(torch.isfinite(v) and v > 0 for v in out.losses.values())
    out.loss.backward()
    assert teacher.calls == 1


def test_three_line_wrap_with_x_pos_batch_input():
    batch = make_batch()
    model = CrossModalDistiller(XPosBatchNet(), StandInTeacher(), StandInCMPG())
    assert model.head_name == "lin2"
    out = model(batch.x, batch.pos, batch.batch, y=batch.y, views=batch.views)
    assert out.loss is not None and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.student.lin1.weight.grad.abs().sum() > 0
    # Without labels: plain student output, no loss.
    out2 = model(batch.x, batch.pos, batch.batch)
    assert out2.loss is None and out2.losses == {}


def test_gradients_reach_student_not_frozen_teacher_or_cmpg():
    teacher, cmpg = StandInTeacher(), StandInCMPG()
    model = CrossModalDistiller(DataNet(), teacher, cmpg)
    model.train()
    assert not teacher.training and not cmpg.training  # frozen parts stay in eval
    assert all(not p.requires_grad for p in list(teacher.parameters()) + list(cmpg.parameters()))
    model(make_batch()).loss.backward()
    for name, p in model.student.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for p in list(teacher.parameters()) + list(cmpg.parameters()):
        assert p.grad is None
    trainable = {id(p) for p in model.trainable_parameters()}
    assert trainable == {id(p) for p in model.student.parameters()}


def test_feature_term_reaches_student_through_frozen_cmpg():
    model = CrossModalDistiller(DataNet(), StandInTeacher(), StandInCMPG(), w_ce=0.0)
    out = model(make_batch())
    out.losses["feature"].backward()
    assert model.student.point[0].weight.grad.abs().sum() > 0


def test_each_loss_term_equals_hand_computation():
    torch.manual_seed(0)
    student, teacher, cmpg = DataNet(), StandInTeacher(), StandInCMPG()
    model = CrossModalDistiller(student, teacher, cmpg, w_fe=30.0, w_ce=9.6,
                                label_smoothing=0.2, temperature=2.0)
    batch = make_batch(num_graphs=4)
    out = model(batch)

    with torch.no_grad():
        f_s = global_max_pool(student.point(batch.pos), batch.batch)
        z_s = student.mlp(f_s)
        f_t = teacher.lin(batch.views.flatten(2)).amax(dim=1)
        z_t = student.mlp(f_t)
        cmpg.eval()
        p_s, p_t = cmpg(f_s).double().numpy(), cmpg(f_t).double().numpy()
    y = batch.y.numpy()
    zs, zt = z_s.double().numpy(), z_t.double().numpy()

    logp = zs - np.log(np.exp(zs).sum(1, keepdims=True))
    q = np.full_like(logp, 0.2 / (NUM_CLASSES - 1))
    q[np.arange(4), y] = 0.8
    ce = -(q * logp).sum(1).mean()

    fe = 30.0 * reference_sqrt_emd(bbox_normalize(p_s), bbox_normalize(p_t))

    T = 2.0
    ps = np.exp(zs / T) / np.exp(zs / T).sum(1, keepdims=True)
    pt = np.exp(zt / T) / np.exp(zt / T).sum(1, keepdims=True)
    kl = 9.6 * T**2 * (pt * np.log(pt / ps)).sum(1).mean()

    assert torch.equal(out.logits.detach(), z_s)
    assert out.losses["ce"].item() == pytest.approx(ce, rel=1e-5)
    assert out.losses["feature"].item() == pytest.approx(fe, rel=2e-3)
    assert out.losses["classifier"].item() == pytest.approx(kl, rel=1e-3)  # float32 KL
    assert out.loss.item() == pytest.approx(ce + fe + kl, rel=2e-3)


def test_loss_is_deterministic_since_cmpg_dropout_is_off():
    model = CrossModalDistiller(DataNet(), StandInTeacher(), StandInCMPG())
    batch = make_batch()
    a, b = model(batch).losses["feature"], model(batch).losses["feature"]
    assert torch.equal(a, b)


def test_eval_output_is_bit_identical_to_plain_student():
    student = DataNet()
    plain = copy.deepcopy(student)
    teacher = StandInTeacher(forbid=True)  # would raise if run
    model = CrossModalDistiller(student, teacher, StandInCMPG()).eval()
    batch = make_batch()
    out = model(batch)
    assert out.loss is None and out.losses == {}
    assert torch.equal(out.logits, plain(batch))
    # No hooks are left on the user's modules.
    assert not student.mlp._forward_pre_hooks and not student.mlp._forward_hooks
    # Training mode without labels is also just the student.
    model.train()
    del batch.y
    out = model(batch)
    assert out.loss is None and torch.equal(out.logits, plain(batch))


def test_student_state_dict_saves_and_loads_without_wrapper(tmp_path):
    model = CrossModalDistiller(DataNet(), StandInTeacher(), StandInCMPG())
    opt = torch.optim.SGD(model.trainable_parameters(), lr=0.1)
    model(make_batch()).loss.backward()
    opt.step()
    torch.save(model.student.state_dict(), tmp_path / "student.pt")
    fresh = DataNet()
    fresh.load_state_dict(torch.load(tmp_path / "student.pt"))
    assert set(fresh.state_dict()) == set(DataNet().state_dict())
    batch = make_batch()
    model.eval()
    assert torch.equal(fresh(batch), model(batch).logits)


# ---------------------------------------------------------------- options
def test_projections_only_when_sizes_differ():
    same = CrossModalDistiller(DataNet(dim=8), StandInTeacher(8), StandInCMPG(8), recipe="official")
    assert same.student_to_teacher is None and same.teacher_to_student is None
    # The alignment (the default recipe's) gets a learned P_st at equal sizes too.
    aligned = CrossModalDistiller(DataNet(dim=8), StandInTeacher(8), StandInCMPG(8), recipe="aligned")
    assert isinstance(aligned.student_to_teacher, nn.Linear) and aligned.teacher_to_student is None
    model = CrossModalDistiller(DataNet(dim=5), StandInTeacher(8), StandInCMPG(8))
    assert (model.student_dim, model.teacher_dim) == (5, 8)
    assert isinstance(model.student_to_teacher, nn.Linear)
    assert (model.student_to_teacher.in_features, model.student_to_teacher.out_features) == (5, 8)
    assert (model.teacher_to_student.in_features, model.teacher_to_student.out_features) == (8, 5)
    model(make_batch()).loss.backward()
    assert model.student_to_teacher.weight.grad.abs().sum() > 0
    assert model.teacher_to_student.weight.grad.abs().sum() > 0
    trainable = {id(p) for p in model.trainable_parameters()}
    assert id(model.student_to_teacher.weight) in trainable


def test_projection_term_teaches_the_teacher_to_student_map_only():
    from pointcmt_pyg.nn.losses import label_smoothing_cross_entropy
    torch.manual_seed(0)
    batch = make_batch()
    model = CrossModalDistiller(DataNet(dim=5), StandInTeacher(8), StandInCMPG(8), w_proj=2.0)
    out = model(batch)
    assert set(out.losses) == {"ce", "feature", "classifier", "projection"}
    assert torch.allclose(out.loss, sum(out.losses.values()))
    # Its value: the label CE of the head on P_ts f_t.
    with torch.no_grad():
        f_t = model.teacher.features(batch.views)
        want = 2.0 * label_smoothing_cross_entropy(
            model.student.mlp(model.teacher_to_student(f_t)), batch.y, 0.2)
    assert out.losses["projection"].item() == pytest.approx(want.item(), rel=1e-5)
    # Its gradient reaches P_ts, never the head or the rest of the student.
    model.zero_grad()
    model(batch).losses["projection"].backward()
    assert model.teacher_to_student.weight.grad.abs().sum() > 0
    assert all(p.grad is None or not p.grad.any() for p in model.student.parameters())
    # Off when asked, and when no projection exists (equal sizes: the official set-up).
    assert "projection" not in CrossModalDistiller(DataNet(dim=5), StandInTeacher(8), StandInCMPG(8),
                                                   w_proj=0.0)(batch).losses
    assert "projection" not in CrossModalDistiller(DataNet(dim=8), StandInTeacher(8),
                                                   StandInCMPG(8))(batch).losses
    with pytest.raises(ValueError, match="w_proj"):
        CrossModalDistiller(DataNet(dim=5), StandInTeacher(8), w_proj=-1.0)


def _head_grads(model, batch):
    model.zero_grad()
    out = model(batch)
    out.losses["classifier"].backward()
    return [p.grad.clone() for p in model.student.mlp.parameters()]


def test_detach_head_teacher_stops_head_grads_from_teacher_branch():
    batch = make_batch()
    student, teacher = DataNet(), StandInTeacher()
    # w_fe=0 and no CMPG: only the classifier term matters here.
    attached = CrossModalDistiller(student, teacher, None)
    detached = CrossModalDistiller(student, teacher, None, detach_head_teacher=True)
    g_attached, g_detached = _head_grads(attached, batch), _head_grads(detached, batch)

    with torch.no_grad():
        f_s = global_max_pool(student.point(batch.pos), batch.batch)
        f_t = teacher.features(batch.views)
    # Reference for "detached": the teacher-side logits as a constant target.
    student.zero_grad()
    classifier_enhancement_loss(student.mlp(f_s), student.mlp(f_t).detach()).backward()
    g_ref_detached = [p.grad.clone() for p in student.mlp.parameters()]
    student.zero_grad()
    classifier_enhancement_loss(student.mlp(f_s), student.mlp(f_t)).backward()
    g_ref_attached = [p.grad.clone() for p in student.mlp.parameters()]

    for a, b in zip(g_detached, g_ref_detached):
        assert torch.allclose(a, b, atol=1e-6)
    for a, b in zip(g_attached, g_ref_attached):
        assert torch.allclose(a, b, atol=1e-6)
    assert any(not torch.allclose(a, b) for a, b in zip(g_attached, g_detached))


def test_detach_keeps_projection_learning():
    model = CrossModalDistiller(DataNet(dim=5), StandInTeacher(8), None,
                                detach_head_teacher=True, detach_teacher_logits=False)
    model(make_batch()).losses["classifier"].backward()
    assert model.teacher_to_student.weight.grad.abs().sum() > 0


def test_detach_teacher_logits_makes_the_kl_target_a_constant():
    batch = make_batch()
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="w_proj > 0"):
        CrossModalDistiller(DataNet(dim=5), StandInTeacher(8), None, detach_teacher_logits=True,
                            w_proj=0.0)
    # The defaults when the feature sizes differ; the official ones when they are equal.
    assert not CrossModalDistiller(DataNet(dim=8), StandInTeacher(8)).detach_teacher_logits
    assert not CrossModalDistiller(DataNet(dim=5), StandInTeacher(8), w_proj=0.0).detach_teacher_logits
    model = CrossModalDistiller(DataNet(dim=5), StandInTeacher(8), None)
    assert model.detach_teacher_logits and model.w_proj == 1.0
    model(batch).losses["classifier"].backward()
    # No gradient reaches P_ts through the KL (only the projection term trains it) ...
    assert model.teacher_to_student.weight.grad is None
    # ... and the head's gradient is that of the KL to a fixed target.
    got = [p.grad.clone() for p in model.student.mlp.parameters()]
    student = model.student
    student.zero_grad()
    with torch.no_grad():
        f_t = model.teacher_to_student(model.teacher.features(batch.views))
    f_s = global_max_pool(student.point(batch.pos), batch.batch)
    classifier_enhancement_loss(student.mlp(f_s), student.mlp(f_t).detach()).backward()
    for a, b in zip(got, (p.grad for p in student.mlp.parameters())):
        assert torch.allclose(a, b, atol=1e-6)


def test_warmup_ramps_both_enhancement_weights_and_resumes_from_state_dict():
    batch = make_batch()
    torch.manual_seed(0)
    full = CrossModalDistiller(DataNet(), StandInTeacher(), StandInCMPG())
    torch.manual_seed(0)
    ramped = CrossModalDistiller(DataNet(), StandInTeacher(), StandInCMPG(), warmup_steps=4)
    ramped.load_state_dict({**full.state_dict(), "num_steps": torch.tensor(0)})
    seen = []
    for step in range(6):
        torch.manual_seed(step)                   # the same CMPG dropout in both
        want = full(batch).losses
        torch.manual_seed(step)
        factor = ramped.warmup_factor()
        got = ramped(batch).losses
        seen.append(factor)
        assert got["ce"].item() == pytest.approx(want["ce"].item(), rel=1e-6)
        for term in ("feature", "classifier"):
            assert got[term].item() == pytest.approx(factor * want[term].item(), rel=1e-5, abs=1e-7)
    assert seen == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert int(ramped.num_steps) == 6
    # Eval forwards do not count; the count travels in the state_dict (resume).
    ramped.eval()
    ramped(batch)
    assert int(ramped.num_steps) == 6
    restored = CrossModalDistiller(DataNet(), StandInTeacher(), StandInCMPG(), warmup_steps=8)
    restored.load_state_dict(ramped.state_dict())
    assert restored.warmup_factor() == 0.75
    with pytest.raises(ValueError, match="warmup_steps"):
        CrossModalDistiller(DataNet(), StandInTeacher(), warmup_steps=-1)


def test_without_cmpg_feature_term_is_zero():
    model = CrossModalDistiller(DataNet(), StandInTeacher(), None)
    out = model(make_batch())
    assert out.losses["feature"].item() == 0.0
    assert torch.allclose(out.loss, out.losses["ce"] + out.losses["classifier"])


def test_cached_img_feat_is_used_without_running_teacher():
    batch = make_batch()
    teacher = StandInTeacher()
    with torch.no_grad():
        batch.img_feat = teacher.features(batch.views)
    student = DataNet()
    via_views = CrossModalDistiller(student, teacher, None, teacher_source="views")(batch)
    forbidden = StandInTeacher(forbid=True)
    via_cache = CrossModalDistiller(student, forbidden, None)(batch)  # "auto" prefers img_feat
    only_cache = CrossModalDistiller(student, None, None, teacher_source="cache",
                                     teacher_dim=8)(batch)
    for out in (via_cache, only_cache):
        assert torch.allclose(out.loss, via_views.loss)


def test_find_head_variants():
    assert find_head(DataNet())[0] == "mlp"
    assert find_head(XPosBatchNet())[0] == "lin2"
    net = DataNet()
    assert find_head(net, "point.2") == ("point.2", net.point[2])
    assert find_head(net, net.mlp) == ("mlp", net.mlp)

    class Nested(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Module()
            self.body.classifier = nn.Sequential(nn.Linear(8, 3))
            self.extra = nn.Linear(3, 3)

    assert find_head(Nested())[0] == "body.classifier"


# ---------------------------------------------------------------- errors
def test_error_no_findable_head():
    class NoLinear(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(3, 4))

        def forward(self, data):
            return global_max_pool(data.pos, data.batch) @ self.w

    with pytest.raises(ValueError, match="could not find a classifier head"):
        CrossModalDistiller(NoLinear(), StandInTeacher())
    with pytest.raises(ValueError, match="not a submodule"):
        CrossModalDistiller(DataNet(), StandInTeacher(), head="nope")
    with pytest.raises(TypeError, match="student"):
        CrossModalDistiller("not a model", StandInTeacher())


def test_error_feature_sizes_do_not_fit():
    with pytest.raises(ValueError, match="do not fit.*teacher.feat_dim = 8.*cmpg in_dim = 16"):
        CrossModalDistiller(DataNet(), StandInTeacher(8), StandInCMPG(16))
    with pytest.raises(ValueError, match="teacher_dim"):
        CrossModalDistiller(DataNet(), StandInTeacher(8), None, teacher_dim=4)


def test_error_labels_out_of_range():
    model = CrossModalDistiller(DataNet(), StandInTeacher(), None)
    batch = make_batch()
    batch.y = torch.tensor([0, 1, NUM_CLASSES])
    with pytest.raises(ValueError, match="out of range"):
        model(batch)
    batch.y = torch.tensor([0, -1, 1])
    with pytest.raises(ValueError, match="out of range"):
        model(batch)
    batch.y = torch.tensor([0.0, 1.0, 2.0])
    with pytest.raises(TypeError, match="integer"):
        model(batch)
    batch.y = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="2 entries"):
        model(batch)


def test_error_missing_img_feat_when_cache_required():
    model = CrossModalDistiller(DataNet(), StandInTeacher(), None, teacher_source="cache")
    with pytest.raises(ValueError, match="no img_feat"):
        model(make_batch())
    batch = make_batch()
    batch.img_feat = torch.randn(3, 5)
    with pytest.raises(ValueError, match=r"img_feat must be \[B, D_t\]"):
        model(batch)
    del batch.views, batch.img_feat
    with pytest.raises(ValueError, match="neither img_feat"):
        CrossModalDistiller(DataNet(), StandInTeacher(), None)(batch)


def test_error_views_of_wrong_shape():
    model = CrossModalDistiller(DataNet(), StandInTeacher(), None)
    batch = make_batch()
    batch.views = torch.rand(3, C, H, W)
    with pytest.raises(ValueError, match=r"views must be \[B, V, C, H, W\]"):
        model(batch)
    batch.views = torch.rand(3, V, 3, H, W)
    with pytest.raises(ValueError, match="channels"):
        model(batch)
    with pytest.raises(ValueError, match="needs a teacher"):
        CrossModalDistiller(DataNet(), None, None, teacher_source="views")


def test_error_bad_hyperparameters():
    for kwargs, name in (({"w_fe": -1.0}, "w_fe"), ({"w_ce": -1.0}, "w_ce"),
                         ({"label_smoothing": 1.0}, "label_smoothing"),
                         ({"temperature": 0.0}, "temperature"),
                         ({"teacher_source": "disk"}, "teacher_source")):
        with pytest.raises(ValueError, match=name):
            CrossModalDistiller(DataNet(), StandInTeacher(), **kwargs)


def test_error_head_that_is_not_the_classifier():
    # The first Linear of the point MLP receives per-point features, not [B, D]...
    model = CrossModalDistiller(DataNet(), StandInTeacher(3), head="point.0",
                                teacher_dim=3)
    with pytest.raises(ValueError, match="does not match the student's logits"):
        model(make_batch())


def test_projections_follow_the_terms_that_use_them():
    no_cmpg = CrossModalDistiller(DataNet(dim=5), StandInTeacher(8), None)
    assert no_cmpg.student_to_teacher is None and no_cmpg.teacher_to_student is not None
    no_kl = CrossModalDistiller(DataNet(dim=5), StandInTeacher(8), StandInCMPG(8), w_ce=0.0)
    assert no_kl.student_to_teacher is not None and no_kl.teacher_to_student is None
