r"""The whole PointCMT recipe (pointcmt_pyg.pipeline and examples/modelnet40.py)
on a tiny embedded dataset: every stage runs, artifacts reload, resume reuses
finished stages, and bad settings are refused."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import free_port
from pointcmt_pyg.pipeline import DropAttributes, PipelineConfig, format_table, run_pipeline

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(data="synthetic", model="pointnet2", epochs=1, teacher_epochs=1, cmpg_epochs=1,
            num_points=128, batch_size=8, teacher_batch_size=8, num_views=2, image_size=16,
            cmpg_points=128, synthetic_classes=3, synthetic_train_per_class=8,
            synthetic_test_per_class=3, val_fraction=0.25, progress=False)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    # `balanced` rather than the default `aligned`: this run covers every stage,
    # stage II (the CMPG) included; the default has its own test below.
    results = run_pipeline(PipelineConfig(out=str(out), recipe="balanced", **TINY))
    return out, results


def test_pipeline_writes_every_artifact(tiny_run):
    out, results = tiny_run
    for name in ("results.json", "config.json", "teacher_features.pt", "views_montage.png",
                 "training_curves.png", "confusion_baseline.png", "confusion_pointcmt.png",
                 "teacher/teacher.pt", "cmpg/cmpg.pt", "baseline/student.pt",
                 "pointcmt/student.pt"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "results.json").read_text())
    assert saved["has_test"] and saved["test_size"] == 9 and saved["num_classes"] == 3
    # 24 training shapes, a stratified quarter carved out for validation.
    assert saved["train_size"] == 18 and saved["val_size"] == 6
    for stage in ("teacher", "baseline", "pointcmt"):
        r = saved["stages"][stage]
        assert 0 <= r["val"]["oa"] <= 1 and r["val"]["num_samples"] == 6
        assert r["test"]["num_samples"] == 9
        assert r["epoch_seconds"] > 0
    assert saved["stages"]["cmpg"]["val_emd"] > 0
    assert "PointCMT - baseline" in saved["table"] and "teacher (images)" in saved["table"]
    # the paired test counts the very shapes behind the two OAs
    paired = saved["paired"]
    assert paired["split"] == "test" and paired["num_samples"] == 9
    diff = saved["stages"]["pointcmt"]["test"]["oa"] - saved["stages"]["baseline"]["test"]["oa"]
    assert paired["only_pointcmt"] - paired["only_reference"] == round(9 * diff)
    assert 0 < paired["p_value"] <= 1 and "McNemar exact p" in saved["table"]
    done = json.loads((out / "pointcmt" / "done.json").read_text())
    assert len(done["correct"]) == 9 and set(done["correct"]) <= {"0", "1"}
    assert done["correct"].count("1") == round(9 * saved["stages"]["pointcmt"]["test"]["oa"])


def _accuracy_one_by_one(model, dataset):
    """Overall accuracy counted by hand: one shape at a time, argmax against its label
    (independent of the pipeline's batched ``_evaluate``)."""
    from torch_geometric.data import Batch
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(len(dataset)):
            data = dataset[i]
            logits = model(Batch.from_data_list([data]))
            correct += int(int(logits.argmax(dim=-1)) == int(data.y))
    return correct / len(dataset)


def _test_set(out):
    from pointcmt_pyg.pipeline import _with_transform, load_data, student_transforms
    cfg = PipelineConfig(out=str(out), recipe="balanced", **TINY).resolved()
    _, test, _, _ = load_data(cfg)
    return _with_transform(test, student_transforms(False))


def test_pipeline_students_reload_to_reported_accuracy(tiny_run):
    from pointcmt_pyg.models import get_model
    out, results = tiny_run
    test = _test_set(out)
    assert len(test) == 9
    for run in ("baseline", "pointcmt"):
        model = get_model("pointnet2", 3)
        model.load_state_dict(torch.load(out / run / "student.pt"))
        assert _accuracy_one_by_one(model, test) == pytest.approx(results["stages"][run]["test"]["oa"])


def test_pipeline_resume_reuses_finished_stages(tiny_run, capsys):
    from pointcmt_pyg.models import get_model
    out, results = tiny_run
    weights = {stage: (out / stage / "student.pt").read_bytes() for stage in ("baseline", "pointcmt")}
    again = run_pipeline(PipelineConfig(out=str(out), resume=True, recipe="balanced", **TINY))
    log = capsys.readouterr().out
    for stage in ("teacher", "cmpg", "baseline", "pointcmt"):
        assert f"{stage}: reusing" in log
    test = _test_set(out)
    for stage in ("baseline", "pointcmt"):
        # Nothing was retrained, and what the resumed run reports is what the weights do.
        assert (out / stage / "student.pt").read_bytes() == weights[stage]
        model = get_model("pointnet2", 3)
        model.load_state_dict(torch.load(out / stage / "student.pt"))
        assert again["stages"][stage]["test"]["oa"] == pytest.approx(_accuracy_one_by_one(model, test))


def test_example_script_prints_table(tmp_path):
    args = [sys.executable, str(ROOT / "examples" / "modelnet40.py"), "--out", str(tmp_path),
            "--no-progress", "--only", "pointcmt"]
    for key, value in TINY.items():
        if key not in ("progress",):
            args += [f"--{key.replace('_', '-')}", str(value)]
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pointnet2 + PointCMT" in proc.stdout and "teacher (images)" in proc.stdout
    assert "stage III: pointnet2 with PointCMT" in proc.stdout
    assert not (tmp_path / "baseline").exists()


@pytest.mark.parametrize("change, match", [
    (dict(epochs=-1), "epochs"),
    (dict(num_points=0), "num_points"),
    (dict(val_fraction=1.0), "val_fraction"),
    (dict(model="pointnet9"), "unknown model"),
    (dict(stages=("student",)), "stages"),
    (dict(w_proj=-1.0), "w_proj"),
    (dict(detach_teacher_logits=True, w_proj=0.0), "w_proj > 0"),
    (dict(warmup_epochs=-1.0), "warmup_epochs"),
])
def test_pipeline_rejects_bad_settings(change, match):
    with pytest.raises(ValueError, match=match):
        PipelineConfig(**{**TINY, **change}).resolved()


def test_warmup_epochs_to_steps(monkeypatch):
    from pointcmt_pyg.pipeline import warmup_steps
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert warmup_steps(0.0, 270, 16) == 0
    assert warmup_steps(2.0, 270, 16) == 34          # 17 batches per epoch (the last one short)
    assert warmup_steps(0.5, 270, 16) == 8           # round(8.5) to even
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert warmup_steps(1.0, 270, 16) == 9           # each of 2 ranks sees 135 shapes


def test_pipeline_missing_data_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        run_pipeline(PipelineConfig(**{**TINY, "data": str(tmp_path / "nope"),
                                       "out": str(tmp_path / "o")}))


def test_drop_attributes_removes_mesh():
    from torch_geometric.data import Data
    data = Data(pos=torch.zeros(4, 3), mesh_pos=torch.zeros(3, 3),
                mesh_face=torch.zeros(1, 3, dtype=torch.long))
    data = DropAttributes()(data)
    assert "mesh_pos" not in data and "mesh_face" not in data and data.pos.shape == (4, 3)


def test_format_table_without_test_split():
    stage = {"val": {"oa": 0.5, "macc": 0.25}, "test": None, "epoch_seconds": 1.0}
    table = format_table({"model": "dgcnn", "has_test": False,
                          "stages": {"baseline": stage, "pointcmt": stage}})
    assert "val OA" in table and "50.00" in table and "+0.00 OA" in table


def test_example_under_torchrun_two_cpu_processes(tmp_path):
    # torchrun with 2 gloo processes: every stage trains with DDP, only rank 0
    # writes artifacts and prints the table.
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            "--master_port", str(free_port()), str(ROOT / "examples" / "modelnet40.py"),
            "--out", str(tmp_path), "--no-progress", "--device", "cpu"]
    for key, value in TINY.items():
        if key not in ("progress",):
            args += [f"--{key.replace('_', '-')}", str(value)]
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("PointCMT - baseline") == 1
    assert "2 processes" in proc.stdout
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["stages"]["pointcmt"]["test"]["num_samples"] == 9
    assert (tmp_path / "pointcmt" / "student.pt").is_file()


def test_resume_retrains_a_stage_whose_settings_changed(tiny_run, capsys, tmp_path):
    """--resume with another PointCMT weight retrains PointCMT (and says so),
    but reuses the teacher and baseline whose settings did not change (and,
    with w_fe = 0, needs no CMPG)."""
    import shutil
    out, results = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    again = run_pipeline(PipelineConfig(out=str(copy), resume=True, recipe="balanced", w_fe=0.0,
                                        w_ce=0.0, w_kd=0.0, **TINY))
    log = capsys.readouterr().out
    for stage in ("teacher", "baseline"):
        assert f"{stage}: reusing" in log
    assert "stage II: skipped" in log and "cmpg: reusing" not in log
    assert "pointcmt: reusing" not in log
    assert "pointcmt: settings changed" in log and "w_fe: 3.0 -> 0.0" in log
    saved = json.loads((copy / "pointcmt" / "settings.json").read_text())
    assert saved["w_fe"] == 0.0 and saved["recipe"] == "balanced"
    # With every weight 0 the PointCMT run is the baseline, bit for bit.
    base = torch.load(copy / "baseline" / "student.pt")
    point = torch.load(copy / "pointcmt" / "student.pt")
    assert all(torch.equal(base[k], point[k]) for k in base)
    assert again["stages"]["pointcmt"]["test"] == results["stages"]["baseline"]["test"]
    assert again["paired"]["only_pointcmt"] == again["paired"]["only_reference"] == 0
    assert again["paired"]["p_value"] == 1.0
    # A changed teacher setting retrains every stage after it.
    run_pipeline(PipelineConfig(out=str(copy), resume=True, recipe="balanced",
                                **{**TINY, "teacher_epochs": 2}))
    log = capsys.readouterr().out
    assert "teacher: settings changed" in log and "teacher_epochs: 1 -> 2" in log
    assert "cmpg: reusing" not in log and "pointcmt: reusing" not in log
    assert "baseline: reusing" in log


def test_finetune_protocol_starts_both_arms_from_the_baseline(tmp_path, monkeypatch):
    import pointcmt_pyg.train as train_mod
    starts = {}
    real = train_mod.train_student

    def spy(model, *args, out_dir=None, **kwargs):
        student = getattr(model, "student", model)
        starts[Path(out_dir).name] = ({k: v.clone() for k, v in student.state_dict().items()},
                                      kwargs["epochs"], kwargs["lr"])
        return real(model, *args, out_dir=out_dir, **kwargs)

    monkeypatch.setattr(train_mod, "train_student", spy)
    results = run_pipeline(PipelineConfig(out=str(tmp_path), protocol="finetune",
                                          finetune_epochs=1, **TINY))
    assert set(starts) == {"baseline", "baseline_ft", "pointcmt"}
    selected = torch.load(tmp_path / "baseline" / "student.pt")
    for arm in ("baseline_ft", "pointcmt"):
        state, epochs, lr = starts[arm]
        assert epochs == 1 and lr == pytest.approx(1e-4)
        assert all(torch.equal(state[k], selected[k]) for k in selected)
    # The from-scratch baseline starts elsewhere (a fresh initialisation).
    assert any(not torch.equal(starts["baseline"][0][k], selected[k]) for k in selected)
    assert "PointCMT - plain fine-tune" in results["table"]
    assert "+ plain fine-tune" in results["table"]


def test_cli_evaluate_scores_a_pipeline_student_and_checks_the_classes(tiny_run, capsys):
    """`pointcmt-pyg evaluate --weights <run>/pointcmt/student.pt --data ...` needs no
    --model (student_config.json beside the weights) and refuses other classes."""
    import re
    from pointcmt_pyg.cli import main
    out, results = tiny_run
    data = ["--synthetic-classes", "3", "--synthetic-train-per-class", "8",
            "--synthetic-test-per-class", "3", "--val-fraction", "0.25", "--no-progress",
            "--device", "cpu"]
    assert main(["evaluate", "--weights", str(out / "pointcmt" / "student.pt"), *data]) == 0
    m = re.search(r"\((\d+) shapes\): OA (\d+\.\d\d)%", capsys.readouterr().out)
    assert m and int(m.group(1)) == 9
    assert float(m.group(2)) == pytest.approx(100 * results["stages"]["pointcmt"]["test"]["oa"],
                                              abs=0.006)
    with pytest.raises(SystemExit):
        main(["evaluate", "--weights", str(out / "pointcmt" / "student.pt"),
              *[("4" if a == "3" and i == 1 else a) for i, a in enumerate(data)]])
    assert "was trained on" in capsys.readouterr().err


def test_pipeline_killed_inside_stage_three_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    """Kill the whole pipeline in the second epoch of the PointCMT student, run it again with
    ``resume=True``: stages I and II are reused, stage III continues from its last checkpoint,
    and the student ends with exactly the parameters of a run that was never interrupted."""
    from pointcmt_pyg.nn import CrossModalDistiller
    from pointcmt_pyg.train.trainer import Trainer

    cfg = dict(TINY, epochs=2, stages=("pointcmt",), recipe="balanced")     # stages I, II and III
    run_pipeline(PipelineConfig(out=str(tmp_path / "full"), **cfg))

    real_epoch = Trainer.train_epoch

    def dies_in_second_distiller_epoch(self, loader, epoch=0, epochs=None):
        model = getattr(self.model, "module", self.model)
        if isinstance(model, CrossModalDistiller) and epoch == 1:
            raise KeyboardInterrupt("killed inside stage III")
        return real_epoch(self, loader, epoch, epochs)

    monkeypatch.setattr(Trainer, "train_epoch", dies_in_second_distiller_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(PipelineConfig(out=str(tmp_path / "run"), **cfg))
    assert not (tmp_path / "run" / "pointcmt" / "student.pt").exists()
    before = {name: (tmp_path / "run" / name).read_bytes() for name in ("teacher/teacher.pt", "cmpg/cmpg.pt")}
    monkeypatch.setattr(Trainer, "train_epoch", real_epoch)
    run_pipeline(PipelineConfig(out=str(tmp_path / "run"), resume=True, **cfg))

    full = torch.load(tmp_path / "full" / "pointcmt" / "student.pt")
    resumed = torch.load(tmp_path / "run" / "pointcmt" / "student.pt")
    assert full.keys() == resumed.keys()
    for name in full:
        assert torch.equal(full[name], resumed[name]), name
    for name, content in before.items():                       # stages I and II reused, not retrained
        assert (tmp_path / "run" / name).read_bytes() == content


def test_select_last_is_a_student_setting_recorded_only_when_used():
    """select="last" keeps each student's final epoch; it enters the student
    stages' settings (a changed value retrains them) but not the teacher's or
    the CMPG's, and a float32 run selected on val_oa keeps its old settings."""
    default, last = PipelineConfig(**TINY), PipelineConfig(select="last", **TINY)
    for stage in ("baseline", "baseline_ft", "pointcmt"):
        assert "select" not in default.settings(stage)
        assert last.settings(stage)["select"] == "last"
    for stage in ("teacher", "cmpg"):
        assert last.settings(stage) == default.settings(stage)
    with pytest.raises(ValueError, match="select"):
        PipelineConfig(select="best", **TINY).resolved()


def test_teacher_stage_alone_is_the_pipelines_stage_one(tiny_run, tmp_path):
    """run_teacher_stage (bench/teacher_cost.py) trains the same teacher as a
    full run: same settings and seed give the same weights and scores."""
    from pointcmt_pyg.pipeline import run_teacher_stage
    out, results = tiny_run
    done = run_teacher_stage(PipelineConfig(out=str(tmp_path), **TINY))
    full = json.loads((out / "teacher" / "done.json").read_text())
    assert done["val"] == full["val"] and done["test"] == full["test"]
    assert done["history"]["records"][-1]["train_loss"] == full["history"]["records"][-1]["train_loss"]
    ours = torch.load(tmp_path / "teacher" / "best.pt", weights_only=False)
    theirs = torch.load(out / "teacher" / "best.pt", weights_only=False)
    for name, tensor in theirs["model"].items():
        assert torch.equal(ours["model"][name], tensor), name


def test_teacher_cost_variants_are_typed_and_join_view_channels_with_plus():
    import importlib.util
    from pathlib import Path as _Path
    path = _Path(__file__).resolve().parents[1] / "bench" / "teacher_cost.py"
    spec = importlib.util.spec_from_file_location("teacher_cost", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    name, over = module.parse_variant("shade:view_channels=depth+shading,num_views=12,precision=bf16")
    assert name == "shade" and over == {"view_channels": "depth,shading", "num_views": 12,
                                        "precision": "bf16"}
    PipelineConfig(**over).resolved()                     # a valid configuration
    with pytest.raises(ValueError, match="not key=value"):
        module.parse_variant("x:colour=red")


def test_baseline_only_run_trains_no_teacher_and_matches_the_full_runs_baseline(tiny_run, tmp_path):
    # stages=("baseline",) (the CLI's --only baseline) needs no images: stages I and II
    # are skipped, and the plain student is the very one the full run trained.
    out_full, full = tiny_run
    results = run_pipeline(PipelineConfig(out=str(tmp_path), stages=("baseline",), **TINY))
    assert set(results["stages"]) == {"baseline"}
    for name in ("teacher", "cmpg", "views", "teacher_features.pt", "pointcmt"):
        assert not (tmp_path / name).exists(), name
    assert "teacher" not in results["table"] and "teacher_margin_val" not in results
    ours = torch.load(tmp_path / "baseline" / "student.pt")
    theirs = torch.load(out_full / "baseline" / "student.pt")
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    assert results["stages"]["baseline"]["test"] == full["stages"]["baseline"]["test"]


def test_compile_gives_the_dense_students_gradients_through_inductor():
    # --compile (PipelineConfig.compile) runs the student through torch.compile with
    # inductor and dynamic shapes (graph breaks at our ops, whose fake kernels give
    # the shapes). Same loss and gradients as eager, over clouds of changing sizes.
    # BatchNorm in eval mode with random statistics: in train mode at initialisation
    # many ReLU outputs are exactly 0, and which of the tied zeros a max-pool's
    # gradient goes to is a free choice that compiled and eager code make
    # differently (~1 % of the gradient's norm). Inductor's own RNG is replaced by
    # eager's (fallback_random) so that FPS draws the same random starts.
    import copy
    import torch._inductor.config as inductor_config
    from pointcmt_pyg.models import get_model
    from pointcmt_pyg.pipeline import student_compile
    assert student_compile(PipelineConfig(**dict(TINY, compile=True))) == {"dynamic": True}
    assert student_compile(PipelineConfig(**TINY)) is False
    torch.manual_seed(0)
    eager = get_model("pointnet2", 3, dropout=0.0)
    for module in eager.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-0.05, 0.05)
            module.running_var.uniform_(0.5, 1.5)
    eager.eval()
    twin = copy.deepcopy(eager)
    compiled = torch.compile(twin, **student_compile(PipelineConfig(**dict(TINY, compile=True))))
    with inductor_config.patch(fallback_random=True):   # config's own scoped patch
        _compare_compiled_steps(eager, twin, compiled)


def _compare_compiled_steps(eager, twin, compiled):
    from torch_geometric.data import Batch, Data
    for step in range(2):
        gen = torch.Generator().manual_seed(step)
        batch = Batch.from_data_list([Data(pos=torch.rand(90 + 10 * i + 7 * step, 3, generator=gen),
                                           y=torch.tensor([i % 3])) for i in range(4)])
        losses = []
        for model in (eager, compiled):
            model.zero_grad()
            torch.manual_seed(5)
            loss = torch.nn.functional.cross_entropy(model(batch), batch.y)
            loss.backward()
            losses.append(loss.detach())
        torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
        grads = [torch.cat([p.grad.flatten() for p in m.parameters()]) for m in (eager, twin)]
        assert (grads[1] - grads[0]).norm() <= 1e-4 * grads[0].norm()


def test_cli_compile_flag_reaches_the_student_stage(monkeypatch, tmp_path):
    from pointcmt_pyg import cli
    from pointcmt_pyg.train import stages
    seen = {}

    def fake_train_student(model, *args, compile=False, **kwargs):
        seen["compile"] = compile
        raise SystemExit(0)
    monkeypatch.setattr(stages, "train_student", fake_train_student)
    monkeypatch.setattr("pointcmt_pyg.train.train_student", fake_train_student)
    for flag, expected in (([], False), (["--compile"], {"dynamic": True})):
        with pytest.raises(SystemExit):
            cli.main(["distill", "--baseline", "--data", "synthetic", "--synthetic-classes", "3",
                      "--epochs", "1", "--out", str(tmp_path / "b"), "--no-progress", *flag])
        assert seen.pop("compile") == expected


def test_scan_settings_are_recorded_only_where_they_change_the_data():
    whole = PipelineConfig(data="synthetic")
    assert "synthetic_scan" not in whole.settings("teacher")        # whole-surface runs keep their settings
    scan = PipelineConfig(data="synthetic", synthetic_scan=True, synthetic_rescan=True)
    assert scan.settings("teacher")["synthetic_scan"] is True and "synthetic_rescan" not in scan.settings("cmpg")
    assert scan.settings("baseline")["synthetic_rescan"] is True
    assert scan.settings("pointcmt")["synthetic_rescan"] is True
    assert "synthetic_scan" not in PipelineConfig(data="/some/folder", synthetic_scan=True).settings("teacher")
    with pytest.raises(ValueError, match="synthetic_rescan needs synthetic_scan"):
        PipelineConfig(synthetic_rescan=True).resolved()
    with pytest.raises(ValueError, match="synthetic_scan"):
        PipelineConfig(synthetic_scan="yes").resolved()


def test_aligned_recipe_skips_the_cmpg_and_with_zero_weights_is_the_baseline(tmp_path, capsys):
    """`recipe="aligned"` uses no CMPG: stage II is skipped (nothing written,
    nothing trained), the settings record the recipe, and with its two terms
    off (w_kd = w_align = 0) the PointCMT student is the baseline bit for bit."""
    out = tmp_path / "run"
    results = run_pipeline(PipelineConfig(out=str(out), **TINY))          # the default recipe
    log = capsys.readouterr().out
    assert results["recipe"] == "aligned"
    assert "stage II: skipped" in log and "stage II: CMPG" not in log
    assert not (out / "cmpg").exists() and "cmpg" not in results["stages"]
    settings = json.loads((out / "pointcmt" / "settings.json").read_text())
    assert settings["recipe"] == "aligned"
    assert (settings["w_fe"], settings["w_align"], settings["align_center"]) == (0.0, 4.0, True)
    assert "pointnet2 + PointCMT (recipe aligned)" in results["table"]
    assert results["stages"]["pointcmt"]["test"]["num_samples"] == 9
    base = torch.load(out / "baseline" / "student.pt")
    point = torch.load(out / "pointcmt" / "student.pt")
    assert not all(torch.equal(base[k], point[k]) for k in base)     # the terms act
    again = run_pipeline(PipelineConfig(out=str(out), resume=True, w_kd=0.0, w_align=0.0, **TINY))
    log = capsys.readouterr().out
    assert "pointcmt: settings changed" in log and "baseline: reusing" in log
    point = torch.load(out / "pointcmt" / "student.pt")
    assert all(torch.equal(base[k], point[k]) for k in base)
    assert again["paired"]["only_pointcmt"] == again["paired"]["only_reference"] == 0
