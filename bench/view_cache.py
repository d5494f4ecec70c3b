"""Stage I's data path (issue 9, point 5): building the teacher's view cache,
reading it back, and the teacher's training step, on a real dataset.

    python bench/view_cache.py                                   # ModelNet40 train split
    python bench/view_cache.py --data ../shared/data/ModelNet10_pcd --legacy 0

Measured in one run, same machine, same shapes:

* **build**: :func:`pointcmt_pyg.pipeline.prerender_views` (batched
  rendering into uint8 shards) over every shape of the dataset (train and,
  when present, test), from a cold cache in a temporary folder.
* **legacy**: what the cache did before, on the first ``--legacy`` shapes:
  one render and one atomic ``torch.save`` of float32 views per shape
  (projected to the whole dataset from that rate and size).
* **read**: one epoch of the teacher's ``DataLoader`` (batch 32, the views
  decoded from the memory-mapped shards), no model; and the legacy read of
  the per-shape files (``torch.load``) for the same first shapes.
* **teacher step**: forward + backward + AdamW step of the default teacher
  (ResNet-18 per view) on a batch of 32 shapes, median of ``--steps``, and the
  teacher epoch it implies (steps x (step + read per batch)).

Writes a "View cache" section to BENCHMARKS.md (``--no-write`` to skip).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
ROOT = Path(__file__).resolve().parents[1]


def _mb(nbytes: float) -> float:
    return nbytes / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    default_data = os.environ.get("POINTCMT_DATA", str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--data", default=os.path.join(default_data, "ModelNet40"))
    parser.add_argument("--num-views", type=int, default=6)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--legacy", type=int, default=300,
                        help="shapes for the legacy per-file path (0: skip)")
    parser.add_argument("--steps", type=int, default=5, help="teacher steps timed (0: skip)")
    parser.add_argument("--precision", nargs="+", default=["32"], choices=["32", "bf16"],
                        help="teacher step precisions, timed round robin (one step each per "
                             "round) so that they share the machine's load (default: 32)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--note", default="", help="conditions to record (e.g. other jobs)")
    args = parser.parse_args()

    import torch
    from torch_geometric.loader import DataLoader

    from pointcmt_pyg.nn import MultiViewTeacher
    from pointcmt_pyg.pipeline import (PipelineConfig, _with_transform, load_data,
                                       prerender_views, teacher_transforms)
    from pointcmt_pyg.train import atomic_save

    cfg = PipelineConfig(data=args.data, num_views=args.num_views, image_size=args.image_size,
                         progress=False)
    t0 = time.perf_counter()
    train, test, classes, desc = load_data(cfg, for_teacher=True)
    load_s = time.perf_counter() - t0
    parts = [("train", train)] + ([("test", test)] if test is not None else [])
    shapes = sum(len(d) for _, d in parts)
    print(f"{desc}: {shapes} shapes loaded in {load_s:.1f} s; "
          f"{torch.get_num_threads()} threads", flush=True)

    with tempfile.TemporaryDirectory(prefix="view_cache_") as tmp:
        transform = teacher_transforms(cfg, cache_dir=Path(tmp) / "views")
        renderer = transform.transforms[0]
        t0 = time.perf_counter()
        rendered, _ = prerender_views(transform, parts, progress=True)
        build_s = time.perf_counter() - t0
        build_bytes = renderer.store.nbytes()
        print(f"build: {rendered} shapes in {build_s:.1f} s ({rendered / build_s:.0f} shapes/s), "
              f"{_mb(build_bytes):.0f} MB", flush=True)

        views = _with_transform(train, transform)
        loader = DataLoader(views, batch_size=args.batch_size, shuffle=True)
        t0 = time.perf_counter()
        batches = 0
        for batch in loader:
            batches += 1
        read_s = time.perf_counter() - t0
        read_per_batch = read_s / max(batches, 1)
        print(f"read: one epoch ({len(views)} shapes, {batches} batches) in {read_s:.1f} s",
              flush=True)

        legacy = None
        if args.legacy:
            n = min(args.legacy, len(train))
            legacy_dir = Path(tmp) / "legacy"
            t0 = time.perf_counter()
            for i in range(n):
                data = train[i]
                atomic_save({"sample_id": data.sample_id,
                             "views": renderer._render_float(data)},
                            legacy_dir / f"{i}.pt")
            legacy_build_s = time.perf_counter() - t0
            legacy_bytes = sum(p.stat().st_size for p in legacy_dir.glob("*.pt"))
            t0 = time.perf_counter()
            for i in range(n):
                torch.load(legacy_dir / f"{i}.pt", weights_only=True)
            legacy_read_s = time.perf_counter() - t0
            legacy = {"n": n, "build_s": legacy_build_s * shapes / n,
                      "bytes": legacy_bytes * shapes / n,
                      "read_s": legacy_read_s * len(train) / n}
            print(f"legacy, {n} shapes: build {legacy_build_s:.1f} s, {_mb(legacy_bytes):.1f} MB, "
                  f"read {legacy_read_s:.2f} s", flush=True)

        step_s = None
        step_by_precision = {}
        if args.steps:
            batch = next(iter(loader))
            arms = {}
            for precision in args.precision:
                torch.manual_seed(0)
                teacher = MultiViewTeacher(len(classes), backbone=cfg.backbone, in_channels=1)
                arms[precision] = (teacher, torch.optim.AdamW(teacher.parameters(), lr=1e-3), [])
            for _ in range(args.steps + 1):             # round robin; the first round is warm-up
                for precision, (teacher, optimizer, times) in arms.items():
                    amp = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16"
                           else contextlib.nullcontext())
                    t0 = time.perf_counter()
                    with amp:
                        loss = torch.nn.functional.cross_entropy(teacher(batch.views),
                                                                 batch.y.view(-1))
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    times.append(time.perf_counter() - t0)
            step_by_precision = {p: statistics.median(t[1:]) for p, (_, _, t) in arms.items()}
            step_s = step_by_precision[args.precision[0]]
            for p, s in step_by_precision.items():
                print(f"teacher step (B={args.batch_size}, precision {p}): {s:.2f} s", flush=True)

    name = Path(args.data).name
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cpu = platform.processor() or platform.machine()
    lines = [
        f"## View cache (stage I data path): {stamp}",
        "",
        f"`python bench/view_cache.py --data {args.data} --num-views {args.num_views} "
        f"--image-size {args.image_size} --legacy {args.legacy} --steps {args.steps}"
        f"{' --precision ' + ' '.join(args.precision) if args.precision != ['32'] else ''}` on "
        f"{os.cpu_count()} cores ({cpu}), {torch.get_num_threads()} torch thread(s), torch "
        f"{torch.__version__}. {desc}: {shapes} shapes, {args.num_views} depth views of "
        f"{args.image_size} px each." + (
            f" The legacy rows (one render and one float32 `torch.save` per shape, as the cache "
            f"worked before) are measured on the first {args.legacy} shapes and projected to the "
            "whole dataset." if args.legacy else "") + (f" {args.note}" if args.note else ""),
        "",
        "| path | build s | shapes/s | size MB | read s/epoch (train split) |",
        "|---|---:|---:|---:|---:|",
        f"| uint8 shards, batched (`prerender_views`) | {build_s:.1f} | {rendered / build_s:.0f} | "
        f"{_mb(build_bytes):.0f} | {read_s:.1f} |",
    ]
    if legacy:
        lines.append(f"| legacy: one float32 file per shape (projected) | {legacy['build_s']:.0f} | "
                     f"{shapes / legacy['build_s']:.0f} | {_mb(legacy['bytes']):.0f} | "
                     f"{legacy['read_s']:.1f} |")
        lines += ["", f"Build {legacy['build_s'] / build_s:.1f}x faster, "
                  f"{legacy['bytes'] / max(build_bytes, 1):.1f}x smaller than the legacy path "
                  f"(issue 9 target for ModelNet40: under 120 s and 300 MB)."]
    if step_s is not None:
        steps = -(-len(train) // args.batch_size)
        lines += ["", f"Teacher ({cfg.backbone}, B = {args.batch_size}): {step_s:.2f} s per "
                  f"training step (median of {args.steps}); reading a batch from the cache: "
                  f"{read_per_batch * 1000:.0f} ms. One epoch over the {len(train)} training "
                  f"shapes ({steps} steps) comes to about "
                  f"{steps * (step_s + read_per_batch) / 60:.1f} min (the pipeline trains on "
                  "the split minus its validation carve, so a little less)."]
        if len(step_by_precision) > 1:
            first = args.precision[0]
            lines += ["", "Teacher step by precision (round robin, same batch and initial "
                      "weights): " + "; ".join(
                          f"{p}: {s:.2f} s ({step_by_precision[first] / s:.2f}x of {first})"
                          for p, s in step_by_precision.items()) + "."]
    section = "\n".join(lines) + "\n"
    print(section)
    if not args.no_write:
        from ops import write_section
        # Runs that time several precisions keep their own section beside the cache's.
        title = ("## View cache (stage I data path)" + (
            " and teacher precision" if len(args.precision) > 1 else ""))
        write_section(args.out, f"{title}: {name},", section.replace(
            "## View cache (stage I data path):", f"{title}: {name},", 1))


if __name__ == "__main__":
    main()
