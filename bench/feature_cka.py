"""Linear CKA (Kornblith et al. 2019, https://arxiv.org/abs/1905.00414) between trained students' global features
(the input of their classifier heads) and the cached teacher features, over the validation carve, with each
student's carve OA. RESULTS.md, session 24, H42:

    python bench/feature_cka.py --data ../shared/data/ModelNet10_pcd --num-points 64 \\
        --features runs/mn10_t7/features_insample.pt --run base_i58=runs/s20/p64e24_base_i58 ...
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import Tensor
from torch_geometric.loader import DataLoader

from pointcmt_pyg import cli
from pointcmt_pyg.nn.distiller import find_head
from pointcmt_pyg.pipeline import student_transforms


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA of two feature matrices with the same rows (shapes)."""
    x, y = x - x.mean(0), y - y.mean(0)
    return float((x.T @ y).norm() ** 2 / ((x.T @ x).norm() * (y.T @ y).norm()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--num-points", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0, help="the data seed (the carve) the students used")
    parser.add_argument("--features", required=True, help="the teacher's feature cache")
    parser.add_argument("--run", action="append", required=True, metavar="LABEL=DIR",
                        help="a finished run folder with student.pt and student_config.json")
    a = parser.parse_args()
    cache = cli._load_features(Path(a.features))
    print("| student | run | linear CKA with the teacher feature | carve OA |")
    print("|---|---|---:|---:|")
    for label, run in (r.split("=", 1) for r in a.run):
        weights = Path(run) / "student.pt"
        name = cli._read_json(weights.parent / "student_config.json")["model"]
        args = cli.build_parser().parse_args(["evaluate", "--weights", str(weights), "--data", a.data,
                                               "--num-points", str(a.num_points), "--seed", str(a.seed)])
        cfg = cli._config(args, model=name, num_points=a.num_points, batch_size=32)
        full_train, _, classes, _ = cli._load_data(cfg)
        carve = cli._with_transform(cli._split(full_train, cfg)[1], student_transforms(False))
        model = cli._load_student(weights, name, len(classes)).eval()
        _, head = find_head(model)
        feats, ids, correct = [], [], 0
        hook = head.register_forward_hook(lambda m, i, o: feats.append(i[0].detach()))
        with torch.no_grad():
            for batch in DataLoader(carve, batch_size=32):
                correct += int((model(batch).argmax(-1) == batch.y.view(-1)).sum())
                ids += list(batch.sample_id)
        hook.remove()
        f_s = torch.cat(feats).double()
        f_t = torch.stack([cache[i] for i in ids]).double()
        print(f"| {label} | {run} | {linear_cka(f_s, f_t):.3f} | {100 * correct / len(ids):.2f} |", flush=True)


if __name__ == "__main__":
    main()
