"""EMD time against its certified gap ``eps``, on the pairs PointCMT meets.

PointCMT's feature term is an EMD between the CMPG's clouds of the student's and
the teacher's feature. Early in training these are unrelated clouds; later,
near ones. This times :func:`pointcmt_pyg.ops.emd` (B = 32 pairs of 1,024
points) for several ``eps`` on: uniform random pairs, near pairs
(``y = x + N(0, 0.01^2)``, shuffled), and, given a run (or a folder written by
``bench/pack_run.py``), the CMPG's clouds of 32 cached teacher features against
those of random features and of noisy teacher features (both normalised as the
loss does). Reports the median time, the certified relative gap and the loss
value (mean matched distance), whose change with ``eps`` is what a looser
assignment costs the loss::

    python bench/emd_eps.py --device cuda --run runs/mn10_t12
"""
import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("POINTCMT_QUIET", "1")
from pointcmt_pyg import ops  # noqa: E402


def pairs(run, device):
    gen = torch.Generator().manual_seed(0)
    out = {"uniform random": (torch.rand(32, 1024, 3, generator=gen), torch.rand(32, 1024, 3, generator=gen))}
    x = torch.rand(32, 1024, 3, generator=gen)
    perm = torch.argsort(torch.rand(32, 1024, generator=gen), dim=1)
    out["near (0.01 noise)"] = (x, (x + 0.01 * torch.randn(32, 1024, 3, generator=gen))
                                .gather(1, perm[..., None].expand(-1, -1, 3)))
    if run is not None:
        from pointcmt_pyg.datasets.transforms import normalize_bbox
        from pointcmt_pyg.nn import load_cmpg
        cmpg = load_cmpg(Path(run) / "cmpg" / "cmpg.pt")
        feats = torch.load(Path(run) / "teacher_features.pt", weights_only=False)["features"][:32].float()
        with torch.no_grad():
            teacher = normalize_bbox(cmpg(feats))
            out["CMPG: teacher vs random feature"] = (
                normalize_bbox(cmpg(torch.randn(feats.shape, generator=gen).abs())), teacher)
            out["CMPG: teacher vs noisy teacher"] = (
                normalize_bbox(cmpg(feats + 0.3 * torch.randn(feats.shape, generator=gen))), teacher)
    return {k: (a.to(device), b.to(device)) for k, (a, b) in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--run", help="a run or packed folder with cmpg/cmpg.pt and teacher_features.pt")
    parser.add_argument("--eps", type=float, nargs="+", default=[1e-3, 1e-2, 3e-2, 1e-1])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    rows = []
    for name, (a, b) in pairs(args.run, args.device).items():
        for eps in args.eps:
            ops.emd(a, b, eps=eps)
            times = []
            for _ in range(args.repeat):
                sync()
                t0 = time.perf_counter()
                dist, _, gap = ops.emd(a, b, eps=eps)
                sync()
                times.append(time.perf_counter() - t0)
            cost = dist.double().sum(1)
            row = {"pair": name, "eps": eps, "ms": statistics.median(times) * 1e3,
                   "max_gap": float((gap.double() / cost).max()),
                   "loss": float(dist.double().clamp_min(0).sqrt().mean())}
            rows.append(row)
            print(f"{name:34s} eps {eps:<6g} {row['ms']:9.2f} ms  certified gap <= {row['max_gap']:.4f}  "
                  f"loss {row['loss']:.5f}  ({args.device}, {torch.get_num_threads()} threads)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
