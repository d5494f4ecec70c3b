r"""PNG figures of PointCMT training runs (`paper <https://arxiv.org/abs/2210.04208>`_):
training curves of one or several runs side by side, and confusion matrices.

Draws on matplotlib ``Figure`` objects with the ``Agg`` canvas directly: no
display needed, no pyplot global state touched (safe in scripts, notebooks
and worker processes).
"""
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch

__all__ = ["plot_training_curves", "plot_confusion_matrix", "CURVE_LABELS"]

PathLike = Union[str, os.PathLike]

#: Columns of a :class:`~pointcmt_pyg.train.History` and their axis titles.
CURVE_LABELS: Dict[str, str] = {
    "train_loss": "training loss",
    "train_acc": "training accuracy",
    "val_loss": "validation loss",
    "val_oa": "validation OA",
    "val_macc": "validation mAcc",
    "lr": "learning rate",
    "epoch_seconds": "seconds per epoch",
}
_PERCENT = {"train_acc", "val_oa", "val_macc"}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _records(history: Any, name: str) -> List[Dict[str, Any]]:
    records = getattr(history, "records", history)
    if not isinstance(records, Sequence) or not all(isinstance(r, Mapping) for r in records):
        raise TypeError(f"run {name!r} must be a History or a list of per-epoch dicts, "
                        f"got {type(history).__name__}")
    return list(records)


def _value(record: Mapping[str, Any], key: str) -> float:
    value = record.get(key)
    if value is None:
        return float("nan")
    value = float(value)
    return 100.0 * value if key in _PERCENT else value


def plot_training_curves(runs: Any, path: PathLike,
                         metrics: Sequence[str] = ("train_loss", "train_acc", "val_oa"),
                         title: Optional[str] = None) -> Path:
    r"""Plots per-epoch curves, one panel per metric, one line per run.

    Args:
        runs: One :class:`~pointcmt_pyg.train.History` (or list of per-epoch
            dicts), or a mapping ``{run name: history}`` to compare runs
            (e.g. ``{"baseline": h0, "PointCMT": h1}``).
        path: The PNG to write (directories are created).
        metrics: Columns to plot (see :data:`CURVE_LABELS`); accuracies are
            shown in percent. A run's best (selected) epoch is marked when
            the history records one.
        title: Figure title.

    Returns:
        Path: ``path``.

    Raises:
        ValueError: No run, no metric, or a metric that no run records.
    """
    if isinstance(runs, Mapping):
        named = {str(k): v for k, v in runs.items()}
    else:
        named = {"run": runs}
    if not named:
        raise ValueError("runs is empty")
    if isinstance(metrics, str) or not metrics:
        raise ValueError(f"metrics must be a non-empty sequence of column names, got {metrics!r}")
    data = {name: _records(h, name) for name, h in named.items()}
    for metric in metrics:
        if not any(metric in r for recs in data.values() for r in recs):
            raise ValueError(f"no run records {metric!r}; known columns: {list(CURVE_LABELS)}")

    fig = _figure(4.2 * len(metrics), 3.4)
    axes = fig.subplots(1, len(metrics), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for name, records in data.items():
            epochs = [r.get("epoch", i + 1) for i, r in enumerate(records)]
            values = [_value(r, metric) for r in records]
            if all(math.isnan(v) for v in values):
                continue
            (line,) = ax.plot(epochs, values, marker="o", markersize=3, label=name)
            best = getattr(named[name], "best_epoch", None)
            if best is not None and metric.startswith("val") and best in epochs:
                i = epochs.index(best)
                ax.plot([best], [values[i]], marker="*", markersize=11,
                        color=line.get_color(), linestyle="none")
        ax.set_xlabel("epoch")
        ax.set_title(CURVE_LABELS.get(metric, metric) + (" (%)" if metric in _PERCENT else ""))
        ax.grid(True, alpha=0.3)
        if len(data) > 1:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def plot_confusion_matrix(confusion: Any, path: PathLike,
                          class_names: Optional[Sequence[str]] = None,
                          normalize: bool = True, title: Optional[str] = None) -> Path:
    r"""Plots a confusion matrix (rows: true class, columns: predicted).

    Args:
        confusion: ``[C, C]`` counts (tensor or nested lists), e.g.
            ``trainer.evaluate(loader)["confusion"]``.
        path: The PNG to write.
        class_names: ``C`` tick labels (default: class indices).
        normalize (bool): Show each row as fractions of its class (rows
            without samples stay 0); the counts are written in the cells
            when ``C <= 20``.
        title: Axes title (default: OA and mAcc of the matrix).

    Returns:
        Path: ``path``.
    """
    from .metrics import mean_class_accuracy, overall_accuracy
    conf = torch.as_tensor(confusion)
    if conf.dim() != 2 or conf.size(0) != conf.size(1) or conf.numel() == 0:
        raise ValueError(f"confusion must be a square [C, C] matrix, got {list(conf.shape)}")
    if conf.is_floating_point() and not torch.equal(conf, conf.round()):
        raise ValueError("confusion must hold counts (integers)")
    conf = conf.long()
    if bool((conf < 0).any()):
        raise ValueError("confusion must not hold negative counts")
    num = conf.size(0)
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        if len(class_names) != num:
            raise ValueError(f"class_names has {len(class_names)} names for {num} classes")
    else:
        class_names = [str(i) for i in range(num)]
    shown = conf.double()
    if normalize:
        support = shown.sum(dim=1, keepdim=True)
        shown = torch.where(support > 0, shown / support.clamp_min(1), torch.zeros_like(shown))

    size = max(4.0, min(0.32 * num + 2.5, 16.0))
    fig = _figure(size, size * 0.9)
    ax = fig.subplots()
    image = ax.imshow(shown.numpy(), cmap="Blues", vmin=0,
                      vmax=1 if normalize else max(1, int(conf.max())))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ticks = list(range(num))
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    font = 8 if num <= 20 else 5
    ax.set_xticklabels(class_names, rotation=90, fontsize=font)
    ax.set_yticklabels(class_names, fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if num <= 20:
        for i in range(num):
            for j in range(num):
                if int(conf[i, j]):
                    ax.text(j, i, str(int(conf[i, j])), ha="center", va="center",
                            fontsize=7, color="white" if shown[i, j] > 0.5 * float(
                                shown.max()) else "black")
    if title is None:
        oa, macc = overall_accuracy(conf), mean_class_accuracy(conf)
        title = f"OA {100 * oa:.2f}%  mAcc {100 * macc:.2f}%"
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
