"""Benchmarks our point ops against the public baselines, in one process, on the
same inputs, and writes the table to BENCHMARKS.md.

Workload (as in the issue): B=32 clouds of N=1024 points in the unit cube;
FPS to 512 per cloud; kNN k=20 (every point queries its own cloud); radius
r=0.2 with at most 64 neighbours around the 512 FPS centres; EMD on random
pairs and on near pairs (y = x + N(0, 0.01^2) shuffled).

Baselines, each when importable: torch_cluster, fpsample, naive batched torch,
scipy (exact assignment, the EMD reference), POT (exact EMD).

    python bench/ops.py                 # CPU; writes BENCHMARKS.md
    python bench/ops.py --device cuda   # adds a CUDA table (when a GPU exists)
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("POINTCMT_QUIET", "1")
import pointcmt_pyg.ops as ops  # noqa: E402


def timeit(fn: Callable[[], object], repeat: int, device: str) -> float:
    """Median wall time in milliseconds over ``repeat`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeat):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def optional(name: str):
    try:
        return __import__(name)
    except Exception:
        return None


# ----------------------------------------------------------------------------- naive torch baselines
def naive_fps(x: torch.Tensor, k: int) -> torch.Tensor:
    """Batched dense FPS in plain torch (pytorch3d-style naive loop)."""
    b, n, _ = x.shape
    idx = torch.zeros(b, k, dtype=torch.long, device=x.device)
    dist = torch.full((b, n), float("inf"), device=x.device, dtype=x.dtype)
    last = torch.zeros(b, dtype=torch.long, device=x.device)
    ar = torch.arange(b, device=x.device)
    for i in range(1, k):
        d = ((x - x[ar, last][:, None]) ** 2).sum(-1)
        dist = torch.minimum(dist, d)
        last = dist.argmax(1)
        idx[:, i] = last
    return idx


def naive_knn(x: torch.Tensor, k: int):
    d = torch.cdist(x, x)
    return d.topk(k, dim=-1, largest=False)


def naive_radius(x: torch.Tensor, centres: torch.Tensor, r: float, max_num: int):
    d = torch.cdist(centres, x)
    within = d < r
    # first max_num in index order, like ours
    order = torch.where(within, torch.arange(x.shape[1], device=x.device), x.shape[1])
    return order.sort(dim=-1).values[..., :max_num]


# ----------------------------------------------------------------------------- benchmark
def run(device: str, repeat: int, emd_repeat: int) -> List[Dict[str, object]]:
    torch.manual_seed(0)
    B, N = 32, 1024
    dense = torch.rand(B, N, 3, device=device)
    x = dense.reshape(-1, 3)
    batch = torch.arange(B, device=device).repeat_interleave(N)
    tc = optional("torch_cluster")
    fpsample = optional("fpsample")
    rows: List[Dict[str, object]] = []

    def add(task: str, impl: str, ms: float, note: str = "") -> None:
        rows.append({"task": task, "impl": impl, "ms": ms, "note": note})
        print(f"{task:32s} {impl:28s} {ms:10.2f} ms {note}", flush=True)

    # FPS ---------------------------------------------------------------------------------------
    task = "FPS 32x1024 -> 512"
    add(task, "pointcmt_pyg", timeit(lambda: ops.fps(x, batch, 0.5, random_start=False, batch_size=B), repeat, device))
    if tc is not None:
        add(task, "torch_cluster.fps", timeit(lambda: tc.fps(x, batch, 0.5, random_start=False), repeat, device))
    if fpsample is not None and device == "cpu":
        pts = dense.numpy()
        add(task, "fpsample bucket_fps_kdline", timeit(
            lambda: [fpsample.bucket_fps_kdline_sampling(p, 512, h=7) for p in pts], repeat, device))
    add(task, "naive batched torch", timeit(lambda: naive_fps(dense, 512), max(1, repeat // 4), device))

    # kNN ---------------------------------------------------------------------------------------
    task = "kNN 32x1024, k=20"
    add(task, "pointcmt_pyg", timeit(lambda: ops.knn(x, x, 20, batch, batch, batch_size=B), repeat, device))
    if tc is not None:
        add(task, "torch_cluster.knn", timeit(lambda: tc.knn(x, x, 20, batch, batch), repeat, device))
    add(task, "naive batched torch (cdist+topk)", timeit(lambda: naive_knn(dense, 20), repeat, device))

    # radius ------------------------------------------------------------------------------------
    task = "radius r=0.2, max 64, 512 ctr"
    idx = ops.fps(x, batch, 0.5, random_start=False, batch_size=B)
    centres, batch_c = x[idx], batch[idx]
    dense_c = centres.view(B, 512, 3)
    add(task, "pointcmt_pyg", timeit(
        lambda: ops.radius(x, centres, 0.2, batch, batch_c, max_num_neighbors=64, batch_size=B), repeat, device))
    if tc is not None:
        add(task, "torch_cluster.radius", timeit(
            lambda: tc.radius(x, centres, 0.2, batch, batch_c, max_num_neighbors=64), repeat, device))
    add(task, "naive batched torch (cdist)", timeit(lambda: naive_radius(dense, dense_c, 0.2, 64), repeat, device))

    # EMD ---------------------------------------------------------------------------------------
    from scipy.optimize import linear_sum_assignment
    ot = optional("ot")
    gen = torch.Generator().manual_seed(1)
    pairs = {
        "random": (torch.rand(B, N, 3, generator=gen), torch.rand(B, N, 3, generator=gen)),
    }
    xn = torch.rand(B, N, 3, generator=gen)
    perm = torch.argsort(torch.rand(B, N, generator=gen), dim=1)
    yn = (xn + 0.01 * torch.randn(B, N, 3, generator=gen)).gather(1, perm[..., None].expand(-1, -1, 3))
    pairs["near"] = (xn, yn)
    for kind, (a, b) in pairs.items():
        task = f"EMD 32x1024 {kind} pairs"
        a_np, b_np = a.double().numpy(), b.double().numpy()
        costs = [((p[:, None] - q[None]) ** 2).sum(-1) for p, q in zip(a_np, b_np)]
        exact = np.array([c[linear_sum_assignment(c)].sum() for c in costs])
        ad, bd = a.to(device), b.to(device)
        out = {}

        def ours():
            out["res"] = ops.emd(ad, bd)

        ms = timeit(ours, emd_repeat, device)
        dist, assign, gap = out["res"]
        cost = dist.double().sum(1).cpu().numpy()
        err = float(np.max((cost - exact) / exact)) * 100
        cert = float((gap.double().cpu().numpy() / cost).max()) * 100
        add(task, "pointcmt_pyg (auction)", ms, f"max err {err:.3f}% (certified <= {cert:.3f}%)")
        add(task, "scipy linear_sum_assignment", timeit(
            lambda: [linear_sum_assignment(((p[:, None] - q[None]) ** 2).sum(-1)) for p, q in zip(a_np, b_np)],
            1, "cpu"), "exact")
        if ot is not None:
            w = np.full(N, 1.0 / N)
            add(task, "POT ot.emd", timeit(
                lambda: [ot.emd(w, w, ((p[:, None] - q[None]) ** 2).sum(-1)) for p, q in zip(a_np, b_np)],
                1, "cpu"), "exact")
    return rows


def ratios(rows: List[Dict[str, object]]) -> List[str]:
    """Markdown table rows with each baseline's time over ours."""
    lines = []
    by_task: Dict[str, List[Dict[str, object]]] = {}
    for r in rows:
        by_task.setdefault(str(r["task"]), []).append(r)
    for task, rs in by_task.items():
        ours = next(r for r in rs if str(r["impl"]).startswith("pointcmt_pyg"))
        for r in rs:
            ratio = float(r["ms"]) / float(ours["ms"])
            speed = "1.00 (ours)" if r is ours else f"{ratio:.2f}x"
            lines.append(f"| {task} | {r['impl']} | {float(r['ms']):.2f} | {speed} | {r['note']} |")
    return lines


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--emd-repeat", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(ROOT, "BENCHMARKS.md"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rows = run(args.device, args.repeat, args.emd_repeat)
    tc = optional("torch_cluster")
    header = [
        f"## {args.device.upper()}: {datetime.date.today().isoformat()}",
        "",
        f"- Machine: {machine()}" + (f", {torch.cuda.get_device_name()}" if args.device == "cuda" else ""),
        f"- torch {torch.__version__}, {torch.get_num_threads()} threads, pointcmt_pyg backend: {ops.backend()}, "
        f"torch_cluster {getattr(tc, '__version__', 'not installed')}",
        f"- Command: `python bench/ops.py --device {args.device} --repeat {args.repeat} --emd-repeat {args.emd_repeat}`",
        "- Median wall time per call over the whole batch; ratio = baseline time / our time (higher: we are faster).",
        "",
        "| task | implementation | median ms | baseline / ours | note |",
        "|---|---|---|---|---|",
    ]
    section = "\n".join(header + ratios(rows)) + "\n"
    print(section)
    if not args.no_write:
        title = "# Benchmarks\n\nProduced by `bench/ops.py` (see its docstring for the workload).\n\n"
        old = open(args.out).read() if os.path.exists(args.out) else title
        marker = f"## {args.device.upper()}:"
        if marker in old:  # replace this device's previous section
            start = old.index(marker)
            nxt = old.find("\n## ", start + 1)
            old = old[:start] + (old[nxt + 1:] if nxt >= 0 else "")
        with open(args.out, "w") as f:
            f.write(old.rstrip() + "\n\n" + section)


if __name__ == "__main__":
    main()
