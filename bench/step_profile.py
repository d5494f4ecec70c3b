"""Where a student's training step spends its time, and how fast it could be.

Issue 9 asks for the dense grouping path to be 1.5x (PointNet++ SSG), 3x (MSG)
and 2x (DGCNN) faster than PyG's message passing, with the same math. The same
math fixes the matrix products (the MLP layers after the first run on the same
edge rows in both paths) and the batch norms over them. This script profiles
one plain optimizer step of each implementation on the same real batch
(``torch.profiler``, CPU) and sorts the time of every aten/pointcmt op into

* ``matmul``: ``mm``/``addmm``/``bmm``/``linear`` forward and backward: the
  work the same math keeps (its FLOPs come from ``torch.utils.flop_counter``);
* ``batch_norm``: batch-norm forward and backward (also kept, memory bound);
* ``gather/scatter``: index_select, gather, scatter, index_add, the edge
  construction: what a grouping implementation chooses;
* ``neighbours``: our fps/knn/radius/slot_max/gather_max ops;
* ``elementwise/other``: the rest (ReLU, adds, copies, the optimizer).

It prints a table per implementation and the *floor* of the step: the time of
the ``matmul`` and ``batch_norm`` rows as measured in the dense step. The
largest speed-up any same-math rewrite can give over message passing (without
fusing batch norm into the products or a faster GEMM) is then the message-passing step
time over that floor::

    OMP_NUM_THREADS=2 python bench/step_profile.py --model pointnet2 pointnet2_msg dgcnn \
        --data ../shared/data/ModelNet40 --json /tmp/profile.json

Inputs are real shapes (the first batch of the folder's training split, as
``bench/train_step.py --data`` takes them) so that neighbourhoods are as dense
as in training. One warm-up step, then one profiled step, per implementation.
"""
import argparse
import json
import os
import sys
import time
from collections import defaultdict
from typing import Dict, List, Tuple

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))
os.environ.setdefault("POINTCMT_QUIET", "1")

from pointcmt_pyg.models import get_model  # noqa: E402

CATEGORIES = ("matmul", "batch_norm", "gather/scatter", "neighbours", "elementwise/other")

_MATMUL = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear",
           "aten::baddbmm", "aten::_addmm_activation")
_BATCH_NORM = ("batch_norm",)
_GATHER = ("index_select", "gather", "scatter", "index_add", "index_put", "index",
           "embedding", "segment", "take", "repeat_interleave")
_NEIGHBOURS = ("pointcmt::", "fps", "knn", "radius", "slot_max", "gather_max")


def category(op_name: str) -> str:
    """The category of one profiler event name (see the module docstring)."""
    name = op_name.lower()
    if name in _MATMUL:
        return "matmul"
    if any(k in name for k in _BATCH_NORM):
        return "batch_norm"
    if any(k in name for k in _NEIGHBOURS):
        return "neighbours"
    if any(k in name for k in _GATHER):
        return "gather/scatter"
    return "elementwise/other"


def one_step(model: torch.nn.Module, opt: torch.optim.Optimizer, batch) -> None:
    out = model(batch)
    loss = torch.nn.functional.cross_entropy(out, batch.y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def profile_step(name: str, grouping: str, batch, classes: int, top: int = 12) -> Dict[str, object]:
    """Warm-up step, one step under the profiler, one under the FLOP counter."""
    torch.manual_seed(0)
    model = get_model(name, classes, grouping=grouping).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    one_step(model, opt, batch)                       # warm-up (allocator, first-call costs)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        one_step(model, opt, batch)
        wall = time.perf_counter() - t0
    # Self time per op: every microsecond counted once, in the op that spent it
    # (autograd's backward nodes appear as their aten ops).
    seconds: Dict[str, float] = defaultdict(float)
    per_op: Dict[str, float] = {}
    for event in prof.key_averages():
        seconds[category(event.key)] += event.self_cpu_time_total / 1e6
        per_op[event.key] = event.self_cpu_time_total / 1e6
    counter = FlopCounterMode(display=False)
    with counter:
        one_step(model, opt, batch)
    return {"model": name, "grouping": grouping, "wall_s": wall,
            "profiled_s": sum(seconds.values()), "seconds": dict(seconds),
            "top_ops": sorted(per_op.items(), key=lambda kv: -kv[1])[:top],
            "matmul_gflop": counter.get_total_flops() / 1e9}


def report(rows: List[Dict[str, object]]) -> str:
    lines = ["| model | grouping | step (profiled) | " + " | ".join(CATEGORIES)
             + " | matmul GFLOP | matmul GFLOP/s |",
             "|---|---|---:|" + "---:|" * len(CATEGORIES) + "---:|---:|"]
    for r in rows:
        sec = r["seconds"]
        total = r["profiled_s"]
        cells = [f"{sec.get(c, 0.0):.2f} s ({100 * sec.get(c, 0.0) / total:.0f} %)" for c in CATEGORIES]
        rate = r["matmul_gflop"] / max(sec.get("matmul", 0.0), 1e-9)
        lines.append(f"| {r['model']} | {r['grouping']} | {r['wall_s']:.2f} s | " + " | ".join(cells)
                     + f" | {r['matmul_gflop']:.1f} | {rate:.0f} |")
    lines += ["", "| model | message passing step | dense step | today's ratio | floor (dense matmul + batch norm) "
              "| largest same-math ratio |", "|---|---:|---:|---:|---:|---:|"]
    by_model: Dict[str, Dict[str, Dict[str, object]]] = defaultdict(dict)
    for r in rows:
        by_model[r["model"]][r["grouping"]] = r
    for name, pair in by_model.items():
        if {"dense", "message_passing"} <= set(pair):
            mp, dense = pair["message_passing"], pair["dense"]
            floor = dense["seconds"].get("matmul", 0.0) + dense["seconds"].get("batch_norm", 0.0)
            lines.append(f"| {name} | {mp['wall_s']:.2f} s | {dense['wall_s']:.2f} s | "
                         f"{mp['wall_s'] / dense['wall_s']:.2f}x | {floor:.2f} s | "
                         f"{mp['wall_s'] / floor:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", nargs="+", default=["pointnet2"])
    parser.add_argument("--grouping", nargs="+", default=["message_passing", "dense"])
    parser.add_argument("--data", required=True, help="a point folder (e.g. ModelNet40)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--points", type=int, default=1024)
    parser.add_argument("--classes", type=int, default=40)
    parser.add_argument("--top", type=int, default=12, help="ops listed per step, by self time")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    from train_step import real_batches
    batch = real_batches(args.data, 1, args, torch.device("cpu"), torch.Generator().manual_seed(1))[0]
    rows = []
    for name in args.model:
        for grouping in args.grouping:
            row = profile_step(name, grouping, batch, args.classes, args.top)
            rows.append(row)
            print(f"{name} {grouping}: {row['wall_s']:.2f} s; by self time: "
                  + ", ".join(f"{op} {sec:.2f} ({category(op)})" for op, sec in row["top_ops"]),
                  flush=True)
    print(f"\n{torch.get_num_threads()} threads, B = {args.batch_size} x {args.points} points, "
          f"{torch.backends.cpu.get_cpu_capability()}\n")
    print(report(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
