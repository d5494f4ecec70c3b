#!/usr/bin/env python
r"""PointCMT end to end on ModelNet40-style data (`paper <https://arxiv.org/abs/2210.04208>`_).

Trains the multi-view image teacher (stage I), the cross-modal point generator
(stage II, only for recipes with the CMPG feature term: not the default
``aligned``), then the point model twice on the same budget, plain and with
PointCMT (stage III), and prints a side-by-side table. Without ``--data`` it runs
on the embedded synthetic shapes (a few minutes on 2 CPU cores)::

    python examples/modelnet40.py                                     # embedded data
    python examples/modelnet40.py --data ~/data/ModelNet40 --epochs 200 --device cuda
    python examples/modelnet40.py --data ../shared/data/ModelNet10_pcd --model dgcnn
    python examples/modelnet40.py --resume                            # continue a killed run

Outputs in ``--out`` (default ``runs/modelnet40``): ``results.json``,
``training_curves.png``, ``views_montage.png``, ``confusion_*.png`` and one
folder per stage with checkpoints (``teacher/teacher.pt``, ``cmpg/cmpg.pt`` when
stage II runs, ``pointcmt/student.pt``, ...).
"""
import warnings

# PyG 2.8 calls torch.jit.script at import time, which torch 2.14 deprecates: noise, not our concern.
warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated", category=FutureWarning)

from pointcmt_pyg.cli import config_from_args, pipeline_parser  # noqa: E402
from pointcmt_pyg.pipeline import run_pipeline  # noqa: E402


def main() -> None:
    args = pipeline_parser(prog="modelnet40.py").parse_args()
    run_pipeline(config_from_args(args))


if __name__ == "__main__":
    main()
