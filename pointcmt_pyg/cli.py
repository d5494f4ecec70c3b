r"""The ``pointcmt-pyg`` console script: PointCMT's stages from the shell
(`paper <https://arxiv.org/abs/2210.04208>`_).

``pointcmt-pyg run`` runs the whole recipe (as ``examples/modelnet40.py``);
the other subcommands run one stage each, so that a stage can be redone or
its artifacts reused.
"""
import argparse
import dataclasses
import sys
from typing import Any, Dict, List, Optional, Sequence

__all__ = ["main", "build_parser", "pipeline_parser", "add_pipeline_arguments",
           "config_from_args"]


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    r"""Adds the flags of :class:`~pointcmt_pyg.pipeline.PipelineConfig` to ``parser``."""
    from .pipeline import PipelineConfig
    d = PipelineConfig()
    p = parser
    p.add_argument("--data", default=d.data,
                   help="'synthetic' (embedded procedural shapes, the default), a ModelNet "
                        ".off folder (PyG root with raw/, or <class>/{train,test}/*.off), or "
                        "a point folder <class>/<split>/<name>.{npy,npz,txt,xyz,pcd,ply,off,obj}")
    p.add_argument("--model", default=d.model,
                   help="student: pointnet2 | pointnet2_msg | dgcnn | point_transformer "
                        "(default: %(default)s)")
    p.add_argument("--epochs", type=int, default=None,
                   help="student epochs per run (default: 6 on synthetic data, 50 otherwise)")
    p.add_argument("--teacher-epochs", type=int, default=None,
                   help="teacher epochs (default: 8 synthetic, 30 otherwise)")
    p.add_argument("--cmpg-epochs", type=int, default=None,
                   help="CMPG epochs (default: 10 synthetic, 50 otherwise)")
    p.add_argument("--num-points", type=int, default=d.num_points,
                   help="points per cloud (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="student/CMPG batch size (default: %(default)s)")
    p.add_argument("--teacher-batch-size", type=int, default=d.teacher_batch_size,
                   help="teacher batch size (default: %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="student learning rate")
    p.add_argument("--teacher-lr", type=float, default=d.teacher_lr, help="teacher learning rate")
    p.add_argument("--num-views", type=int, default=d.num_views,
                   help="rendered views per shape (default: %(default)s)")
    p.add_argument("--image-size", type=int, default=d.image_size,
                   help="view size in pixels (default: %(default)s)")
    p.add_argument("--backbone", default=d.backbone,
                   help="torchvision ResNet of the teacher (default: %(default)s)")
    p.add_argument("--cmpg-points", type=int, default=d.cmpg_points,
                   help="points the CMPG generates (default: %(default)s)")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help="validation carve from the training split (default: %(default)s)")
    p.add_argument("--max-train", type=int, default=None,
                   help="keep a stratified subset of this many training shapes (quick runs)")
    p.add_argument("--synthetic-train-per-class", type=int, default=d.synthetic_train_per_class,
                   help="embedded dataset: training shapes per class (default: %(default)s)")
    p.add_argument("--synthetic-test-per-class", type=int, default=d.synthetic_test_per_class,
                   help="embedded dataset: test shapes per class (default: %(default)s)")
    p.add_argument("--synthetic-classes", type=int, default=d.synthetic_classes,
                   help="embedded dataset: number of classes, at most 16 (default: %(default)s)")
    p.add_argument("--w-fe", type=float, default=d.w_fe,
                   help="feature-enhancement weight (default: %(default)s)")
    p.add_argument("--w-ce", type=float, default=d.w_ce,
                   help="classifier-enhancement weight, per-sample KL (default: %(default)s, "
                        "the official 0.3 x batch 32)")
    p.add_argument("--only", choices=("baseline", "pointcmt"), default=None,
                   help="train only one of the two student runs")
    p.add_argument("--device", default=d.device, help="auto | cpu | cuda | cuda:N")
    p.add_argument("--out", default=d.out, help="output directory (default: %(default)s)")
    p.add_argument("--resume", action="store_true",
                   help="reuse finished stages in --out and continue an interrupted one")
    p.add_argument("--workers", type=int, default=d.workers, help="data-loader workers")
    p.add_argument("--seed", type=int, default=d.seed, help="seed (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def pipeline_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    r"""The argument parser of ``examples/modelnet40.py`` and ``pointcmt-pyg run``."""
    parser = argparse.ArgumentParser(
        prog=prog, description="PointCMT end to end: teacher on rendered views, CMPG, then "
        "the point model with and without PointCMT on the same budget; prints a table and "
        "writes results.json and PNGs to --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    return add_pipeline_arguments(parser)


def config_from_args(args: argparse.Namespace) -> Any:
    r"""A :class:`~pointcmt_pyg.pipeline.PipelineConfig` from parsed flags."""
    from .pipeline import PipelineConfig
    names = {f.name for f in dataclasses.fields(PipelineConfig)}
    kw: Dict[str, Any] = {k: v for k, v in vars(args).items() if k in names}
    kw["progress"] = not getattr(args, "no_progress", False)
    only = getattr(args, "only", None)
    if only:
        kw["stages"] = (only,)
    return PipelineConfig(**kw)


def _cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import run_pipeline
    run_pipeline(config_from_args(args))
    return 0


def build_parser() -> argparse.ArgumentParser:
    r"""The ``pointcmt-pyg`` parser with one subcommand per stage."""
    parser = argparse.ArgumentParser(
        prog="pointcmt-pyg",
        description="PointCMT (NeurIPS 2022, https://arxiv.org/abs/2210.04208) for PyG: "
        "images teach a point-cloud classifier during training only.\n\n"
        "  run             the whole recipe (as examples/modelnet40.py)\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="the whole recipe: teacher, CMPG, baseline and PointCMT "
                         "students, table and plots",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_pipeline_arguments(run)
    run.set_defaults(func=_cmd_run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    r"""Entry point of the ``pointcmt-pyg`` console script."""
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
