"""Time one optimizer step of a student, plain and with PointCMT.

Workload (issue 9): ``B`` clouds of ``N`` uniform random points in the unit
cube, ``C`` classes, AdamW; PointCMT is :class:`~pointcmt_pyg.nn.CrossModalDistiller`
with a fresh CMPG and cached 512-d teacher features (``teacher_source="cache"``,
recipe ``balanced``: CE + KD + feature enhancement). Each configuration runs
``--warmup`` untimed steps, then ``--steps`` timed ones (synchronised on CUDA);
the median is reported::

    python bench/train_step.py --model pointnet2 --device cpu
    python bench/train_step.py --model pointnet2 dgcnn --device cuda --json out.json

Inputs are random, so neighbourhoods are sparser than on real shapes: use this
for ratios between configurations measured in the same run, and the pipeline's
own epoch times for absolute training cost.
"""
import argparse
import json
import os
import statistics
import sys
import time
from typing import Dict, List

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("POINTCMT_QUIET", "1")
from torch_geometric.data import Batch, Data  # noqa: E402

from pointcmt_pyg.models import get_model  # noqa: E402
from pointcmt_pyg.nn import CMPG, CrossModalDistiller  # noqa: E402


def make_batch(batch_size: int, num_points: int, num_classes: int, device: torch.device,
               gen: torch.Generator) -> Batch:
    clouds = [Data(pos=torch.rand(num_points, 3, generator=gen),
                   y=torch.randint(num_classes, (1,), generator=gen),
                   img_feat=torch.randn(1, 512, generator=gen)) for _ in range(batch_size)]
    return Batch.from_data_list(clouds).to(device)


def time_steps(model_name: str, distill: bool, args: argparse.Namespace) -> Dict[str, float]:
    device = torch.device(args.device)
    torch.manual_seed(0)
    student = get_model(model_name, args.classes)
    if distill:
        teacher_head = torch.nn.Linear(512, args.classes)
        model = CrossModalDistiller(student, None, CMPG(512, 1024), teacher_classifier=teacher_head,
                                    teacher_source="cache", recipe="balanced", teacher_dim=512,
                                    emd_eps=args.emd_eps)
        params = model.trainable_parameters()
    else:
        model, params = student, student.parameters()
    model.to(device).train()
    opt = torch.optim.AdamW(params, lr=1e-3)
    gen = torch.Generator().manual_seed(1)
    batches = [make_batch(args.batch_size, args.points, args.classes, device, gen) for _ in range(2)]
    times: List[float] = []
    for step in range(args.warmup + args.steps):
        batch = batches[step % 2]
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model(batch)
        loss = out.loss if distill else torch.nn.functional.cross_entropy(out, batch.y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
    return {"model": model_name, "pointcmt": distill, "median_s": statistics.median(times),
            "min_s": min(times), "steps": len(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", nargs="+", default=["pointnet2"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--points", type=int, default=1024)
    parser.add_argument("--classes", type=int, default=40)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--emd-eps", type=float, default=None,
                        help="the distiller's emd_eps (default: the op's, 1e-3)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available here")
    rows = []
    for name in args.model:
        for distill in (False, True):
            row = time_steps(name, distill, args)
            rows.append(row)
            print(f"{name:12s} {'PointCMT' if distill else 'plain':9s} median {row['median_s'] * 1e3:9.1f} ms/step "
                  f"(min {row['min_s'] * 1e3:.1f}, {row['steps']} steps, B={args.batch_size} x {args.points} points, "
                  f"{args.device}, {torch.get_num_threads()} threads)", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
