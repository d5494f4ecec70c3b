"""Pack a finished pipeline run's stage-III inputs into a small, self-contained folder.

Stage III of PointCMT needs only the student's clouds, the cached teacher
features, the frozen CMPG and the teacher's linear classifier (for the KD term):
not the views and not the ResNet. This writes exactly those, so that the
students can be trained elsewhere (e.g. on a lent GPU, whose upload is limited)
with ``bench/ablate_pointcmt.py <out>`` and reach the same data, carve and
teacher as the original run::

    python bench/pack_run.py runs/mn10_t12 .devdata/mn10_t12

Layout of ``<out>``: ``data/<class>/<split>/<name>.npy`` (the clouds exactly as
the run's students load them: same points, same ``sample_id``),
``config.json`` (the run's, with ``data`` pointing at ``data/``),
``teacher_features.pt``, ``cmpg/cmpg.pt`` and ``teacher/classifier.pt``.
"""
import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from pointcmt_pyg.nn import load_teacher
from pointcmt_pyg.pipeline import PipelineConfig, load_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished examples/modelnet40.py --out directory")
    parser.add_argument("out", type=Path, help="the folder to write (must not exist)")
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"out {str(args.out)!r} exists; choose a new folder")
    saved = json.loads((args.run / "config.json").read_text())
    known = set(PipelineConfig.__dataclass_fields__)
    cfg = PipelineConfig(**{k: v for k, v in saved.items() if k in known}).resolved()
    train, test, classes, desc = load_data(cfg)
    count = 0
    for split in (train, test):
        for i in range(len(split) if split is not None else 0):
            data = split[i]
            path = args.out / "data" / f"{data.sample_id}.npy"   # <class>/<split>/<name>
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, data.pos.numpy().astype(np.float32))
            count += 1
    saved["data"] = str(args.out / "data")   # as given: relative paths stay relative
    (args.out / "config.json").write_text(json.dumps(saved, indent=2))
    shutil.copy2(args.run / "teacher_features.pt", args.out / "teacher_features.pt")
    (args.out / "cmpg").mkdir()
    shutil.copy2(args.run / "cmpg" / "cmpg.pt", args.out / "cmpg" / "cmpg.pt")
    (args.out / "teacher").mkdir()
    head = load_teacher(args.run / "teacher" / "teacher.pt").head
    torch.save({"weight": head.weight.detach().clone(), "bias": head.bias.detach().clone()},
               args.out / "teacher" / "classifier.pt")
    print(f"{desc}: {count} clouds of {cfg.num_points} points -> {args.out}")


if __name__ == "__main__":
    main()
