r"""One training loop for the three PointCMT stages (`paper
<https://arxiv.org/abs/2210.04208>`_): the image teacher, the cross-modal
point generator (CMPG) and the point-cloud student.

.. code-block:: python

    trainer = Trainer(model, torch.optim.AdamW(model.parameters()), out_dir="runs/x", seed=0)
    history = trainer.fit(train_loader, val_loader, epochs=100, resume=True)
    test = trainer.evaluate(test_loader)      # after fit; never used for selection

What it does:

* **Steps.** ``step_fn(model, batch) -> (loss, logits, labels)`` runs one
  batch (already moved to the device). The default handles a PyG
  ``Data``/``Batch`` (labels ``batch.y``) or an ``(inputs, labels)`` pair, and
  a model output that is either a logits tensor (loss: ``loss_fn(logits,
  labels)``) or an object with ``.logits`` and ``.loss`` such as
  :class:`~pointcmt_pyg.nn.DistillerOutput` (its ``loss`` when not ``None``).
  ``logits``/``labels`` may be ``None`` (e.g. the CMPG's point loss): then no
  accuracy is measured.
* **Metrics.** Per epoch: train loss and accuracy, validation loss, overall
  accuracy (OA) and mean class accuracy (mAcc), seconds; summed over ranks
  under ``torchrun`` (see :mod:`pointcmt_pyg.train.distributed`).
* **Selection on validation only.** The best state is chosen on the
  ``val_loader`` given to :meth:`Trainer.fit` (``select="val_oa"``,
  ``"val_macc"`` or ``"val_loss"``), never on a test set: pass a validation
  carve of the training split (e.g.
  :func:`pointcmt_pyg.datasets.train_val_split`) and evaluate the test split
  once, afterwards, with :meth:`Trainer.evaluate`. Without a ``val_loader``
  nothing is selected and the last epoch's state is kept.
* **Reproducible and resumable.** Every epoch starts by reseeding Python,
  NumPy and torch (all devices) and the loader's own generator from
  ``(seed, epoch, rank)``, and calls ``sampler.set_epoch(epoch)`` where the
  sampler has it. The shuffle order, worker seeds and dropout masks of an
  epoch therefore depend only on the seed and the epoch number, and
  ``fit(resume=...)`` continues a killed run from its last checkpoint to the
  same parameters as an uninterrupted run (bit for bit on CPU; on GPU as far as
  the kernels are deterministic).
* **Checkpoints** (rank 0 only, written atomically) in ``out_dir``:
  ``last.pt`` after every epoch (model, optimizer, scheduler, epoch, best
  metric and state, history, RNG states), ``best.pt`` (the selected model's
  ``state_dict`` with its epoch and metric) and ``history.json``.
"""
import contextlib
import json
import math
import random
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DistributedSampler

from .._progress import progress_bar
from . import distributed as D
from .checkpoint import atomic_save, atomic_write_text, load_checkpoint
from .cpu_memory import retain_freed_memory
from .metrics import MetricAccumulator

__all__ = ["Trainer", "History", "seed_everything", "epoch_seed", "default_step", "check_labels",
           "cpu_has_native_bf16", "CHECKPOINT_FORMAT", "SELECT_METRICS"]

CHECKPOINT_FORMAT = "pointcmt_pyg.trainer/1"
#: ``select=`` choices and whether larger is better.
#: ``"last"`` selects no epoch by a metric: the final epoch's state is kept.
SELECT_METRICS: Dict[str, bool] = {"val_oa": True, "val_macc": True, "val_loss": False,
                                   "last": True}

StepOutput = Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]
StepFn = Callable[[nn.Module, Any], StepOutput]


# ---------------------------------------------------------------------- seeds
def _check_seed(seed: Any, name: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{name} must be an int >= 0, got {seed!r}")
    return int(seed)


def seed_everything(seed: int) -> None:
    r"""Seeds Python's :mod:`random`, NumPy's global RNG and torch (CPU and
    every CUDA device). Call it before building a model to fix its init."""
    seed = _check_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    r"""The seed of one epoch on one rank: a hash of ``(seed, epoch, rank)``
    (NumPy ``SeedSequence``), a 63-bit int, the same on every machine."""
    state = np.random.SeedSequence([_check_seed(seed), int(epoch), int(rank)]).generate_state(
        2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & (2**63 - 1)


def _rng_state() -> Dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": (torch.cuda.get_rng_state_all() if torch.cuda.is_available()
                 and torch.cuda.is_initialized() else None),
        "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": [int(version), [int(v) for v in internal], gauss_next],
    }


def _set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached"]))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


# ---------------------------------------------------------------------- steps
def _is_pyg_data(obj: Any) -> bool:
    try:
        from torch_geometric.data.data import BaseData
        return isinstance(obj, BaseData)
    except ImportError:  # pragma: no cover
        return False


def _split_batch(batch: Any) -> Tuple[Any, Optional[Tensor]]:
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    if _is_pyg_data(batch):
        return batch, getattr(batch, "y", None)
    if isinstance(batch, dict) and "y" in batch:
        return batch, batch["y"]
    return batch, None


def _output_logits_loss(out: Any) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    if isinstance(out, Tensor):
        return out, None
    if hasattr(out, "logits"):
        return getattr(out, "logits"), getattr(out, "loss", None)
    raise TypeError(f"the model must return a logits tensor or an object with .logits "
                    f"(and .loss), got {type(out).__name__}; pass step_fn= for other outputs")


def default_step(model: nn.Module, batch: Any,
                 loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy) -> StepOutput:
    r"""The default step: ``out = model(inputs)`` on a PyG batch (labels
    ``batch.y``) or an ``(inputs, labels)`` pair.

    Returns:
        ``(loss, logits, labels)``: ``loss`` is ``out.loss`` when the output
        carries one, else ``loss_fn(logits, labels)`` (``None`` without labels).
    """
    inputs, labels = _split_batch(batch)
    out = model(inputs)
    logits, loss = _output_logits_loss(out)
    if labels is not None and logits is not None:
        labels = check_labels(labels, logits)
    if loss is None and labels is not None and logits is not None:
        loss = loss_fn(logits, labels)
    return loss, logits, labels


def check_labels(labels: Any, logits: Tensor) -> Tensor:
    r"""``labels`` as a flat long tensor after checking them against ``logits [B, C]``.

    Raises:
        TypeError: Labels that are not an integer tensor.
        ValueError: A count that differs from the batch, or a label outside ``0..C-1``.
    """
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels must be a tensor, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"logits must be a [B, C] tensor, got {shape}")
    labels = labels.reshape(-1).long()
    if labels.numel() != logits.size(0):
        raise ValueError(f"labels have {labels.numel()} entries but logits have "
                         f"{logits.size(0)} rows")
    if labels.numel() > 0:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= logits.size(1):
            raise ValueError(f"labels out of range: found {lo if lo < 0 else hi}, the model "
                             f"outputs {logits.size(1)} classes (0..{logits.size(1) - 1})")
    return labels


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, Tensor) or _is_pyg_data(obj):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, (list, tuple)):
        moved = [_to_device(v, device) for v in obj]
        return type(obj)(moved) if not hasattr(obj, "_fields") else type(obj)(*moved)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj


def _batch_size(batch: Any, labels: Optional[Tensor]) -> int:
    if labels is not None:
        return int(labels.numel())
    num = getattr(batch, "num_graphs", None)
    if isinstance(num, int):
        return num
    return 1


# -------------------------------------------------------------------- history
class History:
    r"""Per-epoch records of a :meth:`Trainer.fit` run.

    ``history.records`` is a list of dicts with keys ``epoch`` (1-based),
    ``train_loss``, ``train_acc``, ``val_loss``, ``val_oa``, ``val_macc``,
    ``lr``, ``epoch_seconds`` (training) and ``val_seconds`` (missing values
    are ``None``); ``history["val_oa"]`` gives one column as a list.
    ``best_epoch``/``best_metric`` are the selected epoch (1-based) and its
    value of ``select``.
    """

    KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_oa", "val_macc", "lr",
            "epoch_seconds", "val_seconds")

    def __init__(self, records: Optional[List[Dict[str, Any]]] = None, select: str = "val_oa",
                 best_epoch: Optional[int] = None, best_metric: Optional[float] = None) -> None:
        self.records: List[Dict[str, Any]] = [dict(r) for r in (records or [])]
        self.select = select
        self.best_epoch = best_epoch
        self.best_metric = best_metric

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        return iter(self.records)

    def __getitem__(self, key: Union[str, int]) -> Any:
        if isinstance(key, int):
            return self.records[key]
        if not isinstance(key, str):
            raise TypeError(f"key must be a column name or an int, got {type(key).__name__}")
        if self.records and key not in self.records[0]:
            raise KeyError(f"no column {key!r}; columns are {list(self.records[0])}")
        return [r.get(key) for r in self.records]

    def to_dict(self) -> Dict[str, Any]:
        return {"select": self.select, "best_epoch": self.best_epoch,
                "best_metric": self.best_metric, "records": [dict(r) for r in self.records]}

    @classmethod
    def from_dict(cls, state: Dict[str, Any]) -> "History":
        return cls(state.get("records"), state.get("select", "val_oa"),
                   state.get("best_epoch"), state.get("best_metric"))

    def save_json(self, path: Union[str, Path]) -> Path:
        r"""Writes :meth:`to_dict` as JSON atomically."""
        return atomic_write_text(json.dumps(self.to_dict(), indent=1), path)

    @classmethod
    def load_json(cls, path: Union[str, Path]) -> "History":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def __repr__(self) -> str:
        return (f"History(epochs={len(self)}, select={self.select!r}, "
                f"best_epoch={self.best_epoch}, best_metric={self.best_metric})")


# -------------------------------------------------------------------- trainer
def _fmt(value: Optional[float], pct: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.2f}%" if pct else f"{value:.4f}"


#: ``precision`` of :class:`Trainer`: the autocast dtype (``None``: plain float32).
PRECISIONS: Dict[str, Optional[torch.dtype]] = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}


def cpu_has_native_bf16() -> bool:
    r"""Whether this CPU computes bfloat16 convolutions and matmuls natively
    (AVX-512 BF16 or AMX, as oneDNN reports it).

    Without them, ``torch.autocast("cpu", dtype=torch.bfloat16)`` still runs,
    but oneDNN emulates bfloat16 and a training step becomes many times slower
    than in float32 (measured on a 2-core AVX2-only EPYC: the ResNet-18 teacher
    at ~60 s per batch in bf16 against ~2.2 s in float32, one thread each).
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
        return False


class Trainer:
    r"""Trains a model with a pluggable step function; see the module
    docstring for the behaviour.

    Args:
        model (nn.Module): The model (a plain classifier, a
            :class:`~pointcmt_pyg.nn.CrossModalDistiller`, a teacher, a CMPG).
            Moved to ``device``; wrapped in DDP when running distributed.
        optimizer (Optimizer): Built on ``model``'s parameters.
        loss_fn (callable, optional): ``loss_fn(logits, labels) -> scalar`` for
            outputs without their own loss (and for validation loss).
            (default: :func:`torch.nn.functional.cross_entropy`)
        step_fn (callable, optional): ``step_fn(model, batch) -> (loss,
            logits, labels)``; the batch is already on the device. In
            evaluation ``loss`` may be ``None`` (then ``loss_fn`` is used).
            (default: :func:`default_step` with ``loss_fn``)
        scheduler (LRScheduler, optional): Stepped every epoch, or every
            optimizer step with ``scheduler_interval="step"``.
        device (str or torch.device, optional): Default: ``cuda`` (this rank's
            GPU under ``torchrun``) when available, else ``cpu``.
        grad_accum (int): Batches whose gradients are accumulated per
            optimizer step; the loss is divided by the number of batches in the
            group, so a group of ``k`` batches of ``B`` equals one batch of
            ``kB`` (for per-sample-mean losses and equal batch sizes).
        compile (bool or dict): Run the forward through :func:`torch.compile`
            (a dict is passed as its keyword arguments). A model with a
            ``compile_targets()`` method (:class:`~pointcmt_pyg.nn.CrossModalDistiller`)
            has those submodules compiled in place instead.
        out_dir (str or Path, optional): Where checkpoints and
            ``history.json`` go (rank 0 only). ``None``: no files.
        seed (int): Base seed of the per-epoch reseeding.
        progress (bool): Show tqdm bars and a line per epoch (rank 0 only).
        num_classes (int, optional): For the confusion matrix; default: the
            width of the logits.
        scheduler_interval (str): ``"epoch"`` or ``"step"``.
        max_grad_norm (float, optional): Clip the gradient norm before each step.
        ddp_kwargs (dict, optional): Extra ``DistributedDataParallel`` arguments.
        precision (str): ``"32"`` (float32), ``"bf16"`` (forwards under
            ``torch.autocast`` in bfloat16, on CPU or CUDA) or ``"16"`` (float16
            autocast with a ``GradScaler``, whose state is checkpointed; meant
            for CUDA). Metrics are computed from float32 logits. (default: ``"32"``)
        reuse_cpu_memory (bool): When training on the CPU, keep freed blocks
            of up to 1 GiB in the process's heap for the next step instead of
            unmapping them (:func:`~pointcmt_pyg.train.cpu_memory.retain_freed_memory`,
            glibc only; process-wide): 1.4-2.1x faster PointNet++ MSG steps
            here, at the price of a resident memory that stays near its peak.
            (default: ``True``)
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
        step_fn: Optional[StepFn] = None,
        scheduler: Optional[Any] = None,
        device: Optional[Union[str, torch.device]] = None,
        grad_accum: int = 1,
        compile: Union[bool, Dict[str, Any]] = False,
        out_dir: Optional[Union[str, Path]] = None,
        seed: int = 0,
        progress: bool = True,
        num_classes: Optional[int] = None,
        scheduler_interval: str = "epoch",
        max_grad_norm: Optional[float] = None,
        ddp_kwargs: Optional[Dict[str, Any]] = None,
        precision: str = "32",
        reuse_cpu_memory: bool = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, "
                            f"got {type(optimizer).__name__}")
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
        if step_fn is not None and not callable(step_fn):
            raise TypeError(f"step_fn must be callable, got {type(step_fn).__name__}")
        if scheduler is not None and not callable(getattr(scheduler, "step", None)):
            raise TypeError(f"scheduler must have a .step() method, got {type(scheduler).__name__}")
        if isinstance(grad_accum, bool) or not isinstance(grad_accum, int) or grad_accum < 1:
            raise ValueError(f"grad_accum must be an int >= 1, got {grad_accum!r}")
        if not isinstance(compile, (bool, dict)):
            raise TypeError(f"compile must be a bool or a dict of torch.compile arguments, "
                            f"got {type(compile).__name__}")
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"scheduler_interval must be 'epoch' or 'step', "
                             f"got {scheduler_interval!r}")
        if max_grad_norm is not None and not (isinstance(max_grad_norm, (int, float))
                                              and max_grad_norm > 0):
            raise ValueError(f"max_grad_norm must be > 0 or None, got {max_grad_norm!r}")
        if num_classes is not None and (isinstance(num_classes, bool)
                                        or not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f"num_classes must be a positive int or None, got {num_classes!r}")
        if not isinstance(reuse_cpu_memory, bool):
            raise TypeError(f"reuse_cpu_memory must be a bool, got {type(reuse_cpu_memory).__name__}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.seed = _check_seed(seed)

        self.rank = D.get_rank()
        self.world_size = D.get_world_size()
        self.is_main = self.rank == 0
        if device is None:
            if torch.cuda.is_available():
                device = (torch.device("cuda", torch.cuda.current_device())
                          if D.is_distributed() else torch.device("cuda"))
            else:
                device = torch.device("cpu")
        self.device = torch.device(device)
        if reuse_cpu_memory and self.device.type == "cpu":
            retain_freed_memory(True)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={str(self.device)!r} but CUDA is not available")

        self.precision = precision
        # Mixed precision: forwards under torch.autocast; float16 also scales the loss
        # (a GradScaler) so that small gradients survive; bfloat16 needs no scaling.
        self._amp_dtype = PRECISIONS[precision]
        if precision == "bf16" and self.device.type == "cpu" and not cpu_has_native_bf16():
            warnings.warn("precision='bf16' on a CPU without native bfloat16 instructions (no AVX-512 "
                          "BF16 or AMX): oneDNN emulates them and training runs many times slower "
                          "than in float32; use precision='32' on this machine", RuntimeWarning,
                          stacklevel=2)
        self.scaler = (torch.amp.GradScaler(self.device.type) if precision == "16" else None)
        self.model = D.unwrap_model(model).to(self.device)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scheduler_interval = scheduler_interval
        self.loss_fn = loss_fn if loss_fn is not None else F.cross_entropy
        self.step_fn: StepFn = step_fn if step_fn is not None else partial(
            default_step, loss_fn=self.loss_fn)
        self.grad_accum = grad_accum
        self.max_grad_norm = None if max_grad_norm is None else float(max_grad_norm)
        self.num_classes = num_classes
        self.progress = bool(progress)
        self.out_dir = None if out_dir is None else Path(out_dir)

        self._ddp = D.wrap_model(self.model, self.device, **(ddp_kwargs or {}))
        compile_kwargs = compile if isinstance(compile, dict) else {}
        targets = getattr(self.model, "compile_targets", None)
        if compile is not False and callable(targets):
            # A wrapper that hooks a submodule in its forward (CrossModalDistiller):
            # its chosen submodules are compiled in place (state_dict unchanged).
            for module in targets():
                module.compile(**compile_kwargs)
            self._train_model, self._eval_model = self._ddp, self.model
        elif compile is not False:
            self._train_model = torch.compile(self._ddp, **compile_kwargs)
            self._eval_model = (self._train_model if self._ddp is self.model
                                else torch.compile(self.model, **compile_kwargs))
        else:
            self._train_model = self._ddp
            self._eval_model = self.model

        self.history = History()
        self.epoch = 0  # completed epochs
        self.best_state: Optional[Dict[str, Tensor]] = None

    # ----------------------------------------------------------- state
    def state_dict(self) -> Dict[str, Any]:
        r"""Everything needed to resume: see the module docstring."""
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "seed": self.seed,
            "world_size": self.world_size,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "history": self.history.to_dict(),
            "best_metric": self.history.best_metric,
            "best_epoch": self.history.best_epoch,
            "best_model": self.best_state,
            "rng": _rng_state(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        r"""Restores a :meth:`state_dict` (model, optimizer, scheduler, epoch,
        best state, history and RNG states)."""
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"not a trainer checkpoint (format "
                             f"{state.get('format') if isinstance(state, dict) else None!r}, "
                             f"expected {CHECKPOINT_FORMAT!r})")
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as error:
            raise ValueError(f"the checkpoint's model does not fit this model: {error}") from None
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as error:
            raise ValueError(f"the checkpoint's optimizer does not fit this optimizer: "
                             f"{error}") from None
        if self.scheduler is not None:
            if state.get("scheduler") is None:
                raise ValueError("this trainer has a scheduler but the checkpoint has none")
            self.scheduler.load_state_dict(state["scheduler"])
        if state.get("seed") != self.seed:
            warnings.warn(f"resuming a run made with seed={state.get('seed')} with "
                          f"seed={self.seed}: the result will differ from the original run")
        if state.get("world_size", 1) != self.world_size:
            warnings.warn(f"resuming a run made with {state.get('world_size')} processes on "
                          f"{self.world_size}: the data order differs from the original run")
        self.epoch = int(state["epoch"])
        self.history = History.from_dict(state["history"])
        self.best_state = state.get("best_model")
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])

    def save_checkpoint(self, path: Union[str, Path]) -> Optional[Path]:
        r"""Writes :meth:`state_dict` atomically (rank 0 only; returns ``None`` elsewhere)."""
        if not self.is_main:
            return None
        return atomic_save(self.state_dict(), path)

    def load_checkpoint(self, path: Union[str, Path]) -> None:
        r"""Restores a file written by :meth:`save_checkpoint`."""
        self.load_state_dict(load_checkpoint(path, map_location="cpu"))

    # ------------------------------------------------------------ loops
    def _resolve_resume(self, resume: Union[None, bool, str, Path]) -> Optional[Path]:
        if resume is None or resume is False:
            return None
        if resume is True:
            if self.out_dir is None:
                raise ValueError("resume=True needs out_dir (it resumes out_dir/last.pt)")
            path = self.out_dir / "last.pt"
            return path if path.is_file() else None
        if isinstance(resume, (str, Path)):
            path = Path(resume)
            if path.is_dir():
                path = path / "last.pt"
            if not path.is_file():
                raise FileNotFoundError(f"resume={str(resume)!r}: no checkpoint at {str(path)!r}")
            return path
        raise TypeError(f"resume must be None, a bool or a path, got {type(resume).__name__}")

    def _start_epoch(self, loader: Any, epoch: int) -> None:
        epoch_rng = epoch_seed(self.seed, epoch, self.rank)
        seed_everything(epoch_rng)
        generator = getattr(loader, "generator", None)
        if isinstance(generator, torch.Generator):
            generator.manual_seed(epoch_rng)
        for sampler in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
            if callable(getattr(sampler, "set_epoch", None)):
                sampler.set_epoch(epoch)

    def _check_loss(self, loss: Any, where: str) -> Tensor:
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise TypeError(f"the step must return a scalar loss tensor ({where}), got "
                            f"{tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__}")
        if not loss.requires_grad:
            raise ValueError(f"the loss does not require grad ({where}): is the model "
                             "frozen or the loss computed under no_grad?")
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"the loss is {value} ({where})")
        return loss

    def train_epoch(self, loader: Any, epoch: int = 0, epochs: Optional[int] = None
                    ) -> Dict[str, Any]:
        r"""One pass over ``loader`` with optimizer steps; returns the
        rank-reduced ``{"loss", "oa", "macc", ...}`` of the pass."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        meter = MetricAccumulator(self.num_classes)
        try:
            num_batches: Optional[int] = len(loader)
        except TypeError:
            num_batches = None
        if num_batches == 0:
            raise ValueError("the training loader is empty")
        ga = self.grad_accum
        desc = f"epoch {epoch + 1}" + (f"/{epochs}" if epochs else "")
        bar = progress_bar(loader, self.progress and self.is_main, desc=desc,
                            total=num_batches, leave=False)
        pending = 0
        is_ddp = self._ddp is not self.model
        for i, batch in enumerate(bar):
            start = (i // ga) * ga
            group = ga if num_batches is None else min(ga, num_batches - start)
            last_in_group = i - start == group - 1
            batch = _to_device(batch, self.device)
            sync = (contextlib.nullcontext() if (last_in_group or not is_ddp)
                    else self._ddp.no_sync())
            with sync:
                with self._autocast():
                    loss, logits, labels = self.step_fn(self._train_model, batch)
                loss = self._check_loss(loss, f"epoch {epoch + 1}, batch {i}")
                scaled = loss.float() / group
                (scaled if self.scaler is None else self.scaler.scale(scaled)).backward()
            pending += 1
            if last_in_group:
                self._optimizer_step()
                pending = 0
            meter.update(loss, logits, labels, _batch_size(batch, labels))
            if bar is not loader:
                stats = meter.compute()
                postfix = {"loss": _fmt(stats["loss"])}
                if stats["oa"] is not None:
                    postfix["acc"] = _fmt(stats["oa"], pct=True)
                bar.set_postfix(postfix, refresh=False)
        if pending:  # a loader without len(): finish the last group
            self._optimizer_step()
        if bar is not loader:
            bar.close()
        return meter.reduce(self.device).compute()

    def _autocast(self) -> Any:
        if self._amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self._amp_dtype)

    def _optimizer_step(self) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)       # clip the true gradients
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)            # skipped when a gradient is inf/NaN
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None and self.scheduler_interval == "step":
            self.scheduler.step()

    @torch.no_grad()
    def evaluate(self, loader: Any, desc: str = "eval") -> Dict[str, Any]:
        r"""Evaluates the model (eval mode, no gradient) on ``loader``.

        Under ``torchrun`` each rank evaluates its shard (build the loader with
        :func:`~pointcmt_pyg.train.distributed.make_loader` and
        ``evaluation=True``) and the confusion matrices and loss sums are
        added over ranks.

        Returns:
            dict: ``oa`` and ``macc`` (floats, ``None`` without logits/labels),
            ``loss`` (per-sample mean, ``None`` when not computable),
            ``confusion`` (``[C, C]`` int64 on CPU, ``[true, predicted]``, or
            ``None``) and ``num_samples``.
        """
        if D.is_distributed() and not isinstance(
                getattr(loader, "sampler", None), (D.ShardSampler, DistributedSampler)):
            warnings.warn("evaluating under torch.distributed with a loader that is not "
                          "sharded: every rank evaluates every sample (metrics are right, "
                          "counts are multiplied); use make_loader(..., evaluation=True)")
        if D.is_distributed():
            # DDP syncs buffers at the start of each training forward, then every
            # rank updates its BatchNorm statistics with its own batch: make all
            # ranks evaluate rank 0's model (the one that is checkpointed).
            with torch.no_grad():
                for buf in D.unwrap_model(self.model).buffers():
                    torch.distributed.broadcast(buf, src=0)
        was_training = self.model.training
        self.model.eval()
        meter = MetricAccumulator(self.num_classes)
        try:
            for i, batch in enumerate(progress_bar(loader, self.progress and self.is_main,
                                                    desc=desc, leave=False)):
                batch = _to_device(batch, self.device)
                with self._autocast():
                    loss, logits, labels = self.step_fn(self._eval_model, batch)
                if logits is not None and logits.is_floating_point():
                    logits = logits.float()
                if loss is None and logits is not None and labels is not None:
                    loss = self.loss_fn(logits, check_labels(labels, logits))
                if loss is not None and not (isinstance(loss, Tensor) and loss.numel() == 1):
                    raise TypeError(f"the step must return a scalar loss or None (batch {i})")
                meter.update(loss, logits, labels, _batch_size(batch, labels))
        finally:
            self.model.train(was_training)
        if meter.num_samples == 0 and not D.is_distributed():
            raise ValueError("the evaluation loader is empty")
        return meter.reduce(self.device).compute()

    def fit(self, train_loader: Any, val_loader: Any = None, epochs: int = 1,
            select: str = "val_oa", resume: Union[None, bool, str, Path] = None,
            restore_best: bool = True,
            on_epoch_end: Optional[Callable[["Trainer", Dict[str, Any]], None]] = None,
            ) -> History:
        r"""Trains for ``epochs`` epochs in total (counting resumed ones).

        Args:
            train_loader: Training batches (shuffled; reseeded every epoch).
            val_loader: Validation batches used for model selection, never a
                test set. ``None``: no selection, the last state is kept.
            epochs (int): Total number of epochs.
            select (str): ``"val_oa"``, ``"val_macc"`` (higher is better) or
                ``"val_loss"`` (lower is better); ties keep the earlier epoch.
                ``"last"``: the final epoch, whatever the validation says (its
                ``val_oa`` is recorded as the metric). On a small validation
                set, picking the best of many epochs adds noise (RESULTS.md,
                the final-epoch protocol).
            resume: ``None``/``False`` start fresh; ``True`` continue from
                ``out_dir/last.pt`` when it exists (else start fresh); a path
                (a file, or a directory holding ``last.pt``) continue from it.
            restore_best (bool): Load the selected state into the model at the
                end. (default: ``True``)
            on_epoch_end (callable, optional): ``f(trainer, record)`` after
                each epoch's record and checkpoint.

        Returns:
            History: the per-epoch records (resumed ones included).
        """
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
        if select not in SELECT_METRICS:
            raise ValueError(f"select must be one of {list(SELECT_METRICS)}, got {select!r}")
        if train_loader is None:
            raise ValueError("train_loader is required")
        path = self._resolve_resume(resume)
        if path is not None:
            self.load_checkpoint(path)
            if self.history.select != select and len(self.history):
                raise ValueError(f"the checkpoint selected on {self.history.select!r}, "
                                 f"this fit on {select!r}")
            if self.progress and self.is_main:
                print(f"resumed {path} at epoch {self.epoch}", flush=True)
        else:
            self.epoch, self.history, self.best_state = 0, History(select=select), None
        self.history.select = select
        higher = SELECT_METRICS[select]

        for epoch in range(self.epoch, epochs):
            self._start_epoch(train_loader, epoch)
            lr = float(self.optimizer.param_groups[0]["lr"])
            t0 = time.perf_counter()
            train = self.train_epoch(train_loader, epoch, epochs)
            if self.scheduler is not None and self.scheduler_interval == "epoch":
                self.scheduler.step()
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            train_seconds = time.perf_counter() - t0
            val, val_seconds = None, None
            if val_loader is not None:
                t1 = time.perf_counter()
                val = self.evaluate(val_loader, desc=f"val {epoch + 1}")
                val_seconds = time.perf_counter() - t1
            record = {
                "epoch": epoch + 1, "train_loss": train["loss"], "train_acc": train["oa"],
                "val_loss": None if val is None else val["loss"],
                "val_oa": None if val is None else val["oa"],
                "val_macc": None if val is None else val["macc"],
                "lr": lr, "epoch_seconds": train_seconds, "val_seconds": val_seconds,
            }
            self.history.records.append(record)
            self.epoch = epoch + 1
            self._update_best(record, higher)
            if self.is_main:
                if self.out_dir is not None:
                    self.save_checkpoint(self.out_dir / "last.pt")
                    self.history.save_json(self.out_dir / "history.json")
                if self.progress:
                    print(self._summary(record), flush=True)
            D.barrier()
            if on_epoch_end is not None:
                on_epoch_end(self, record)

        if restore_best and self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        return self.history

    def _update_best(self, record: Dict[str, Any], higher: bool) -> None:
        select = self.history.select
        value = record.get(select)
        if record["val_loss"] is None and record["val_oa"] is None:
            # No validation: nothing to select on; keep the latest state.
            improved, value = True, None
        elif select == "last":
            improved, value = True, record.get("val_oa")
        else:
            if value is None:
                raise ValueError(
                    f"select={select!r} but validation gives no {select[4:]} (the step "
                    "returns no logits/labels or no loss); choose another select")
            best = self.history.best_metric
            improved = (best is None or math.isnan(best)
                        or (value > best if higher else value < best))
        if improved:
            self.history.best_metric = value
            self.history.best_epoch = record["epoch"]
            self.best_state = {k: v.detach().to("cpu", copy=True)
                               for k, v in self.model.state_dict().items()}
            if self.is_main and self.out_dir is not None:
                atomic_save({"format": CHECKPOINT_FORMAT + ":model",
                             "model": self.best_state, "epoch": record["epoch"],
                             "select": select, "metric": value}, self.out_dir / "best.pt")

    def _summary(self, r: Dict[str, Any]) -> str:
        text = (f"epoch {r['epoch']}: train loss {_fmt(r['train_loss'])} "
                f"acc {_fmt(r['train_acc'], True)}")
        if r["val_loss"] is not None or r["val_oa"] is not None:
            text += (f" | val loss {_fmt(r['val_loss'])} OA {_fmt(r['val_oa'], True)} "
                     f"mAcc {_fmt(r['val_macc'], True)}")
        text += f" | {r['epoch_seconds']:.1f}s"
        if self.history.best_epoch == r["epoch"] and (r["val_oa"] is not None
                                                     or r["val_loss"] is not None):
            text += " *"
        return text
