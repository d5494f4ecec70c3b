r"""The three training stages of PointCMT (`Yan et al., NeurIPS 2022
<https://arxiv.org/abs/2210.04208>`_), each a thin layer over
:class:`~pointcmt_pyg.train.Trainer`:

1. :func:`train_teacher`: the multi-view image classifier
   (:class:`~pointcmt_pyg.nn.MultiViewTeacher`) on rendered views, with
   label-smoothing cross-entropy, AdamW and a cosine schedule.
2. :func:`train_cmpg`: the cross-modal point generator
   (:class:`~pointcmt_pyg.nn.CMPG`) that turns a (frozen) teacher feature into
   a point cloud, trained with the Earth Mover's Distance against the shape's
   own points.
3. :func:`train_student`: the point model, plain (the baseline) or wrapped in
   :class:`~pointcmt_pyg.nn.CrossModalDistiller` (PointCMT).

Every stage selects its best epoch on the **validation** data given to it
(``val_set``), never on a test split: carve the validation set out of the
training split (:func:`pointcmt_pyg.datasets.train_val_split`) and evaluate
the test split once at the end (``result.trainer.evaluate(test_loader)``).

Each stage accepts datasets (batched here with a PyG ``DataLoader``, sharded
across ranks under ``torchrun``) or ready-made loaders, and returns a
:class:`StageResult` ``(model, history, trainer)`` with the selected weights
loaded. With ``out_dir`` it writes the trainer's checkpoints there (``resume=True``
continues a killed run) plus the stage's artifact: ``teacher.pt``
(:func:`~pointcmt_pyg.nn.save_teacher`), ``cmpg.pt``
(:func:`~pointcmt_pyg.nn.save_cmpg`) or ``student.pt`` (the plain student's
``state_dict``).

Defaults follow the official code where it is explicit (Adam(W) at ``1e-3``,
weight decay ``1e-4``, cosine schedule; CMPG loss: mean over points of the
square root of the per-point squared EMD distance, after bounding-box
normalisation of both clouds, selected on the lowest validation EMD).
"""
import math
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader as TorchDataLoader

from . import distributed as D
from .checkpoint import atomic_save
from .trainer import History, Trainer, check_labels, default_step

__all__ = ["StageResult", "train_teacher", "train_cmpg", "train_student",
           "build_optimizer", "cosine_schedule", "resample_points", "cmpg_targets"]

PathLike = Union[str, Path]
OPTIMIZERS = ("adamw", "adam", "sgd")


class StageResult(NamedTuple):
    r"""What a stage returns: the trained ``model`` (best validation state
    loaded), its :class:`~pointcmt_pyg.train.History` and the
    :class:`~pointcmt_pyg.train.Trainer` (for ``trainer.evaluate(test_loader)``)."""
    model: nn.Module
    history: History
    trainer: Trainer


# ------------------------------------------------------------------ helpers
def _check_positive(name: str, value: Any, kind: type = int, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a{'n int' if kind is int else ' number'} {bound}, "
                         f"got {value!r}")


def _as_loader(data: Any, name: str, batch_size: int, shuffle: bool, seed: int,
               num_workers: int, drop_last: bool = False) -> Optional[Iterable]:
    if data is None:
        return None
    if isinstance(data, TorchDataLoader):
        return data
    if hasattr(data, "__len__") and hasattr(data, "__getitem__"):
        if len(data) == 0:
            raise ValueError(f"{name} is empty")
        return D.make_loader(data, batch_size=batch_size, shuffle=shuffle, seed=seed,
                             num_workers=num_workers, drop_last=drop_last,
                             evaluation=not shuffle)
    raise TypeError(f"{name} must be a dataset (len and indexing) or a DataLoader, "
                    f"got {type(data).__name__}")


def build_optimizer(params: Iterable[nn.Parameter], name: str = "adamw", lr: float = 1e-3,
                    weight_decay: float = 1e-4, momentum: float = 0.9) -> torch.optim.Optimizer:
    r"""``"adamw"`` (decoupled weight decay), ``"adam"`` (L2 as the official
    code) or ``"sgd"`` (with ``momentum``) over the parameters that require grad."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    _check_positive("lr", lr, float)
    _check_positive("weight_decay", weight_decay, float, allow_zero=True)
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameter")
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def cosine_schedule(optimizer: torch.optim.Optimizer, epochs: int, loader: Any,
                    grad_accum: int = 1, min_lr_ratio: float = 0.01
                    ) -> Tuple[torch.optim.lr_scheduler.LRScheduler, str]:
    r"""A cosine decay from the optimizer's ``lr`` to ``min_lr_ratio * lr``
    over the run, stepped every optimizer step when the loader has a length
    (``"step"``), else every epoch. Returns ``(scheduler, interval)``."""
    if not 0 <= min_lr_ratio <= 1:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio!r}")
    eta_min = optimizer.param_groups[0]["lr"] * min_lr_ratio
    try:
        steps = math.ceil(len(loader) / grad_accum)
    except TypeError:
        steps = None
    if steps:
        total = max(1, epochs * steps)
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total,
                                                          eta_min=eta_min), "step"
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs),
                                                      eta_min=eta_min), "epoch"


def _run(model: nn.Module, step_fn: Callable, train_loader: Any, val_loader: Any, *,
         epochs: int, lr: float, weight_decay: float, optimizer: str, grad_accum: int,
         device: Any, out_dir: Optional[PathLike], seed: int, resume: Any, progress: bool,
         compile: Any, select: str, loss_fn: Optional[Callable] = None,
         params: Optional[Iterable[nn.Parameter]] = None, num_classes: Optional[int] = None,
         max_grad_norm: Optional[float] = None, min_lr_ratio: float = 0.01,
         precision: str = "32") -> StageResult:
    _check_positive("epochs", epochs, allow_zero=True)
    _check_positive("grad_accum", grad_accum)
    opt = build_optimizer(model.parameters() if params is None else params, optimizer, lr,
                          weight_decay)
    scheduler, interval = cosine_schedule(opt, epochs, train_loader, grad_accum, min_lr_ratio)
    trainer = Trainer(model, opt, loss_fn=loss_fn, step_fn=step_fn, scheduler=scheduler,
                      device=device, grad_accum=grad_accum, compile=compile, out_dir=out_dir,
                      seed=seed, progress=progress, num_classes=num_classes,
                      scheduler_interval=interval, max_grad_norm=max_grad_norm, precision=precision)
    history = trainer.fit(train_loader, val_loader, epochs=epochs, select=select, resume=resume)
    return StageResult(trainer.model, history, trainer)


def _num_classes_of(model: nn.Module) -> Optional[int]:
    head = getattr(model, "head", None)
    out = getattr(head, "out_features", None)
    return int(out) if isinstance(out, int) else None


# ------------------------------------------------------------------ stage I
def _views_of(batch: Any, in_channels: Optional[int]) -> Tensor:
    views = getattr(batch, "views", None)
    if views is None:
        raise ValueError("the batch has no `views`: render the shapes first (each sample "
                         "holds views as [1, V, C, H, W]; see pointcmt_pyg.render)")
    num = getattr(batch, "num_graphs", None)
    if not isinstance(views, Tensor) or views.dim() != 5 or (
            isinstance(num, int) and views.size(0) != num):
        shape = tuple(views.shape) if isinstance(views, Tensor) else type(views).__name__
        raise ValueError(f"views must be [B, V, C, H, W] with B = {num} shapes, got {shape} "
                         "(store each sample's views as [1, V, C, H, W] so they batch along "
                         "a new first dimension)")
    if isinstance(in_channels, int) and views.size(2) != in_channels:
        raise ValueError(f"views have {views.size(2)} channels, the teacher takes {in_channels}")
    return views


def augment_views(views: Tensor, max_shift: int = 4,
                  generator: Optional[torch.Generator] = None) -> Tensor:
    r"""Image augmentation of a batch of multi-view renderings
    ``[B, V, C, H, W]``: each shape's views are mirrored left-right with
    probability 1/2 (all its views together: the image of the mirrored
    shape) and shifted by the same random offset of up to ``max_shift``
    pixels in x and y (zero padding, as the empty background). Draws from
    torch's RNG (or ``generator``), so seeded runs and resumes repeat.
    """
    if views.dim() != 5:
        raise ValueError(f"views must be [B, V, C, H, W], got {tuple(views.shape)}")
    if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
        raise ValueError(f"max_shift must be an int >= 0, got {max_shift!r}")
    B, H, W = views.size(0), views.size(-2), views.size(-1)
    flip = torch.rand(B, generator=generator) < 0.5
    shifts = torch.randint(-max_shift, max_shift + 1, (B, 2), generator=generator)
    out = torch.where(flip.view(B, 1, 1, 1, 1).to(views.device), views.flip(-1), views)
    if max_shift == 0:
        return out
    padded = F.pad(out, (max_shift,) * 4)
    rows = []
    for b in range(B):
        dy, dx = (max_shift + int(shifts[b, 0]), max_shift + int(shifts[b, 1]))
        rows.append(padded[b, ..., dy:dy + H, dx:dx + W])
    return torch.stack(rows)


def teacher_step(model: nn.Module, batch: Any, label_smoothing: float = 0.1,
                 in_channels: Optional[int] = None,
                 augment: bool = False) -> Tuple[Tensor, Tensor, Tensor]:
    r"""One teacher batch: ``logits = model(batch.views)``, label-smoothing CE
    against ``batch.y``; with ``augment`` (training mode only) the views go
    through :func:`augment_views` first."""
    views = _views_of(batch, in_channels)
    if augment and model.training:
        views = augment_views(views)
    logits = model(views)
    labels = check_labels(batch.y, logits)
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing), logits, labels


def train_teacher(teacher: nn.Module, train_set: Any, val_set: Any = None, *, epochs: int = 30,
                  batch_size: int = 16, lr: float = 1e-3, weight_decay: float = 1e-4,
                  label_smoothing: float = 0.1, grad_accum: int = 1, optimizer: str = "adamw",
                  device: Any = None, out_dir: Optional[PathLike] = None, seed: int = 0,
                  num_workers: int = 0, resume: Any = None, progress: bool = True,
                  compile: Any = False, select: str = "val_oa",
                  min_lr_ratio: float = 0.01, augment: bool = False,
                  precision: str = "32") -> StageResult:
    r"""Stage I: trains the multi-view image teacher on rendered views.

    Args:
        teacher (nn.Module): ``forward(views[B, V, C, H, W]) -> logits [B, C]``
            (e.g. :class:`~pointcmt_pyg.nn.MultiViewTeacher`).
        train_set: Dataset or loader of ``Data`` with ``views`` ``[1, V, C, H, W]``
            per sample and ``y``.
        val_set: Validation data for model selection (never the test split).
        epochs, batch_size, lr, weight_decay, grad_accum: The usual; the cosine
            schedule decays to ``min_lr_ratio * lr``.
        label_smoothing (float): PyTorch-style smoothing of the CE target.
        optimizer (str): ``"adamw"``, ``"adam"`` or ``"sgd"``.
        device, out_dir, seed, num_workers, resume, progress, compile, select, precision:
            See :class:`~pointcmt_pyg.train.Trainer` and its ``fit``.
        augment (bool): Mirror and shift the training views
            (:func:`augment_views`). (default: ``False``)

    Returns:
        StageResult: With ``out_dir``, also writes ``out_dir/teacher.pt`` on
        rank 0: :func:`~pointcmt_pyg.nn.teacher.save_teacher` for a
        ``MultiViewTeacher`` (reload with ``load_teacher``), else the
        ``state_dict``.
    """
    if not isinstance(teacher, nn.Module):
        raise TypeError(f"teacher must be an nn.Module, got {type(teacher).__name__}")
    if not 0 <= label_smoothing < 1:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    _check_positive("batch_size", batch_size)
    train_loader = _as_loader(train_set, "train_set", batch_size, True, seed, num_workers)
    val_loader = _as_loader(val_set, "val_set", batch_size, False, seed, num_workers)
    in_channels = getattr(teacher, "in_channels", None)
    step = partial(teacher_step, label_smoothing=label_smoothing, augment=bool(augment),
                   in_channels=in_channels if isinstance(in_channels, int) else None)
    result = _run(teacher, step, train_loader, val_loader, epochs=epochs, lr=lr,
                  weight_decay=weight_decay, optimizer=optimizer, grad_accum=grad_accum,
                  device=device, out_dir=out_dir, seed=seed, resume=resume, progress=progress,
                  compile=compile, select=select, num_classes=_num_classes_of(teacher),
                  loss_fn=partial(F.cross_entropy, label_smoothing=label_smoothing),
                  min_lr_ratio=min_lr_ratio, precision=precision)
    if out_dir is not None and D.is_main_process():
        _save_artifact(result.model, Path(out_dir) / "teacher.pt", "teacher")
    return result


def _save_artifact(model: nn.Module, path: Path, kind: str) -> None:
    r"""``save_teacher``/``save_cmpg`` (config + weights, loadable with
    ``load_teacher``/``load_cmpg``) for the package's classes; a plain
    ``state_dict`` (atomic) for other modules."""
    try:
        if kind == "teacher":
            from ..nn.teacher import MultiViewTeacher as cls, save_teacher as save
        else:
            from ..nn.cmpg import CMPG as cls, save_cmpg as save
    except ImportError:  # pragma: no cover - the module is not there
        cls = save = None
    if cls is not None and isinstance(model, cls):
        save(model, path)
    else:
        atomic_save(model.state_dict(), path)


# ------------------------------------------------------------------ stage II
def resample_points(pos: Tensor, num_points: int) -> Tensor:
    r"""Deterministically brings one cloud ``[N, 3]`` to ``num_points`` points:
    unchanged when ``N == num_points``; farthest point sampling from point 0
    (:func:`pointcmt_pyg.ops.fps_dense`, ``random_start=False``) when larger;
    cyclic repetition (``i mod N``) when smaller, which keeps the EMD target's
    mass spread over the same points."""
    if not isinstance(pos, Tensor) or pos.dim() != 2 or pos.size(1) != 3 or pos.size(0) == 0:
        shape = tuple(pos.shape) if isinstance(pos, Tensor) else type(pos).__name__
        raise ValueError(f"pos must be a non-empty [N, 3] tensor, got {shape}")
    _check_positive("num_points", num_points)
    n = pos.size(0)
    if n == num_points:
        return pos
    if n < num_points:
        return pos[torch.arange(num_points, device=pos.device) % n]
    from ..ops import fps_dense
    idx = fps_dense(pos.unsqueeze(0), num_points, random_start=False)[0]
    return pos[idx]


def cmpg_targets(pos: Tensor, batch: Optional[Tensor], num_points: int,
                 num_graphs: Optional[int] = None) -> Tensor:
    r"""The CMPG training target of a PyG batch: every shape's points,
    bounding-box normalised (:func:`pointcmt_pyg.datasets.transforms.normalize_bbox`:
    centre ``(min + max) / 2``, divide by the largest extent) and resampled
    with :func:`resample_points` to ``[B, num_points, 3]``."""
    from ..datasets.transforms import normalize_bbox
    if batch is None:
        batch = torch.zeros(pos.size(0), dtype=torch.long, device=pos.device)
    num = int(batch.max()) + 1 if num_graphs is None else int(num_graphs)
    counts = torch.bincount(batch, minlength=num).tolist()
    if 0 in counts:
        raise ValueError(f"shape {counts.index(0)} of the batch has no point")
    order = torch.argsort(batch, stable=True)
    clouds = torch.split(pos[order], counts)
    if all(c == counts[0] for c in counts) and counts[0] >= num_points:
        dense = torch.stack(clouds)                        # fast path: one batched FPS
        if counts[0] > num_points:
            from ..ops import fps_dense
            idx = fps_dense(dense, num_points, random_start=False)
            dense = torch.gather(dense, 1, idx.unsqueeze(-1).expand(-1, -1, 3))
        return normalize_bbox(dense)
    return normalize_bbox(torch.stack([resample_points(c, num_points) for c in clouds]))


def cmpg_step(model: nn.Module, batch: Any, teacher: Optional[nn.Module] = None,
              sqrt: bool = True, loss_weight: float = 1.0) -> Tuple[Tensor, None, None]:
    r"""One CMPG batch: ``loss_weight * emd_loss(normalize_bbox(CMPG(f)),
    target, sqrt=sqrt)`` where ``f`` is ``batch.img_feat`` or, without it,
    ``teacher.features(batch.views)`` (no gradient), and the target is
    :func:`cmpg_targets` of ``batch.pos``, or of ``batch.complete_pos``
    (``[B, N, 3]``, the whole surface) when the batch has it, as
    single-view scans do (the teacher's views show the whole shape)."""
    from ..datasets.transforms import normalize_bbox
    from ..ops import emd_loss
    feat = getattr(batch, "img_feat", None)
    num = getattr(batch, "num_graphs", None)
    if feat is None:
        if teacher is None:
            raise ValueError("the batch has no img_feat (cached teacher features) and no "
                             "teacher was given to compute them from views")
        views = _views_of(batch, getattr(teacher, "in_channels", None))
        first = next(teacher.parameters(), None)
        if first is not None and first.device != views.device:
            teacher.to(views.device)          # follows the trainer's device once
        teacher.eval()
        with torch.no_grad():
            feat = teacher.features(views)
    if not isinstance(feat, Tensor) or feat.dim() != 2 or (isinstance(num, int)
                                                             and feat.size(0) != num):
        shape = tuple(feat.shape) if isinstance(feat, Tensor) else type(feat).__name__
        raise ValueError(f"teacher features must be [B, D] with B = {num}, got {shape} "
                         "(each sample holds img_feat as [1, D])")
    pred = model(feat.detach())
    if not isinstance(pred, Tensor) or pred.dim() != 3 or pred.size(-1) != 3:
        shape = tuple(pred.shape) if isinstance(pred, Tensor) else type(pred).__name__
        raise ValueError(f"the CMPG must return points [B, P, 3], got {shape}")
    complete = getattr(batch, "complete_pos", None)
    if isinstance(complete, Tensor):       # [B, N, 3]: the whole surface of a partial cloud
        if complete.dim() != 3 or complete.size(0) != pred.size(0) or complete.size(-1) != 3:
            raise ValueError(f"complete_pos must be [B, N, 3] with B = {pred.size(0)} (each "
                             f"sample holds [1, N, 3]), got {tuple(complete.shape)}")
        n = complete.size(1)
        target = cmpg_targets(complete.reshape(-1, 3),
                              torch.arange(pred.size(0), device=complete.device).repeat_interleave(n),
                              pred.size(1), num_graphs=pred.size(0))
    else:
        target = cmpg_targets(batch.pos, getattr(batch, "batch", None), pred.size(1),
                              num_graphs=pred.size(0))
    loss = emd_loss(normalize_bbox(pred), target.to(pred.dtype), reduction="mean", sqrt=sqrt)
    return loss_weight * loss, None, None


def train_cmpg(cmpg: nn.Module, train_set: Any, val_set: Any = None, *,
               teacher: Optional[nn.Module] = None, epochs: int = 50, batch_size: int = 32,
               lr: float = 1e-3, weight_decay: float = 1e-4, sqrt: bool = True,
               loss_weight: float = 1.0, grad_accum: int = 1, optimizer: str = "adamw",
               device: Any = None, out_dir: Optional[PathLike] = None, seed: int = 0,
               num_workers: int = 0, resume: Any = None, progress: bool = True,
               compile: Any = False, min_lr_ratio: float = 0.01,
               precision: str = "32") -> StageResult:
    r"""Stage II: trains the cross-modal point generator.

    The loss is the Earth Mover's Distance (:func:`pointcmt_pyg.ops.emd_loss`)
    between ``CMPG(teacher feature)`` and the shape's own points, both
    normalised by :func:`~pointcmt_pyg.datasets.transforms.normalize_bbox`
    (each cloud by its own box: centre ``(min + max) / 2``, divide by the
    largest extent), the target brought to the CMPG's ``P`` points with
    :func:`resample_points`. With ``sqrt=True`` (official) it is the mean over
    points of the distance to the matched point; ``loss_weight`` scales it
    (the official code uses 30, which AdamW makes nearly irrelevant).
    Selection: the lowest validation EMD.

    Args:
        cmpg (nn.Module): ``[B, D] -> [B, P, 3]`` (e.g. :class:`~pointcmt_pyg.nn.CMPG`).
        train_set: Dataset or loader of ``Data`` with ``pos``, and ``img_feat``
            ``[1, D]`` (cached teacher features, see
            :mod:`pointcmt_pyg.datasets.features`) or ``views`` plus ``teacher``.
        val_set: Validation data (never the test split).
        teacher (nn.Module, optional): Frozen teacher with ``.features(views)``
            for batches without ``img_feat``; kept in eval mode, no gradient.
        Other arguments: as :func:`train_teacher`.

    Returns:
        StageResult: With ``out_dir``, also ``out_dir/cmpg.pt``:
        :func:`~pointcmt_pyg.nn.cmpg.save_cmpg` for a ``CMPG`` (reload with
        ``load_cmpg``), else the ``state_dict``.
    """
    if not isinstance(cmpg, nn.Module):
        raise TypeError(f"cmpg must be an nn.Module, got {type(cmpg).__name__}")
    _check_positive("batch_size", batch_size)
    _check_positive("loss_weight", loss_weight, float)
    if teacher is not None:
        if not callable(getattr(teacher, "features", None)):
            raise TypeError("teacher must have a .features(views) method")
        d_t, d_c = getattr(teacher, "feat_dim", None), getattr(cmpg, "in_dim", None)
        if isinstance(d_t, int) and isinstance(d_c, int) and d_t != d_c:
            raise ValueError(f"teacher and CMPG feature sizes do not fit: teacher.feat_dim = "
                             f"{d_t}, cmpg.in_dim = {d_c}")
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    train_loader = _as_loader(train_set, "train_set", batch_size, True, seed, num_workers)
    val_loader = _as_loader(val_set, "val_set", batch_size, False, seed, num_workers)
    step = partial(cmpg_step, teacher=teacher, sqrt=sqrt, loss_weight=float(loss_weight))
    result = _run(cmpg, step, train_loader, val_loader, epochs=epochs, lr=lr,
                  weight_decay=weight_decay, optimizer=optimizer, grad_accum=grad_accum,
                  device=device, out_dir=out_dir, seed=seed, resume=resume, progress=progress,
                  compile=compile, select="val_loss", min_lr_ratio=min_lr_ratio,
                  precision=precision)
    if out_dir is not None and D.is_main_process():
        _save_artifact(result.model, Path(out_dir) / "cmpg.pt", "cmpg")
    return result


# ------------------------------------------------------------------ stage III
def _is_distiller(model: nn.Module) -> bool:
    try:
        from ..nn.distiller import CrossModalDistiller
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, CrossModalDistiller)


def train_student(model: nn.Module, train_set: Any, val_set: Any = None, *, epochs: int = 50,
                  batch_size: int = 32, lr: float = 1e-3, weight_decay: float = 1e-4,
                  label_smoothing: Optional[float] = None, grad_accum: int = 1,
                  optimizer: str = "adamw", device: Any = None,
                  out_dir: Optional[PathLike] = None, seed: int = 0, num_workers: int = 0,
                  resume: Any = None, progress: bool = True, compile: Any = False,
                  select: str = "val_oa", num_classes: Optional[int] = None,
                  max_grad_norm: Optional[float] = None,
                  min_lr_ratio: float = 0.01, precision: str = "32") -> StageResult:
    r"""Stage III: trains a point-cloud classifier, plain or with PointCMT.

    Args:
        model (nn.Module): A PyG classifier (``forward(batch) -> logits``), the
            baseline; or a :class:`~pointcmt_pyg.nn.CrossModalDistiller`
            wrapping one, whose training output carries the PointCMT loss
            (CE + feature + classifier enhancement) and whose trainable
            parameters are the student's and the projections' (teacher and
            CMPG stay frozen). Batches need ``img_feat`` or ``views`` then.
        train_set, val_set: Datasets or loaders of PyG ``Data``; selection on
            ``val_set`` only.
        label_smoothing (float, optional): Smoothing of the official-style CE
            (:func:`pointcmt_pyg.nn.losses.label_smoothing_cross_entropy`) of
            the plain model and of the validation loss. Default: the
            distiller's ``label_smoothing``, or ``0.2`` (official) for a plain
            model, so baseline and PointCMT optimise the same CE.
        Other arguments: as :func:`train_teacher`; ``max_grad_norm`` clips.

    Returns:
        StageResult: ``model`` is what was passed (the distiller, when one:
        its ``.student`` is the plain model). With ``out_dir``, also
        ``out_dir/student.pt``: the plain student's ``state_dict``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    _check_positive("batch_size", batch_size)
    from ..nn.losses import label_smoothing_cross_entropy
    distill = _is_distiller(model)
    if label_smoothing is None:
        label_smoothing = float(model.label_smoothing) if distill else 0.2
    if not 0 <= label_smoothing < 1:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    loss_fn = partial(label_smoothing_cross_entropy, smoothing=label_smoothing)
    train_loader = _as_loader(train_set, "train_set", batch_size, True, seed, num_workers)
    val_loader = _as_loader(val_set, "val_set", batch_size, False, seed, num_workers)
    params = model.trainable_parameters() if distill else model.parameters()
    result = _run(model, partial(default_step, loss_fn=loss_fn), train_loader, val_loader,
                  epochs=epochs, lr=lr, weight_decay=weight_decay, optimizer=optimizer,
                  grad_accum=grad_accum, device=device, out_dir=out_dir, seed=seed,
                  resume=resume, progress=progress, compile=compile, select=select,
                  loss_fn=loss_fn, params=params, num_classes=num_classes,
                  max_grad_norm=max_grad_norm, min_lr_ratio=min_lr_ratio, precision=precision)
    if out_dir is not None and D.is_main_process():
        student = model.student if distill else model
        atomic_save(student.state_dict(), Path(out_dir) / "student.pt")
    return result
