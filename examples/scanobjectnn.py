#!/usr/bin/env python
r"""PointCMT on ScanObjectNN (`paper <https://arxiv.org/abs/2210.04208>`_):
real scanned objects, 15 classes, from the official h5 files.

The recipe of ``examples/modelnet40.py`` (:func:`pointcmt_pyg.pipeline.run_pipeline`:
teacher on rendered views, (CMPG,) then the point model with and without PointCMT
on the same budget, a table) on ready ScanObjectNN datasets. ScanObjectNN has no
meshes, so the teacher's views are projected from the points, with the cameras
around the scans' up axis y (``--up 1``). The validation split is carved from
the training file; the test file is evaluated once, at the end::

    python examples/scanobjectnn.py --data ~/data/ScanObjectNN --variant PB_T50_RS
    python examples/scanobjectnn.py --variant OBJ_BG --model dgcnn --epochs 250 --device cuda
    python examples/scanobjectnn.py --resume                     # continue a killed run

The data is distributed after a terms-of-use form, so it is never downloaded
here: request the ``h5_files`` at https://hkust-vgd.github.io/scanobjectnn/ and
extract them under ``--data`` (default: ``$POINTCMT_DATA/ScanObjectNN``)::

    <data>/h5_files/main_split/training_objectdataset_augmentedrot_scale75.h5   PB_T50_RS
    <data>/h5_files/main_split/training_objectdataset.h5                       OBJ_BG
    <data>/h5_files/main_split_nobg/training_objectdataset.h5                  OBJ_ONLY
    (and the matching test_*.h5)

Outputs in ``--out`` (default ``runs/scanobjectnn``): ``results.json``, the
table, ``training_curves.png``, ``views_montage.png``, ``confusion_*.png`` and
one folder per stage with its checkpoints and artifact (``teacher/teacher.pt``,
``cmpg/cmpg.pt``, ``pointcmt/student.pt``, ...).
"""
import argparse
import sys
import warnings
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

# PyG 2.8 calls torch.jit.script at import time, which torch 2.14 deprecates: noise.
warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated",
                        category=FutureWarning)

from pointcmt_pyg.cli import config_from_args, pipeline_parser  # noqa: E402
from pointcmt_pyg.datasets import (SCANOBJECTNN_FILES, ScanObjectNN, dataset_labels,  # noqa: E402
                                   default_data_root, stratified_split, subset)
from pointcmt_pyg.pipeline import PipelineConfig, run_pipeline  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    # The flags of examples/modelnet40.py ...
    parser = pipeline_parser("scanobjectnn.py", description=__doc__.split("\n\n")[0],
                             conflict_handler="resolve")
    parser.add_argument("--data", default=None,  # ... with --data meaning the h5 folder
                        help="folder holding h5_files/ (or main_split*/ directly) "
                             "(default: $POINTCMT_DATA/ScanObjectNN)")
    parser.add_argument("--variant", choices=sorted(SCANOBJECTNN_FILES), default="PB_T50_RS",
                        help="OBJ_ONLY, OBJ_BG or PB_T50_RS (the hardest)")
    parser.add_argument("--out", default="runs/scanobjectnn", help="output directory")
    parser.set_defaults(up=1)                          # the scans stand on y
    return parser


def load_scanobjectnn(root: Path, variant: str, cfg: PipelineConfig
                      ) -> Tuple[Any, Any, List[str], str]:
    r"""``(train, test, class_names, description)`` for
    :func:`~pointcmt_pyg.pipeline.run_pipeline`; ``cfg.max_train`` keeps a
    stratified subset of the training file."""
    train = ScanObjectNN(root, variant, "train", num_points=cfg.num_points)
    test = ScanObjectNN(root, variant, "test", num_points=cfg.num_points)
    classes = list(train.classes)
    desc = f"ScanObjectNN {variant} at {root} ({len(train)} train / {len(test)} test)"
    if cfg.max_train is not None and cfg.max_train < len(train):
        keep, _ = stratified_split(dataset_labels(train), 1 - cfg.max_train / len(train),
                                   cfg.seed)
        train = subset(train, keep)
        desc += f", training subset of {len(train)}"
    return train, test, classes, desc


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    root = Path(args.data).expanduser() if args.data else default_data_root() / "ScanObjectNN"
    args.data = str(root)              # any non-"synthetic" value: real-data defaults
    try:
        cfg = config_from_args(args).resolved()
    except ValueError as error:
        parser.error(str(error))
    try:
        data = load_scanobjectnn(root, args.variant, cfg)
    except FileNotFoundError as error:
        sub, train_file, test_file = SCANOBJECTNN_FILES[args.variant]
        parser.error(f"{error}\nPut {train_file} and {test_file} of the official release in "
                     f"{root / 'h5_files' / sub}/ (or pass --data DIR).")
    except (ValueError, ImportError) as error:
        parser.error(str(error))
    run_pipeline(cfg, data=data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
