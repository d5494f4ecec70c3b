#!/usr/bin/env python
r"""PointCMT on ScanObjectNN (`paper <https://arxiv.org/abs/2210.04208>`_):
real scanned objects, 15 classes, from the official h5 files.

The same recipe as ``examples/modelnet40.py`` (teacher on rendered views, CMPG,
then the point model with and without PointCMT on the same budget, a table),
written out with the stage functions: ScanObjectNN has no meshes, so the
teacher's views are projected from the points (the scans' up axis is y).
The validation split is carved from the training file; the test file is
evaluated once, at the end::

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
table, ``views_montage.png`` and one folder per stage with its checkpoints and
artifact (``teacher/teacher.pt``, ``cmpg/cmpg.pt``, ``pointcmt/student.pt``, ...).
"""
import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch_geometric.transforms import Compose, NormalizeScale

from pointcmt_pyg.cli import config_from_args, evaluate_model, pipeline_parser
from pointcmt_pyg.datasets import (SCANOBJECTNN_FILES, AttachImageFeatures, FeatureCache,
                                   ScanObjectNN, compute_teacher_features, dataset_labels,
                                   default_data_root, stratified_split, subset, train_val_split)
from pointcmt_pyg.models import get_model
from pointcmt_pyg.nn import CMPG, CrossModalDistiller, MultiViewTeacher
from pointcmt_pyg.pipeline import (DropAttributes, format_table, student_transforms,
                                   teacher_eval_wrapper)
from pointcmt_pyg.render import RenderViews, save_montage
from pointcmt_pyg.train import seed_everything, train_cmpg, train_student, train_teacher


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
    return parser


def views_transform(cfg: Any, out: Path) -> Compose:
    r"""Depth views projected from the points (y up), cached on disk, then the
    shape centred and scaled as the pipeline's teacher input."""
    return Compose([RenderViews(cfg.num_views, cfg.image_size, up=1, cache_dir=out / "views"),
                    DropAttributes(), NormalizeScale()])


def with_transform(dataset: Any, transform: Any) -> Any:
    view = dataset.index_select(list(range(len(dataset))))
    view.transform = transform
    return view


def summary(res: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    return None if res is None else {k: res[k] for k in ("oa", "macc", "num_samples")}


def epoch_seconds(history: Any) -> Optional[float]:
    times = [r["epoch_seconds"] for r in history.records if r.get("epoch_seconds") is not None]
    return sum(times) / len(times) if times else None


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    root = Path(args.data).expanduser() if args.data else default_data_root() / "ScanObjectNN"
    args.data = str(root)              # any non-"synthetic" value: real-data defaults
    try:
        cfg = config_from_args(args).resolved()
    except ValueError as error:
        parser.error(str(error))
    try:
        full_train = ScanObjectNN(root, args.variant, "train", num_points=cfg.num_points)
        test = ScanObjectNN(root, args.variant, "test", num_points=cfg.num_points)
    except FileNotFoundError as error:
        sub, train_file, test_file = SCANOBJECTNN_FILES[args.variant]
        parser.error(f"{error}\nPut {train_file} and {test_file} of the official release in "
                     f"{root / 'h5_files' / sub}/ (or pass --data DIR).")
    except (ValueError, ImportError) as error:
        parser.error(str(error))
    if cfg.max_train is not None and cfg.max_train < len(full_train):
        keep, _ = stratified_split(dataset_labels(full_train),
                                   1 - cfg.max_train / len(full_train), cfg.seed)
        full_train = subset(full_train, keep)

    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available()
                          else "cpu" if cfg.device == "auto" else cfg.device)
    out = Path(cfg.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    train, val = train_val_split(full_train, cfg.val_fraction, cfg.seed)
    classes = full_train.classes
    num_classes = len(classes)
    print(f"[scanobjectnn] {args.variant}: {len(train)} train / {len(val)} val (carved from "
          f"the training file) / {len(test)} test; {cfg.num_points} points; device {device}; "
          f"out {out}", flush=True)
    common = dict(device=device, seed=cfg.seed, num_workers=cfg.workers,
                  progress=cfg.progress, resume=cfg.resume)
    results: Dict[str, Any] = {"model": cfg.model, "data": f"ScanObjectNN {args.variant}",
                               "has_test": True, "classes": classes, "stages": {}}

    # Stage I: the image teacher on views projected from the points.
    t_views = views_transform(cfg, out)
    train_v, val_v = with_transform(train, t_views), with_transform(val, t_views)
    seed_everything(cfg.seed)
    teacher = MultiViewTeacher(num_classes, backbone=cfg.backbone, in_channels=1)
    res = train_teacher(teacher, train_v, val_v, epochs=cfg.teacher_epochs,
                        batch_size=cfg.teacher_batch_size, lr=cfg.teacher_lr,
                        out_dir=out / "teacher", **common)
    teacher = res.model
    on_views = teacher_eval_wrapper(teacher)       # batch -> teacher(batch.views)
    results["stages"]["teacher"] = {
        "val": summary(evaluate_model(on_views, val_v, num_classes, cfg.teacher_batch_size,
                                      device)),
        "test": summary(evaluate_model(on_views, with_transform(test, t_views), num_classes,
                                       cfg.teacher_batch_size, device)),
        "epoch_seconds": epoch_seconds(res.history)}
    sample = train_v[0]
    save_montage(sample.views[0], out / "views_montage.png",
                 title=f"{classes[int(sample.y)]}: {cfg.num_views} views the teacher sees")

    # The frozen teacher's features, once per training shape (train + val).
    feat_path = out / "teacher_features.pt"
    if cfg.resume and feat_path.is_file():
        cache = FeatureCache.load(feat_path)
    else:
        cache = compute_teacher_features(teacher, with_transform(full_train, t_views),
                                         batch_size=cfg.teacher_batch_size, device=device,
                                         progress=cfg.progress)
        cache.save(feat_path)
    attach = AttachImageFeatures(cache)

    # Stage II: the CMPG, teacher feature -> points, EMD against the scan.
    seed_everything(cfg.seed)
    t_cmpg = Compose([DropAttributes(), attach])
    res = train_cmpg(CMPG(teacher.feat_dim, num_points=cfg.cmpg_points),
                     with_transform(train, t_cmpg), with_transform(val, t_cmpg),
                     epochs=cfg.cmpg_epochs, batch_size=cfg.batch_size,
                     out_dir=out / "cmpg", **common)
    cmpg = res.model
    results["stages"]["cmpg"] = {"val_emd": res.history.best_metric,
                                 "epoch_seconds": epoch_seconds(res.history)}

    # Stage III: the point model, plain and with PointCMT, from the same initialisation.
    val_s = with_transform(val, student_transforms(False))
    test_s = with_transform(test, student_transforms(False))
    for run in ("baseline", "pointcmt"):
        if run not in cfg.stages:
            continue
        seed_everything(cfg.seed)
        student = get_model(cfg.model, num_classes)
        if run == "baseline":
            model, train_s = student, with_transform(train, student_transforms(True))
        else:
            model = CrossModalDistiller(student, teacher, cmpg, w_fe=cfg.w_fe, w_ce=cfg.w_ce,
                                        teacher_source="cache")
            train_s = with_transform(train, student_transforms(True, [attach]))
        print(f"[scanobjectnn] stage III: {cfg.model} "
              f"{'with PointCMT' if run == 'pointcmt' else 'baseline'} ({cfg.epochs} epochs)",
              flush=True)
        res = train_student(model, train_s, val_s, epochs=cfg.epochs, batch_size=cfg.batch_size,
                            lr=cfg.lr, out_dir=out / run, num_classes=num_classes, **common)
        student = res.model.student if run == "pointcmt" else res.model
        results["stages"][run] = {
            "val": summary(evaluate_model(student, val_s, num_classes, cfg.batch_size, device)),
            "test": summary(evaluate_model(student, test_s, num_classes, cfg.batch_size,
                                           device)),
            "epoch_seconds": epoch_seconds(res.history)}

    results["wall_seconds"] = time.time() - t_start
    results["table"] = format_table(results)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print()
    print(results["table"])
    print(f"\nwall time {results['wall_seconds'] / 60:.1f} min; artifacts in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
