"""A trained point student as a teacher: its global feature (the input of its classifier head) and its logits for
every training shape (train split including the validation carve), in eval mode, written as a feature cache that
`pointcmt-pyg distill --features` reads without `--teacher` (the KD target is the cached logits). RESULTS.md,
session 24, H45:

    python bench/student_feature_cache.py --weights runs/s24/point_teacher/student.pt --model pointnet2 \\
        --data ../shared/data/ModelNet10_pcd --num-points 1024 --out runs/s24/point_teacher/features.pt
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch_geometric.loader import DataLoader

from pointcmt_pyg import cli
from pointcmt_pyg.datasets import FeatureCache
from pointcmt_pyg.nn.distiller import find_head
from pointcmt_pyg.pipeline import student_transforms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="the student.pt of the point model that teaches")
    parser.add_argument("--model", required=True, help="its model name (pointcmt_pyg.models)")
    parser.add_argument("--data", required=True)
    parser.add_argument("--num-points", type=int, default=1024, help="points it sees per shape")
    parser.add_argument("--seed", type=int, default=0, help="the data seed (the carve) of the runs it will teach")
    parser.add_argument("--out", required=True, help="the feature cache file to write")
    a = parser.parse_args()
    args = cli.build_parser().parse_args(["evaluate", "--weights", a.weights, "--data", a.data,
                                           "--num-points", str(a.num_points), "--seed", str(a.seed)])
    cfg = cli._config(args, model=a.model, num_points=a.num_points, batch_size=32)
    full_train, _, classes, _ = cli._load_data(cfg)
    model = cli._load_student(Path(a.weights), a.model, len(classes)).eval()
    _, head = find_head(model)
    feats, ids, logits = [], [], []
    hook = head.register_forward_hook(lambda m, i, o: feats.append(i[0].detach()))
    with torch.no_grad():
        for batch in DataLoader(cli._with_transform(full_train, student_transforms(False)), batch_size=32):
            logits.append(model(batch))
            ids += list(batch.sample_id)
    hook.remove()
    f, z = torch.cat(feats), torch.cat(logits)
    FeatureCache.from_tensor(ids, f, {"teacher": f"{a.model} {a.weights} on {a.num_points} points"},
                             logits=z).save(a.out)
    print(f"{len(ids)} shapes, features {tuple(f.shape)}, logits {tuple(z.shape)} -> {a.out}")


if __name__ == "__main__":
    main()
