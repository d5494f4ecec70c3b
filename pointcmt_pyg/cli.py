r"""The ``pointcmt-pyg`` console script: PointCMT's stages from the shell
(`paper <https://arxiv.org/abs/2210.04208>`_).

``pointcmt-pyg run`` runs the whole recipe (as ``examples/modelnet40.py``);
the other subcommands run one stage each, so that a stage can be redone or
its artifacts reused. In pipeline order::

    pointcmt-pyg render                 # views -> runs/pointcmt/views (+ montage.png)
    pointcmt-pyg train-teacher          # stage I  -> runs/pointcmt/teacher/teacher.pt
    pointcmt-pyg cache-features         # -> runs/pointcmt/teacher_features.pt
    pointcmt-pyg train-cmpg             # stage II -> runs/pointcmt/cmpg/cmpg.pt
    pointcmt-pyg distill --model dgcnn  # stage III -> runs/pointcmt/pointcmt/student.pt
    pointcmt-pyg evaluate --model dgcnn --weights runs/pointcmt/pointcmt/student.pt

Every input path defaults to where the previous subcommand writes by default,
and these are the places ``pointcmt-pyg run --out runs/pointcmt`` uses, so
rendered views are shared with a full run. Data loading and transforms are
those of :mod:`pointcmt_pyg.pipeline`. Bad input (a missing file, a teacher
and a CMPG of different feature sizes, a feature cache of another dataset,
...) ends with a one-line message and exit status 2, not a traceback.
"""
import argparse
import contextlib
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

__all__ = ["main", "build_parser", "pipeline_parser", "add_pipeline_arguments",
           "config_from_args", "evaluate_model", "DefaultsHelpFormatter", "InputError",
           "COMMANDS"]

#: Where the stage subcommands read and write by default (the layout of
#: ``pointcmt-pyg run --out runs/pointcmt``).
RUN_DIR = Path("runs/pointcmt")

#: The subcommands in pipeline order, with their one-line summaries.
COMMANDS: Tuple[Tuple[str, str], ...] = (
    ("render", "render every shape's views into the view cache and save a montage PNG"),
    ("train-teacher", "stage I: train the multi-view image teacher -> teacher.pt"),
    ("cache-features", "run a saved teacher over the training split -> feature cache file"),
    ("train-cmpg", "stage II: train the cross-modal point generator from a feature cache "
                   "-> cmpg.pt"),
    ("distill", "stage III: train a point model with PointCMT (or --baseline) -> student.pt"),
    ("evaluate", "OA / mAcc of a saved student on the test or validation split"),
    ("run", "the whole recipe: teacher, (CMPG,) baseline and PointCMT students, table "
            "and plots"),
)


class DefaultsHelpFormatter(argparse.HelpFormatter):
    r"""Appends ``(default: ...)`` to an option's help, except where the help
    already tells its default or the default is ``None``/``False``."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text or default is None or default is False
                or default is argparse.SUPPRESS or action.option_strings == []):
            return text
        return text + " (default: %(default)s)"


class _Formatter(DefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    r""":class:`DefaultsHelpFormatter` keeping the descriptions' line breaks."""


class InputError(Exception):
    r"""Bad command-line input; :func:`main` turns it into an argparse error
    (usage, message, exit status 2)."""


@contextlib.contextmanager
def _inputs() -> Iterator[None]:
    r"""Turns the errors of reading and checking inputs into :class:`InputError`."""
    try:
        yield
    except InputError:
        raise
    except (FileNotFoundError, IsADirectoryError, ValueError, KeyError, TypeError) as error:
        msg = error.args[0] if isinstance(error, KeyError) and error.args else error
        raise InputError(str(msg)) from error


def _default(name: str) -> str:
    r"""The help text of a :class:`~pointcmt_pyg.pipeline.PipelineConfig`
    default, read off ``resolved()`` on synthetic and on real data."""
    from .pipeline import PipelineConfig
    raw = getattr(PipelineConfig(), name)
    synthetic = getattr(PipelineConfig().resolved(), name)
    real = getattr(PipelineConfig(data="<dir>").resolved(), name)
    if raw is not None or synthetic == real:
        return str(synthetic)
    return f"{synthetic} on synthetic data, {real} otherwise"


# ------------------------------------------------------------- run (whole recipe)
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
                   help="student: pointnet2 | pointnet2_fc512 | pointnet2_msg | dgcnn | point_transformer "
                        "(default: %(default)s)")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"student epochs per run (default: {_default('epochs')})")
    p.add_argument("--teacher-epochs", type=int, default=None,
                   help=f"teacher epochs (default: {_default('teacher_epochs')})")
    p.add_argument("--cmpg-epochs", type=int, default=None,
                   help=f"CMPG epochs (default: {_default('cmpg_epochs')})")
    p.add_argument("--num-points", type=int, default=d.num_points,
                   help=f"points per cloud (default: {_default('num_points')})")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"student/CMPG batch size (default: {_default('batch_size')})")
    p.add_argument("--teacher-batch-size", type=int, default=d.teacher_batch_size,
                   help="teacher batch size (default: %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="student learning rate")
    p.add_argument("--teacher-lr", type=float, default=d.teacher_lr, help="teacher learning rate")
    p.add_argument("--num-views", type=int, default=d.num_views,
                   help="rendered views per shape (default: %(default)s)")
    p.add_argument("--image-size", type=int, default=d.image_size,
                   help="view size in pixels (default: %(default)s)")
    p.add_argument("--view-channels", default=d.view_channels,
                   help="what a view holds, comma-separated: depth, mask (silhouette), shading, "
                        "normal (3 planes); from meshes where there are meshes, else from the "
                        "points (default: %(default)s)")
    p.add_argument("--up", type=int, choices=(0, 1, 2), default=d.up,
                   help="up axis of the shapes for the cameras: 2 = z (ModelNet .off), "
                        "1 = y (ScanObjectNN, ModelNet normal_resampled) (default: %(default)s)")
    p.add_argument("--backbone", default=d.backbone,
                   help="torchvision ResNet of the teacher, or resnet18_w16 (SimpleView's "
                        "ResNet-18 at a quarter of the channels) (default: %(default)s)")
    p.add_argument("--teacher-points", type=int, default=d.teacher_points,
                   help="points the teacher's views are projected from when the data has no "
                        "meshes (default: every stored point, more than the student's --num-points)")
    p.add_argument("--teacher-augment", action="store_true", default=d.teacher_augment,
                   help="mirror and shift the teacher's training views")
    p.add_argument("--teacher-folds", type=int, default=d.teacher_folds,
                   help="K >= 2: cross-fit K more teachers, each on all training shapes but one "
                        "fold, and give the Hinton term each shape's out-of-fold teacher logits "
                        "(stored in the feature cache); 1: no cross-fitting (default: %(default)s)")
    p.add_argument("--teacher-fold-epochs", type=int, default=None,
                   help="epochs of each cross-fitted teacher (default: teacher epochs x K/(K-1), "
                        "the main teacher's number of steps)")
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
    p.add_argument("--synthetic-scan", action=argparse.BooleanOptionalAction, default=d.synthetic_scan,
                   help="embedded dataset: the student sees single-view scans (one side of each "
                        "shape), the teacher the whole mesh (default: %(default)s)")
    p.add_argument("--synthetic-rescan", action=argparse.BooleanOptionalAction, default=d.synthetic_rescan,
                   help="with --synthetic-scan: a new scan from a random viewpoint at every training access "
                        "(default: %(default)s)")
    _add_distiller_arguments(p, d)
    p.add_argument("--only", choices=("baseline", "pointcmt"), default=None,
                   help="train only one of the two student runs (baseline: no teacher, views or "
                        "CMPG are made)")
    p.add_argument("--protocol", choices=("scratch", "finetune"), default=d.protocol,
                   help="scratch: baseline and PointCMT from the same initialisation, same "
                        "epochs; finetune: both arms (plain CE and PointCMT) continue from the "
                        "converged baseline for --finetune-epochs (default: %(default)s)")
    p.add_argument("--finetune-epochs", type=int, default=None,
                   help="epochs of each fine-tune arm (default: epochs // 2)")
    p.add_argument("--finetune-lr", type=float, default=None,
                   help="peak learning rate of the fine-tune arms (default: lr / 10)")
    p.add_argument("--device", default=d.device, help="auto | cpu | cuda | cuda:N")
    p.add_argument("--precision", default=d.precision, choices=("32", "bf16", "16"),
                   help="32 (float32), bf16 or 16: every stage's forwards under torch.autocast "
                        "(16 with a loss scaler; bf16 also on CPU) (default: %(default)s)")
    p.add_argument("--compile", action="store_true",
                   help="train the students through torch.compile (dynamic shapes): the same "
                        "math, faster on long runs after a minute or so of compiling")
    p.add_argument("--select", default=d.select, choices=("val_oa", "last"),
                   help="the checkpoint each student run keeps: val_oa, the epoch with the best "
                        "validation OA, or last, the final epoch (no selection on the validation "
                        "carve; the lower-variance protocol on small carves, RESULTS.md) "
                        "(default: %(default)s)")
    p.add_argument("--out", default=d.out, help="output directory (default: %(default)s)")
    p.add_argument("--resume", action="store_true",
                   help="reuse finished stages in --out and continue an interrupted one")
    p.add_argument("--workers", type=int, default=d.workers, help="data-loader workers")
    p.add_argument("--seed", type=int, default=d.seed, help="seed (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def pipeline_parser(prog: Optional[str] = None, description: Optional[str] = None,
                    **kwargs: Any) -> argparse.ArgumentParser:
    r"""The argument parser of ``examples/modelnet40.py`` and ``pointcmt-pyg run``.

    Args:
        prog (str, optional): The program name in the usage line.
        description (str, optional): Replaces the default description.
        **kwargs: Further :class:`argparse.ArgumentParser` arguments (e.g.
            ``conflict_handler="resolve"`` to redefine a flag afterwards).
    """
    kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
    parser = argparse.ArgumentParser(
        prog=prog, description=description or "PointCMT end to end: teacher on rendered "
        "views, the CMPG when the recipe has the feature term, then the point model with and "
        "without PointCMT on the same budget; "
        "prints a table and writes results.json and PNGs to --out.", **kwargs)
    return add_pipeline_arguments(parser)


def config_from_args(args: argparse.Namespace) -> Any:
    r"""A :class:`~pointcmt_pyg.pipeline.PipelineConfig` from parsed flags."""
    from .pipeline import PipelineConfig
    names = {f.name for f in dataclasses.fields(PipelineConfig)}
    kw: Dict[str, Any] = {k: v for k, v in vars(args).items() if k in names}
    kw["progress"] = not getattr(args, "no_progress", False)
    if "detach_teacher_logits" in kw:
        kw["detach_teacher_logits"] = _tri_state(kw["detach_teacher_logits"])
    only = getattr(args, "only", None)
    if only:
        kw["stages"] = (only,)
    return PipelineConfig(**kw)


def _tri_state(value: str) -> Optional[bool]:
    return {"auto": None, "yes": True, "no": False}[value]


def _cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import run_pipeline
    with _inputs():
        cfg = config_from_args(args).resolved()
    if cfg.data != "synthetic" and not Path(cfg.data).expanduser().is_dir():
        raise InputError(f"--data {cfg.data!r}: no such directory (use 'synthetic', a "
                         "ModelNet .off folder or a <class>/<split>/ point folder)")
    run_pipeline(cfg)
    return 0


# ------------------------------------------------------------- shared flags
def _add_distiller_arguments(p: argparse.ArgumentParser, d: Any) -> None:
    from .nn.recipes import RECIPES
    p.add_argument("--recipe", choices=sorted(RECIPES), default=d.recipe,
                   help="stage-III loss recipe: balanced (KD from the teacher's classifier at "
                        "T=1 + feature enhancement w_fe 3 with warm-up), aligned (the same KD + "
                        "a batch-centred cosine alignment to the teacher's feature, w_align 4, "
                        "no CMPG), official (the exact official loss: w_fe 30, w_ce 9.6, T 1) "
                        f"or kd (plain Hinton KD) (default: {d.recipe}, chosen on validation, "
                        "RESULTS.md); the flags below override single settings")
    p.add_argument("--w-fe", type=float, default=None,
                   help="feature-enhancement weight (default: the recipe's; official 30)")
    p.add_argument("--w-ce", type=float, default=None,
                   help="classifier-enhancement weight, per-sample KL (default: the recipe's; "
                        "official 9.6 = 0.3 x batch 32)")
    p.add_argument("--w-kd", type=float, default=None,
                   help="Hinton KD weight, from the teacher's own classifier (default: the "
                        "recipe's; official 0)")
    p.add_argument("--w-align", type=float, default=None,
                   help="weight of a direct feature alignment, 1 - cos(student feature, teacher "
                        "feature), without the CMPG; not in the paper (with --align-center: the "
                        "largest gain measured, RESULTS.md sessions 22-23) (default: the recipe's, "
                        "4 in aligned, else 0)")
    p.add_argument("--align-center", action=argparse.BooleanOptionalAction, default=None,
                   help="with --w-align: subtract each side's batch mean before the cosine "
                        "(default: the recipe's, yes only in aligned)")
    p.add_argument("--temperature", type=float, default=None,
                   help="temperature of the KL terms (default: the recipe's; official 1)")
    p.add_argument("--w-proj", type=float, default=None,
                   help="when the student's feature size differs from the teacher's: weight of "
                        "the label CE that trains the teacher-to-student projection")
    p.add_argument("--detach-teacher-logits", choices=("auto", "yes", "no"), default="auto",
                   type=str.lower,
                   help="use the head's prediction on the teacher feature as a constant KL "
                        "target; auto: yes when the feature sizes differ and --w-proj > 0, "
                        "no (official) otherwise (default: auto)")
    p.add_argument("--warmup-epochs", type=float, default=None,
                   help="ramp --w-fe and --w-ce from 0 over this many student epochs "
                        "(default: the recipe's share of --epochs; official: none)")


def _add_data_arguments(p: argparse.ArgumentParser, d: Any, val: bool = True,
                        num_points_from_student: bool = False) -> None:
    g = p.add_argument_group("data (as `pointcmt-pyg run`; give every stage the same flags)")
    g.add_argument("--data", default=d.data,
                   help="'synthetic' (embedded procedural shapes), a ModelNet .off folder "
                        "(PyG root with raw/, or <class>/{train,test}/*.off) or a point "
                        "folder <class>/<split>/<name>.{npy,npz,txt,xyz,pcd,ply,off,obj}")
    if num_points_from_student:
        g.add_argument("--num-points", type=int, default=None,
                       help="points per cloud (default: the student's, from "
                            f"student_config.json beside --weights, else "
                            f"{_default('num_points')})")
    else:
        g.add_argument("--num-points", type=int, default=d.num_points,
                       help=f"points per cloud (default: {_default('num_points')})")
    g.add_argument("--synthetic-classes", type=int, default=d.synthetic_classes,
                   help="embedded dataset: number of classes (at most 16)")
    g.add_argument("--synthetic-train-per-class", type=int, default=d.synthetic_train_per_class,
                   help="embedded dataset: training shapes per class")
    g.add_argument("--synthetic-test-per-class", type=int, default=d.synthetic_test_per_class,
                   help="embedded dataset: test shapes per class")
    g.add_argument("--synthetic-scan", action=argparse.BooleanOptionalAction, default=d.synthetic_scan,
                   help="embedded dataset: the student sees single-view scans, the teacher whole meshes")
    g.add_argument("--synthetic-rescan", action=argparse.BooleanOptionalAction, default=d.synthetic_rescan,
                   help="with --synthetic-scan: a new scan at every training access")
    g.add_argument("--max-train", type=int, default=None,
                   help="keep a stratified subset of this many training shapes")
    g.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help="validation carve from the training split (stratified, seeded; "
                        "model selection looks at it only)" if val else
                        "unused here (accepted so that every stage takes the same data flags)")
    g.add_argument("--seed", type=int, default=d.seed,
                   help="seed of the data, the validation carve and the training")


def _add_view_arguments(p: argparse.ArgumentParser, d: Any, from_teacher: bool = False) -> None:
    g = p.add_argument_group("views")
    if from_teacher:
        g.add_argument("--num-views", type=int, default=None,
                       help=f"views per shape (default: those the teacher was trained on, "
                            f"from teacher_config.json beside it, else {d.num_views})")
        g.add_argument("--image-size", type=int, default=None,
                       help=f"view size in pixels (default: the teacher's, else {d.image_size})")
        g.add_argument("--up", type=int, choices=(0, 1, 2), default=None,
                       help=f"up axis of the shapes for the cameras (default: the teacher's, "
                            f"else {d.up})")
        g.add_argument("--view-channels", default=None,
                       help=f"what a view holds (default: the teacher's, else {d.view_channels})")
    else:
        g.add_argument("--num-views", type=int, default=d.num_views, help="views per shape")
        g.add_argument("--image-size", type=int, default=d.image_size,
                       help="view size in pixels")
        g.add_argument("--up", type=int, choices=(0, 1, 2), default=d.up,
                       help="up axis of the shapes for the cameras: 2 = z (ModelNet .off), "
                            "1 = y (ScanObjectNN, ModelNet normal_resampled)")
        g.add_argument("--view-channels", default=d.view_channels,
                       help="what a view holds, comma-separated: depth, mask (silhouette), "
                            "shading, normal (3 planes)")


def _add_run_arguments(p: argparse.ArgumentParser, d: Any, resume: bool = True) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--device", default=d.device, help="auto | cpu | cuda | cuda:N")
    g.add_argument("--precision", default=d.precision, choices=("32", "bf16", "16"),
                   help="32, bf16 or 16: forwards under torch.autocast (default: %(default)s)")
    g.add_argument("--workers", type=int, default=d.workers, help="data-loader workers")
    if resume:
        g.add_argument("--resume", action="store_true",
                       help="continue an interrupted run from --out/last.pt")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


# ------------------------------------------------------------- helpers
def _log(msg: str) -> None:
    print(f"[pointcmt] {msg}", flush=True)


def _config(args: argparse.Namespace, **overrides: Any) -> Any:
    r"""A checked :class:`~pointcmt_pyg.pipeline.PipelineConfig` from the data
    flags of ``args`` plus ``overrides`` (its validation is the pipeline's)."""
    from .pipeline import PipelineConfig
    names = {f.name for f in dataclasses.fields(PipelineConfig)}
    kw = {k: v for k, v in vars(args).items() if k in names and v is not None and k not in (
        "epochs", "batch_size", "lr", "model", "out", "resume")}
    kw.update({k: v for k, v in overrides.items() if v is not None})
    kw["progress"] = not getattr(args, "no_progress", False)
    if "detach_teacher_logits" in kw:
        kw["detach_teacher_logits"] = _tri_state(kw["detach_teacher_logits"])
    with _inputs():
        return PipelineConfig(**kw).resolved()


def _device(name: str) -> Any:
    import torch
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise InputError(f"--device {name!r}: not a device (auto, cpu, cuda, cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name!r} but CUDA is not available here")
    return dev


def _load_data(cfg: Any, for_teacher: bool = False) -> Tuple[Any, Optional[Any], List[str], str]:
    r"""The pipeline's :func:`~pointcmt_pyg.pipeline.load_data` (``for_teacher``:
    the clouds the views are projected from, as the pipeline renders them)."""
    from .pipeline import load_data
    with _inputs():
        return load_data(cfg, for_teacher=for_teacher)


def _split(full_train: Any, cfg: Any) -> Tuple[Any, Any]:
    from .datasets import train_val_split
    with _inputs():
        return train_val_split(full_train, cfg.val_fraction, cfg.seed)


def _with_transform(dataset: Any, transform: Any) -> Any:
    r"""A view of ``dataset`` with ``transform`` (the pipeline's helper)."""
    from .pipeline import _with_transform as with_transform
    return with_transform(dataset, transform)


def _view_transform(cfg: Any, cache_dir: Path) -> Any:
    r"""The teacher's input (:func:`pointcmt_pyg.pipeline.teacher_transforms`)
    with the view cache at ``cache_dir`` (the pipeline's is ``<out>/views``)."""
    from .pipeline import teacher_transforms
    with _inputs():
        return teacher_transforms(cfg, cache_dir=cache_dir)


def _sample_ids(dataset: Any) -> List[str]:
    ids = getattr(dataset, "sample_ids", None)
    if isinstance(ids, list):
        return ids
    return [dataset[i].sample_id for i in range(len(dataset))]


def _check_cache_covers(cache: Any, dataset: Any, path: Path) -> None:
    ids = _sample_ids(dataset)
    missing = [i for i in ids if i not in cache]
    if missing:
        raise InputError(
            f"the feature cache {path} lacks {len(missing)} of the {len(ids)} training shapes "
            f"(first: {missing[0]!r}); it was computed on other data: rerun `pointcmt-pyg "
            "cache-features` with the same data flags")


def _require_file(path: Path, flag: str, hint: str) -> Path:
    if not path.is_file():
        raise InputError(f"{flag} {path}: no such file ({hint})")
    return path


def _read_artifact(load: Any, path: Path, flag: str) -> Any:
    r"""``load(path)``; any failure (a foreign or damaged file) is bad input."""
    try:
        return load(path)
    except Exception as error:  # unpickling fails with many exception types
        raise InputError(f"{flag} {path}: cannot be read ({error})") from None


def _load_teacher(path: Path) -> Any:
    from .nn import load_teacher
    _require_file(path, "--teacher", "train one with `pointcmt-pyg train-teacher`")
    return _read_artifact(load_teacher, path, "--teacher")


def _load_cmpg(path: Path) -> Any:
    from .nn import load_cmpg
    _require_file(path, "--cmpg", "train one with `pointcmt-pyg train-cmpg`")
    return _read_artifact(load_cmpg, path, "--cmpg")


def _load_features(path: Path) -> Any:
    from .datasets import FeatureCache
    _require_file(path, "--features", "write one with `pointcmt-pyg cache-features`")
    cache = _read_artifact(FeatureCache.load, path, "--features")
    if len(cache) == 0:
        raise InputError(f"--features {path}: the cache is empty")
    return cache


def _check_classes(what: str, found: int, classes: Sequence[str]) -> None:
    if found != len(classes):
        raise InputError(f"{what} has {found} classes but the data has {len(classes)} "
                         "(use the data flags it was trained with)")


def _write_json(path: Path, obj: Dict[str, Any]) -> None:
    from .train import atomic_write_text
    atomic_write_text(json.dumps(obj, indent=2), path)


def _read_json(path: Path) -> Dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def _log_resume(args: argparse.Namespace, out: Path) -> None:
    if args.resume:
        last = out / "last.pt"
        _log(f"resuming from {last}" if last.is_file() else f"--resume: no {last} yet, "
             "starting fresh")


def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


# ------------------------------------------------------------- render
def _cmd_render(args: argparse.Namespace) -> int:
    import torch

    from .render import save_montage
    cfg = _config(args)
    train, test, classes, desc = _load_data(cfg, for_teacher=True)
    if args.split in ("test", "all") and test is None:
        raise InputError(f"--split {args.split}: {desc} has no test split")
    if args.montage < 0:
        raise InputError(f"--montage must be >= 0, got {args.montage}")
    out = Path(args.out).expanduser()
    transform = _view_transform(cfg, out)
    renderer = transform.transforms[0]
    parts = [("train", train)] if args.split in ("train", "all") else []
    if args.split in ("test", "all"):
        parts.append(("test", test))
    _log(f"data: {desc}; rendering {cfg.num_views} views of {cfg.image_size} px, up axis "
         f"{cfg.up} ({args.split} split) into {renderer.cache_dir}")
    from .pipeline import prerender_views
    with _inputs():
        rendered, cached = prerender_views(transform, parts, progress=not args.no_progress)
    _log(f"{rendered} shapes rendered, {cached} already cached, in {renderer.cache_dir}")
    if args.montage:
        # One shape per class (the first of each), one row per shape.
        labels = [int(y) for y in _labels(train)]
        first: Dict[int, int] = {}
        for i, y in enumerate(labels):
            first.setdefault(y, i)
        picks = sorted(first.values())[:args.montage]
        rows = [transform(train[i]).views[0] for i in picks]
        titles = [f"{classes[labels[i]]} v{v}" for i in picks for v in range(cfg.num_views)]
        path = Path(args.montage_path) if args.montage_path else out / "montage.png"
        save_montage(torch.cat(rows), path, ncols=cfg.num_views, view_titles=titles,
                     title=f"what the teacher sees: {cfg.num_views} views, {cfg.image_size} px")
        _log(f"montage of {len(picks)} shapes -> {path}")
    return 0


def _labels(dataset: Any) -> Any:
    from .datasets import dataset_labels
    return dataset_labels(dataset).tolist()


# ------------------------------------------------------------- train-teacher
def _cmd_train_teacher(args: argparse.Namespace) -> int:
    from .nn import MultiViewTeacher
    from .pipeline import num_view_planes
    from .train import seed_everything, train_teacher
    cfg = _config(args, teacher_epochs=args.epochs, teacher_batch_size=args.batch_size,
                  teacher_lr=args.lr)
    device = _device(args.device)
    full_train, _, classes, desc = _load_data(cfg, for_teacher=True)
    train, val = _split(full_train, cfg)
    out = Path(args.out).expanduser()
    views = Path(args.views).expanduser() if args.views else out / "views"
    transform = _view_transform(cfg, views)
    _log(f"data: {desc}; {len(train)} train / {len(val)} val (carved from train, seed "
         f"{cfg.seed}); device {device}")
    _log(f"stage I: teacher ({cfg.backbone}, {cfg.num_views} views of {cfg.image_size} px, "
         f"{cfg.teacher_epochs} epochs) -> {out / 'teacher.pt'}")
    _log_resume(args, out)
    seed_everything(cfg.seed)
    with _inputs():
        teacher = MultiViewTeacher(len(classes), backbone=cfg.backbone,
                                   in_channels=num_view_planes(cfg))
    res = train_teacher(teacher, _with_transform(train, transform),
                        _with_transform(val, transform), epochs=cfg.teacher_epochs,
                        batch_size=cfg.teacher_batch_size, lr=cfg.teacher_lr, out_dir=out,
                        device=device, seed=cfg.seed, num_workers=args.workers,
                        progress=cfg.progress, resume=args.resume, augment=args.augment,
                        precision=cfg.precision)
    _write_json(out / "teacher_config.json",
                {"num_views": cfg.num_views, "image_size": cfg.image_size, "up": cfg.up,
                 "view_channels": cfg.view_channels, "views": str(views.resolve()), "backbone": cfg.backbone, "data": cfg.data,
                 "classes": classes, "val_oa": res.history.best_metric,
                 "best_epoch": res.history.best_epoch})
    _log(f"teacher: val OA {_pct(res.history.best_metric)} (epoch {res.history.best_epoch}) "
         f"-> {out / 'teacher.pt'}")
    return 0


# ------------------------------------------------------------- cache-features
def _cmd_cache_features(args: argparse.Namespace) -> int:
    from .datasets import compute_teacher_features
    teacher_path = Path(args.teacher).expanduser()
    teacher = _load_teacher(teacher_path)
    saved = _read_json(teacher_path.parent / "teacher_config.json")
    overrides = {k: getattr(args, k) if getattr(args, k) is not None else saved.get(k)
                 for k in ("num_views", "image_size", "up", "view_channels")}
    cfg = _config(args, **overrides)
    device = _device(args.device)
    train, _, classes, desc = _load_data(cfg, for_teacher=True)
    _check_classes(f"the teacher {teacher_path}", teacher.num_classes, classes)
    views = (Path(args.views).expanduser() if args.views else
             Path(saved["views"]) if saved.get("views") else teacher_path.parent / "views")
    out = Path(args.out).expanduser()
    _log(f"data: {desc}; teacher features of the {len(train)} training shapes "
         f"({cfg.num_views} views of {cfg.image_size} px, up axis {cfg.up}) -> {out}")
    cache = compute_teacher_features(
        teacher, _with_transform(train, _view_transform(cfg, views)),
        batch_size=args.batch_size, device=device, progress=cfg.progress,
        metadata={"teacher": str(teacher_path), "num_views": cfg.num_views,
                  "image_size": cfg.image_size, "up": cfg.up,
                  "view_channels": cfg.view_channels, "data": cfg.data})
    cache.save(out)
    _log(f"{len(cache)} features of size {cache.feat_dim} -> {out}")
    return 0


# ------------------------------------------------------------- train-cmpg
def _cmd_train_cmpg(args: argparse.Namespace) -> int:
    from torch_geometric.transforms import Compose

    from .datasets import AttachImageFeatures
    from .nn import CMPG
    from .pipeline import DropAttributes
    from .train import seed_everything, train_cmpg
    features = Path(args.features).expanduser()
    cache = _load_features(features)
    cfg = _config(args, cmpg_epochs=args.epochs, cmpg_points=args.points,
                  batch_size=args.batch_size)
    device = _device(args.device)
    full_train, _, _, desc = _load_data(cfg)
    _check_cache_covers(cache, full_train, features)
    train, val = _split(full_train, cfg)
    out = Path(args.out).expanduser()
    _log(f"data: {desc}; {len(train)} train / {len(val)} val; device {device}")
    _log(f"stage II: CMPG ({cache.feat_dim} -> {cfg.cmpg_points} points, {cfg.cmpg_epochs} "
         f"epochs) -> {out / 'cmpg.pt'}")
    _log_resume(args, out)
    seed_everything(cfg.seed)
    cmpg = CMPG(cache.feat_dim, num_points=cfg.cmpg_points)
    transform = Compose([DropAttributes(), AttachImageFeatures(cache)])
    res = train_cmpg(cmpg, _with_transform(train, transform), _with_transform(val, transform),
                     epochs=cfg.cmpg_epochs, batch_size=cfg.batch_size, lr=args.lr,
                     out_dir=out, device=device, seed=cfg.seed, num_workers=args.workers,
                     progress=cfg.progress, resume=args.resume, precision=cfg.precision)
    _log(f"cmpg: val EMD {res.history.best_metric:.4f} (epoch {res.history.best_epoch}) "
         f"-> {out / 'cmpg.pt'}" if res.history.best_metric is not None
         else f"cmpg -> {out / 'cmpg.pt'}")
    return 0


# ------------------------------------------------------------- distill
def _cmd_distill(args: argparse.Namespace) -> int:
    from .datasets import AttachImageFeatures
    from .models import get_model
    from .nn import CrossModalDistiller
    from .pipeline import distiller_kwargs, student_compile, student_transforms
    from .train import seed_everything, train_student
    cfg = _config(args, model=args.model, epochs=args.epochs, batch_size=args.batch_size,
                  lr=args.lr)
    device = _device(args.device)
    teacher = cmpg = cache = None
    if args.baseline:
        given = [f for f, v in (("--teacher", args.teacher), ("--cmpg", args.cmpg),
                                ("--features", args.features)) if v is not None]
        if given:
            raise InputError(f"--baseline trains the plain model: drop {', '.join(given)}")
    else:
        feat_path = Path(args.features or RUN_DIR / "teacher_features.pt").expanduser()
        cache = _load_features(feat_path)
        sizes = {f"the features in {feat_path}": cache.feat_dim}
        # Only the feature enhancement uses the CMPG ("aligned" and "kd" need none);
        # one given anyway is loaded and checked.
        if cfg.uses_cmpg() or args.cmpg is not None:
            cmpg_path = Path(args.cmpg or RUN_DIR / "cmpg" / "cmpg.pt").expanduser()
            cmpg = _load_cmpg(cmpg_path)
            sizes[f"the CMPG {cmpg_path} (in_dim)"] = cmpg.in_dim
        teacher_path = Path(args.teacher).expanduser() if args.teacher else None
        if teacher_path is not None:
            teacher = _load_teacher(teacher_path)
            sizes[f"the teacher {teacher_path}"] = teacher.feat_dim
        if len(set(sizes.values())) > 1:
            raise InputError("mismatched feature sizes: " + ", ".join(
                f"{k} {v}" for k, v in sizes.items())
                + " (use the teacher, features and CMPG of one run)")
        if teacher_path is None and cfg.w_kd > 0 and cache.logits is None:
            raise InputError(f"--recipe {cfg.recipe} uses the teacher's own classifier (Hinton KD, "
                             f"w_kd {cfg.w_kd:g}): give --teacher (e.g. "
                             f"{RUN_DIR / 'teacher' / 'teacher.pt'}), --features with the "
                             "teacher's logits, or --w-kd 0")
    full_train, test, classes, desc = _load_data(cfg)
    if cache is not None:
        _check_cache_covers(cache, full_train, feat_path)
        if cache.logits is not None and cache.logits.size(1) != len(classes):
            raise InputError(f"--features {feat_path} holds teacher logits over "
                             f"{cache.logits.size(1)} classes but the data has {len(classes)}")
        if cache.logits is not None and cfg.w_kd > 0:
            folds = cache.metadata.get("teacher_folds", 1)
            _log(f"Hinton target: the teacher logits stored in {feat_path}"
                 + (f" (out-of-fold, {folds} cross-fitted teachers)" if folds > 1 else ""))
    if teacher is not None:
        _check_classes(f"the teacher {teacher_path}", teacher.num_classes, classes)
    train, val = _split(full_train, cfg)
    run = "baseline" if args.baseline else "pointcmt"
    out = Path(args.out).expanduser() if args.out else RUN_DIR / run
    init_seed = cfg.seed if args.init_seed is None else args.init_seed
    _log(f"data: {desc}; {len(train)} train / {len(val)} val; device {device}"
         + (f"; student seed {init_seed}" if args.init_seed is not None else ""))
    _log_resume(args, out)
    seed_everything(init_seed)
    with _inputs():
        student = get_model(cfg.model, len(classes))
    if args.baseline:
        model, train_t = student, student_transforms(True, rescan=cfg.synthetic_rescan)
    else:
        with _inputs():
            model = CrossModalDistiller(student, teacher, cmpg, teacher_dim=cache.feat_dim,
                                        **distiller_kwargs(cfg, len(train)))
        train_t = student_transforms(True, [AttachImageFeatures(cache)], rescan=cfg.synthetic_rescan)
    _log(f"stage III: {cfg.model} {'baseline' if args.baseline else 'with PointCMT'} "
         f"({cfg.epochs} epochs, {cfg.num_points} points) -> {out / 'student.pt'}")
    res = train_student(model, _with_transform(train, train_t),
                        _with_transform(val, student_transforms(False)), epochs=cfg.epochs,
                        batch_size=cfg.batch_size, lr=cfg.lr, out_dir=out, device=device,
                        seed=init_seed, num_workers=args.workers, progress=cfg.progress,
                        resume=args.resume, num_classes=len(classes), precision=cfg.precision,
                        select=cfg.select, compile=student_compile(cfg))
    _write_json(out / "student_config.json",
                {"model": cfg.model, "num_classes": len(classes), "classes": classes,
                 "num_points": cfg.num_points, "data": cfg.data, "pointcmt": not args.baseline,
                 "seed": cfg.seed, "init_seed": init_seed,
                 "val_oa": res.history.best_metric, "best_epoch": res.history.best_epoch})
    _log(f"{run}: val OA {_pct(res.history.best_metric)} (epoch {res.history.best_epoch}) "
         f"-> {out / 'student.pt'}")
    return 0


# ------------------------------------------------------------- evaluate
def _read_weights(path: Path) -> Dict[str, Any]:
    import torch
    _require_file(path, "--weights", "train a student with `pointcmt-pyg distill`")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling errors come in many types
        raise InputError(f"--weights {path}: not a readable torch file ({error})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]                      # a trainer best.pt
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise InputError(f"--weights {path}: not a state_dict (student.pt or best.pt)")
    return state


def evaluate_model(model: Any, dataset: Any, num_classes: int, batch_size: int = 32,
                   device: Any = "cpu") -> Dict[str, Any]:
    r"""OA, mAcc, the confusion matrix and the per-sample ``correct`` flags of
    ``model(batch) -> logits`` over ``dataset`` (PyG ``Data`` with ``y``), in
    order, in eval mode without gradients
    (:func:`pointcmt_pyg.pipeline.evaluate_classifier`)."""
    import torch
    from torch_geometric.loader import DataLoader

    from .pipeline import evaluate_classifier
    res = evaluate_classifier(model, DataLoader(dataset, batch_size=batch_size), device,
                              num_classes)
    res["confusion"] = torch.tensor(res["confusion"], dtype=torch.long)
    return res


def _load_student(weights: Path, model_name: Any, num_classes: int) -> Any:
    r"""A student of ``model_name`` with the state of ``weights``, or a clear error."""
    from .models import get_model
    state = _read_weights(weights)
    with _inputs():
        model = get_model(model_name, num_classes)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        raise InputError(f"--weights {weights} do not fit --model {model_name} with "
                         f"{num_classes} classes: {first[1].strip() if len(first) > 1 else first[0]}"
                         ) from None
    return model


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .pipeline import format_paired, paired_comparison, student_transforms
    from .train import plot_confusion_matrix
    weights = Path(args.weights).expanduser()
    saved = _read_json(weights.parent / "student_config.json")
    name = args.model or saved.get("model")
    if not name:
        raise InputError("--model is required (no student_config.json beside --weights "
                         "tells it)")
    num_points = args.num_points if args.num_points is not None else saved.get("num_points")
    cfg = _config(args, model=name, num_points=num_points, batch_size=args.batch_size)
    device = _device(args.device)
    full_train, test, classes, desc = _load_data(cfg)
    trained_on = saved.get("classes")
    if trained_on and list(trained_on) != list(classes):
        raise InputError(f"--data {cfg.data!r} has the classes {classes}, but the student in "
                         f"{weights} was trained on {list(trained_on)} (same classes, same order "
                         "needed)")
    if args.split == "test":
        if test is None:
            raise InputError(f"--split test: {desc} has no test split (use --split val)")
        dataset = test
    else:
        dataset = _split(full_train, cfg)[1]
    compare = Path(args.compare).expanduser() if args.compare else None
    other_name = None
    if compare is not None:        # checked before any evaluation runs
        other_saved = _read_json(compare.parent / "student_config.json")
        other_name = args.model or other_saved.get("model") or cfg.model
        if other_saved.get("classes") and list(other_saved["classes"]) != list(classes):
            raise InputError(f"--compare {compare} was trained on other classes than --data "
                             f"{cfg.data!r} has")
        other = _load_student(compare, other_name, len(classes))
    model = _load_student(weights, cfg.model, len(classes))
    eval_set = _with_transform(dataset, student_transforms(False))
    res = evaluate_model(model, eval_set, len(classes), batch_size=cfg.batch_size, device=device)
    print(f"{cfg.model} ({weights}) on the {args.split} split of {desc.split(' (')[0]} "
          f"({res['num_samples']} shapes): OA {_pct(res['oa'])}  mAcc {_pct(res['macc'])}",
          flush=True)
    if compare is not None:
        ref = evaluate_model(other, eval_set, len(classes), batch_size=cfg.batch_size,
                             device=device)
        print(f"{other_name} ({compare}): OA {_pct(ref['oa'])}  mAcc {_pct(ref['macc'])}; "
              f"--weights - --compare: {100 * (res['oa'] - ref['oa']):+.2f} OA", flush=True)
        paired = paired_comparison(res["correct"], ref["correct"], args.split)
        print(format_paired(paired, "--compare student").replace(
            "with PointCMT", "with --weights"), flush=True)
    if args.confusion:
        path = plot_confusion_matrix(res["confusion"], Path(args.confusion).expanduser(),
                                     class_names=classes,
                                     title=f"{cfg.model} ({args.split}): OA {_pct(res['oa'])}")
        _log(f"confusion matrix -> {path}")
    return 0


# ------------------------------------------------------------- parser
_DESCRIPTIONS = {
    "render": """\
Render every shape of a dataset into the view cache that the teacher stages read,
and save a montage PNG (one row per shape, the first shape of the first classes).

Input:  --data (synthetic, a ModelNet .off folder or a point folder).
        Meshes are ray-cast when the data has them, point clouds are projected.
Output: <out>/<config hash>/shard-*.npy + .json (8-bit views in memory-mapped shards,
        by sample_id; a changed --num-views/--image-size/--up/--view-channels renders into
        its own folder), <out>/montage.png.""",
    "train-teacher": """\
Stage I: train the MultiViewTeacher (a torchvision ResNet per view, max over views,
linear head) on rendered views. The validation split is carved from the training
split (stratified, seeded); the best validation epoch is kept.

Input:  --data, the view cache --views (rendered on first use when empty).
Output: <out>/teacher.pt (load_teacher), <out>/teacher_config.json (views used),
        checkpoints <out>/last.pt, <out>/best.pt and <out>/history.json.""",
    "cache-features": """\
Run a saved teacher once over the whole training split (train + validation carve)
and store its global image features by sample_id.

Input:  --teacher teacher.pt, --data (the teacher's data flags), the view cache.
Output: --out, a FeatureCache file (FeatureCache.load; AttachImageFeatures).""",
    "train-cmpg": """\
Stage II: train the cross-modal point generator (CMPG: teacher feature -> point
cloud) with the Earth Mover's Distance against each shape's own points, on the
cached teacher features; the lowest validation EMD is kept.

Input:  --features (from cache-features), --data (the same data flags).
Output: <out>/cmpg.pt (load_cmpg), checkpoints and history.json in <out>.""",
    "distill": """\
Stage III: train a point model from pointcmt_pyg.models wrapped in CrossModalDistiller
(the default recipe `aligned`: CE + Hinton KD from the teacher's classifier + centred
alignment of the student's feature with the image feature; `official`/`balanced` add
the feature enhancement through the frozen CMPG), or with --baseline the plain model
on the same budget. --resume continues a killed run.

Input:  --model, --features, --teacher (its classifier for the KD term; not needed when
        the feature cache holds the teacher's logits), --cmpg (only for recipes with the
        feature term, w_fe > 0), --data (the same data flags).
Output: <out>/student.pt (the plain model's state_dict: inference needs nothing
        else), <out>/student_config.json, checkpoints and history.json.""",
    "evaluate": """\
Evaluate a saved student on the test split (or the validation carve of the
training split, --split val) and print its overall accuracy (OA) and mean class
accuracy (mAcc).

Input:  --weights student.pt (or a trainer best.pt), --model (default: from
        student_config.json beside the weights), --data.
Output: OA / mAcc on stdout, optionally --confusion PNG.""",
}


def build_parser() -> argparse.ArgumentParser:
    r"""The ``pointcmt-pyg`` parser with one subcommand per stage."""
    from .pipeline import PipelineConfig
    d = PipelineConfig()
    parser = argparse.ArgumentParser(
        prog="pointcmt-pyg",
        description="PointCMT (NeurIPS 2022, https://arxiv.org/abs/2210.04208) for PyG: "
        "images teach a point-cloud classifier during training only.\n"
        "Run the stages one by one (their default paths chain under runs/pointcmt/), or "
        "all at once with `run`.",
        epilog="example (embedded synthetic data):\n"
        "  pointcmt-pyg render && pointcmt-pyg train-teacher && pointcmt-pyg cache-features\n"
        "  pointcmt-pyg train-cmpg && pointcmt-pyg distill --model pointnet2\n"
        "  pointcmt-pyg evaluate --weights runs/pointcmt/pointcmt/student.pt\n"
        "`pointcmt-pyg COMMAND --help` explains each command's inputs and outputs.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND",
                                title="commands (in pipeline order)")
    helps = dict(COMMANDS)
    parsers = {}
    for name, _ in COMMANDS:
        if name == "run":
            parsers[name] = sub.add_parser(
                name, help=helps[name], formatter_class=DefaultsHelpFormatter,
                description="The whole recipe (as examples/modelnet40.py): teacher on rendered "
                "views, the CMPG when the recipe has the feature term, then the point model "
                "with and without PointCMT on the same budget; prints a table and writes "
                "results.json and PNGs to --out.")
        else:
            parsers[name] = sub.add_parser(name, help=helps[name],
                                           description=_DESCRIPTIONS[name],
                                           formatter_class=_Formatter)

    p = parsers["render"]
    _add_data_arguments(p, d, val=False)
    _add_view_arguments(p, d)
    p.add_argument("--split", choices=("train", "test", "all"), default="train",
                   help="which split to render (the teacher stages read the training split)")
    p.add_argument("--montage", type=int, default=4,
                   help="shapes in the montage PNG (0: no montage)")
    p.add_argument("--montage-path", default=None, help="montage PNG (default: <out>/montage.png)")
    p.add_argument("--out", default=str(RUN_DIR / "views"), help="the view cache directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_render)

    p = parsers["train-teacher"]
    _add_data_arguments(p, d)
    _add_view_arguments(p, d)
    p.add_argument("--views", default=str(RUN_DIR / "views"),
                   help="the view cache (the --out of `render`)")
    p.add_argument("--backbone", default=d.backbone,
                   help="torchvision ResNet, or resnet18_w16 (SimpleView's ResNet-18 at a quarter "
                        "of the channels)")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"epochs (default: {_default('teacher_epochs')})")
    p.add_argument("--batch-size", type=int, default=d.teacher_batch_size, help="batch size")
    p.add_argument("--lr", type=float, default=d.teacher_lr, help="learning rate (AdamW)")
    p.add_argument("--augment", action="store_true", default=d.teacher_augment,
                   help="mirror and shift the training views")
    p.add_argument("--out", default=str(RUN_DIR / "teacher"), help="output directory")
    _add_run_arguments(p, d)
    p.set_defaults(func=_cmd_train_teacher)

    p = parsers["cache-features"]
    p.add_argument("--teacher", default=str(RUN_DIR / "teacher" / "teacher.pt"),
                   help="the teacher (from train-teacher)")
    _add_data_arguments(p, d, val=False)
    _add_view_arguments(p, d, from_teacher=True)
    p.add_argument("--views", default=None,
                   help="the view cache (default: the one the teacher was trained on)")
    p.add_argument("--batch-size", type=int, default=d.teacher_batch_size, help="batch size")
    p.add_argument("--out", default=str(RUN_DIR / "teacher_features.pt"),
                   help="the feature cache file to write")
    _add_run_arguments(p, d, resume=False)
    p.set_defaults(func=_cmd_cache_features)

    p = parsers["train-cmpg"]
    p.add_argument("--features", default=str(RUN_DIR / "teacher_features.pt"),
                   help="the feature cache (from cache-features)")
    _add_data_arguments(p, d)
    p.add_argument("--points", type=int, default=d.cmpg_points,
                   help="points the CMPG generates")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"epochs (default: {_default('cmpg_epochs')})")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"batch size (default: {_default('batch_size')})")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (AdamW)")
    p.add_argument("--out", default=str(RUN_DIR / "cmpg"), help="output directory")
    _add_run_arguments(p, d)
    p.set_defaults(func=_cmd_train_cmpg)

    p = parsers["distill"]
    p.add_argument("--model", default=d.model,
                   help="the student: pointnet2 | pointnet2_fc512 (PointCMT's 512-d student head) | "
                        "pointnet2_msg | dgcnn | point_transformer")
    p.add_argument("--init-seed", type=int, default=None,
                   help="seed of the student's initial weights and training order only "
                        "(default: --seed); with a fixed --seed the data, the carve and the "
                        "teacher features stay the same, so repeated runs measure the "
                        "student's own variation")
    p.add_argument("--baseline", action="store_true",
                   help="train the plain model (no teacher, CMPG or features)")
    p.add_argument("--teacher", default=None,
                   help="the teacher, to check that it fits the features and the data "
                        "(optional: the cached features are what the student learns from)")
    p.add_argument("--cmpg", default=None,
                   help=f"the CMPG (default: {RUN_DIR / 'cmpg' / 'cmpg.pt'})")
    p.add_argument("--features", default=None,
                   help=f"the teacher features (default: {RUN_DIR / 'teacher_features.pt'})")
    _add_data_arguments(p, d)
    p.add_argument("--epochs", type=int, default=None,
                   help=f"epochs (default: {_default('epochs')})")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"batch size (default: {_default('batch_size')})")
    p.add_argument("--lr", type=float, default=d.lr, help="learning rate (AdamW, cosine)")
    p.add_argument("--compile", action="store_true",
                   help="train the students through torch.compile (dynamic shapes): the same "
                        "math, faster on long runs after a minute or so of compiling")
    p.add_argument("--select", default=d.select, choices=("val_oa", "last"),
                   help="the checkpoint kept: val_oa, the epoch with the best validation OA, or "
                        "last, the final epoch (default: %(default)s)")
    _add_distiller_arguments(p, d)
    p.add_argument("--out", default=None,
                   help=f"output directory (default: {RUN_DIR / 'pointcmt'}, or "
                        f"{RUN_DIR / 'baseline'} with --baseline)")
    _add_run_arguments(p, d)
    p.set_defaults(func=_cmd_distill)

    p = parsers["evaluate"]
    p.add_argument("--weights", required=True, help="student.pt (or a trainer best.pt)")
    p.add_argument("--model", default=None,
                   help="the student's architecture (default: from student_config.json "
                        "beside --weights)")
    p.add_argument("--split", choices=("test", "val"), default="test",
                   help="the test split, or the validation carve of the training split")
    _add_data_arguments(p, d, num_points_from_student=True)
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"batch size (default: {_default('batch_size')})")
    p.add_argument("--confusion", default=None, help="write the confusion matrix to this PNG")
    p.add_argument("--compare", default=None, metavar="WEIGHTS",
                   help="a second student (e.g. the baseline) scored on the same shapes; prints "
                        "the difference and the exact McNemar test on the shapes only one of "
                        "the two gets right")
    _add_run_arguments(p, d, resume=False)
    p.set_defaults(func=_cmd_evaluate)

    add_pipeline_arguments(parsers["run"])
    parsers["run"].set_defaults(func=_cmd_run)
    for name, p in parsers.items():
        p.set_defaults(_parser=p)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    r"""Entry point of the ``pointcmt-pyg`` console script.

    Returns the exit status (``0``); bad input exits with status ``2`` and a
    one-line message (argparse's ``error``), ``--help`` with ``0``.
    """
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        if not getattr(args, "no_progress", False):
            return int(args.func(args) or 0)
        from .pipeline import bars_disabled
        # As the pipeline: no bars (TQDM_DISABLE), but the trainers still print one
        # line per epoch, so the command runs with progress on, on a copy of args.
        quiet_args = argparse.Namespace(**{**vars(args), "no_progress": False})
        with bars_disabled():
            return int(args.func(quiet_args) or 0)
    except InputError as error:
        args._parser.error(str(error))
    return 2  # pragma: no cover - error() exits


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
