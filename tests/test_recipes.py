"""Stage-III recipes: the official loss against the official code's formulas,
each recipe's terms on fixed tensors, the zero-weight equivalence with the
plain baseline (bit for bit, through the real training loop) and the
teacher-margin warning."""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.data import Data
from torch_geometric.nn import global_max_pool

from pointcmt_pyg.nn import CrossModalDistiller
from pointcmt_pyg.nn.recipes import DEFAULT_RECIPE, RECIPES, Recipe, get_recipe
from pointcmt_pyg.pipeline import (PipelineConfig, TeacherNotBetterWarning, distiller_kwargs,
                                   teacher_margin)
from pointcmt_pyg.train import seed_everything, train_student
from test_distiller import (NUM_CLASSES, DataNet, StandInCMPG, StandInTeacher, bbox_normalize,
                            make_batch, reference_sqrt_emd)


class HeadedTeacher(StandInTeacher):
    """A stand-in teacher with its own classifier ``head`` (as MultiViewTeacher)."""

    def __init__(self, feat_dim=8):
        super().__init__(feat_dim)
        self.head = nn.Linear(feat_dim, NUM_CLASSES)


KD_ABS = 5e-6   # absolute float32 tolerance of a KD term on near-equal distributions


def _np_softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _smoothed_ce(z, y, eps=0.2):
    logp = np.log(_np_softmax(z))
    q = np.full_like(logp, eps / (z.shape[1] - 1))
    q[np.arange(len(y)), y] = 1 - eps
    return -(q * logp).sum(1).mean()


def _kl_sum(p_t, p_s):
    return float((p_t * (np.log(p_t) - np.log(p_s))).sum())


def _raw_features(student, teacher, batch):
    r"""``(f_s, f_t)`` of the stand-in student and teacher, without gradients."""
    with torch.no_grad():
        return (global_max_pool(student.point(batch.pos), batch.batch),
                teacher.lin(batch.views.flatten(2)).amax(dim=1))


def _features(student, teacher, cmpg, batch):
    f_s, f_t = _raw_features(student, teacher, batch)
    with torch.no_grad():
        cmpg.eval()
        return (f_s, f_t, student.mlp(f_s).double().numpy(), student.mlp(f_t).double().numpy(),
                cmpg(f_s).double().numpy(), cmpg(f_t).double().numpy())


def test_official_recipe_is_the_official_code_at_batch_32():
    """train_pointcmt.py: smooth_loss(eps 0.2) + 30 * sqrt(emd).mean(1).mean()
    + 0.3 * F.kl_div(log p_s, p_t, reduction="sum") over a batch of 32."""
    torch.manual_seed(0)
    student, teacher, cmpg = DataNet(), HeadedTeacher(), StandInCMPG()
    model = CrossModalDistiller(student, teacher, cmpg, recipe="official")
    assert (model.w_fe, model.w_ce, model.w_kd, model.temperature, model.label_smoothing) == \
        (30.0, 9.6, 0.0, 1.0, 0.2)
    batch = make_batch(num_graphs=32)
    out = model(batch)
    _, _, zs, zt, ps, pt = _features(student, teacher, cmpg, batch)
    y = batch.y.numpy()
    ce = _smoothed_ce(zs, y)
    fe = 30.0 * reference_sqrt_emd(bbox_normalize(ps), bbox_normalize(pt))
    kl = 0.3 * _kl_sum(_np_softmax(zt), _np_softmax(zs))    # summed over the 32 samples
    assert set(out.losses) == {"ce", "feature", "classifier"}
    assert out.losses["ce"].item() == pytest.approx(ce, rel=1e-5)
    # The EMD op is an auction within its certified gap of the exact assignment
    # (tests/test_emd.py), hence the looser tolerance on that term only.
    assert out.losses["feature"].item() == pytest.approx(fe, rel=2e-3)
    assert out.losses["classifier"].item() == pytest.approx(kl, rel=1e-4)
    assert out.loss.item() == pytest.approx(ce + fe + kl, rel=2e-3)


def test_kd_recipe_is_plain_hinton_kd_from_the_teacher_classifier():
    torch.manual_seed(1)
    student, teacher, cmpg = DataNet(), HeadedTeacher(), StandInCMPG()
    model = CrossModalDistiller(student, teacher, cmpg, recipe="kd")
    batch = make_batch(num_graphs=6)
    out = model(batch)
    _, f_t, zs, _, _, _ = _features(student, teacher, cmpg, batch)
    with torch.no_grad():
        zt = teacher.head(f_t).double().numpy()
    T = 4.0
    kd = T * T * _kl_sum(_np_softmax(zt / T), _np_softmax(zs / T)) / 6
    # The term is a small difference of O(1) float32 log-probabilities (near-equal distributions
    # here), so its absolute float32 error, not its relative one, is bounded: 3.5e-7 measured on
    # an Intel Xeon, 0 on an AMD EPYC. T vs T^2, the batch mean or another target are all far
    # outside KD_ABS; the KL's direction is checked on separated distributions in test_losses.
    assert out.losses["kd"].item() == pytest.approx(kd, rel=1e-5, abs=KD_ABS)
    assert out.losses["feature"].item() == 0.0 and out.losses["classifier"].item() == 0.0
    assert out.loss.item() == pytest.approx(_smoothed_ce(zs, batch.y.numpy()) + kd, rel=1e-5)
    # The teacher classifier is a fixed target: no gradient reaches it.
    out.loss.backward()
    assert teacher.head.weight.grad is None


def test_balanced_recipe_terms_and_warmup_on_fixed_tensors():
    recipe = RECIPES["balanced"]
    torch.manual_seed(2)
    student, teacher, cmpg = DataNet(), HeadedTeacher(), StandInCMPG()
    model = CrossModalDistiller(student, teacher, cmpg, recipe="balanced", warmup_steps=4)
    assert model.recipe == recipe
    batch = make_batch(num_graphs=5)
    _, f_t, zs, _, ps, pt = _features(student, teacher, cmpg, batch)
    with torch.no_grad():
        zt = teacher.head(f_t).double().numpy()
    T = recipe.temperature
    kd = recipe.w_kd * T * T * _kl_sum(_np_softmax(zt / T), _np_softmax(zs / T)) / 5
    fe = recipe.w_fe * reference_sqrt_emd(bbox_normalize(ps), bbox_normalize(pt))
    for step in range(6):          # the feature term ramps 0, 1/4, ..., 1; KD never ramps
        out = model(batch)
        ramp = min(1.0, step / 4)
        assert out.losses["kd"].item() == pytest.approx(kd, rel=1e-5, abs=KD_ABS)
        assert out.losses["feature"].item() == pytest.approx(ramp * fe, rel=2e-3, abs=1e-7)
        assert out.losses["classifier"].item() == 0.0
    # Explicit arguments override the recipe's.
    assert CrossModalDistiller(DataNet(), HeadedTeacher(), StandInCMPG(), recipe="balanced",
                               w_fe=7.0).w_fe == 7.0


def test_distiller_passes_emd_eps_to_the_feature_terms_emd(monkeypatch):
    import sys

    emd_module = sys.modules["pointcmt_pyg.ops.emd"]
    seen, real = [], emd_module.emd

    def spy(x, y, eps, max_iters):
        seen.append(eps)
        return real(x, y, eps=eps, max_iters=max_iters)

    monkeypatch.setattr(emd_module, "emd", spy)
    batch = make_batch(num_graphs=4)
    for emd_eps in (0.05, None):
        torch.manual_seed(2)
        model = CrossModalDistiller(DataNet(), HeadedTeacher(), StandInCMPG(), recipe="balanced",
                                    emd_eps=emd_eps)
        assert model(batch).losses["feature"].item() > 0
    assert seen == [0.05, emd_module.DEFAULT_EPS]


def test_recipe_errors_name_the_argument():
    with pytest.raises(ValueError, match="recipe must be one of"):
        CrossModalDistiller(DataNet(), HeadedTeacher(), recipe="magic")
    # KD needs the teacher's classifier or the teacher's logits with every batch.
    no_head = CrossModalDistiller(DataNet(), StandInTeacher(), StandInCMPG(), recipe="kd").train()
    with pytest.raises(ValueError, match="w_kd=1 .*img_logits"):
        no_head(make_batch(num_graphs=4))
    with pytest.raises(ValueError, match="w_kd must be"):
        CrossModalDistiller(DataNet(), HeadedTeacher(), w_kd=-1.0)
    with pytest.raises(ValueError, match="recipe must be one of"):
        PipelineConfig(recipe="magic").resolved()
    with pytest.raises(ValueError, match="temperature"):
        PipelineConfig(temperature=0.0).resolved()
    assert get_recipe(Recipe(w_fe=1.0)).w_fe == 1.0
    for bad in (-0.1, 1.0, True, "0.01"):
        with pytest.raises(ValueError, match="emd_eps must be"):
            CrossModalDistiller(DataNet(), HeadedTeacher(), StandInCMPG(), emd_eps=bad)
    assert CrossModalDistiller(DataNet(), HeadedTeacher(), StandInCMPG(), emd_eps=0.01).emd_eps == 0.01


def test_pipeline_config_takes_the_recipe_and_overrides():
    cfg = PipelineConfig(recipe="official", epochs=8).resolved()
    assert (cfg.w_fe, cfg.w_ce, cfg.w_kd, cfg.temperature, cfg.warmup_epochs) == \
        (30.0, 9.6, 0.0, 1.0, 0.0)
    cfg = PipelineConfig(epochs=8, recipe="balanced").resolved()
    assert cfg.recipe == "balanced" and cfg.warmup_epochs == 8 * 0.25
    kw = distiller_kwargs(PipelineConfig(epochs=8, recipe="balanced", w_fe=5.0, batch_size=10),
                          num_train=100)
    assert kw["w_fe"] == 5.0 and kw["w_kd"] == 1.0 and kw["warmup_steps"] == 20
    cfg = PipelineConfig(epochs=8).resolved()                     # default: aligned
    assert (cfg.recipe, cfg.w_fe, cfg.w_kd, cfg.w_align, cfg.align_center, cfg.warmup_epochs) == \
        ("aligned", 0.0, 1.0, 4.0, True, 0.0)


def _toy_dataset(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        y = i % NUM_CLASSES
        pos = torch.rand(16, 3, generator=g) * (1 + y)
        out.append(Data(pos=pos, y=torch.tensor([y]), sample_id=f"s{i}",
                        img_feat=torch.rand(1, 8, generator=g) + y))
    return out


def test_zero_weights_train_exactly_the_plain_baseline(tmp_path):
    """Every weight 0 (w_fe = w_ce = w_kd = w_align = 0, on top of the default
    recipe): the distiller run reaches the plain run's parameters bit for bit
    (same seed, same loop, same data order)."""
    data = _toy_dataset()

    def run(wrap):
        seed_everything(3)
        student = DataNet()
        model = (CrossModalDistiller(student, HeadedTeacher(), StandInCMPG(), w_fe=0.0,
                                     w_ce=0.0, w_kd=0.0, w_align=0.0, teacher_source="cache")
                 if wrap else student)
        train_student(model, data, None, epochs=2, batch_size=8, lr=1e-2, device="cpu",
                      seed=3, progress=False, num_classes=NUM_CLASSES)
        return student.state_dict()

    plain, wrapped = run(False), run(True)
    assert plain.keys() == wrapped.keys()
    for key in plain:
        assert torch.equal(plain[key], wrapped[key]), key
    # ... and each of the default recipe's terms alone does change the result (the check can fail).
    for w_kd, w_align in ((1.0, 0.0), (0.0, 4.0)):
        seed_everything(3)
        student = DataNet()
        train_student(CrossModalDistiller(student, HeadedTeacher(), StandInCMPG(), w_fe=0.0,
                                          w_ce=0.0, w_kd=w_kd, w_align=w_align,
                                          teacher_source="cache"),
                      data, None, epochs=2, batch_size=8, lr=1e-2, device="cpu", seed=3,
                      progress=False, num_classes=NUM_CLASSES)
        assert any(not torch.equal(plain[k], v) for k, v in student.state_dict().items())


def test_teacher_margin_warns_when_the_teacher_is_not_better(capsys):
    with pytest.warns(TeacherNotBetterWarning, match="NOT BETTER"):
        assert teacher_margin(0.90, 0.92) == pytest.approx(-0.02)
    assert "WARNING" in capsys.readouterr().err
    with pytest.warns(TeacherNotBetterWarning):
        teacher_margin(0.90, 0.90)                        # level is not better either
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert teacher_margin(0.95, 0.92) == pytest.approx(0.03)


def test_augment_views_mirrors_and_shifts_each_shape_as_a_whole():
    from pointcmt_pyg.train.stages import augment_views
    views = torch.zeros(64, 3, 1, 8, 8)
    views[:, :, :, 3, 2] = 1.0                               # one lit pixel per view
    torch.manual_seed(0)
    out = augment_views(views, max_shift=1)
    assert out.shape == views.shape
    flipped = 0
    for b in range(64):
        lit = [tuple(torch.nonzero(out[b, v, 0]).tolist()[0]) for v in range(3)]
        assert len(set(lit)) == 1                            # the same move for all views
        r, c = lit[0]
        assert abs(r - 3) <= 1 and (abs(c - 2) <= 1 or abs(c - 5) <= 1)
        flipped += abs(c - 5) <= 1
    assert 16 < flipped < 48                                 # about half mirrored
    assert torch.equal(augment_views(views, max_shift=0, generator=torch.Generator().manual_seed(1))
                       .sum(), views.sum())
    with pytest.raises(ValueError, match="max_shift"):
        augment_views(views, max_shift=-1)
    with pytest.raises(ValueError, match="views"):
        augment_views(views[0])


def test_recipe_weights_are_the_documented_values():
    """The weights a user gets without passing any: asserted as numbers, not read back from
    the table they come from."""
    official = CrossModalDistiller(DataNet(), HeadedTeacher(), StandInCMPG(), recipe="official")
    assert (official.w_fe, official.w_ce, official.w_kd) == (30.0, 9.6, 0.0)
    assert (official.label_smoothing, official.temperature) == (0.2, 1.0)
    balanced = CrossModalDistiller(DataNet(), HeadedTeacher(), StandInCMPG(), recipe="balanced")
    assert (balanced.w_fe, balanced.w_ce, balanced.w_kd, balanced.temperature) == (3.0, 0.0, 1.0, 1.0)
    assert RECIPES["balanced"].warmup_fraction == 0.25
    default = CrossModalDistiller(DataNet(), HeadedTeacher())           # no CMPG needed
    assert default.recipe_name == "aligned"
    assert (default.w_fe, default.w_ce, default.w_kd, default.temperature) == (0.0, 0.0, 1.0, 1.0)
    assert (default.w_align, default.align_center, default.label_smoothing) == (4.0, True, 0.2)
    kd = CrossModalDistiller(DataNet(), HeadedTeacher(), StandInCMPG(), recipe="kd")
    assert (kd.w_fe, kd.w_ce, kd.w_kd, kd.temperature) == (0.0, 0.0, 1.0, 4.0)


def test_a_forward_that_raises_does_not_advance_the_warmup_counter():
    model = CrossModalDistiller(DataNet(), HeadedTeacher(), StandInCMPG(), teacher_source="cache",
                                warmup_steps=4)
    batch = make_batch(num_graphs=3)                  # views, but no img_feat
    with pytest.raises(ValueError, match="img_feat"):
        model(batch)
    assert int(model.num_steps) == 0
    batch.img_feat = torch.randn(3, 8)
    model(batch)
    assert int(model.num_steps) == 1
    model.eval()
    model(batch)                                      # evaluation forwards do not count
    assert int(model.num_steps) == 1


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("num_train,batch_size", [(25, 4), (24, 2), (7, 8)])
def test_warmup_epochs_reach_the_distiller_as_the_steps_each_process_takes(monkeypatch, world,
                                                                          num_train, batch_size):
    """``--warmup-epochs`` becomes the distiller's ``warmup_steps``: the number of forwards
    each process makes in that many epochs, counted with the sampler a rank really uses."""
    from torch.utils.data import DistributedSampler
    from torch_geometric.loader import DataLoader

    monkeypatch.setenv("WORLD_SIZE", str(world))
    data = list(range(num_train))
    per_rank = [len(DataLoader(data, batch_size=batch_size,
                               sampler=DistributedSampler(data, num_replicas=world, rank=r,
                                                          shuffle=True))) for r in range(world)]
    assert len(set(per_rank)) == 1                   # every rank takes the same number
    for epochs in (0.25, 1.0, 2.0):
        cfg = PipelineConfig(warmup_epochs=epochs, batch_size=batch_size)
        assert distiller_kwargs(cfg, num_train)["warmup_steps"] == round(epochs * per_rank[0])


def _np_one_minus_cos(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float((1.0 - cos).mean())


def test_alignment_term_on_fixed_tensors_same_size_no_projection():
    """w_align * mean(1 - cos(f_s, f_t)): equal feature sizes and
    align_projection=False, so no projection; never ramped; gradient reaches
    the student but not the teacher."""
    torch.manual_seed(3)
    student, teacher, cmpg = DataNet(), HeadedTeacher(), StandInCMPG()
    model = CrossModalDistiller(student, teacher, cmpg, recipe="balanced", w_fe=0.0,
                                w_align=2.5, warmup_steps=100, align_projection=False)
    assert model.student_to_teacher is None and model.w_align == 2.5
    batch = make_batch(num_graphs=7)
    f_s, f_t, zs, _, _, _ = _features(student, teacher, cmpg, batch)
    out = model(batch)                   # step 0 of a 100-step warm-up: the ramp is 0
    assert out.losses["align"].item() == pytest.approx(2.5 * _np_one_minus_cos(f_s, f_t), rel=1e-5)
    assert out.losses["feature"].item() == 0.0
    out.loss.backward()
    assert student.point[0].weight.grad.abs().sum() > 0
    assert teacher.lin.weight.grad is None and teacher.head.weight.grad is None
    # Without w_align the term is absent, and the loss is the same as before it existed.
    torch.manual_seed(3)
    plain = CrossModalDistiller(DataNet(), HeadedTeacher(), StandInCMPG(), recipe="balanced", w_fe=0.0)
    out0 = plain(batch)
    assert "align" not in out0.losses
    assert out.loss.item() == pytest.approx(out0.loss.item() + out.losses["align"].item(), rel=1e-6)


def test_alignment_of_equal_sizes_goes_through_a_learned_projection_by_default():
    # RESULTS.md session 25, H48: the identity cost 2.6 test points where a
    # point teacher's feature was as wide as the student's.
    torch.manual_seed(5)
    student, teacher = DataNet(), HeadedTeacher()
    model = CrossModalDistiller(student, teacher, None, recipe="aligned")
    assert model.student_dim == model.teacher_dim
    assert isinstance(model.student_to_teacher, nn.Linear)
    dim = model.student_dim
    assert (model.student_to_teacher.in_features, model.student_to_teacher.out_features) == (dim, dim)
    batch = make_batch(num_graphs=6)
    f_s, f_t = _raw_features(student, teacher, batch)
    with torch.no_grad():
        f_s_t = model.student_to_teacher(f_s)
    out = model(batch)
    centred = lambda f: f - f.mean(dim=0, keepdim=True)          # noqa: E731 (align_center)
    assert out.losses["align"].item() == pytest.approx(
        4.0 * _np_one_minus_cos(centred(f_s_t), centred(f_t)), rel=1e-5)
    out.loss.backward()
    assert model.student_to_teacher.weight.grad.abs().sum() > 0
    assert any(p is model.student_to_teacher.weight for p in model.trainable_parameters())
    # Off, or without the alignment term, there is none.
    assert CrossModalDistiller(DataNet(), HeadedTeacher(), None, recipe="aligned",
                               align_projection=False).student_to_teacher is None
    assert CrossModalDistiller(DataNet(), HeadedTeacher(), None, recipe="aligned",
                               w_align=0.0).student_to_teacher is None
    with pytest.raises(TypeError, match="align_projection"):
        CrossModalDistiller(DataNet(), HeadedTeacher(), None, align_projection="yes")


def test_alignment_term_projects_a_student_feature_of_another_size():
    torch.manual_seed(4)
    student, teacher = DataNet(dim=5), HeadedTeacher(feat_dim=8)
    # No CMPG at all: the alignment term alone creates P_st (5 -> 8).
    model = CrossModalDistiller(student, teacher, None, recipe="kd", w_align=1.0)
    assert isinstance(model.student_to_teacher, nn.Linear)
    assert (model.student_to_teacher.in_features, model.student_to_teacher.out_features) == (5, 8)
    assert model.teacher_to_student is None
    batch = make_batch(num_graphs=4)
    f_s, f_t = _raw_features(student, teacher, batch)
    with torch.no_grad():
        f_s_t = model.student_to_teacher(f_s)
    out = model(batch)
    assert out.losses["align"].item() == pytest.approx(_np_one_minus_cos(f_s_t, f_t), rel=1e-5)
    out.loss.backward()
    assert model.student_to_teacher.weight.grad.abs().sum() > 0
    # The projection is among the parameters the optimizer gets.
    assert any(p is model.student_to_teacher.weight for p in model.trainable_parameters())
    # Without the term (and without a CMPG) there is nothing to project for.
    assert CrossModalDistiller(DataNet(dim=5), HeadedTeacher(), None,
                               recipe="kd").student_to_teacher is None


def test_alignment_weight_errors_name_it_and_reach_the_config():
    with pytest.raises(ValueError, match="w_align must be"):
        CrossModalDistiller(DataNet(), HeadedTeacher(), w_align=-0.5)
    with pytest.raises(ValueError, match="w_align must be"):
        PipelineConfig(w_align=-1.0).resolved()
    assert {name for name, recipe in RECIPES.items() if recipe.w_align} == {"aligned"}
    cfg = PipelineConfig(recipe="balanced", w_align=2.0)
    assert distiller_kwargs(cfg, 100)["w_align"] == 2.0
    assert distiller_kwargs(PipelineConfig(recipe="balanced"), 100)["w_align"] == 0.0
    # Recorded in the PointCMT stage's settings only when used (older runs keep theirs).
    assert cfg.resolved().settings("pointcmt")["w_align"] == 2.0
    assert "w_align" not in PipelineConfig(recipe="balanced").resolved().settings("pointcmt")


def test_centred_alignment_removes_the_batch_mean_of_each_side():
    torch.manual_seed(5)
    student, teacher = DataNet(), HeadedTeacher()
    model = CrossModalDistiller(student, teacher, None, recipe="kd", w_align=1.5, align_center=True,
                                align_projection=False)            # the identity: f_s itself
    batch = make_batch(num_graphs=6)
    with torch.no_grad():
        f_s = global_max_pool(student.point(batch.pos), batch.batch).double().numpy()
        f_t = teacher.lin(batch.views.flatten(2)).amax(dim=1).double().numpy()
    expected = 1.5 * _np_one_minus_cos(f_s - f_s.mean(0), f_t - f_t.mean(0))
    out = model(batch)
    assert out.losses["align"].item() == pytest.approx(expected, rel=1e-5)
    # Not the uncentred value: the centring changes the term on these features.
    assert abs(expected - 1.5 * _np_one_minus_cos(f_s, f_t)) > 1e-3
    with pytest.raises(TypeError, match="align_center"):
        CrossModalDistiller(DataNet(), HeadedTeacher(), w_align=1.0, align_center="yes")
    with pytest.raises(ValueError, match="align_center must be a bool"):
        PipelineConfig(align_center="yes").resolved()      # before stages I and II run
    cfg = PipelineConfig(recipe="balanced", w_align=2.0, align_center=True)
    assert distiller_kwargs(cfg, 10)["align_center"] is True
    assert cfg.resolved().settings("pointcmt")["align_center"] is True
    assert "align_center" not in PipelineConfig(recipe="balanced",
                                                w_align=2.0).resolved().settings("pointcmt")


def test_aligned_recipe_is_kd_plus_centred_alignment_without_a_cmpg():
    recipe = RECIPES["aligned"]
    assert (recipe.w_fe, recipe.w_ce, recipe.w_kd, recipe.temperature) == (0.0, 0.0, 1.0, 1.0)
    assert (recipe.w_align, recipe.align_center, recipe.warmup_fraction) == (4.0, True, 0.0)
    assert DEFAULT_RECIPE == "aligned"      # chosen on the validation carve (RESULTS.md, session 23)
    torch.manual_seed(6)
    student, teacher = DataNet(), HeadedTeacher()
    model = CrossModalDistiller(student, teacher, None, recipe="aligned")   # no CMPG needed
    assert (model.w_align, model.align_center, model.w_fe, model.w_kd) == (4.0, True, 0.0, 1.0)
    batch = make_batch(num_graphs=6)
    with torch.no_grad():
        f_s = global_max_pool(student.point(batch.pos), batch.batch)
        f_t = teacher.lin(batch.views.flatten(2)).amax(dim=1)
        zs = student.mlp(f_s).double().numpy()
        zt = teacher.head(f_t).double().numpy()
        f_s = model.student_to_teacher(f_s)    # equal sizes, still a learned P_st (H48)
    f_s, f_t = f_s.double().numpy(), f_t.double().numpy()
    y = batch.y.numpy()
    ce = _smoothed_ce(zs, y)
    kd = _kl_sum(_np_softmax(zt), _np_softmax(zs)) / len(y)
    align = 4.0 * _np_one_minus_cos(f_s - f_s.mean(0), f_t - f_t.mean(0))
    out = model(batch)
    assert out.losses["feature"].item() == 0.0 and out.losses["classifier"].item() == 0.0
    assert out.losses["ce"].item() == pytest.approx(ce, rel=1e-5)
    assert out.losses["kd"].item() == pytest.approx(kd, abs=KD_ABS)
    assert out.losses["align"].item() == pytest.approx(align, rel=1e-5)
    assert out.loss.item() == pytest.approx(ce + kd + align, rel=1e-5)
    # Explicit arguments override the recipe's, the centring included.
    plain = CrossModalDistiller(DataNet(), HeadedTeacher(), None, recipe="aligned",
                                align_center=False, w_align=0.5)
    assert (plain.align_center, plain.w_align) == (False, 0.5)
    # The pipeline resolves the same values and records them for --resume.
    cfg = PipelineConfig(recipe="aligned").resolved()
    assert (cfg.w_fe, cfg.w_align, cfg.align_center) == (0.0, 4.0, True)
    settings = cfg.settings("pointcmt")
    assert settings["recipe"] == "aligned" and settings["align_center"] is True
    assert PipelineConfig(recipe="aligned", align_center=False).resolved().align_center is False
