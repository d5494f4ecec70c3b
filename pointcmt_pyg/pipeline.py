r"""The whole PointCMT recipe (`Yan et al., "Let Images Give You More: Point Cloud
Cross-Modal Training for Shape Analysis", NeurIPS 2022
<https://arxiv.org/abs/2210.04208>`_) as one resumable run, with the plain
baseline trained on the same budget beside it.

1. Load the data (the embedded :class:`~pointcmt_pyg.datasets.SyntheticShapes`,
   a ModelNet ``.off`` folder, or a :class:`~pointcmt_pyg.datasets.PointCloudFolder`)
   and carve a seeded, stratified validation split out of the training split.
   Model selection uses that validation split only; the test split (when
   there is one) is evaluated once, at the end.
2. Stage I: render views (meshes ray-cast, point clouds projected; cached on
   disk) and train the :class:`~pointcmt_pyg.nn.MultiViewTeacher`.
3. Cache the frozen teacher's features by ``sample_id``.
4. Stage II: train the :class:`~pointcmt_pyg.nn.CMPG` with the EMD loss.
5. Stage III: train the point model twice from the same initialisation, plain
   and wrapped in :class:`~pointcmt_pyg.nn.CrossModalDistiller`.
6. Evaluate both, print a table, write ``results.json`` and PNGs (training
   curves, a view montage, confusion matrices).

Every stage writes its artifacts under ``out`` and a ``done.json``; with
``resume=True`` finished stages are loaded instead of retrained and an
interrupted stage continues from its last checkpoint.

Example:
    >>> from pointcmt_pyg.pipeline import PipelineConfig, run_pipeline
    >>> results = run_pipeline(PipelineConfig(data="synthetic", model="pointnet2"))
"""
import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from torch_geometric.transforms import BaseTransform, Compose, NormalizeScale

from .nn.recipes import DEFAULT_RECIPE

__all__ = ["PipelineConfig", "DropAttributes", "load_data", "run_pipeline", "format_table",
           "distiller_kwargs", "student_transforms", "teacher_transforms", "teacher_margin",
           "TeacherNotBetterWarning"]

MESH_KEYS = ("mesh_pos", "mesh_face")
PROTOCOLS = ("scratch", "finetune")
#: The checkpoints a student run can keep (``PipelineConfig.select``).
STUDENT_SELECT = ("val_oa", "last")
RUN_LABELS = {"baseline": "baseline", "baseline_ft": "plain fine-tune",
              "pointcmt": "with PointCMT"}
#: Config fields per stage, recorded in each stage's ``settings.json``.
STAGE_SETTINGS: Dict[str, Tuple[str, ...]] = {
    "data": ("data", "num_points", "val_fraction", "seed", "max_train", "synthetic_classes",
             "synthetic_train_per_class", "synthetic_test_per_class"),
    "teacher": ("teacher_points", "teacher_augment", "num_views", "image_size", "up", "backbone", "teacher_epochs",
                "teacher_batch_size", "teacher_lr"),
    "cmpg": ("cmpg_points", "cmpg_epochs", "batch_size"),
    "baseline": ("model", "epochs", "batch_size", "lr"),
    "pointcmt": ("recipe", "w_fe", "w_ce", "w_kd", "temperature", "w_proj",
                 "detach_teacher_logits", "warmup_epochs"),
}


@dataclass
class PipelineConfig:
    r"""Settings of a PointCMT run (every field is also a command-line flag of
    ``examples/modelnet40.py``).

    Attributes:
        data (str): ``"synthetic"`` (embedded procedural shapes), a ModelNet
            folder of ``.off`` meshes (PyG's ``root`` with ``raw/``, or
            ``<class>/{train,test}/*.off``), or any
            :class:`~pointcmt_pyg.datasets.PointCloudFolder` root
            (``<class>/<split>/<name>.<ext>``).
        model (str): Student, one of :func:`pointcmt_pyg.models.list_models`.
        epochs (int, optional): Student epochs (each of the two runs). Default:
            ``16`` on synthetic data, ``50`` otherwise.
        teacher_epochs, cmpg_epochs (int, optional): Stage I and II epochs.
            Default: ``5``/``10`` on synthetic data, ``30``/``50`` otherwise.
        num_points (int, optional): Points per cloud given to the student.
            Default: ``512`` on synthetic data, ``1024`` otherwise.
        batch_size (int, optional): Student and CMPG batch size
            (``teacher_batch_size`` for the teacher). Default: ``16`` on
            synthetic data (more steps on a small set), ``32`` otherwise.
        lr (float): Student learning rate (AdamW, cosine schedule).
        num_views, image_size, backbone: Teacher views and ResNet.
        view_channels (str): What a view holds, comma-separated names from
            :data:`pointcmt_pyg.render.CHANNELS`: ``"depth"`` (default),
            ``"mask"`` (silhouette), ``"shading"`` (Lambertian, light at the
            camera) or ``"normal"`` (three planes), e.g. ``"depth,shading"``.
            From meshes where samples have them, else from the points (PCA
            normals). The teacher takes one input plane per channel.
        teacher_points (int, optional): Points the teacher's views are
            projected from when a sample has no mesh. ``None`` (default):
            every point the file stores (ModelNet10 ``.pcd``: 1,024), so the
            images show more than the ``num_points`` the student gets, which
            is the premise of PointCMT; an int samples that many.
        teacher_augment (bool): Mirror and shift the teacher's training views
            (:func:`~pointcmt_pyg.train.stages.augment_views`).
        teacher_folds (int): ``1`` (default): the Hinton term's target is the
            teacher's classifier on its own training shapes. ``K >= 2``:
            cross-fitting; ``K`` more teachers, each trained (same settings)
            on all training shapes but one stratified fold, into
            ``out/teacher_fold{k}``; each training shape's target is the
            logits of the teacher that did not see it (out-of-fold), stored
            in the feature cache (validation shapes: the main teacher's). A
            teacher fits its training shapes, so its own outputs there are
            little more than the label; out-of-fold outputs carry its real
            confusions. The features (CMPG, feature term) stay the main
            teacher's. Costs about ``K`` more teachers' training (the same
            number of steps each, see ``teacher_fold_epochs``).
        teacher_fold_epochs (int, optional): Epochs of each cross-fitted
            teacher. ``None`` (default): ``ceil(teacher_epochs * K / (K - 1))``,
            the main teacher's number of optimizer steps on the smaller
            training set. Fewer steps leave a small teacher's batch-norm
            statistics unsettled: on the embedded demo, 2 folds at the main
            teacher's 5 epochs gave fold teachers of 20 and 43 % validation
            OA against its 93 % (RESULTS.md).
        up (int): Up axis of the shapes for the cameras: ``2`` (z, ModelNet),
            ``1`` (y, ScanObjectNN and ``normal_resampled`` ModelNet).
        val_fraction (float): Share of the training split carved out for
            validation (stratified, seeded).
        synthetic_classes, synthetic_train_per_class, synthetic_test_per_class:
            Size of the embedded dataset (default 10 classes, the five
            fine-detail twins; 30 training and 50 test shapes per class, so
            the test split has 500 shapes).
        synthetic_scan (bool): Embedded dataset: the student's points are a
            single-view scan of each shape (only the side facing one random
            sensor position), while the teacher renders the whole mesh and the
            CMPG learns to generate the whole surface
            (:func:`~pointcmt_pyg.datasets.synthetic.scan_points`).
        synthetic_rescan (bool): With ``synthetic_scan``: every training access
            of a student scans the shape again from a new random viewpoint
            (:class:`~pointcmt_pyg.datasets.RandomScan`); validation and test
            keep their one fixed scan.
        max_train (int, optional): Keep at most this many training shapes
            (a stratified, seeded subset; for quick runs).
        recipe (str): Stage-III loss recipe (:mod:`pointcmt_pyg.nn.recipes`):
            ``"aligned"`` (default, chosen on validation: KD + the centred
            feature alignment, no CMPG, so stage II is skipped),
            ``"balanced"`` (KD + the CMPG feature term), ``"official"`` (the
            exact official loss) or ``"kd"`` (plain Hinton KD).
        w_fe, w_ce, w_kd, w_align, align_center, temperature, w_proj,
            detach_teacher_logits: PointCMT loss settings (see
            :class:`~pointcmt_pyg.nn.CrossModalDistiller`); ``None``: the
            recipe's.
        warmup_epochs (float, optional): Ramp ``w_fe`` and ``w_ce`` from 0 over
            this many epochs of the PointCMT student; ``None``: the recipe's
            share of ``epochs`` (official: none).
        device (str): ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``...
        precision (str): ``"32"``, ``"bf16"`` or ``"16"``: every stage's
            forwards under ``torch.autocast`` in that dtype (float16 with a
            loss scaler), see :class:`~pointcmt_pyg.train.Trainer`.
        compile (bool): Train the students through ``torch.compile``
            (``dynamic=True``: neighbourhood sizes vary from batch to batch).
            The same math up to rounding, so not a recorded setting; it pays
            on long runs (BENCHMARKS.md "Training step (torch.compile)": SSG
            1.38x plain and 1.23x with PointCMT per step on this CPU, after
            up to a minute of compiling).
        select (str): The checkpoint each student run keeps: ``"val_oa"``
            (default: the epoch with the best validation OA) or ``"last"``
            (the final epoch; no selection on the validation carve, which
            on small carves is the lower-variance protocol, RESULTS.md).
        out (str): Output directory.
        resume (bool): Reuse finished stages and continue interrupted ones.
        workers (int): Data-loader worker processes.
        seed (int): Seed of the split, initialisations and shuffling.
        progress (bool): tqdm progress bars.
        stages (sequence of str): Which student runs: ``"baseline"``,
            ``"pointcmt"`` or both. Without ``"pointcmt"`` stages I and II
            (views, teacher, CMPG) are skipped.
        protocol (str): ``"scratch"`` (default): baseline and PointCMT
            students trained from the same initialisation for ``epochs``
            each. ``"finetune"``: the baseline is trained for ``epochs``, then
            two arms continue from its selected weights for
            ``finetune_epochs`` each, plain CE (``baseline_ft``) and PointCMT,
            which is how a user with a trained model would use the library.
        finetune_epochs (int, optional): Epochs of each fine-tune arm.
            Default: ``max(1, epochs // 2)``.
        finetune_lr (float, optional): Peak learning rate of the fine-tune
            arms (cosine). Default: ``lr / 10``.
    """
    data: str = "synthetic"
    model: str = "pointnet2"
    epochs: Optional[int] = None
    teacher_epochs: Optional[int] = None
    cmpg_epochs: Optional[int] = None
    num_points: Optional[int] = None
    batch_size: Optional[int] = None
    teacher_batch_size: int = 16
    lr: float = 1e-3
    teacher_lr: float = 1e-3
    num_views: int = 6
    image_size: int = 64
    view_channels: str = "depth"
    backbone: str = "resnet18"
    teacher_points: Optional[int] = None
    teacher_augment: bool = False
    teacher_folds: int = 1
    teacher_fold_epochs: Optional[int] = None
    cmpg_points: int = 1024
    up: int = 2
    val_fraction: float = 0.1
    synthetic_classes: int = 10
    synthetic_train_per_class: int = 30
    synthetic_test_per_class: int = 50
    synthetic_scan: bool = False
    synthetic_rescan: bool = False
    max_train: Optional[int] = None
    recipe: str = DEFAULT_RECIPE
    w_fe: Optional[float] = None
    w_ce: Optional[float] = None
    w_kd: Optional[float] = None
    w_align: Optional[float] = None
    align_center: Optional[bool] = None
    temperature: Optional[float] = None
    w_proj: Optional[float] = None
    detach_teacher_logits: Optional[bool] = None
    warmup_epochs: Optional[float] = None
    device: str = "auto"
    precision: str = "32"
    compile: bool = False
    select: str = "val_oa"
    out: str = "runs/modelnet40"
    resume: bool = False
    workers: int = 0
    seed: int = 0
    progress: bool = True
    stages: Sequence[str] = ("baseline", "pointcmt")
    protocol: str = "scratch"
    finetune_epochs: Optional[int] = None
    finetune_lr: Optional[float] = None

    def student_epochs(self) -> int:
        r"""Epochs of the PointCMT student: ``epochs`` from scratch,
        ``finetune_epochs`` in the fine-tune protocol."""
        if self.protocol == "finetune":
            return self.finetune_epochs if self.finetune_epochs is not None else max(
                1, (self.epochs or 0) // 2)
        return self.epochs

    def uses_cmpg(self) -> bool:
        r"""Whether stage III needs a CMPG: only the feature enhancement
        (``w_fe > 0``, on a :meth:`resolved` config) uses one."""
        return self.w_fe is not None and self.w_fe > 0

    def settings(self, stage: str) -> Dict[str, Any]:
        r"""The settings a finished ``stage`` was trained with (and those of
        the stages it builds on); ``resume`` reuses a stage only when they
        are unchanged."""
        keys = list(STAGE_SETTINGS["data"])
        if stage in ("teacher", "cmpg", "pointcmt"):
            keys += STAGE_SETTINGS["teacher"]
        if stage in ("cmpg", "pointcmt"):
            keys += STAGE_SETTINGS["cmpg"]
        if stage in ("baseline", "baseline_ft", "pointcmt"):
            keys += STAGE_SETTINGS["baseline"]
        if stage in ("baseline_ft", "pointcmt"):
            keys += ["protocol"] + (["finetune_epochs", "finetune_lr"]
                                    if self.protocol == "finetune" else [])
        if stage == "pointcmt":
            keys += STAGE_SETTINGS["pointcmt"]
        if self.precision != "32":   # recorded only when used: float32 runs keep their settings
            keys.append("precision")
        if self.view_channels != "depth" and stage in ("teacher", "cmpg", "pointcmt"):
            keys.append("view_channels")   # likewise: depth-view runs keep their settings
        if self.w_align and stage == "pointcmt":
            keys.append("w_align")         # likewise: runs without the alignment term keep theirs
            if self.align_center:
                keys.append("align_center")
        if self.teacher_folds != 1 and stage == "pointcmt":
            keys.append("teacher_folds")   # likewise: runs without cross-fitting keep theirs
        if self.select != "val_oa" and stage in ("baseline", "baseline_ft", "pointcmt"):
            keys.append("select")    # likewise: runs selected on val_oa keep their settings
        if self.data == "synthetic" and self.synthetic_scan:
            keys.append("synthetic_scan")      # likewise: runs on whole surfaces keep theirs
            if self.synthetic_rescan and stage in ("baseline", "baseline_ft", "pointcmt"):
                keys.append("synthetic_rescan")
        return {k: getattr(self, k) for k in keys}

    def resolved(self) -> "PipelineConfig":
        r"""A copy with the data-dependent defaults filled in and checked."""
        synthetic = self.data == "synthetic"
        cfg = dataclasses.replace(
            self,
            epochs=self.epochs if self.epochs is not None else (16 if synthetic else 50),
            num_points=(self.num_points if self.num_points is not None
                        else (512 if synthetic else 1024)),
            batch_size=(self.batch_size if self.batch_size is not None
                        else (16 if synthetic else 32)),
            teacher_epochs=(self.teacher_epochs if self.teacher_epochs is not None
                            else (5 if synthetic else 30)),
            cmpg_epochs=(self.cmpg_epochs if self.cmpg_epochs is not None
                         else (10 if synthetic else 50)),
            stages=tuple(self.stages))
        if cfg.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {cfg.protocol!r}")
        from .train.trainer import PRECISIONS
        if cfg.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {cfg.precision!r}")
        view_channel_names(cfg)      # raises, naming view_channels
        if cfg.select not in STUDENT_SELECT:
            raise ValueError(f"select must be one of {STUDENT_SELECT}, got {cfg.select!r}")
        if cfg.finetune_epochs is None:
            cfg = dataclasses.replace(cfg, finetune_epochs=max(1, cfg.epochs // 2))
        if cfg.finetune_lr is None:
            cfg = dataclasses.replace(cfg, finetune_lr=cfg.lr / 10)
        if isinstance(cfg.finetune_epochs, bool) or not isinstance(cfg.finetune_epochs, int) \
                or cfg.finetune_epochs < 1:
            raise ValueError(f"finetune_epochs must be a positive int, got {cfg.finetune_epochs!r}")
        if not cfg.finetune_lr > 0:
            raise ValueError(f"finetune_lr must be > 0, got {cfg.finetune_lr!r}")
        for name in ("epochs", "teacher_epochs", "cmpg_epochs"):
            value = getattr(cfg, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        for name in ("num_points", "batch_size", "teacher_batch_size", "num_views",
                     "image_size", "cmpg_points", "synthetic_classes",
                     "synthetic_train_per_class", "synthetic_test_per_class"):
            value = getattr(cfg, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("synthetic_scan", "synthetic_rescan"):
            if not isinstance(getattr(cfg, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(cfg, name)!r}")
        if cfg.synthetic_rescan and not cfg.synthetic_scan:
            raise ValueError("synthetic_rescan needs synthetic_scan (the student's points are scans)")
        if cfg.teacher_points is not None and (isinstance(cfg.teacher_points, bool) or not isinstance(cfg.teacher_points, int) or cfg.teacher_points < 1):
            raise ValueError(f"teacher_points must be a positive int or None, got {cfg.teacher_points!r}")
        if isinstance(cfg.teacher_folds, bool) or not isinstance(cfg.teacher_folds, int) \
                or cfg.teacher_folds < 1:
            raise ValueError(f"teacher_folds must be an int >= 1 (1: no cross-fitting), "
                             f"got {cfg.teacher_folds!r}")
        if cfg.teacher_fold_epochs is not None and (
                isinstance(cfg.teacher_fold_epochs, bool)
                or not isinstance(cfg.teacher_fold_epochs, int) or cfg.teacher_fold_epochs < 1):
            raise ValueError(f"teacher_fold_epochs must be a positive int or None, "
                             f"got {cfg.teacher_fold_epochs!r}")
        if cfg.up not in (0, 1, 2):
            raise ValueError(f"up must be an axis 0, 1 or 2, got {cfg.up!r}")
        if not 0 < cfg.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {cfg.val_fraction!r}")
        from .nn.recipes import get_recipe
        recipe = get_recipe(cfg.recipe)          # ValueError naming `recipe`
        cfg = dataclasses.replace(
            cfg, **{name: getattr(recipe, name) for name in
                    ("w_fe", "w_ce", "w_kd", "w_align", "align_center", "temperature", "w_proj",
                     "detach_teacher_logits")
                    if getattr(cfg, name) is None},
            warmup_epochs=(recipe.warmup_fraction * cfg.student_epochs()
                           if cfg.warmup_epochs is None else cfg.warmup_epochs))
        for name in ("w_fe", "w_ce", "w_kd", "w_align", "w_proj", "warmup_epochs"):
            if not getattr(cfg, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(cfg, name)!r}")
        if not cfg.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {cfg.temperature!r}")
        if not isinstance(cfg.align_center, bool):
            raise ValueError(f"align_center must be a bool, got {cfg.align_center!r}")
        if cfg.detach_teacher_logits is True and not cfg.w_proj > 0:
            # Checked here, before stages I and II run, rather than when the
            # distiller is built (only then are the feature sizes known).
            raise ValueError("detach_teacher_logits needs w_proj > 0 (it trains the "
                             "teacher-to-student projection the KL no longer reaches)")
        if cfg.max_train is not None and cfg.max_train < 2:
            raise ValueError(f"max_train must be >= 2, got {cfg.max_train!r}")
        unknown = set(cfg.stages) - {"baseline", "pointcmt"}
        if unknown or not cfg.stages:
            raise ValueError(f"stages must be a non-empty subset of ('baseline', 'pointcmt'), "
                             f"got {list(cfg.stages)!r}")
        from .models import list_models
        if cfg.model.strip().lower().replace("-", "_") not in list_models():
            raise ValueError(f"unknown model {cfg.model!r}; known: {', '.join(list_models())}")
        return cfg


class DropAttributes(BaseTransform):
    r"""Removes attributes from each ``Data`` (by default the mesh, which is
    only needed for rendering and which PyG would offset wrongly when
    batching ``mesh_face``)."""

    def __init__(self, keys: Sequence[str] = MESH_KEYS) -> None:
        self.keys = tuple(keys)

    def forward(self, data: Data) -> Data:
        for key in self.keys:
            if key in data:
                del data[key]
        return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self.keys)})"


def _log(msg: str) -> None:
    print(f"[pointcmt] {msg}", flush=True)


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available here")
    return dev


def _is_modelnet_off(root: Path) -> bool:
    if (root / "raw").is_dir():
        return True
    for base in [root] + [root / f"ModelNet{n}" for n in ("10", "40")]:
        if base.is_dir() and next(base.glob("*/train/*.off"), None) is not None:
            return True
    return False


def _modelnet_name(root: Path) -> str:
    for base in (root / "raw", root, root / "ModelNet40", root / "ModelNet10"):
        if base.is_dir():
            classes = [p for p in base.iterdir() if p.is_dir() and (p / "train").is_dir()]
            if classes:
                return "40" if len(classes) > 10 else "10"
    return "10"


def warmup_steps(epochs: float, num_train: int, batch_size: int) -> int:
    r"""Training forwards in ``epochs`` epochs of ``num_train`` shapes at
    ``batch_size`` per process (the distiller counts its own forwards)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    per_epoch = math.ceil(num_train / max(1, world) / batch_size)
    return int(round(epochs * per_epoch))


def distiller_kwargs(cfg: PipelineConfig, num_train: int) -> Dict[str, Any]:
    r"""The :class:`~pointcmt_pyg.nn.CrossModalDistiller` arguments of a run
    (recipe, weights, warm-up in steps, teacher features from the cache): the
    one place the pipeline and the console script build them."""
    cfg = cfg.resolved()
    return dict(recipe=cfg.recipe, w_fe=cfg.w_fe, w_ce=cfg.w_ce, w_kd=cfg.w_kd, w_align=cfg.w_align,
                align_center=cfg.align_center,
                temperature=cfg.temperature, w_proj=cfg.w_proj,
                detach_teacher_logits=cfg.detach_teacher_logits,
                warmup_steps=warmup_steps(cfg.warmup_epochs, num_train, cfg.batch_size),
                teacher_source="cache")


def load_data(cfg: PipelineConfig, for_teacher: bool = False
              ) -> Tuple[Any, Optional[Any], List[str], str]:
    r"""Loads the training split and, when present, the test split.

    Args:
        cfg (PipelineConfig): The settings.
        for_teacher (bool): Load the clouds the teacher's views are projected
            from: ``cfg.teacher_points`` points (``None``: all stored points)
            instead of ``cfg.num_points``. Same samples, ``sample_id`` and
            order, so the same validation carve.

    Returns:
        ``(train, test or None, class_names, description)``.
    """
    cfg = cfg.resolved()
    if for_teacher and _is_point_folder(cfg):
        cfg = dataclasses.replace(cfg, num_points=cfg.teacher_points)
    from .datasets import ModelNet, PointCloudFolder, SyntheticShapes, stratified_split, subset
    from .datasets import dataset_labels
    if cfg.data == "synthetic":
        kw = dict(num_classes=cfg.synthetic_classes, num_points=cfg.num_points, seed=cfg.seed,
                  scan=cfg.synthetic_scan)
        train = SyntheticShapes("train", samples_per_class=cfg.synthetic_train_per_class, **kw)
        test = SyntheticShapes("test", samples_per_class=cfg.synthetic_test_per_class, **kw)
        desc = (f"SyntheticShapes ({cfg.synthetic_classes} classes, "
                + ("single-view scans, " if cfg.synthetic_scan else "")
                + f"{len(train)} train / {len(test)} test, embedded)")
    else:
        root = Path(cfg.data).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"--data {cfg.data!r}: no such directory (use 'synthetic', "
                                    "a ModelNet .off folder or a <class>/<split>/ point folder)")
        if _is_modelnet_off(root):
            name = _modelnet_name(root)
            train = ModelNet(root, name=name, train=True, num_points=cfg.num_points, download=False)
            try:
                test = ModelNet(root, name=name, train=False, num_points=cfg.num_points,
                                download=False)
            except (FileNotFoundError, ValueError, RuntimeError):
                test = None
            desc = f"ModelNet{name} meshes at {root}"
        else:
            train = PointCloudFolder(root, "train", num_points=cfg.num_points, sampling="random",
                                     seed=cfg.seed, in_memory=True)
            has_test = any(p.is_dir() for p in root.glob("*/test"))
            test = (PointCloudFolder(root, "test", num_points=cfg.num_points, sampling="random",
                                     seed=cfg.seed, in_memory=True, classes=train.classes)
                    if has_test else None)
            desc = f"PointCloudFolder {root}"
        desc += f" ({len(train)} train" + (f" / {len(test)} test)" if test is not None
                                            else ", no test split)")
    if test is not None and len(test) == 0:
        test = None
    if cfg.max_train is not None and cfg.max_train < len(train):
        keep, _ = stratified_split(dataset_labels(train), 1 - cfg.max_train / len(train),
                                   cfg.seed)
        train = subset(train, keep)
        desc += f", training subset of {len(train)}"
    classes = list(getattr(train, "classes", None) or [])
    if not classes:
        labels = dataset_labels(train)
        classes = [str(c) for c in range(int(max(labels)) + 1)]
    return train, test, classes, desc


def _is_point_folder(cfg: PipelineConfig) -> bool:
    r"""Whether ``cfg.data`` is a point-cloud folder (no meshes to render)."""
    if cfg.data == "synthetic":
        return False
    root = Path(cfg.data).expanduser()
    return root.is_dir() and not _is_modelnet_off(root)


def view_channel_names(cfg: PipelineConfig) -> Tuple[str, ...]:
    r"""``cfg.view_channels`` as a tuple of channel names (checked)."""
    from .render.points import CHANNELS, _check_channels
    value = cfg.view_channels
    names = tuple(n.strip() for n in value.split(",")) if isinstance(value, str) else value
    try:
        return _check_channels(names)
    except ValueError:
        raise ValueError(f"view_channels must be comma-separated names from {tuple(CHANNELS)} "
                         f"without repeats, got {value!r}") from None


def num_view_planes(cfg: PipelineConfig) -> int:
    r"""Input planes of the teacher for ``cfg.view_channels`` (``"normal"`` is three)."""
    from .render.points import CHANNELS
    return sum(CHANNELS[name] for name in view_channel_names(cfg))


def teacher_transforms(cfg: PipelineConfig, out: Optional[Path] = None,
                       cache_dir: Optional[Path] = None) -> BaseTransform:
    r"""Views for the teacher: meshes when the sample has one, else the points;
    rendered once into ``cache_dir`` (default ``out/views``) and reused."""
    from .render import RenderViews
    if cache_dir is None and out is not None:
        cache_dir = Path(out) / "views"
    return Compose([RenderViews(cfg.num_views, cfg.image_size, up=cfg.up, cache_dir=cache_dir,
                                channels=view_channel_names(cfg)),
                    DropAttributes(), NormalizeScale()])


def prerender_views(transform: BaseTransform, parts: Sequence[Tuple[str, Any]],
                    progress: bool = True) -> Tuple[int, int]:
    r"""Renders the views of every sample of ``parts`` (``(name, dataset)``
    pairs; ``None`` datasets skipped) that the cache of ``transform`` (from
    :func:`teacher_transforms` with a cache) lacks, in batches
    (:meth:`~pointcmt_pyg.render.RenderViews.prerender`). The views are
    rendered from the samples as stored, without the datasets' own
    transforms, as the teacher's transform sees them.

    Returns:
        ``(rendered, already cached)`` sample counts.
    """
    renderer = transform.transforms[0]
    rendered = total = 0
    for name, dataset in parts:
        if dataset is None:
            continue
        raw = _with_transform(dataset, None)
        rendered += renderer.prerender(raw, progress=progress, desc=f"render {name}")
        total += len(raw)
    return rendered, total - rendered


def student_transforms(train: bool, extra: Sequence[BaseTransform] = (), rescan: bool = False) -> BaseTransform:
    r"""Student input: the mesh dropped, centred and scaled into the unit
    sphere (as PyG's examples, whose radii assume it), plus, for training,
    anisotropic scaling and a shift (the usual ModelNet augmentation) and,
    with ``rescan``, a new single-view scan of the mesh first
    (:class:`~pointcmt_pyg.datasets.RandomScan`)."""
    from .datasets import RandomScale, RandomScan, RandomShift
    steps: List[BaseTransform] = [RandomScan()] if (train and rescan) else []
    steps += [DropAttributes(MESH_KEYS + ("complete_pos",)), NormalizeScale(), *extra]
    if train:
        steps += [RandomScale((2.0 / 3.0, 1.5)), RandomShift(0.2)]
    return Compose(steps)


def _with_transform(dataset: Any, transform: Optional[BaseTransform]) -> Any:
    view = dataset.index_select(list(range(len(dataset))))
    view.transform = transform
    return view


def _write_json(path: Path, obj: Any) -> None:
    from .train import atomic_write_text
    atomic_write_text(json.dumps(obj, indent=2, default=_json_default), path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class _Skip(Exception):
    pass


def _write_done(stage_dir: Path, done: Dict[str, Any], main: bool) -> None:
    from .train import distributed as D
    if main:
        _write_json(stage_dir / "done.json", done)
    D.barrier()


def _read_done(stage_dir: Path, resume: bool, settings: Optional[Dict[str, Any]] = None,
               log: Any = None) -> Optional[Dict[str, Any]]:
    r"""A finished stage's ``done.json`` when resuming and its recorded
    settings match ``settings``; ``None`` means (re)train it."""
    if not resume or not _resume_allowed(stage_dir, settings, log):
        return None
    path = stage_dir / "done.json"
    if path.is_file():
        return json.loads(path.read_text())
    return None


def _resume_allowed(stage_dir: Path, settings: Optional[Dict[str, Any]], log: Any) -> bool:
    r"""Whether the artifacts in ``stage_dir`` (finished or interrupted) were
    made with ``settings``. A stage with other settings is retrained from
    scratch (the stages after it follow, as their settings include its own)."""
    path = stage_dir / "settings.json"
    if settings is None or not path.is_file():
        return True
    saved = json.loads(path.read_text())
    now = json.loads(json.dumps(settings, default=_json_default))
    if saved == now:
        return True
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k, "?") != now.get(k, "?"))
    if log is not None:
        log(f"{stage_dir.name}: settings changed since it was trained ("
            + ", ".join(f"{k}: {saved.get(k, '-')!r} -> {now.get(k, '-')!r}" for k in changed)
            + f"); retraining {stage_dir.name} and the stages that build on it")
    return False


def _start_stage(stage_dir: Path, settings: Dict[str, Any], resume: bool, main: bool,
                 log: Any) -> bool:
    r"""Records ``settings`` before a stage trains; returns whether its
    trainer may continue from an interrupted checkpoint (same settings)."""
    may_resume = resume and _resume_allowed(stage_dir, settings, None)
    if main:
        stage_dir.mkdir(parents=True, exist_ok=True)
        if not may_resume:
            for name in ("last.pt", "best.pt", "done.json"):
                (stage_dir / name).unlink(missing_ok=True)
        _write_json(stage_dir / "settings.json", settings)
    return may_resume


def _epoch_seconds(history: Any) -> Optional[float]:
    times = [r.get("epoch_seconds") for r in getattr(history, "records", history)]
    times = [t for t in times if t is not None]
    return float(sum(times) / len(times)) if times else None


@torch.no_grad()
def evaluate_classifier(model: torch.nn.Module, loader: Optional[Any], device: Any,
                        num_classes: int) -> Optional[Dict[str, Any]]:
    r"""OA, mAcc, the confusion matrix and the per-sample ``correct`` flags
    (bool ``[N]``, in the loader's order) of ``model(batch) -> logits`` on
    ``loader``, in eval mode. Two models scored on the same unshuffled loader
    can be compared sample by sample
    (:func:`~pointcmt_pyg.train.mcnemar_exact`). ``None`` for no loader."""
    if loader is None:
        return None
    from .train import confusion_matrix, mean_class_accuracy, overall_accuracy
    was_training = model.training
    model.eval().to(device)
    conf = torch.zeros(num_classes, num_classes, dtype=torch.long)
    correct = []
    for batch in loader:
        batch = batch.to(device)
        logits = model(batch)
        logits = getattr(logits, "logits", logits)
        pred, target = logits.argmax(-1).cpu(), batch.y.view(-1).cpu()
        conf += confusion_matrix(pred, target, num_classes)
        correct.append(pred == target)
    model.train(was_training)
    return {"oa": overall_accuracy(conf), "macc": mean_class_accuracy(conf),
            "num_samples": int(conf.sum()), "confusion": conf.tolist(),
            "correct": torch.cat(correct) if correct else torch.zeros(0, dtype=torch.bool)}


def _summary(res: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    if res is None:
        return None
    return {k: v for k, v in res.items() if k not in ("confusion", "correct")}


def paired_comparison(correct_pointcmt: Any, correct_reference: Any, split: str) -> Dict[str, Any]:
    r"""The exact McNemar test of the PointCMT student against its reference
    (the baseline, or the plain fine-tune) on the same ``split`` shapes."""
    from .train import mcnemar_exact
    test = mcnemar_exact(correct_pointcmt, correct_reference)
    return {"split": split, "num_samples": test["num_samples"],
            "only_pointcmt": test["only_a"], "only_reference": test["only_b"],
            "p_value": test["p_value"]}


def _fmt_pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def format_table(results: Dict[str, Any]) -> str:
    r"""The side-by-side table of a :func:`run_pipeline` result."""
    split = "test" if results.get("has_test") else "val"
    rows = [("stage", "val OA", "val mAcc", f"{split} OA", f"{split} mAcc", "s/epoch")]
    finetune = "baseline_ft" in results["stages"]
    for key, label in (("teacher", "teacher (images)"), ("baseline", f"{results['model']}"),
                       ("baseline_ft", f"{results['model']} + plain fine-tune"),
                       ("pointcmt", f"{results['model']} + PointCMT"
                                    + (" fine-tune" if finetune else "")
                                    + (f" (recipe {results['recipe']})" if results.get("recipe")
                                       else ""))):
        r = results["stages"].get(key)
        if r is None:
            continue
        ev = r.get("test") if split == "test" else r.get("val")
        rows.append((label, _fmt_pct(r["val"]["oa"]), _fmt_pct(r["val"]["macc"]),
                     _fmt_pct(ev["oa"]) if ev else "-", _fmt_pct(ev["macc"]) if ev else "-",
                     "-" if r.get("epoch_seconds") is None else f"{r['epoch_seconds']:.1f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    b, p = results["stages"].get("baseline"), results["stages"].get("pointcmt")
    t = results["stages"].get("teacher")
    if t and b and t.get("val") and b.get("val"):
        lines.append(f"teacher - baseline: {100 * (t['val']['oa'] - b['val']['oa']):+.2f} OA "
                     "(val split; the teacher must be ahead to teach)")
    fold_teachers = results["stages"].get("teacher_folds")
    if fold_teachers:
        lines.append(f"{len(fold_teachers)} cross-fitted teachers (out-of-fold KD targets): val OA "
                     + " / ".join(_fmt_pct(f["val"]["oa"]) if f.get("val") else "-"
                                  for f in fold_teachers))
    if finetune:
        b = results["stages"].get("baseline_ft")
    if b and p:
        key = split
        if b.get(key) and p.get(key):
            ref = "plain fine-tune" if finetune else "baseline"
            lines.append(f"PointCMT - {ref}: {100 * (p[key]['oa'] - b[key]['oa']):+.2f} OA, "
                         f"{100 * (p[key]['macc'] - b[key]['macc']):+.2f} mAcc ({key} split)")
            paired = results.get("paired")
            if paired and paired.get("split") == key:
                lines.append(format_paired(paired, ref))
    return "\n".join(lines)


def format_paired(paired: Dict[str, Any], reference: str = "baseline") -> str:
    r"""One line on a :func:`paired_comparison`: the discordant shapes and the
    exact McNemar p-value, read out for someone deciding whether to trust it."""
    verdict = ("beyond chance at the 5 % level" if paired["p_value"] < 0.05 else
               "within what chance alone gives on this many shapes")
    return (f"paired on {paired['num_samples']} {paired['split']} shapes: "
            f"{paired['only_pointcmt']} right only with PointCMT, {paired['only_reference']} "
            f"only with the {reference}; McNemar exact p = {paired['p_value']:.3g} ({verdict}; "
            "other training seeds vary more, RESULTS.md)")


class TeacherNotBetterWarning(UserWarning):
    r"""The image teacher is not more accurate than the plain student it is
    meant to teach (PointCMT cannot give the student what the teacher lacks)."""


def teacher_margin(teacher_oa: float, baseline_oa: float, split: str = "val",
                   warn: bool = True) -> float:
    r"""The teacher's OA minus the plain student's (fractions), with a loud
    :class:`TeacherNotBetterWarning` when it is not positive.

    Both are measured on the same shapes (the validation carve, never the test
    split, is what the pipeline passes).
    """
    margin = float(teacher_oa) - float(baseline_oa)
    if warn and margin <= 0:
        import warnings
        msg = (f"THE TEACHER IS NOT BETTER THAN THE STUDENT IT TEACHES: teacher {100 * teacher_oa:.2f}"
               f" vs plain student {100 * baseline_oa:.2f} {split} OA ({100 * margin:+.2f}). "
               "PointCMT cannot give what the teacher lacks: train the teacher longer "
               "(--teacher-epochs), on more views (--num-views) or larger images (--image-size).")
        print("\n" + "!" * 79 + f"\n[pointcmt] WARNING: {msg}\n" + "!" * 79 + "\n",
              file=sys.stderr, flush=True)
        warnings.warn(msg, TeacherNotBetterWarning, stacklevel=2)
    return margin


def run_pipeline(cfg: PipelineConfig,
                 data: Optional[Tuple[Any, Optional[Any], List[str], str]] = None
                 ) -> Dict[str, Any]:
    r"""Runs the whole recipe (see the module docstring) and returns the
    results (also written to ``cfg.out/results.json``).

    Args:
        cfg (PipelineConfig): The settings.
        data (tuple, optional): Ready datasets ``(train, test or None,
            class_names, description)`` used instead of :func:`load_data`
            (e.g. :class:`~pointcmt_pyg.datasets.ScanObjectNN`; each sample
            needs ``pos``, ``y`` and a stable ``sample_id``).
    """
    if cfg.progress:
        return _run_pipeline(cfg, data)
    with bars_disabled():                    # no bars; per-epoch lines stay
        return _run_pipeline(cfg, data)


@contextlib.contextmanager
def bars_disabled() -> Iterator[None]:
    r"""No tqdm progress bars inside (``TQDM_DISABLE=1``), while the trainers,
    called with ``progress=True``, still print one line per epoch: what
    ``--no-progress`` means in the pipeline and in every console command."""
    previous = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = previous


def student_compile(cfg: PipelineConfig) -> Any:
    r"""The students' ``compile`` argument of :func:`~pointcmt_pyg.train.train_student`
    for ``cfg`` (``False``, or the :func:`torch.compile` arguments)."""
    return {"dynamic": True} if cfg.compile else False


def _run_pipeline(cfg: PipelineConfig, data: Optional[Tuple[Any, Optional[Any], List[str], str]]
                  ) -> Dict[str, Any]:
    from .datasets import AttachImageFeatures, FeatureCache, compute_teacher_features
    from .datasets import train_val_split
    from .models import get_model
    from .nn import CMPG, CrossModalDistiller, load_cmpg
    from .render import save_montage
    from .train import (History, plot_confusion_matrix, plot_training_curves, seed_everything,
                        train_cmpg, train_student)

    from .train import distributed as D
    cfg = cfg.resolved()
    device = _resolve_device(cfg.device)
    if (int(os.environ.get("WORLD_SIZE", "1") or 1) > 1) and not D.is_distributed():
        # Under torchrun: every stage trains with DDP on its shard; rank 0
        # writes the artifacts, the others wait for them and read them.
        device = D.init_distributed(device=device.type).device
    main = D.is_main_process()
    out = Path(cfg.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    if main:
        _write_json(out / "config.json", dataclasses.asdict(cfg))

    full_train, test, classes, desc = load_data(cfg) if data is None else data
    train, val = train_val_split(full_train, cfg.val_fraction, cfg.seed)
    log = _log if main else (lambda msg: None)
    log(f"data: {desc}; {len(train)} train / {len(val)} val (carved from train, seed "
        f"{cfg.seed}); device {device}; out {out}"
        + (f"; {D.get_world_size()} processes" if D.is_distributed() else ""))
    num_classes = len(classes)
    # Without bars the trainer still prints one line per epoch.
    common = dict(device=device, seed=cfg.seed, num_workers=cfg.workers, progress=True,
                  resume=cfg.resume, precision=cfg.precision)
    results: Dict[str, Any] = {"model": cfg.model, "recipe": cfg.recipe, "data": desc,
                               "has_test": test is not None,
                               "num_classes": num_classes, "classes": classes,
                               "train_size": len(train), "val_size": len(val),
                               "test_size": None if test is None else len(test),
                               "stages": {}}
    histories: Dict[str, Any] = {}

    # Stages I and II serve the PointCMT student only: a baseline-only run
    # (stages=("baseline",), the CLI's --only baseline) trains neither.
    teacher_trained = cmpg_trained = False
    if "pointcmt" in cfg.stages:
        # ------------------------------------------------------------ stage I
        teacher, done, teacher_trained, train_v, val_v = _stage_teacher(
            cfg, data, train, val, test, out, common, device, num_classes, main, log)
        histories["teacher"] = History.from_dict(done["history"])
        results["stages"]["teacher"] = {k: done.get(k) for k in ("val", "test", "epoch_seconds")}
        try:
            if not main:
                raise _Skip
            sample = train_v[0]
            save_montage(sample.views[0], out / "views_montage.png",
                         title=f"{classes[int(sample.y)]}: {cfg.num_views} views the teacher sees")
        except _Skip:
            pass
        except Exception as exc:  # a picture must never fail a run
            log(f"montage skipped: {exc}")

        # ------------------------- cross-fitted teachers (teacher_folds > 1)
        folds: List[Tuple[torch.nn.Module, Any]] = []
        folds_trained = False
        if cfg.teacher_folds > 1:
            folds, fold_dones, folds_trained = _stage_teacher_folds(
                cfg, data, train, val, test, out, common, device, num_classes, main, log, train_v)
            results["stages"]["teacher_folds"] = [
                {k: d.get(k) for k in ("val", "test", "epoch_seconds")} for d in fold_dones]

        # ------------------------------------------------- teacher features
        feat_path = out / "teacher_features.pt"
        stale = teacher_trained or folds_trained or not (cfg.resume and feat_path.is_file())
        if not stale and FeatureCache.load(feat_path).metadata.get(
                "teacher_folds", 1) != cfg.teacher_folds:
            stale = True
            log(f"teacher features: recomputing ({feat_path} was made with other teacher_folds)")
        if stale:
            if main:
                log("caching teacher features of the training split (train + val)"
                    + (f", with out-of-fold logits of {cfg.teacher_folds} teachers"
                       if folds else ""))
                cache = compute_teacher_features(
                    teacher, _concat(train_v, val_v), batch_size=cfg.teacher_batch_size,
                    device=device, progress=cfg.progress, with_logits=bool(folds),
                    metadata={"teacher": str(out / "teacher" / "teacher.pt"),
                              "teacher_folds": cfg.teacher_folds})
                if folds:
                    cache = out_of_fold_logits(cache, folds, cfg.teacher_batch_size, device,
                                               cfg.progress)
                cache.save(feat_path)
            D.barrier()
        cache = FeatureCache.load(feat_path)
        attach = AttachImageFeatures(cache)

        # ------------------------------------------------------------ stage II
        # Only the feature enhancement uses the CMPG: recipes without it
        # ("aligned", "kd") skip the stage and its cost.
        if cfg.uses_cmpg():
            stage_dir = out / "cmpg"
            settings = cfg.settings("cmpg")
            done = None if teacher_trained else _read_done(stage_dir, cfg.resume, settings, log)
            if done is not None:
                cmpg = load_cmpg(stage_dir / "cmpg.pt").to(device)
                log(f"cmpg: reusing {stage_dir / 'cmpg.pt'}")
            else:
                common["resume"] = _start_stage(stage_dir, settings, cfg.resume and not teacher_trained,
                                                main, log)
                log(f"stage II: CMPG ({teacher.feat_dim} -> {cfg.cmpg_points} points, "
                    f"{cfg.cmpg_epochs} epochs)")
                seed_everything(cfg.seed)
                cmpg = CMPG(teacher.feat_dim, num_points=cfg.cmpg_points)
                t_cmpg = Compose([DropAttributes(), attach])
                res = train_cmpg(cmpg, _with_transform(train, t_cmpg), _with_transform(val, t_cmpg),
                                 epochs=cfg.cmpg_epochs, batch_size=cfg.batch_size, out_dir=stage_dir,
                                 **common)
                cmpg = res.model
                cmpg_trained = True
                done = {"val_emd": res.history.best_metric,
                        "epoch_seconds": _epoch_seconds(res.history), "history": res.history.to_dict()}
                _write_done(stage_dir, done, main)
            histories["cmpg"] = History.from_dict(done["history"])
            results["stages"]["cmpg"] = {"val_emd": done["val_emd"],
                                         "epoch_seconds": done["epoch_seconds"]}
        else:
            cmpg = None
            log("stage II: skipped (w_fe = 0: the recipe uses no CMPG)")

    # ----------------------------------------------------------- stage III
    val_s = _with_transform(val, student_transforms(False))
    test_loader = (DataLoader(_with_transform(test, student_transforms(False)),
                              batch_size=cfg.batch_size) if test is not None else None)
    val_loader = DataLoader(val_s, batch_size=cfg.batch_size)
    finetune = cfg.protocol == "finetune"
    runs = ("baseline", "baseline_ft", "pointcmt") if finetune else ("baseline", "pointcmt")
    upstream_retrained = {"baseline": False}
    correct_by_run: Dict[str, Optional[str]] = {}
    for run in runs:
        # Fine-tuning needs the converged baseline, whatever `stages` says.
        wanted = run in cfg.stages or (finetune and (
            run == "baseline" or (run == "baseline_ft" and "baseline" in cfg.stages)))
        if not wanted:
            continue
        stage_dir = out / run
        seed_everything(cfg.seed)               # same initial student in both runs
        student = get_model(cfg.model, num_classes)
        settings = cfg.settings(run)
        retrain_upstream = (run == "pointcmt" and (
            teacher_trained or cmpg_trained or folds_trained)) or (
            finetune and run != "baseline" and upstream_retrained["baseline"])
        done = None if retrain_upstream else _read_done(stage_dir, cfg.resume, settings, log)
        if run == "baseline":
            upstream_retrained["baseline"] = done is None
        if done is not None:
            student.load_state_dict(torch.load(stage_dir / "student.pt", map_location="cpu"))
            student.to(device)
            log(f"{run}: reusing {stage_dir / 'student.pt'}")
        else:
            common["resume"] = _start_stage(stage_dir, settings,
                                            cfg.resume and not retrain_upstream, main, log)
            epochs, lr = cfg.epochs, cfg.lr
            if finetune and run != "baseline":
                # Both fine-tune arms start from the selected baseline weights.
                student.load_state_dict(torch.load(out / "baseline" / "student.pt",
                                                   map_location="cpu"))
                epochs, lr = cfg.finetune_epochs, cfg.finetune_lr
            if run != "pointcmt":
                model, train_s = student, _with_transform(train, student_transforms(True, rescan=cfg.synthetic_rescan))
            else:
                model = CrossModalDistiller(student, teacher, cmpg,
                                            **distiller_kwargs(cfg, len(train)))
                train_s = _with_transform(train, student_transforms(True, [attach], rescan=cfg.synthetic_rescan))
            log(f"stage III: {cfg.model} {RUN_LABELS[run]} ({epochs} epochs"
                + (f" from the baseline, lr {lr:g}" if finetune and run != "baseline" else "")
                + f", {cfg.num_points} points)")
            res = train_student(model, train_s, val_s, epochs=epochs,
                                batch_size=cfg.batch_size, lr=lr, out_dir=stage_dir,
                                num_classes=num_classes, select=cfg.select,
                                compile=student_compile(cfg), **common)
            student = res.model.student if run == "pointcmt" else res.model
            test_res = evaluate_classifier(student, test_loader, device, num_classes)
            val_res = evaluate_classifier(student, val_loader, device, num_classes)
            done = {"val": _summary(val_res), "test": _summary(test_res),
                    "confusion": (test_res or val_res)["confusion"],
                    # per-shape right/wrong on the reported split, for the paired test
                    "correct": "".join("1" if c else "0"
                                       for c in (test_res or val_res)["correct"].tolist()),
                    "epoch_seconds": _epoch_seconds(res.history),
                    "history": res.history.to_dict()}
            if main:         # what `pointcmt-pyg evaluate --weights .../student.pt` reads
                _write_json(stage_dir / "student_config.json",
                            {"model": cfg.model, "num_classes": num_classes, "classes": classes,
                             "num_points": cfg.num_points, "data": cfg.data,
                             "pointcmt": run == "pointcmt", "val_oa": done["val"]["oa"]})
            _write_done(stage_dir, done, main)
        histories[run] = History.from_dict(done["history"])
        results["stages"][run] = {k: done[k] for k in ("val", "test", "epoch_seconds")}
        correct_by_run[run] = done.get("correct")     # None in runs finished before it was kept
        if run == "baseline" and main:
            teacher_val = results["stages"].get("teacher", {}).get("val")
            if teacher_val and done.get("val"):
                results["teacher_margin_val"] = teacher_margin(teacher_val["oa"],
                                                               done["val"]["oa"], "val")
        try:
            if not main:
                raise _Skip
            split = "test" if test is not None else "val"
            plot_confusion_matrix(torch.tensor(done["confusion"]), out / f"confusion_{run}.png",
                                  class_names=classes,
                                  title=f"{cfg.model} {RUN_LABELS[run]} ({split})")
        except _Skip:
            pass
        except Exception as exc:
            log(f"confusion plot skipped: {exc}")

    reference = "baseline_ft" if "baseline_ft" in correct_by_run else "baseline"
    ours, theirs = correct_by_run.get("pointcmt"), correct_by_run.get(reference)
    if ours and theirs and len(ours) == len(theirs):
        results["paired"] = paired_comparison([c == "1" for c in ours], [c == "1" for c in theirs],
                                              "test" if test is not None else "val")
    if not main:
        return results
    try:
        plot_training_curves({k: v for k, v in histories.items() if k != "cmpg"},
                             out / "training_curves.png",
                             title=f"PointCMT on {desc.split(' (')[0]}")
    except Exception as exc:
        log(f"curve plot skipped: {exc}")
    results["wall_seconds"] = time.time() - t_start
    results["table"] = format_table(results)
    _write_json(out / "results.json", results)
    print()
    print(results["table"])
    print(f"\nwall time {results['wall_seconds'] / 60:.1f} min; artifacts in {out}")
    return results


def run_teacher_stage(cfg: PipelineConfig, views_dir: Optional[Path] = None) -> Dict[str, Any]:
    r"""Runs stage I of the pipeline alone, with the same code as
    :func:`run_pipeline`: loads ``cfg.data``, carves the validation split,
    renders (or reuses) the views under ``cfg.out/views`` and trains the
    teacher into ``cfg.out/teacher`` (reused when ``cfg.resume`` and its
    settings are unchanged). For comparing teacher settings
    (``bench/teacher_cost.py``) without training a CMPG and students.

    Args:
        cfg (PipelineConfig): The settings (the student's are unused).
        views_dir (Path, optional): The view cache (default ``cfg.out/views``);
            one cache serves every view setting, each in its own sub-folder.

    Returns:
        ``{"val": {...}, "test": {...} or None, "epoch_seconds": float,
        "history": {...}}``, the stage's ``done.json``.
    """
    from .datasets import train_val_split
    cfg = cfg.resolved()
    device = _resolve_device(cfg.device)
    out = Path(cfg.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    full_train, test, classes, _ = load_data(cfg)
    train, val = train_val_split(full_train, cfg.val_fraction, cfg.seed)
    common = dict(device=device, seed=cfg.seed, num_workers=cfg.workers, progress=True,
                  resume=cfg.resume, precision=cfg.precision)
    _, done, _, _, _ = _stage_teacher(cfg, None, train, val, test, out, common, device,
                                      len(classes), True, _log, views_dir=views_dir)
    return done


def _stage_teacher_folds(cfg: PipelineConfig, data: Any, train: Any, val: Any, test: Any,
                         out: Path, common: Dict[str, Any], device: torch.device,
                         num_classes: int, main: bool, log: Any, train_v: Any
                         ) -> Tuple[List[Tuple[torch.nn.Module, Any]], List[Dict[str, Any]], bool]:
    r"""The cross-fitted teachers of ``cfg.teacher_folds``: the training
    carve is dealt into stratified folds (:func:`~pointcmt_pyg.datasets.stratified_folds`,
    seeded by ``cfg.seed``), and teacher ``k`` is trained by
    :func:`_stage_teacher` on every fold but ``k`` into ``out/teacher_fold{k}``
    (reused when resuming with the same settings).

    Returns:
        ``([(teacher_k, held_out_views_k), ...], [done_k, ...], any_trained)``,
        where ``held_out_views_k`` are the views of fold ``k``'s shapes and
        ``done_k`` teacher ``k``'s scores (as :func:`_stage_teacher`).
    """
    from .datasets import dataset_labels, stratified_folds, subset
    fold_of = stratified_folds(dataset_labels(train), cfg.teacher_folds, cfg.seed)
    # As many optimizer steps as the main teacher, on (K-1)/K of its data.
    fold_cfg = dataclasses.replace(cfg, teacher_epochs=fold_epochs(cfg))
    folds: List[Tuple[torch.nn.Module, Any]] = []
    dones: List[Dict[str, Any]] = []
    trained = False
    for k in range(cfg.teacher_folds):
        fit_idx = (fold_of != k).nonzero().flatten()
        log(f"stage I: cross-fitted teacher {k + 1}/{cfg.teacher_folds} "
            f"({fit_idx.numel()} of {len(train)} training shapes)")
        teacher_k, done_k, trained_k, _, _ = _stage_teacher(
            fold_cfg, data, train, val, test, out, common, device, num_classes, main, log,
            train_idx=fit_idx, stage_name=f"teacher_fold{k}",
            extra_settings={"teacher_folds": cfg.teacher_folds, "fold": k})
        trained = trained or trained_k
        dones.append(done_k)
        folds.append((teacher_k, subset(train_v, (fold_of == k).nonzero().flatten())))
    return folds, dones, trained


def fold_epochs(cfg: PipelineConfig) -> int:
    r"""Epochs of each cross-fitted teacher: ``cfg.teacher_fold_epochs``, or
    by default ``ceil(teacher_epochs * K / (K - 1))`` (the main teacher's
    number of optimizer steps on ``(K - 1) / K`` of its data)."""
    if cfg.teacher_fold_epochs is not None:
        return cfg.teacher_fold_epochs
    k = cfg.teacher_folds
    return max(1, math.ceil(cfg.teacher_epochs * k / max(1, k - 1)))


def out_of_fold_logits(cache: Any, folds: Sequence[Tuple[torch.nn.Module, Any]],
                       batch_size: int, device: Any, progress: bool = False) -> Any:
    r"""Replaces the logits of each fold's shapes in ``cache`` (a
    :class:`~pointcmt_pyg.datasets.FeatureCache` with logits) by those of
    the teacher that did not train on them.

    Args:
        cache (FeatureCache): Features and logits of the main teacher.
        folds: ``(teacher_k, held_out_views_k)`` pairs, as from
            :func:`_stage_teacher_folds`.

    Returns:
        FeatureCache: The same features, out-of-fold logits where a fold
        covers the shape (the main teacher's elsewhere).
    """
    from .datasets import FeatureCache, compute_teacher_features
    if cache.logits is None:
        raise ValueError("cache must hold logits (compute_teacher_features(..., with_logits=True))")
    logits = cache.logits.clone()
    row_of = {sample_id: row for row, sample_id in enumerate(cache.ids)}
    for teacher_k, held_out in folds:
        fold_cache = compute_teacher_features(teacher_k, held_out, batch_size=batch_size,
                                              device=device, progress=progress,
                                              with_logits=True)
        for sample_id, row_logits in zip(fold_cache.ids, fold_cache.logits):
            logits[row_of[sample_id]] = row_logits
    return FeatureCache.from_tensor(cache.ids, cache.features, cache.metadata, logits)


def _stage_teacher(cfg: PipelineConfig, data: Any, train: Any, val: Any, test: Any, out: Path,
                   common: Dict[str, Any], device: torch.device, num_classes: int, main: bool,
                   log: Any, views_dir: Optional[Path] = None,
                   train_idx: Optional[torch.Tensor] = None, stage_name: str = "teacher",
                   extra_settings: Optional[Dict[str, Any]] = None
                   ) -> Tuple[torch.nn.Module, Dict[str, Any], bool, Any, Any]:
    r"""Stage I of :func:`run_pipeline` (and of :func:`run_teacher_stage`):
    trains the teacher into ``out/<stage_name>`` (or reuses it when resuming
    with the same settings), on the training carve or, with ``train_idx``, on
    those shapes of it (a cross-fitted teacher). Returns ``(teacher, done,
    trained, train_views, val_views)``; ``done`` holds its validation and test
    scores."""
    from .datasets import train_val_split
    from .nn import MultiViewTeacher, load_teacher
    from .train import seed_everything, train_teacher
    common = dict(common)
    train_t, val_t, test_t = train, val, test
    if data is None and _is_point_folder(cfg) and cfg.teacher_points != cfg.num_points:
        # The views are projected from every stored point (or teacher_points),
        # not from the student's sparser sample: same shapes, ids and carve.
        full_train_t, test_t, _, _ = load_data(cfg, for_teacher=True)
        train_t, val_t = train_val_split(full_train_t, cfg.val_fraction, cfg.seed)
    t_views = teacher_transforms(cfg, out, cache_dir=views_dir)
    if main:
        rendered, cached = prerender_views(t_views, [("train", train_t), ("val", val_t),
                                                     ("test", test_t)], progress=cfg.progress)
        if rendered:
            log(f"views: {rendered} shapes rendered, {cached} already cached, in "
                f"{t_views.transforms[0].cache_dir}")
    from .train import distributed as D
    D.barrier()  # the other ranks read the views rank 0 rendered
    if train_idx is not None:
        from .datasets import subset
        train_t = subset(train_t, train_idx)
    train_v, val_v = _with_transform(train_t, t_views), _with_transform(val_t, t_views)
    stage_dir = out / stage_name
    settings = {**cfg.settings("teacher"), **(extra_settings or {})}
    done = _read_done(stage_dir, cfg.resume, settings, log)
    teacher_trained = done is None
    if done is not None:
        teacher = load_teacher(stage_dir / "teacher.pt").to(device)
        log(f"{stage_name}: reusing {stage_dir / 'teacher.pt'}")
    else:
        common["resume"] = _start_stage(stage_dir, settings, cfg.resume, main, log)
        log(f"stage I: teacher ({cfg.backbone}, {cfg.num_views} views of {cfg.image_size} px"
            f"{'' if cfg.view_channels == 'depth' else ' holding ' + cfg.view_channels}, "
            f"{cfg.teacher_epochs} epochs)")
        seed_everything(cfg.seed)
        teacher = MultiViewTeacher(num_classes, backbone=cfg.backbone,
                                   in_channels=num_view_planes(cfg))
        res = train_teacher(teacher, train_v, val_v, epochs=cfg.teacher_epochs,
                            batch_size=cfg.teacher_batch_size, lr=cfg.teacher_lr,
                            augment=cfg.teacher_augment, out_dir=stage_dir, **common)
        teacher = res.model
        wrapped = teacher_eval_wrapper(teacher)
        done = {"val": _summary(evaluate_classifier(wrapped, DataLoader(
                    val_v, batch_size=cfg.teacher_batch_size), device, num_classes)),
                "test": _summary(evaluate_classifier(wrapped, None if test_t is None else DataLoader(
                    _with_transform(test_t, t_views), batch_size=cfg.teacher_batch_size),
                    device, num_classes)),
                "epoch_seconds": _epoch_seconds(res.history), "history": res.history.to_dict()}
        _write_done(stage_dir, done, main)
    return teacher, done, teacher_trained, train_v, val_v


class _TeacherOnViews(torch.nn.Module):
    def __init__(self, teacher: torch.nn.Module) -> None:
        super().__init__()
        self.teacher = teacher

    def forward(self, batch: Any) -> torch.Tensor:
        return self.teacher(batch.views)


def teacher_eval_wrapper(teacher: torch.nn.Module) -> torch.nn.Module:
    r"""Wraps a view classifier so that it takes a PyG batch (for evaluation)."""
    return _TeacherOnViews(teacher)


def _concat(*datasets: Any) -> Any:
    from torch.utils.data import ConcatDataset
    return ConcatDataset(list(datasets))
