"""Teacher cost against validation OA (issue 8's stage-I table): trains the
pipeline's stage I alone (``pointcmt_pyg.pipeline.run_teacher_stage``, the
same code as a full run) once per variant and appends one JSON line per
variant to ``<root>/teacher_cost.jsonl``.

    OMP_NUM_THREADS=1 python bench/teacher_cost.py runs/teacher_cost \\
        --data ../shared/data/ModelNet10_pcd --epochs 6 \\
        --variant v6_64 --variant v12_64:num_views=12 --variant aug:teacher_augment=1

A variant is ``name`` or ``name:key=value,...`` over ``PipelineConfig``
fields (``num_views``, ``image_size``, ``teacher_augment``, ``backbone``,
``precision``, ``teacher_epochs``, ``teacher_lr``, ``teacher_batch_size``,
``view_channels``...); several view channels are joined by ``+``
(``view_channels=depth+shading``).
Views are rendered once per view setting into ``<root>/views`` (or
``--views``) before training, and that time is reported apart
(``render_seconds``). Selection is on the validation carve only; the test
split is evaluated once for the record. Print the table with ``--table``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_variant(spec: str) -> Tuple[str, Dict[str, Any]]:
    """``"name:key=value,..."`` -> ``(name, {key: value})`` with values typed
    like the ``PipelineConfig`` field they set."""
    from pointcmt_pyg.pipeline import PipelineConfig
    fields = {f.name: f for f in dataclasses.fields(PipelineConfig)}
    name, _, rest = spec.partition(":")
    if not name:
        raise ValueError(f"--variant {spec!r}: empty name")
    overrides: Dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise ValueError(f"--variant {spec!r}: {item!r} is not key=value over a "
                             f"PipelineConfig field")
        default = getattr(PipelineConfig, key, None)
        if isinstance(default, bool):
            overrides[key] = value.lower() in ("1", "true", "yes")
        elif isinstance(default, int) or key.endswith(("epochs", "views", "size", "points")):
            overrides[key] = int(value)
        elif isinstance(default, float):
            overrides[key] = float(value)
        else:
            overrides[key] = value.replace("+", ",") if key == "view_channels" else value
    return name, overrides


def render_all(cfg: Any, views_dir: Path) -> Tuple[float, int]:
    """Renders every training and test shape's views (as the teacher stage
    sees them) into the cache; returns (seconds, shapes rendered)."""
    from pointcmt_pyg.pipeline import load_data, prerender_views, teacher_transforms
    transform = teacher_transforms(cfg, cache_dir=views_dir)
    train, test, _, _ = load_data(cfg, for_teacher=True)
    t0 = time.perf_counter()
    rendered, _ = prerender_views(transform, [("train", train), ("test", test)], progress=False)
    return time.perf_counter() - t0, rendered


def epoch_times(root: Path, row: Dict[str, Any]) -> List[float]:
    """Seconds of every epoch of a variant (from its row, or its done.json)."""
    if row.get("epoch_seconds_each"):
        return row["epoch_seconds_each"]
    done = json.loads((root / row["name"] / "teacher" / "done.json").read_text())
    return [r["epoch_seconds"] for r in done["history"]["records"]]


def print_table(root: Path, rows: List[Dict[str, Any]]) -> None:
    """The markdown table; s/epoch is the median epoch (robust to a pause)."""
    import statistics
    print("| variant | views | px | holds | augment | precision | epochs | val OA | test OA (once) "
          "| s/epoch (median) | render s |")
    print("|---|---:|---:|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        c = r["config"]
        test = r["test"]["oa"] * 100 if r.get("test") else float("nan")
        print(f"| {r['name']} | {c['num_views']} | {c['image_size']} | "
              f"{c.get('view_channels', 'depth')} | "
              f"{'yes' if c['teacher_augment'] else 'no'} | {c['precision']} | "
              f"{c['teacher_epochs']} | {r['val']['oa'] * 100:.2f} | {test:.2f} | "
              f"{statistics.median(epoch_times(root, r)):.0f} | {r['render_seconds']:.0f} |")


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="output folder (one sub-folder per variant)")
    parser.add_argument("--data", default="../shared/data/ModelNet10_pcd")
    parser.add_argument("--epochs", type=int, default=6, help="teacher epochs (default 6)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--views", type=Path, default=None,
                        help="view cache shared by the variants (default <root>/views)")
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--table", action="store_true", help="print the table and exit")
    args = parser.parse_args(argv)
    results = args.root / "teacher_cost.jsonl"
    if args.table:
        rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
        print_table(args.root, rows)
        return 0
    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch
    from pointcmt_pyg.pipeline import PipelineConfig, run_teacher_stage
    views_dir = args.views or args.root / "views"
    for spec in args.variant:
        name, overrides = parse_variant(spec)
        cfg = PipelineConfig(data=args.data, teacher_epochs=args.epochs, seed=args.seed,
                             out=str(args.root / name), resume=True, progress=False, **overrides)
        cfg = cfg.resolved()
        render_s, rendered = render_all(cfg, views_dir)
        print(f"[{name}] views ready ({rendered} rendered in {render_s:.0f} s); "
              f"training the teacher, {cfg.teacher_epochs} epochs, "
              f"{torch.get_num_threads()} thread(s)", flush=True)
        t0 = time.perf_counter()
        done = run_teacher_stage(cfg, views_dir=views_dir)
        row = {"name": name, "overrides": overrides, "config": dataclasses.asdict(cfg),
               "val": done["val"], "test": done.get("test"),
               "epoch_seconds": done.get("epoch_seconds"), "wall_seconds": time.perf_counter() - t0,
               "render_seconds": render_s, "rendered": rendered,
               "threads": torch.get_num_threads(),
               "val_curve": [r.get("val_oa") for r in done["history"]["records"]],
               "epoch_seconds_each": [r.get("epoch_seconds") for r in done["history"]["records"]],
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"[{name}] val OA {row['val']['oa'] * 100:.2f}, "
              f"{row['epoch_seconds']:.0f} s/epoch", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
