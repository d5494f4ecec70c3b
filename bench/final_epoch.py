"""The final-epoch protocol: scores the weights every finished stage-III run
of ``bench/ablate_pointcmt.py`` ends with (``<run>/ablation/<arm>_s<seed>/last.pt``),
on the validation carve and the test split, and compares arms pairwise by seed.

Why: the ablation selects each run's checkpoint by validation OA over its
epochs, on a 399-shape carve where one shape is 0.25 points. That selection
adds noise to every test number. Under a cosine schedule that ends at 1 % of
the peak learning rate, the final weights involve no selection at all. Both
protocols are reported, whichever way they point.

    python bench/final_epoch.py runs/mn10_t12 --arms baseline_e12 balanced_e12

Rows are cached in ``<run>/ablation/final_epoch.jsonl`` (one per run directory;
a run is scored once). Prints per-arm mean +- std and the paired differences
against the first arm.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def student_state(checkpoint: Dict) -> Dict:
    """The student's weights in a trainer checkpoint: the whole model for a
    plain run, the ``student.`` entries of a CrossModalDistiller."""
    state = checkpoint["model"]
    if any(k.startswith("student.") for k in state):
        return {k[len("student."):]: v for k, v in state.items() if k.startswith("student.")}
    return state


def score_runs(run: Path, arms: List[str]) -> List[Dict]:
    import torch
    from torch_geometric.loader import DataLoader

    from pointcmt_pyg.datasets import train_val_split
    from pointcmt_pyg.models import get_model
    from pointcmt_pyg.pipeline import (PipelineConfig, evaluate_classifier, _with_transform, load_data,
                                       student_transforms)
    cache = run / "ablation" / "final_epoch.jsonl"
    rows = [json.loads(line) for line in cache.read_text().splitlines()] if cache.is_file() else []
    done = {r["dir"] for r in rows}
    pattern = re.compile(r"^(%s)_s(\d+)$" % "|".join(map(re.escape, arms)))
    # finished runs only: the ablation appends its results row when a run ends
    results = run / "ablation" / "results.jsonl"
    finished = {f"{r['variant']}_s{r['seed']}" for r in map(json.loads, results.read_text().splitlines())}
    todo = sorted(d for d in (run / "ablation").iterdir()
                  if d.is_dir() and pattern.match(d.name) and d.name not in done
                  and d.name in finished and (d / "last.pt").is_file())
    if todo:
        known = set(PipelineConfig.__dataclass_fields__)
        saved = json.loads((run / "config.json").read_text())
        cfg = PipelineConfig(**{k: v for k, v in saved.items() if k in known}).resolved()
        full_train, test, classes, _ = load_data(cfg)
        _, val = train_val_split(full_train, cfg.val_fraction, cfg.seed)
        loaders = {"val": DataLoader(_with_transform(val, student_transforms(False)), batch_size=cfg.batch_size),
                   "test": DataLoader(_with_transform(test, student_transforms(False)), batch_size=cfg.batch_size)}
        for d in todo:
            checkpoint = torch.load(d / "last.pt", map_location="cpu", weights_only=False)
            history = checkpoint.get("history") or {}
            records = history.get("records", []) if isinstance(history, dict) else []
            epochs = max((r.get("epoch", 0) for r in records), default=checkpoint.get("epoch"))
            model = get_model(cfg.model, len(classes))
            model.load_state_dict(student_state(checkpoint))
            arm, seed = pattern.match(d.name).groups()
            row = {"dir": d.name, "arm": arm, "seed": int(seed), "epoch": epochs}
            for split, loader in loaders.items():
                res = evaluate_classifier(model, loader, torch.device("cpu"), len(classes))
                row[f"{split}_oa"], row[f"{split}_macc"] = res["oa"], res["macc"]
            rows.append(row)
            with cache.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{d.name}: final epoch {epochs}: val {row['val_oa'] * 100:.2f}, "
                  f"test {row['test_oa'] * 100:.2f}", flush=True)
    return [r for r in rows if pattern.match(r["dir"])]


def summarize(rows: List[Dict], arms: List[str]) -> None:
    def ms(values: List[float]) -> str:
        if not values:
            return "-"
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.2f} ± {sd:.2f}"

    by = {(r["arm"], r["seed"]): r for r in rows}
    base = arms[0]
    print("| arm (final epoch) | seeds | val OA | test OA | test mAcc | test OA - "
          f"{base} (paired) | val OA - {base} (paired) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for arm in arms:
        seeds = sorted(s for (a, s) in by if a == arm)
        val = [by[arm, s]["val_oa"] * 100 for s in seeds]
        test = [by[arm, s]["test_oa"] * 100 for s in seeds]
        macc = [by[arm, s]["test_macc"] * 100 for s in seeds]
        paired = [s for s in seeds if (base, s) in by]
        d_test = [(by[arm, s]["test_oa"] - by[base, s]["test_oa"]) * 100 for s in paired]
        d_val = [(by[arm, s]["val_oa"] - by[base, s]["val_oa"]) * 100 for s in paired]
        diff = "-" if arm == base else f"{ms(d_test)} ({', '.join(f'{d:+.2f}' for d in d_test)})"
        dval = "-" if arm == base else f"{ms(d_val)} ({', '.join(f'{d:+.2f}' for d in d_val)})"
        print(f"| {arm} | {','.join(map(str, seeds))} | {ms(val)} | {ms(test)} | {ms(macc)} | "
              f"{diff} | {dval} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--arms", nargs="+", required=True, help="first = the reference arm")
    args = parser.parse_args()
    os.environ.setdefault("POINTCMT_QUIET", "1")
    summarize(score_runs(args.run, args.arms), args.arms)


if __name__ == "__main__":
    main()
