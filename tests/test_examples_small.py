"""The examples run end to end at toy size: ``wrap_your_model.py`` (as a user runs
it, in a subprocess) and ``scanobjectnn.py`` on tiny h5 files in the official
ScanObjectNN format."""
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.transforms import NormalizeScale

from pointcmt_pyg.models import get_model
from pointcmt_pyg.render import RenderViews

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def _load_example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------- wrap_your_model.py
@pytest.mark.parametrize("recipe", [None, "balanced"])
def test_wrap_your_model_runs_and_checks_eval_equality(recipe):
    argv = [] if recipe is None else ["--recipe", recipe]
    proc = subprocess.run([sys.executable, str(EXAMPLES / "wrap_your_model.py"), *argv], cwd=REPO,
                          capture_output=True, text=True,
                          env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "check: eval forward of the wrapped model equals the plain model: True" in out
    assert "student feature 256 -> teacher feature 512" in out
    steps = re.findall(r"step (\d+): loss (\S+) = ce (\S+)  feature (\S+)  classifier (\S+)"
                       r"  kd (\S+)(?:  align (\S+))?\n", out)
    assert [int(s[0]) for s in steps] == list(range(1, 9))
    for _, loss, ce, fe, cl, kd, align in steps:  # the total is the sum of the printed terms
        total = float(ce) + float(fe) + float(cl) + float(kd) + float(align or 0)
        assert float(loss) == pytest.approx(total, abs=3e-4)
        assert float(ce) > 0 and float(kd) > 0 and float(cl) == 0
        if recipe is None:       # the default "aligned": KD + centred alignment, no CMPG
            assert float(fe) == 0 and float(align) > 0
        else:                    # "balanced": KD + the CMPG's feature enhancement
            assert float(fe) > 0 and not align
    assert ("cmpg: trained" in out) == (recipe == "balanced")


# --------------------------------------------------------------------- scanobjectnn.py
def _write_h5(path, per_class, points, seed):
    """Official layout: data [N, P, 3] float32, label [N] int64; three classes of
    differently stretched blobs (labels 0..2 of the 15)."""
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(seed)
    stretch = np.array([[1.0, 0.2, 0.2], [0.2, 1.0, 0.2], [0.6, 0.6, 0.6]])
    label = np.repeat(np.arange(3), per_class).astype(np.int64)
    data = (rng.standard_normal((len(label), points, 3)) * stretch[label][:, None]).astype(
        np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=data)
        f.create_dataset("label", data=label)
    return data, label


def test_scanobjectnn_end_to_end_on_tiny_h5(tmp_path, capsys):
    split = tmp_path / "h5_files" / "main_split"
    _write_h5(split / "training_objectdataset_augmentedrot_scale75.h5", 6, 256, 0)
    test_data, test_label = _write_h5(split / "test_objectdataset_augmentedrot_scale75.h5",
                                      2, 256, 1)
    out = tmp_path / "out"
    example = _load_example("scanobjectnn")
    code = example.main([
        "--data", str(tmp_path), "--variant", "PB_T50_RS", "--num-points", "128",
        "--epochs", "1", "--teacher-epochs", "1", "--cmpg-epochs", "1", "--num-views", "2",
        "--image-size", "16", "--cmpg-points", "128", "--batch-size", "8",
        "--teacher-batch-size", "8", "--val-fraction", "0.34", "--device", "cpu",
        "--no-progress", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"ScanObjectNN PB_T50_RS at {tmp_path} (18 train / 6 test); 12 train / 6 val" in printed
    assert "PointCMT - baseline:" in printed and "(test split)" in printed

    results = json.loads((out / "results.json").read_text())
    # The default recipe ("aligned") needs no CMPG: stage II is skipped.
    assert set(results["stages"]) == {"teacher", "baseline", "pointcmt"}
    assert not (out / "cmpg").exists()
    assert results["stages"]["teacher"]["val"]["num_samples"] == 6
    for name in ("teacher/teacher.pt", "teacher_features.pt",
                 "baseline/student.pt", "pointcmt/student.pt", "views_montage.png",
                 "training_curves.png", "confusion_pointcmt.png"):
        assert (out / name).is_file(), name
    # The teacher's views were rendered with the cameras around y (the cache
    # key holds the up axis; z-up views would live in another folder).
    for up, cached in ((1, True), (2, False)):
        renderer = RenderViews(2, 16, up=up, cache_dir=out / "views")
        assert renderer.is_cached("PB_T50_RS/train/00000") == cached

    # The reported test accuracy is the saved student's on the 6 test scans
    # (the first 128 of their 256 points, centred and scaled).
    model = get_model("pointnet2", 15)
    model.load_state_dict(torch.load(out / "pointcmt" / "student.pt", weights_only=True))
    model.eval()
    hits = []
    with torch.no_grad():
        for pos, y in zip(test_data, test_label):
            data = NormalizeScale()(Data(pos=torch.from_numpy(pos[:128])))
            hits.append(int(model(Batch.from_data_list([data])).argmax()) == int(y))
    test = results["stages"]["pointcmt"]["test"]
    assert test["num_samples"] == 6
    assert test["oa"] == pytest.approx(sum(hits) / 6)


def test_scanobjectnn_without_files_says_where_to_put_them(tmp_path, capsys):
    example = _load_example("scanobjectnn")
    with pytest.raises(SystemExit) as info:
        example.main(["--data", str(tmp_path), "--variant", "OBJ_ONLY", "--out",
                      str(tmp_path / "out")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "h5_files" / "main_split_nobg") in err
    assert "training_objectdataset.h5" in err and "hkust-vgd.github.io/scanobjectnn" in err
    assert "Traceback" not in err
