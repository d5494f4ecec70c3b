"""Step time and resident memory of a student's training loop on the CPU, with
glibc's allocator as it is and with freed blocks retained for reuse
(:func:`pointcmt_pyg.train.retain_freed_memory`, what the Trainer does on the CPU).

The allocator setting is per process, so each mode runs in its own child
process, one after the other, on the same real batches (the first two batches
of the folder's training split, as ``bench/train_step.py --data`` takes them)::

    OMP_NUM_THREADS=2 python bench/step_memory.py --model pointnet2_msg --data ../shared/data/ModelNet40

prints, per mode, every step's time and resident memory after it, the median
step and the peak resident memory (``ru_maxrss``).
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = ("default", "retain")


def _resident_mb() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) // 1024 for line in fh if line.startswith("VmRSS"))


def child(args: argparse.Namespace) -> None:
    sys.path.insert(0, ROOT)
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    os.environ.setdefault("POINTCMT_QUIET", "1")
    import torch
    import train_step
    from pointcmt_pyg.train import retain_freed_memory
    if args.child == "retain" and not retain_freed_memory(True):
        raise SystemExit("retain_freed_memory: not glibc, nothing to compare")
    setup = argparse.Namespace(device="cpu", classes=args.classes, batch_size=args.batch_size,
                               points=args.points, emd_eps=None)
    batches = train_step.real_batches(args.data, 2, setup, torch.device("cpu"),
                                      torch.Generator().manual_seed(1))
    config = train_step.Config(args.model, False, args.grouping, "32", setup)
    steps = []
    for i in range(args.steps):
        start = time.perf_counter()
        config.step(batches[i % 2], timed=True)
        steps.append({"s": round(time.perf_counter() - start, 3), "resident_mb": _resident_mb()})
    print(json.dumps({"mode": args.child, "steps": steps,
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="pointnet2_msg")
    parser.add_argument("--grouping", default="dense")
    parser.add_argument("--data", required=True, help="a point folder (e.g. ModelNet40)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--points", type=int, default=1024)
    parser.add_argument("--classes", type=int, default=40)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    for mode in MODES:
        out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--child", mode],
                             capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        steps = result["steps"]
        print(f"{args.model} ({args.grouping}), B = {args.batch_size} x {args.points}, {mode:7s}: "
              f"median step {statistics.median(s['s'] for s in steps):.2f} s, peak resident "
              f"{result['peak_mb'] / 1024:.1f} GB, resident after the last step "
              f"{steps[-1]['resident_mb'] / 1024:.1f} GB; steps "
              + ", ".join(f"{s['s']:.1f} s / {s['resident_mb'] / 1024:.1f} GB" for s in steps),
              flush=True)


if __name__ == "__main__":
    main()
