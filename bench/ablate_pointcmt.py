"""Ablations of stage III of PointCMT on a finished pipeline run.

Reuses the teacher feature cache and the CMPG of a run directory written by
``examples/modelnet40.py`` (same data, split, seed and student budget from its
``config.json``) and trains one student per variant, each a
:class:`~pointcmt_pyg.nn.CrossModalDistiller` with other arguments (or the
plain baseline), then reports validation and test accuracy side by side::

    python bench/ablate_pointcmt.py runs/mn10_pointnet2 \\
        --variant baseline:plain=1 \\
        --variant official:w_fe=30,w_ce=9.6 \\
        --variant kl_only:w_fe=0 --variant fe_only:w_ce=0 \\
        --variant last_linear:head=mlp.lins.2

A variant is ``name:key=value,...``; keys are ``CrossModalDistiller``
arguments (``w_fe``, ``w_ce``, ``head``, ``temperature``,
``detach_head_teacher``, ``normalize_points``, ``label_smoothing``), the
``train_student`` arguments ``max_grad_norm``, ``weight_decay``, ``lr``,
``epochs`` and ``select`` (``val_oa`` or ``last``), and ``plain=1`` for the
baseline. Each results row also scores the run's final weights
(``final_val_oa``, ``final_test_oa``: the final-epoch protocol of
``bench/final_epoch.py``). ``<run>`` may also
be a folder written by ``bench/pack_run.py`` (no views, no ResNet: the KD term
uses the packed teacher classifier). Results go to
``<run>/ablation/<name>/`` and are appended to ``<run>/ablation/results.jsonl``.
``--teacher``, ``--cmpg`` and ``--features`` take those files from elsewhere
(e.g. a teacher trained in another run folder).
"""
import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, Tuple

import torch
from torch_geometric.loader import DataLoader

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from pointcmt_pyg.datasets import AttachImageFeatures, FeatureCache, train_val_split
from pointcmt_pyg.models import get_model
from pointcmt_pyg.nn import CrossModalDistiller, load_cmpg, load_teacher
from pointcmt_pyg.nn.recipes import DEFAULT_RECIPE, get_recipe
from pointcmt_pyg.pipeline import (PipelineConfig, evaluate_classifier, _with_transform, load_data,
                                   student_transforms, warmup_steps)
from pointcmt_pyg.train import seed_everything, train_student

from final_epoch import student_state  # noqa: E402  (bench/, beside this script)

def _yes(value: str) -> bool:
    return value.lower() in ("1", "true", "yes")


DISTILLER_KEYS = {"recipe": str, "w_kd": float, "w_align": float, "align_center": _yes, "w_fe": float, "w_ce": float,
                  "w_proj": float, "head": str, "temperature": float,
                  "detach_head_teacher": _yes, "detach_teacher_logits": _yes, "normalize_points": _yes,
                  "label_smoothing": float, "emd_eps": float}
TRAIN_KEYS = {"max_grad_norm": float, "weight_decay": float, "lr": float, "epochs": int,
              "warmup_fraction": float, "select": str}


def parse_variant(text: str) -> Tuple[str, Dict[str, Any], Dict[str, Any], bool]:
    name, _, spec = text.partition(":")
    if not name:
        raise argparse.ArgumentTypeError(f"variant {text!r} has no name")
    distiller: Dict[str, Any] = {}
    train: Dict[str, Any] = {}
    plain = False
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        if key == "plain":
            plain = value.lower() in ("1", "true", "yes")
        elif key in DISTILLER_KEYS:
            distiller[key] = DISTILLER_KEYS[key](value)
        elif key in TRAIN_KEYS:
            train[key] = TRAIN_KEYS[key](value)
        else:
            raise argparse.ArgumentTypeError(
                f"variant {name!r}: unknown key {key!r}; known: plain, "
                f"{', '.join(sorted({**DISTILLER_KEYS, **TRAIN_KEYS}))}")
    return name, distiller, train, plain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished examples/modelnet40.py --out directory")
    parser.add_argument("--variant", action="append", type=parse_variant, required=True,
                        help="name:key=value,... (repeatable)")
    parser.add_argument("--model", help="student model instead of the run's")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the student's initialisation and shuffling (default: the "
                             "run's); the validation carve, teacher and CMPG stay the run's")
    parser.add_argument("--init", type=Path, default=None,
                        help="fine-tune protocol: start every variant from these student weights "
                             "(a student.pt state_dict, or a trainer best.pt of a plain run)")
    parser.add_argument("--tag", default="",
                        help="suffix of the variant names in the results (e.g. _ft)")
    parser.add_argument("--teacher", type=Path, default=None,
                        help="teacher.pt instead of <run>/teacher/teacher.pt")
    parser.add_argument("--cmpg", type=Path, default=None, help="cmpg.pt instead of <run>/cmpg/cmpg.pt")
    parser.add_argument("--features", type=Path, default=None,
                        help="feature cache instead of <run>/teacher_features.pt")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    teacher_path = args.teacher or args.run / "teacher" / "teacher.pt"
    cmpg_path = args.cmpg or args.run / "cmpg" / "cmpg.pt"
    features_path = args.features or args.run / "teacher_features.pt"
    for flag, path in (("--teacher", args.teacher), ("--cmpg", args.cmpg), ("--features", args.features)):
        if path is not None and not path.is_file():
            parser.error(f"{flag} {path}: no such file")

    known = {f for f in PipelineConfig.__dataclass_fields__}
    saved = json.loads((args.run / "config.json").read_text())
    cfg = PipelineConfig(**{k: v for k, v in saved.items() if k in known}).resolved()
    if args.model:
        cfg = dataclasses.replace(cfg, model=args.model)
    full_train, test, classes, desc = load_data(cfg)
    train, val = train_val_split(full_train, cfg.val_fraction, cfg.seed)
    seed = cfg.seed if args.seed is None else args.seed
    needs_teacher = any(not plain for _, _, _, plain in args.variant)
    attach = AttachImageFeatures(FeatureCache.load(features_path)) if needs_teacher else None
    cmpg = load_cmpg(cmpg_path) if needs_teacher else None
    teacher, classifier = None, None
    if needs_teacher and teacher_path.is_file():
        teacher = load_teacher(teacher_path)
    elif needs_teacher:  # a folder packed by bench/pack_run.py: the teacher's classifier only
        head = torch.load(args.run / "teacher" / "classifier.pt", map_location="cpu")
        classifier = torch.nn.Linear(head["weight"].shape[1], head["weight"].shape[0])
        classifier.load_state_dict(head)
    val_s = _with_transform(val, student_transforms(False))
    test_loader = (DataLoader(_with_transform(test, student_transforms(False)),
                              batch_size=cfg.batch_size) if test is not None else None)
    val_loader = DataLoader(val_s, batch_size=cfg.batch_size)
    device = torch.device(args.device)
    out_root = args.run / "ablation"
    out_root.mkdir(exist_ok=True)
    print(f"{desc}; {len(train)} train / {len(val)} val; {cfg.model}, {cfg.num_points} points, "
          f"batch {cfg.batch_size}, {cfg.epochs} epochs unless a variant says otherwise")

    for name, distiller_kw, train_kw, plain in args.variant:
        seed_everything(seed)              # the same initial student for every variant
        student = get_model(cfg.model, len(classes))
        if args.init is not None:
            state = torch.load(args.init, map_location="cpu", weights_only=False)
            student.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
        name = name + args.tag
        if plain:
            model, train_s = student, _with_transform(train, student_transforms(True))
        else:
            epochs = train_kw.get("epochs", cfg.epochs)
            recipe = get_recipe(distiller_kw.get("recipe", DEFAULT_RECIPE))
            fraction = train_kw.pop("warmup_fraction", recipe.warmup_fraction)
            model = CrossModalDistiller(student, teacher, cmpg, teacher_source="cache",
                                        teacher_classifier=classifier,
                                        warmup_steps=warmup_steps(fraction * epochs, len(train),
                                                                  cfg.batch_size),
                                        **distiller_kw)
            train_s = _with_transform(train, student_transforms(True, [attach]))
        t0 = time.time()
        res = train_student(model, train_s, val_s, epochs=train_kw.pop("epochs", cfg.epochs),
                            batch_size=cfg.batch_size, lr=train_kw.pop("lr", cfg.lr),
                            out_dir=out_root / f"{name}_s{seed}", num_classes=len(classes), device=device,
                            seed=seed, progress=not args.no_progress, **train_kw)
        trained = res.model if plain else res.model.student
        val_res = evaluate_classifier(trained, val_loader, device, len(classes))
        test_res = evaluate_classifier(trained, test_loader, device, len(classes))
        # The final-epoch protocol too (bench/final_epoch.py): the weights the run ended with.
        final = get_model(cfg.model, len(classes))
        final.load_state_dict(student_state(torch.load(out_root / f"{name}_s{seed}" / "last.pt",
                                                       map_location="cpu", weights_only=False)))
        final_val = evaluate_classifier(final.to(device), val_loader, device, len(classes))
        final_test = evaluate_classifier(final, test_loader, device, len(classes))
        row = {"variant": name, "seed": seed, "plain": plain,
               "init": None if args.init is None else str(args.init), "distiller": distiller_kw, "train": train_kw,
               "val_oa": val_res["oa"], "val_macc": val_res["macc"],
               "test_oa": None if test_res is None else test_res["oa"],
               "test_macc": None if test_res is None else test_res["macc"],
               "final_val_oa": final_val["oa"],
               "final_test_oa": None if final_test is None else final_test["oa"],
               "best_epoch": res.history.best_epoch, "minutes": (time.time() - t0) / 60,
               "val_oa_by_epoch": [r.get("val_oa") for r in res.history.to_dict()["records"]]}
        with open(out_root / "results.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(f"== {name}: val OA {row['val_oa']:.4f}, test OA "
              f"{'-' if row['test_oa'] is None else format(row['test_oa'], '.4f')} "
              f"({row['minutes']:.1f} min; val OA by epoch {row['val_oa_by_epoch']})", flush=True)


if __name__ == "__main__":
    main()
