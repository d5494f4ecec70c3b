#!/usr/bin/env python
r"""Wrap *your own* PyG point model for PointCMT cross-modal training
(`paper <https://arxiv.org/abs/2210.04208>`_).

Cross-modal training needs, besides your model, an image teacher (a classifier
on rendered views of each shape) and the views or the teacher's cached
features; the paper's feature enhancement (recipes ``"balanced"`` and
``"official"``) also needs a CMPG (a frozen map from a global feature to a
point cloud). Given those, wrapping your model takes three lines::

    model = CrossModalDistiller(MyPointNet(num_classes), teacher)   # default recipe "aligned"
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
    loss = model(batch).loss          # CE + KD + centred feature alignment

(``CrossModalDistiller(net, teacher, cmpg, recipe="official")`` for the
paper's loss), and at inference ``model.student`` (your model, untouched) runs
alone.

This script trains a tiny teacher (and, for a recipe with the feature term, a
CMPG) on the embedded synthetic shapes (or loads yours), wraps a small kNN
PointNet written here from scratch, trains it for a few steps printing the loss
terms, and checks that in eval mode the wrapped model gives exactly the plain
model's output. About half a minute on 2 CPU cores::

    python examples/wrap_your_model.py
    python examples/wrap_your_model.py --recipe official
    python examples/wrap_your_model.py --teacher runs/pointcmt/teacher/teacher.pt \
        --cmpg runs/pointcmt/cmpg/cmpg.pt --recipe balanced --num-views 6 --image-size 64
"""
import argparse
import sys
import time

import torch
from torch import nn
from torch_geometric.loader import DataLoader
from torch_geometric.nn import global_max_pool
from torch_geometric.transforms import Compose, NormalizeScale
from torch_geometric.utils import scatter

from pointcmt_pyg.datasets import SyntheticShapes, train_val_split
from pointcmt_pyg.nn import CMPG, CrossModalDistiller, MultiViewTeacher, load_cmpg, load_teacher
from pointcmt_pyg.nn.recipes import DEFAULT_RECIPE, RECIPES
from pointcmt_pyg.ops import knn
from pointcmt_pyg.pipeline import DropAttributes
from pointcmt_pyg.render import RenderViews
from pointcmt_pyg.train import seed_everything, train_cmpg, train_teacher


# ---------------------------------------------------------------------------
# 1. Your model. Nothing PointCMT-specific in it: it maps a PyG batch to logits
#    and ends in a classifier head applied to a global feature. The distiller
#    finds the head by name (`head`, `mlp`, `classifier`, `fc` or `lin`, else
#    the last nn.Linear) and taps its input as the student's global feature.
# ---------------------------------------------------------------------------
class MyPointNet(nn.Module):
    r"""A small PointNet with one kNN layer: each point sees its ``k`` nearest
    neighbours (edge features ``[p_i, p_j - p_i]``, max over neighbours), a
    shared MLP lifts the points, ``global_max_pool`` gives one feature per
    shape and the ``head`` Linear classifies it."""

    def __init__(self, num_classes: int, k: int = 8, width: int = 128) -> None:
        super().__init__()
        self.k = k
        self.local = nn.Sequential(nn.Linear(6, 64), nn.ReLU(), nn.Linear(64, 64))
        self.point = nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 2 * width))
        self.head = nn.Linear(2 * width, num_classes)       # global feature -> logits

    def forward(self, data) -> torch.Tensor:
        pos, batch = data.pos, data.batch
        # pointcmt_pyg.ops.knn is torch_geometric.nn.knn without pyg-lib/torch-cluster:
        # row = index of the query point (in pos), col = index of its neighbour.
        row, col = knn(pos, pos, self.k, batch, batch)
        edges = torch.cat([pos[row], pos[col] - pos[row]], dim=-1)
        h = scatter(self.local(edges), row, dim=0, dim_size=pos.size(0), reduce="max")
        g = global_max_pool(self.point(h), batch)          # [B, 2 * width]
        return self.head(g)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--teacher", help="a saved teacher (save_teacher / train-teacher); "
                   "default: train a tiny one here")
    p.add_argument("--cmpg", help="a saved CMPG (save_cmpg / train-cmpg); default: train a "
                   "tiny one here")
    p.add_argument("--recipe", choices=sorted(RECIPES), default=DEFAULT_RECIPE,
                   help=f"the distiller's loss recipe (default: {DEFAULT_RECIPE})")
    p.add_argument("--classes", type=int, default=4, help="synthetic classes")
    p.add_argument("--per-class", type=int, default=8, help="synthetic training shapes per class")
    p.add_argument("--num-points", type=int, default=256, help="points per shape")
    p.add_argument("--num-views", type=int, default=3, help="views per shape (the teacher's)")
    p.add_argument("--image-size", type=int, default=32, help="view size (the teacher's)")
    p.add_argument("--steps", type=int, default=8, help="PointCMT training steps to show")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.time()
    seed_everything(args.seed)

    # -----------------------------------------------------------------------
    # 2. Data: each shape carries its rendered views ([1, V, 1, H, W] depth
    #    images; meshes are ray-cast, bare point clouds projected) for the
    #    teacher, then its points are centred and scaled for the student.
    #    (For real runs, cache the teacher's features once instead:
    #    compute_teacher_features + AttachImageFeatures, as the pipeline does.)
    # -----------------------------------------------------------------------
    transform = Compose([RenderViews(args.num_views, args.image_size), DropAttributes(),
                         NormalizeScale()])
    data = SyntheticShapes("train", num_classes=args.classes, samples_per_class=args.per_class,
                           num_points=args.num_points, seed=args.seed, transform=transform)
    train, val = train_val_split(data, 0.25, args.seed)       # never select on a test split
    print(f"data: {len(train)} train / {len(val)} val synthetic shapes, "
          f"{args.num_views} views of {args.image_size} px each")

    # -----------------------------------------------------------------------
    # 3. The teacher (and the CMPG, for a recipe with the feature term): yours,
    #    or tiny ones trained here in seconds (stages I and II of the pipeline;
    #    `pointcmt-pyg train-teacher` / `train-cmpg` do the same on real data).
    # -----------------------------------------------------------------------
    if args.teacher:
        teacher = load_teacher(args.teacher)
    else:
        teacher = MultiViewTeacher(args.classes, backbone="resnet18", in_channels=1)
        res = train_teacher(teacher, train, val, epochs=3, batch_size=args.batch_size,
                            progress=False, device="cpu")
        teacher = res.model
        print(f"teacher: trained 3 epochs, val OA {100 * res.history.best_metric:.1f}%")
    cmpg = None
    if args.cmpg:
        cmpg = load_cmpg(args.cmpg)
    elif RECIPES[args.recipe].w_fe > 0:
        cmpg = CMPG(teacher.feat_dim, num_points=args.num_points)
        res = train_cmpg(cmpg, train, val, teacher=teacher, epochs=2,
                         batch_size=args.batch_size, progress=False, device="cpu")
        cmpg = res.model
        print(f"cmpg: trained 2 epochs, val EMD {res.history.best_metric:.3f}")

    # -----------------------------------------------------------------------
    # 4. The three lines. The distiller freezes teacher and CMPG, and adds a
    #    learnable projection because MyPointNet's feature (256) is not the
    #    teacher's (512); trainable_parameters() = your model's + its. The
    #    default recipe ("aligned", chosen on validation, see RESULTS.md) adds
    #    to the label CE Hinton KD from the teacher's own classifier (T = 1)
    #    and the centred alignment of the projected feature with the teacher's
    #    (w_align = 4); "balanced" the CMPG's feature enhancement instead of
    #    the alignment; recipe="official" is the paper's exact loss.
    # -----------------------------------------------------------------------
    net = MyPointNet(args.classes)
    model = CrossModalDistiller(net, teacher, cmpg, recipe=args.recipe)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
    print(f"wrapped: head {model.head_name!r}, student feature {model.student_dim} -> "
          f"teacher feature {model.teacher_dim}")

    model.train()
    loader = DataLoader(train, batch_size=args.batch_size, shuffle=True)
    step = 0
    while step < args.steps:
        for batch in loader:
            out = model(batch)                    # training mode + labels: the PointCMT loss
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
            terms = "  ".join(f"{k} {v.item():.4f}" for k, v in out.losses.items())
            print(f"step {step + 1}: loss {out.loss.item():.4f} = {terms}")
            step += 1
            if step == args.steps:
                break

    # -----------------------------------------------------------------------
    # 5. Inference is your model alone: in eval mode the wrapper only calls
    #    model.student, with no hooks, teacher or CMPG, so the outputs are
    #    the same bit for bit. Save model.student.state_dict() for deployment.
    # -----------------------------------------------------------------------
    model.eval()
    batch = next(iter(DataLoader(val, batch_size=len(val))))
    with torch.no_grad():
        wrapped = model(batch).logits
        plain = net(batch)
    same = torch.equal(wrapped, plain) and model.student is net
    print(f"check: eval forward of the wrapped model equals the plain model: {same} "
          f"({tuple(plain.shape)} logits, {time.time() - t0:.0f} s)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
