"""Mean ± std over seeds of the stage-III arms in ``<run>/ablation/results.jsonl``
(written by ``bench/ablate_pointcmt.py``), as a Markdown table, plus a PNG of
validation OA per epoch (mean over seeds, one line per arm)::

    python bench/summarize_recipes.py runs/mn10_t12 --baseline baseline \\
        --png docs/results/mn10_recipes_val_curves.png

Test accuracy is only reported here, never used to choose anything: the arms
to compare are named on the command line (or all of them).
"""
import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Dict, List


def _fmt(values: List[float]) -> str:
    pct = [100 * v for v in values]
    if len(pct) == 1:
        return f"{pct[0]:.2f}"
    return f"{statistics.mean(pct):.2f} ± {statistics.stdev(pct):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--baseline", default="baseline", help="the plain arm's variant name")
    parser.add_argument("--arms", nargs="*", default=None, help="variant names (default: all)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="keep only rows with this many epochs")
    parser.add_argument("--png", type=Path, default=None, help="validation curves PNG")
    parser.add_argument("--teacher", action="store_true",
                        help="add a panel with the teacher's validation OA per epoch "
                             "(<run>/teacher/history.json)")
    args = parser.parse_args()

    rows = [json.loads(line) for line in
            (args.run / "ablation" / "results.jsonl").read_text().splitlines() if line.strip()]
    if args.epochs is not None:
        rows = [r for r in rows if r.get("train", {}).get("epochs") == args.epochs]
    by_arm: Dict[str, Dict[int, dict]] = defaultdict(dict)
    for r in rows:                       # the last row of an (arm, seed) wins
        by_arm[r["variant"]][r.get("seed", 0)] = r
    arms = args.arms or list(by_arm)
    base = by_arm.get(args.baseline, {})

    print("| arm | seeds | val OA | test OA | test mAcc | test OA - baseline (paired) | min/run |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for arm in arms:
        runs = by_arm.get(arm, {})
        if not runs:
            continue
        seeds = sorted(runs)
        val = [runs[s]["val_oa"] for s in seeds]
        test = [runs[s]["test_oa"] for s in seeds if runs[s].get("test_oa") is not None]
        macc = [runs[s]["test_macc"] for s in seeds if runs[s].get("test_macc") is not None]
        paired = [runs[s]["test_oa"] - base[s]["test_oa"] for s in seeds
                  if s in base and arm != args.baseline and runs[s].get("test_oa") is not None]
        diff = "-" if not paired else (
            f"{100 * paired[0]:+.2f}" if len(paired) == 1 else
            f"{100 * statistics.mean(paired):+.2f} ± {100 * statistics.stdev(paired):.2f}")
        minutes = statistics.mean(runs[s]["minutes"] for s in seeds)
        print(f"| {arm} | {','.join(map(str, seeds))} | {_fmt(val)} | "
              f"{_fmt(test) if test else '-'} | {_fmt(macc) if macc else '-'} | {diff} | "
              f"{minutes:.1f} |")

    if args.png is not None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        if args.teacher:
            fig, (ax_t, ax) = plt.subplots(1, 2, figsize=(11, 4),
                                           gridspec_kw={"width_ratios": [1, 1.6]})
            records = json.loads((args.run / "teacher" / "history.json").read_text())["records"]
            ax_t.plot([r["epoch"] for r in records], [100 * r["val_oa"] for r in records],
                      marker="o", color="black")
            ax_t.set_xlabel("teacher epoch")
            ax_t.set_ylabel("validation OA (%)")
            ax_t.set_title("teacher (images)")
            ax_t.grid(alpha=0.3)
        else:
            fig, ax = plt.subplots(figsize=(6.5, 4))
        for arm in arms:
            runs = by_arm.get(arm, {})
            curves = [r["val_oa_by_epoch"] for r in runs.values() if r.get("val_oa_by_epoch")]
            if not curves:
                continue
            n = min(len(c) for c in curves)
            mean = [100 * statistics.mean(c[i] for c in curves) for i in range(n)]
            ax.plot(range(1, n + 1), mean, marker="o", label=f"{arm} ({len(curves)} seeds)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation OA (%), mean over seeds")
        ax.set_title(f"{args.run.name}: stage-III arms")
        ax.grid(alpha=0.3)
        ax.legend()
        args.png.parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(args.png, dpi=120)
        print(f"\n{args.png}")


if __name__ == "__main__":
    main()
