"""Paired comparison of finished stage-III runs (``pointcmt-pyg distill`` or
pipeline student folders), each scored at its final epoch from its
``history.json``: the validation carve's OA / mAcc by epoch, per arm, and each
arm minus the baseline per seed, with mean +- sample std over seeds.

    python bench/paired_runs.py --seeds 0 1 2 \\
        --arm baseline=runs/mn40_e4_base_i0,runs/mn40_e4_base_i1,runs/mn40_e4_base_i2 \\
        --arm balanced=runs/mn40_e6/pointcmt,runs/mn40_e4_bal_i1,runs/mn40_e4_bal_i2

The first ``--arm`` is the baseline. Runs whose history is missing or shorter
than the others are reported as unfinished and left out of the statistics.
Prints a markdown table (for RESULTS.md); ``--plot curves.png`` also draws
every run's validation OA by epoch (thin) and each arm's mean (thick).
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Dict, List, Optional


def final_record(run: Path) -> Optional[Dict]:
    """The last epoch's record of ``run/history.json`` plus the per-epoch val
    OA curve, or ``None`` when the run has no history yet."""
    path = run / "history.json"
    if not path.is_file():
        return None
    records = json.loads(path.read_text())["records"]
    if not records:
        return None
    last = dict(records[-1])
    last["curve"] = [r.get("val_oa") for r in records]
    seconds = sorted(r["epoch_seconds"] for r in records if r.get("epoch_seconds"))
    last["median_epoch_seconds"] = seconds[len(seconds) // 2] if seconds else None
    return last


def _mean_std(values: List[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:+.2f} (1 seed)"
    return f"{statistics.mean(values):+.2f} ± {statistics.stdev(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", nargs="+", required=True, help="one label per run of an arm")
    parser.add_argument("--arm", action="append", required=True, metavar="NAME=DIR,DIR,...",
                        help="an arm and its run folders, one per seed (the first is the baseline)")
    parser.add_argument("--plot", default=None, metavar="PNG",
                        help="also write the validation curves (per run and arm means) to this PNG")
    parser.add_argument("--title", default=None, help="the plot's title")
    args = parser.parse_args()
    arms: Dict[str, List[Path]] = {}
    for spec in args.arm:
        name, _, dirs = spec.partition("=")
        paths = [Path(d) for d in dirs.split(",")]
        if len(paths) != len(args.seeds):
            raise SystemExit(f"--arm {name}: {len(paths)} folders for {len(args.seeds)} seeds")
        arms[name] = paths
    records = {name: [final_record(p) for p in paths] for name, paths in arms.items()}
    epochs = max((len(r["curve"]) for rs in records.values() for r in rs if r), default=0)
    base = next(iter(arms))
    print("| arm | seed | val OA by epoch | val OA | val mAcc | train acc | - baseline | s/epoch |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    diffs: Dict[str, List[float]] = {name: [] for name in arms}
    for name, rs in records.items():
        for seed, r, b in zip(args.seeds, rs, records[base]):
            if r is None or len(r["curve"]) < epochs:
                print(f"| {name} | {seed} | unfinished | | | | | |")
                continue
            curve = " / ".join(f"{100 * v:.2f}" for v in r["curve"])
            done_b = b is not None and len(b["curve"]) == epochs
            diff = 100 * (r["val_oa"] - b["val_oa"]) if done_b else None
            if diff is not None and name != base:
                diffs[name].append(diff)
            secs = r["median_epoch_seconds"]
            print(f"| {name} | {seed} | {curve} | {100 * r['val_oa']:.2f} | "
                  f"{100 * r['val_macc']:.2f} | {100 * r['train_acc']:.2f} | "
                  f"{'-' if name == base or diff is None else f'{diff:+.2f}'} | "
                  f"{'-' if secs is None else f'{secs:.0f}'} |")
    print()
    for name, rs in records.items():
        finished = [100 * r["val_oa"] for r in rs if r and len(r["curve"]) == epochs]
        mean = "-" if not finished else (f"{statistics.mean(finished):.2f}" + (
            f" ± {statistics.stdev(finished):.2f}" if len(finished) > 1 else ""))
        line = f"- {name}: val OA {mean} over {len(finished)} seeds"
        if name != base:
            wins = sum(d > 0 for d in diffs[name])
            line += (f"; minus {base}, paired: {_mean_std(diffs[name])} "
                     f"({wins} of {len(diffs[name])} ahead)")
        print(line)
    if args.plot:
        plot_curves(records, epochs, args.plot, args.title)


def plot_curves(records: Dict[str, List[Optional[Dict]]], epochs: int, path: str,
                title: Optional[str] = None) -> None:
    """Validation OA by epoch: each finished run thin, each arm's mean over its
    finished runs thick, one colour per arm."""
    from pointcmt_pyg.train.plots import _figure  # Agg figure, no pyplot state (as the pipeline's plots)

    fig = _figure(7, 4.5)
    ax = fig.subplots()
    x = list(range(1, epochs + 1))
    for index, (name, rs) in enumerate(records.items()):
        colour = f"C{index}"
        curves = [[100 * v for v in r["curve"]] for r in rs if r and len(r["curve"]) == epochs]
        for curve in curves:
            ax.plot(x, curve, color=colour, alpha=0.3, linewidth=0.8)
        if curves:
            mean = [statistics.mean(values) for values in zip(*curves)]
            ax.plot(x, mean, color=colour, linewidth=2.2, label=f"{name} (mean of {len(curves)})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation OA (%)")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    finals = [100 * v for rs in records.values() for r in rs if r and len(r["curve"]) == epochs
              for v in r["curve"][epochs // 3:]]
    if finals:
        ax.set_ylim(max(0.0, min(finals) - 2), min(100.0, max(finals) + 1))
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
