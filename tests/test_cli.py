"""The ``pointcmt-pyg`` console script: help texts, the stage subcommands chained
on a tiny synthetic set (artifacts checked against direct computations), and bad
input giving an argparse error instead of a traceback."""
import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch_geometric.data import Batch
from torch_geometric.transforms import NormalizeScale

from pointcmt_pyg.cli import COMMANDS, build_parser, main
from pointcmt_pyg.datasets import FeatureCache, SyntheticShapes, train_val_split
from pointcmt_pyg.models import get_model
from pointcmt_pyg.nn import CMPG, load_cmpg, load_teacher, save_cmpg
from pointcmt_pyg.render import RenderViews

REPO = Path(__file__).resolve().parent.parent
NAMES = [name for name, _ in COMMANDS]
STAGES = NAMES[:-1]  # all but `run`
DATA = ["--synthetic-classes", "3", "--synthetic-train-per-class", "6",
        "--synthetic-test-per-class", "2", "--num-points", "128", "--val-fraction", "0.34",
        "--seed", "0"]
VIEWS = ["--num-views", "2", "--image-size", "16", "--up", "1"]   # cameras around y
QUIET = ["--no-progress", "--device", "cpu"]


def _synthetic(split, per_class):
    return SyntheticShapes(split, num_classes=3, samples_per_class=per_class, num_points=128,
                           seed=0)


def _run(*argv):
    """main(argv) with its stdout captured; returns the text."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(list(argv)) == 0
    return buf.getvalue()


def _fails(capsys, *argv):
    """main(argv) must end with an argparse error (exit 2); returns the message."""
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
    return err.split("error:", 1)[1].strip()


# --------------------------------------------------------------------- help
def test_top_level_help_lists_the_commands_in_pipeline_order(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert NAMES == ["render", "train-teacher", "cache-features", "train-cmpg", "distill",
                     "evaluate", "run"]
    listing = out.split("commands (in pipeline order):", 1)[1]
    positions = [re.search(rf"^ {{4}}{re.escape(n)}\b", listing, re.M) for n in NAMES]
    assert all(positions), listing
    assert [p.start() for p in positions] == sorted(p.start() for p in positions)
    for name, summary in COMMANDS:      # every command has its one-line summary
        assert summary.split()[0] in listing


@pytest.mark.parametrize("name", NAMES)
def test_subcommand_help(name, capsys):
    with pytest.raises(SystemExit) as info:
        main([name, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: pointcmt-pyg {name} ")
    assert "--data" in out
    assert ("--out" in out) == (name != "evaluate")
    expected = {"render": ["montage.png", "--num-views", "--up"],
                "train-teacher": ["teacher.pt", "--up"],
                "cache-features": ["--teacher", "FeatureCache", "--up"],
                "train-cmpg": ["--features", "cmpg.pt"],
                "distill": ["--model", "--baseline", "--resume", "student.pt"],
                "evaluate": ["--weights", "--split", "OA", "mAcc", "--confusion"],
                "run": ["results.json", "--only", "--up"]}[name]
    for word in expected:
        assert word in out, (name, word)


def test_no_command_prints_help_and_returns_2(capsys):
    assert main([]) == 2
    assert "commands (in pipeline order)" in capsys.readouterr().out


def test_through_python_m(tmp_path):
    """`python -m pointcmt_pyg.cli` (what the console script runs): the help and a
    subcommand's bad input (the subcommands' helps are checked in-process above)."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    argvs = [["--help"], ["cache-features", "--teacher", str(tmp_path / "missing.pt")]]
    procs = [subprocess.Popen([sys.executable, "-m", "pointcmt_pyg.cli", *argv], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for argv in argvs]
    (out, err), (_, bad) = [proc.communicate() for proc in procs]
    assert procs[0].returncode == 0, err
    assert "commands (in pipeline order)" in out
    assert all(name in out for name in NAMES)
    assert procs[1].returncode == 2
    assert bad.startswith("usage: pointcmt-pyg cache-features ")
    assert "missing.pt: no such file" in bad and "Traceback" not in bad


# --------------------------------------------------------------------- the chain
@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """render -> train-teacher -> cache-features -> train-cmpg -> distill (+ baseline)."""
    root = tmp_path_factory.mktemp("cli")
    logs = {}
    logs["render"] = _run("render", *DATA, *VIEWS, "--out", str(root / "views"), *QUIET[:1])
    logs["teacher"] = _run("train-teacher", *DATA, *VIEWS, "--views", str(root / "views"),
                           "--epochs", "1", "--batch-size", "8", "--out",
                           str(root / "teacher"), *QUIET)
    # No view flags: cache-features reads them (cache, size, up axis) from
    # teacher_config.json beside the teacher.
    logs["features"] = _run("cache-features", *DATA, "--teacher",
                            str(root / "teacher" / "teacher.pt"), "--out",
                            str(root / "features.pt"), *QUIET)
    logs["cmpg"] = _run("train-cmpg", *DATA, "--features", str(root / "features.pt"),
                        "--points", "128", "--epochs", "1", "--batch-size", "8", "--out",
                        str(root / "cmpg"), *QUIET)
    logs["distill"] = _run("distill", *DATA, "--model", "pointnet2", "--features",
                           str(root / "features.pt"), "--cmpg", str(root / "cmpg" / "cmpg.pt"),
                           "--teacher", str(root / "teacher" / "teacher.pt"), "--epochs", "1",
                           "--batch-size", "8", "--out", str(root / "pointcmt"), *QUIET)
    logs["baseline"] = _run("distill", *DATA, "--baseline", "--epochs", "1", "--batch-size",
                            "8", "--out", str(root / "baseline"), *QUIET)
    return root, logs


def test_render_fills_the_cache_and_writes_a_montage(chain):
    root, logs = chain
    renderer = RenderViews(2, 16, up=1, cache_dir=root / "views")
    train = _synthetic("train", 6)
    for data in train:
        assert torch.equal(renderer.store.get(data.sample_id), renderer.render(data))
    assert (root / "views" / "montage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "18 shapes rendered, 0 already cached" in logs["render"]
    # A second render finds everything cached.
    again = _run("render", *DATA, *VIEWS, "--out", str(root / "views"), "--montage", "0",
                 "--no-progress")
    assert "0 shapes rendered, 18 already cached" in again


def test_no_progress_keeps_one_line_per_epoch(chain):
    # --no-progress drops the bars, as in the pipeline, but every training command still says how each
    # epoch went (a long `distill` in a log file is otherwise silent until it ends).
    _, logs = chain
    for name in ("teacher", "cmpg", "distill", "baseline"):
        assert "epoch 1: train loss" in logs[name], name
    assert "TQDM_DISABLE" not in os.environ           # the bars come back after the command


def test_no_progress_draws_no_bar_in_any_stage(chain, capfd):
    # tqdm is imported long before (PyG imports it) and reads TQDM_* only then: the
    # render and feature bars must still go away with --no-progress (they did not).
    import tqdm  # noqa: F401
    root, _ = chain
    capfd.readouterr()
    _run("render", *DATA, *VIEWS, "--out", str(root / "views_again"), "--montage", "0",
         "--no-progress")
    _run("cache-features", *DATA, "--teacher", str(root / "teacher" / "teacher.pt"), "--out",
         str(root / "features_again.pt"), "--no-progress")
    err = capfd.readouterr().err
    assert "render train" not in err and "teacher features" not in err and "it/s" not in err
    # With bars on, both draw (so the check above can fail).
    _run("render", *DATA, *VIEWS, "--out", str(root / "views_bars"), "--montage", "0")
    _run("cache-features", *DATA, "--teacher", str(root / "teacher" / "teacher.pt"), "--out",
         str(root / "features_bars.pt"))
    err = capfd.readouterr().err
    assert "render train" in err and "teacher features" in err


def test_teacher_and_its_features(chain):
    root, logs = chain
    teacher = load_teacher(root / "teacher" / "teacher.pt")
    assert teacher.num_classes == 3 and teacher.feat_dim == 512
    saved = json.loads((root / "teacher" / "teacher_config.json").read_text())
    assert (saved["num_views"], saved["image_size"], saved["up"]) == (2, 16, 1)
    assert re.search(r"teacher: val OA \d+\.\d\d% \(epoch 1\)", logs["teacher"])

    cache = FeatureCache.load(root / "features.pt")
    train = _synthetic("train", 6)
    assert sorted(cache.ids) == sorted(train.sample_ids) and cache.feat_dim == 512
    renderer, z_up = RenderViews(2, 16, up=1), RenderViews(2, 16, up=2)
    with torch.no_grad():
        for i in (0, 7, 17):                # the cached feature is the teacher's on the views
            data = train[i]
            ref = teacher.features(renderer(data).views)[0]
            torch.testing.assert_close(cache[data.sample_id], ref, rtol=1e-4, atol=1e-5)
            # ... with the teacher's y-up cameras (z-up views differ).
            assert not torch.allclose(teacher.features(z_up(data).views)[0], ref, atol=1e-3)


def test_cmpg_artifact(chain):
    root, logs = chain
    cmpg = load_cmpg(root / "cmpg" / "cmpg.pt")
    assert (cmpg.in_dim, cmpg.num_points) == (512, 128)
    assert cmpg(torch.randn(2, 512)).shape == (2, 128, 3)
    assert re.search(r"cmpg: val EMD \d+\.\d{4}", logs["cmpg"])


def test_students_load_and_differ(chain):
    root, _ = chain
    states = {}
    for run in ("pointcmt", "baseline"):
        model = get_model("pointnet2", 3)
        fresh = {k: v.clone() for k, v in model.state_dict().items()}
        states[run] = torch.load(root / run / "student.pt", weights_only=True)
        model.load_state_dict(states[run])   # strict: the plain model's state_dict
        assert any(not torch.equal(fresh[k], states[run][k]) for k in fresh)
        saved = json.loads((root / run / "student_config.json").read_text())
        assert saved["model"] == "pointnet2" and saved["pointcmt"] == (run == "pointcmt")
    assert any(not torch.equal(states["pointcmt"][k], states["baseline"][k])
               for k in states["baseline"])


def _reference_accuracy(state, dataset):
    """OA and mAcc one shape at a time, without the CLI's loader or metrics."""
    model = get_model("pointnet2", 3)
    model.load_state_dict(state)
    model.eval()
    hits = {c: [] for c in range(3)}
    with torch.no_grad():
        for data in dataset:
            data = NormalizeScale()(data.clone())
            del data.mesh_pos, data.mesh_face
            pred = int(model(Batch.from_data_list([data])).argmax())
            hits[int(data.y)].append(pred == int(data.y))
    flat = [h for v in hits.values() for h in v]
    return (100 * sum(flat) / len(flat),
            100 * sum(sum(v) / len(v) for v in hits.values() if v) / 3)


@pytest.mark.parametrize("split", ["test", "val"])
def test_evaluate_prints_the_accuracy_of_the_student(chain, split):
    root, _ = chain
    weights = root / "pointcmt" / "student.pt"
    png = root / f"confusion_{split}.png"
    # --model and --num-points come from student_config.json beside the weights.
    out = _run("evaluate", *DATA, "--weights", str(weights), "--split", split,
               "--confusion", str(png), *QUIET)
    m = re.search(r"\((\d+) shapes\): OA (\d+\.\d\d)%  mAcc (\d+\.\d\d)%", out)
    assert m, out
    if split == "test":
        dataset = _synthetic("test", 2)
    else:
        dataset = train_val_split(_synthetic("train", 6), 0.34, 0)[1]
    oa, macc = _reference_accuracy(torch.load(weights, weights_only=True), dataset)
    assert int(m.group(1)) == len(dataset) == 6
    assert float(m.group(2)) == pytest.approx(oa, abs=0.006)
    assert float(m.group(3)) == pytest.approx(macc, abs=0.006)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_evaluate_compare_prints_the_paired_test(chain, capsys):
    root, _ = chain
    weights, other = root / "pointcmt" / "student.pt", root / "baseline" / "student.pt"
    out = _run("evaluate", *DATA, "--weights", str(weights), "--compare", str(other), *QUIET)
    oa = [float(x) for x in re.findall(r"OA (\d+\.\d\d)%", out)]
    m = re.search(r"paired on 6 test shapes: (\d+) right only with --weights, (\d+) only with "
                  r"the --compare student; McNemar exact p = ([0-9.e-]+)", out)
    assert m and len(oa) == 2, out
    assert int(m.group(1)) - int(m.group(2)) == round(6 * (oa[0] - oa[1]) / 100)
    from pointcmt_pyg.train import mcnemar_exact
    n = [1] * int(m.group(1)) + [0] * int(m.group(2))
    assert float(m.group(3)) == pytest.approx(
        mcnemar_exact(n, [1 - x for x in n])["p_value"], rel=1e-2)
    assert "nope.pt" in _fails(capsys, "evaluate", *DATA, "--weights", str(weights),
                               "--compare", str(root / "nope.pt"), *QUIET)


def test_distill_resume_continues_the_run(chain, tmp_path):
    root, _ = chain
    args = ["distill", *DATA, "--baseline", "--batch-size", "8", "--out",
            str(tmp_path / "b"), *QUIET]
    _run(*args, "--epochs", "1")
    out = _run(*args, "--epochs", "2", "--resume")
    assert f"resuming from {tmp_path / 'b' / 'last.pt'}" in out
    history = json.loads((tmp_path / "b" / "history.json").read_text())
    assert [r["epoch"] for r in history["records"]] == [1, 2]


def test_distill_init_seed_varies_the_student_alone(chain, tmp_path):
    root, logs = chain
    args = ["distill", *DATA, "--baseline", "--epochs", "1", "--batch-size", "8", *QUIET]
    default = _run(*args, "--out", str(tmp_path / "s0"))
    same = _run(*args, "--init-seed", "0", "--out", str(tmp_path / "s0b"))
    other = _run(*args, "--init-seed", "3", "--out", str(tmp_path / "s3"))
    carve = default.split("data: ")[1].split(";")[1]          # " N train / M val"
    assert carve in other and "student seed 3" in other
    weights = [torch.load(tmp_path / d / "student.pt", weights_only=True) for d in ("s0", "s0b", "s3")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])   # --init-seed = --seed
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
    config = json.loads((tmp_path / "s3" / "student_config.json").read_text())
    assert (config["seed"], config["init_seed"]) == (0, 3)
    del same


# --------------------------------------------------------------------- bad input
def test_missing_files(capsys, tmp_path):
    msg = _fails(capsys, "cache-features", "--teacher", str(tmp_path / "t.pt"))
    assert "t.pt: no such file" in msg and "train-teacher" in msg
    msg = _fails(capsys, "train-cmpg", "--features", str(tmp_path / "f.pt"))
    assert "f.pt: no such file" in msg
    msg = _fails(capsys, "evaluate", "--weights", str(tmp_path / "s.pt"), "--model",
                 "pointnet2")
    assert "s.pt: no such file" in msg
    msg = _fails(capsys, "render", "--data", str(tmp_path / "nowhere"), "--out",
                 str(tmp_path / "v"))
    assert "no such directory" in msg
    (tmp_path / "junk.pt").write_text("not a teacher")
    msg = _fails(capsys, "cache-features", "--teacher", str(tmp_path / "junk.pt"))
    assert "junk.pt" in msg


def test_mismatched_feature_sizes(chain, capsys, tmp_path):
    root, _ = chain
    save_cmpg(CMPG(64, num_points=128), tmp_path / "small.pt")
    msg = _fails(capsys, "distill", *DATA, "--features", str(root / "features.pt"),
                 "--cmpg", str(tmp_path / "small.pt"), "--out", str(tmp_path / "s"))
    assert "mismatched feature sizes" in msg and "512" in msg and "64" in msg


def test_data_that_does_not_fit_the_artifacts(chain, capsys, tmp_path):
    root, _ = chain
    other = [a if a != "3" else "4" for a in DATA]          # 4 classes instead of 3
    msg = _fails(capsys, "cache-features", *other, "--teacher",
                 str(root / "teacher" / "teacher.pt"), "--out", str(tmp_path / "f.pt"))
    assert "3 classes but the data has 4" in msg
    msg = _fails(capsys, "train-cmpg", *other, "--features", str(root / "features.pt"),
                 "--out", str(tmp_path / "c"))
    assert "lacks 6 of the 24 training shapes" in msg
    msg = _fails(capsys, "evaluate", *DATA, "--model", "dgcnn", "--weights",
                 str(root / "pointcmt" / "student.pt"))
    assert "do not fit --model dgcnn" in msg


def test_bad_flags(capsys, tmp_path):
    assert "unknown model" in _fails(capsys, "distill", "--model", "nope", "--baseline",
                                     "--out", str(tmp_path / "x"))
    msg = _fails(capsys, "distill", "--baseline", "--cmpg", "c.pt", "--out", str(tmp_path))
    assert "--baseline trains the plain model: drop --cmpg" in msg
    assert "num_views" in _fails(capsys, "render", "--num-views", "0", "--out",
                                 str(tmp_path / "v"))
    assert "invalid choice: 3" in _fails(capsys, "render", "--up", "3", "--out",
                                         str(tmp_path / "v"))
    if not torch.cuda.is_available():
        assert "CUDA is not available" in _fails(capsys, "train-teacher", "--device", "cuda:0",
                                                 "--out", str(tmp_path))
    assert "invalid choice" in _fails(capsys, "evaluate", "--weights", "w.pt", "--split", "x")
    assert "val_fraction" in _fails(capsys, "run", "--val-fraction", "1.5")


def test_parser_is_buildable_twice():
    assert build_parser().format_help() == build_parser().format_help()


def test_stages_render_the_pipelines_teacher_input(chain):
    """The stage subcommands' views are those of a `run` with the same flags:
    pipeline.teacher_transforms (same cache key, so `run` reuses them)."""
    from pointcmt_pyg.pipeline import PipelineConfig, teacher_transforms
    root, _ = chain
    cfg = PipelineConfig(num_views=2, image_size=16, up=1)
    transform = teacher_transforms(cfg, cache_dir=root / "views")
    data = _synthetic("train", 6)[4]
    assert transform.transforms[0].is_cached(data.sample_id)  # written by `render`
    a, b = transform(data.clone()), teacher_transforms(cfg)(data.clone())  # cached, fresh
    assert torch.equal(a.views, b.views) and torch.equal(a.pos, b.pos)
    assert "mesh_pos" not in a


def test_distill_default_recipe_needs_the_teacher_for_kd(chain, capsys, tmp_path):
    root, _ = chain
    args = ["distill", *DATA, "--features", str(root / "features.pt"), "--cmpg",
            str(root / "cmpg" / "cmpg.pt"), "--epochs", "1", "--batch-size", "8"]
    msg = _fails(capsys, *args, "--out", str(tmp_path / "a"))
    assert "--teacher" in msg and "Hinton KD" in msg and "--w-kd 0" in msg
    # Without the KD term (or with the official recipe) the teacher is not needed.
    assert "with PointCMT" in _run(*args, "--recipe", "official", "--out", str(tmp_path / "b"),
                                   *QUIET)


def test_distill_aligned_recipe_needs_no_cmpg(chain, capsys, tmp_path):
    root, _ = chain
    args = ["distill", *DATA, "--features", str(root / "features.pt"), "--teacher",
            str(root / "teacher" / "teacher.pt"), "--epochs", "1", "--batch-size", "8", *QUIET]
    # No --cmpg and none at the default path: the aligned recipe never reads one.
    out = _run(*args, "--recipe", "aligned", "--out", str(tmp_path / "a"))
    assert "with PointCMT" in out and (tmp_path / "a" / "student.pt").is_file()
    # A recipe with the feature term still asks for it, naming the flag.
    msg = _fails(capsys, *args, "--recipe", "balanced", "--cmpg", str(tmp_path / "nope.pt"),
                 "--out", str(tmp_path / "b"))
    assert "--cmpg" in msg and "nope.pt" in msg


def test_distill_takes_the_kd_target_from_a_feature_cache_with_logits(chain, capsys, tmp_path):
    """A teacher that is not a MultiViewTeacher teaches through a feature cache
    with its logits: no --teacher; the logits must cover the data's classes."""
    from pointcmt_pyg.datasets import FeatureCache
    root, _ = chain
    cache = FeatureCache.load(root / "features.pt")
    ids = list(cache.keys())
    feats = torch.stack([cache[i] for i in ids])
    FeatureCache.from_tensor(ids, feats, logits=torch.randn(len(ids), 3)).save(tmp_path / "with_logits.pt")
    args = ["distill", *DATA, "--epochs", "1", "--batch-size", "8", *QUIET]
    out = _run(*args, "--features", str(tmp_path / "with_logits.pt"), "--out", str(tmp_path / "a"))
    assert "Hinton target: the teacher logits stored in" in out and "with PointCMT" in out
    assert (tmp_path / "a" / "student.pt").is_file()
    FeatureCache.from_tensor(ids, feats, logits=torch.randn(len(ids), 5)).save(tmp_path / "five.pt")
    msg = _fails(capsys, *args, "--features", str(tmp_path / "five.pt"), "--out", str(tmp_path / "b"))
    assert "--features" in msg and "5 classes" in msg


def test_distill_select_last_keeps_the_final_epoch(tmp_path):
    """--select last (also a flag of `run` and examples/modelnet40.py): the
    student keeps its final epoch, and best.pt says so."""
    _run("distill", *DATA, "--baseline", "--epochs", "2", "--batch-size", "8", "--select", "last",
         "--out", str(tmp_path / "b"), *QUIET)
    best = torch.load(tmp_path / "b" / "best.pt", weights_only=False)
    assert best["epoch"] == 2 and best["select"] == "last"
    student = torch.load(tmp_path / "b" / "student.pt", weights_only=True)
    assert all(torch.equal(student[k], v) for k, v in best["model"].items())
    from pointcmt_pyg.cli import build_parser, config_from_args
    args = build_parser().parse_args(["run", "--select", "last"])
    assert config_from_args(args).select == "last"


def test_importing_the_package_shows_no_pyg_deprecation_noise():
    # PyG 2.8 calls torch.jit.script at import, which torch 2.14 deprecates: our import
    # silences that one warning; a user's own torch.jit.script call still warns.
    code = ("import pointcmt_pyg, pointcmt_pyg.cli, pointcmt_pyg.models, warnings, torch\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n"
            "    torch.jit.script(torch.nn.Linear(2, 2))\n"
            "assert any(issubclass(w.category, FutureWarning) for w in caught)\n")
    proc = subprocess.run([sys.executable, "-W", "error::FutureWarning", "-c", code], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_distill_uses_and_checks_the_caches_out_of_fold_logits(chain, capsys, tmp_path):
    from pointcmt_pyg.datasets import FeatureCache
    root, _ = chain
    cache = FeatureCache.load(root / "features.pt")
    args = ["distill", *DATA, "--teacher", str(root / "teacher" / "teacher.pt"), "--cmpg",
            str(root / "cmpg" / "cmpg.pt"), "--epochs", "1", "--batch-size", "8"]
    from pointcmt_pyg.nn import load_teacher
    num_classes = load_teacher(root / "teacher" / "teacher.pt").num_classes
    good = FeatureCache.from_tensor(cache.ids, cache.features, {"teacher_folds": 2},
                                    torch.randn(len(cache), num_classes))
    good.save(tmp_path / "oof.pt")
    out = _run(*args, "--features", str(tmp_path / "oof.pt"), "--out", str(tmp_path / "a"))
    assert "out-of-fold, 2 cross-fitted teachers" in out and "with PointCMT" in out
    bad = FeatureCache.from_tensor(cache.ids, cache.features, None,
                                   torch.randn(len(cache), num_classes + 1))
    bad.save(tmp_path / "bad.pt")
    msg = _fails(capsys, *args, "--features", str(tmp_path / "bad.pt"), "--out", str(tmp_path / "b"))
    assert "--features" in msg and f"{num_classes + 1} classes" in msg
