"""How informative the KD targets are: the teacher's own classifier on its cached
features of the training and validation shapes, at T = 1 and T = 4 (accuracy,
mean top probability, probability of the true class, entropy), and, when the
cache also holds teacher logits (``--teacher-folds``: out-of-fold logits of
cross-fitted teachers), the same for those::

    python bench/teacher_targets.py runs/mn10_t12
"""
import argparse
import json
import math
from pathlib import Path

import torch

from pointcmt_pyg.datasets import FeatureCache, train_val_split
from pointcmt_pyg.nn import load_teacher
from pointcmt_pyg.pipeline import PipelineConfig, load_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a pipeline --out directory")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 4.0])
    args = parser.parse_args()
    saved = json.loads((args.run / "config.json").read_text())
    cfg = PipelineConfig(**{k: v for k, v in saved.items()
                            if k in PipelineConfig.__dataclass_fields__}).resolved()
    cache = FeatureCache.load(args.run / "teacher_features.pt")
    teacher = load_teacher(args.run / "teacher" / "teacher.pt").eval()
    full, _, classes, _ = load_data(cfg)
    for name, ds in zip(("train", "val"), train_val_split(full, cfg.val_fraction, cfg.seed)):
        samples = [ds[i] for i in range(len(ds))]
        y = torch.tensor([int(d.y) for d in samples])
        feats = torch.stack([cache.get(d.sample_id).view(-1) for d in samples])
        with torch.no_grad():
            sources = [("teacher head", teacher.head(feats))]
        if cache.logits is not None:
            folds = cache.metadata.get("teacher_folds", 1)
            sources.append((f"cached logits ({folds} folds)",
                            torch.stack([cache.logits_of(d.sample_id) for d in samples])))
        for (source, logits), t in ((s, t) for s in sources for t in args.temperatures):
            p = (logits / t).softmax(-1)
            entropy = -(p * p.clamp_min(1e-12).log()).sum(-1).mean()
            print(f"{name} {source} T={t:g}: acc {(logits.argmax(-1) == y).float().mean():.4f} "
                  f"top-prob {p.max(-1).values.mean():.3f} "
                  f"p(true) {p[torch.arange(len(y)), y].mean():.3f} entropy {entropy:.3f} nats "
                  f"(uniform {math.log(len(classes)):.3f})")


if __name__ == "__main__":
    main()
