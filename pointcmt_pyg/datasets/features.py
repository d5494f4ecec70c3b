r"""Teacher feature cache for PointCMT's stage III (`paper
<https://arxiv.org/abs/2210.04208>`_).

Running the frozen image teacher once per shape, instead of once per batch per
epoch, makes distillation about as cheap as plain training. The features are
keyed by each sample's stable ``sample_id`` (a file name or a content hash),
never by its position, so a re-ordered, re-globbed or filtered dataset still
gets the right feature for every shape.

.. code-block:: python

    cache = compute_teacher_features(teacher, train_dataset_with_views)
    cache.save("runs/teacher_features.pt")
    dataset = MyDataset(..., transform=AttachImageFeatures("runs/teacher_features.pt"))
    # every Data now has img_feat [1, D]; a Batch has img_feat [B, D]

A cache may also hold the teacher's logits per shape (``with_logits=True``);
:class:`AttachImageFeatures` then sets ``img_logits`` too, and the distiller's
Hinton term uses them as its target. The pipeline's cross-fitted teachers
(``PipelineConfig.teacher_folds``) store *out-of-fold* logits there: each
training shape's target comes from a teacher that never saw it, so it shows the
teacher's real confusions instead of a memorised label (the out-of-fold
predictions of stacked generalization, `Wolpert, 1992
<https://doi.org/10.1016/S0893-6080(05)80023-1>`_).
"""
import os
import tempfile
from pathlib import Path
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional,
                    Sequence, Union)

import torch
from torch import Tensor
from torch_geometric.transforms import BaseTransform

from .._progress import progress_bar

__all__ = ["FeatureCache", "compute_teacher_features", "AttachImageFeatures"]

_FORMAT = "pointcmt_pyg.FeatureCache"
_VERSION = 1

PathLike = Union[str, os.PathLike]


def _check_id(sample_id: Any) -> str:
    if not isinstance(sample_id, str):
        raise TypeError(
            f"sample_id must be a str (a stable name such as a file name or a content "
            f"hash, never a position), got {type(sample_id).__name__} {sample_id!r}")
    return sample_id


class FeatureCache(Mapping[str, Tensor]):
    r"""Teacher features by ``sample_id``: a read-only mapping ``str -> Tensor[D]``
    stored as one ``[N, D]`` matrix.

    Args:
        features (Mapping[str, Tensor], optional): ``sample_id -> [D]`` (or
            ``[1, D]``) features, all of the same size.
        metadata (dict, optional): Anything worth keeping beside the features
            (e.g. the teacher's config); saved with them.

    A cache built with :meth:`from_tensor` may also hold teacher logits per
    shape (:attr:`logits`, :meth:`logits_of`).
    """

    def __init__(self, features: Optional[Mapping[str, Tensor]] = None,
                 metadata: Optional[Dict[str, Any]] = None) -> None:
        features = dict(features or {})
        ids = [_check_id(k) for k in features]
        rows = []
        for k in ids:
            v = features[k]
            if not isinstance(v, Tensor):
                raise TypeError(f"feature of sample_id {k!r} must be a tensor, "
                                f"got {type(v).__name__}")
            rows.append(v.detach().reshape(-1).cpu())
        matrix = torch.stack(rows) if rows else torch.empty(0, 0)
        self._init(ids, matrix, metadata)

    @classmethod
    def from_tensor(cls, ids: Sequence[str], features: Tensor,
                    metadata: Optional[Dict[str, Any]] = None,
                    logits: Optional[Tensor] = None) -> "FeatureCache":
        r"""Builds a cache from ``ids`` [N] and the matching rows ``features``
        [N, D] (and, optionally, the teacher's ``logits`` [N, C] per shape)."""
        if not isinstance(features, Tensor) or features.dim() != 2:
            raise ValueError("features must be an [N, D] tensor, got "
                             f"{tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__}")
        ids = [_check_id(i) for i in ids]
        if len(ids) != features.size(0):
            raise ValueError(f"{len(ids)} ids but {features.size(0)} feature rows")
        if logits is not None:
            if not isinstance(logits, Tensor) or logits.dim() != 2 \
                    or logits.size(0) != len(ids) or not logits.is_floating_point():
                shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
                raise ValueError(f"logits must be a float [N, C] tensor with N = {len(ids)} "
                                 f"(one row per id), got {shape}")
            if not bool(torch.isfinite(logits).all()):
                raise ValueError("logits must be finite")
            logits = logits.detach().float().cpu()
        cache = cls.__new__(cls)
        cache._init(ids, features.detach().cpu(), metadata, logits)
        return cache

    def _init(self, ids: List[str], matrix: Tensor,
              metadata: Optional[Dict[str, Any]], logits: Optional[Tensor] = None) -> None:
        index: Dict[str, int] = {}
        for row, sample_id in enumerate(ids):
            if sample_id in index:
                raise ValueError(f"duplicate sample_id {sample_id!r} in the feature cache "
                                 "(ids must be unique per shape)")
            index[sample_id] = row
        self._ids = list(ids)
        self._index = index
        self._matrix = matrix
        self._logits = logits
        self.metadata: Dict[str, Any] = dict(metadata or {})

    # Mapping interface ---------------------------------------------------
    def __getitem__(self, sample_id: str) -> Tensor:
        row = self._index.get(sample_id)
        if row is None:
            raise KeyError(f"no teacher feature for sample_id {sample_id!r} "
                           f"(the cache holds {len(self)} ids; recompute it for this dataset)")
        return self._matrix[row]

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        extra = "" if self._logits is None else f", num_classes={self._logits.size(1)}"
        return f"{type(self).__name__}(num_samples={len(self)}, feat_dim={self.feat_dim}{extra})"

    # Accessors -----------------------------------------------------------
    @property
    def feat_dim(self) -> int:
        r"""The feature size :math:`D` (0 for an empty cache)."""
        return int(self._matrix.size(1)) if self._matrix.dim() == 2 else 0

    @property
    def ids(self) -> List[str]:
        r"""The sample ids, in storage order."""
        return list(self._ids)

    @property
    def features(self) -> Tensor:
        r"""The ``[N, D]`` matrix, rows in the order of :attr:`ids`."""
        return self._matrix

    @property
    def logits(self) -> Optional[Tensor]:
        r"""The teacher's ``[N, C]`` logits, rows in the order of :attr:`ids`,
        or ``None`` when the cache holds features only."""
        return self._logits

    def logits_of(self, sample_id: str) -> Tensor:
        r"""The teacher's logits ``[C]`` of one shape.

        Raises:
            KeyError: For an unknown id, or when the cache holds no logits.
        """
        if self._logits is None:
            raise KeyError("this feature cache holds no teacher logits (compute it with "
                           "with_logits=True)")
        self[sample_id]                      # KeyError naming an unknown id
        return self._logits[self._index[sample_id]]

    # Files ---------------------------------------------------------------
    def save(self, path: PathLike) -> Path:
        r"""Writes the cache to ``path`` (a ``.pt`` file) atomically: to a
        temporary file in the same folder, then renamed over ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"format": _FORMAT, "version": _VERSION, "ids": self._ids,
                   "features": self._matrix, "metadata": self.metadata}
        if self._logits is not None:          # optional: older readers ignore it
            payload["logits"] = self._logits
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(payload, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return path

    @classmethod
    def load(cls, path: PathLike) -> "FeatureCache":
        r"""Reads a cache written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no feature cache at {path}")
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a pointcmt_pyg feature cache")
        if payload.get("version") != _VERSION:
            raise ValueError(f"{path}: unsupported feature cache version "
                             f"{payload.get('version')!r} (this build reads {_VERSION})")
        return cls.from_tensor(payload["ids"], payload["features"], payload.get("metadata"),
                               payload.get("logits"))


def _batches(dataset_or_loader: Iterable, batch_size: int) -> Iterable:
    from torch_geometric.data import Dataset as PygDataset
    from torch_geometric.loader import DataLoader

    if isinstance(dataset_or_loader, torch.utils.data.DataLoader):
        return dataset_or_loader
    if isinstance(dataset_or_loader, (PygDataset, torch.utils.data.Dataset, list, tuple)):
        return DataLoader(dataset_or_loader, batch_size=batch_size, shuffle=False)
    raise TypeError("dataset_or_loader must be a dataset (or list of Data) or a DataLoader, "
                    f"got {type(dataset_or_loader).__name__}")


@torch.no_grad()
def compute_teacher_features(
    teacher: Any,
    dataset_or_loader: Iterable,
    batch_size: int = 32,
    device: Union[str, torch.device, None] = None,
    views_fn: Optional[Callable[[Any], Tensor]] = None,
    id_key: str = "sample_id",
    progress: bool = True,
    metadata: Optional[Dict[str, Any]] = None,
    with_logits: bool = False,
) -> FeatureCache:
    r"""Runs the frozen teacher once over a dataset and returns its features by
    ``sample_id``.

    Args:
        teacher: An object with ``.features(views[B, V, C, H, W]) -> [B, D]``
            (e.g. :class:`~pointcmt_pyg.nn.MultiViewTeacher`); put in eval mode
            for the run and restored afterwards.
        dataset_or_loader: A dataset of ``Data`` (batched here with PyG's
            ``DataLoader``, in order) or a loader yielding ``Batch`` objects.
            Each sample needs a ``sample_id`` (str) and, unless ``views_fn`` is
            given, ``views`` (``[1, V, C, H, W]`` per sample).
        batch_size (int): Batch size when a dataset is given. (default: ``32``)
        device: Where to run the teacher. (default: the teacher's device)
        views_fn (callable, optional): ``batch -> views [B, V, C, H, W]``, to
            render on the fly instead of reading ``batch.views``.
        id_key (str): The attribute holding the id. (default: ``"sample_id"``)
        progress (bool): Show a tqdm progress bar. (default: ``True``)
        metadata (dict, optional): Stored with the cache.
        with_logits (bool): Also store the teacher's logits, ``teacher.head``
            applied to each feature (:attr:`FeatureCache.logits`).
            (default: ``False``)

    Returns:
        FeatureCache: ``sample_id -> [D]`` (on CPU).

    Raises:
        ValueError: On a duplicate ``sample_id``, or views of the wrong shape.
        TypeError: On a missing or non-string ``sample_id``.
    """
    if not callable(getattr(teacher, "features", None)):
        raise TypeError("teacher must have a .features(views) method")
    if with_logits and not callable(getattr(teacher, "head", None)):
        raise TypeError("with_logits=True needs a teacher with a .head (features -> logits), "
                        "e.g. MultiViewTeacher")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if device is None:
        params = list(teacher.parameters()) if isinstance(teacher, torch.nn.Module) else []
        device = params[0].device if params else torch.device("cpu")
    device = torch.device(device)

    was_training = isinstance(teacher, torch.nn.Module) and teacher.training
    if isinstance(teacher, torch.nn.Module):
        teacher.eval()
    ids: List[str] = []
    rows: List[Tensor] = []
    logit_rows: List[Tensor] = []
    seen: Dict[str, int] = {}
    try:
        loader = _batches(dataset_or_loader, batch_size)
        total = len(loader) if hasattr(loader, "__len__") else None
        for batch in progress_bar(loader, progress, total=total, desc="teacher features",
                                  unit="batch"):
            batch_ids = getattr(batch, id_key, None)
            if batch_ids is None:
                raise TypeError(f"samples have no {id_key!r}; each Data needs a stable "
                                f"string {id_key} to key its teacher feature")
            if isinstance(batch_ids, str):
                batch_ids = [batch_ids]
            batch_ids = [_check_id(i) for i in batch_ids]
            views = views_fn(batch) if views_fn is not None else getattr(batch, "views", None)
            if views is None:
                raise ValueError("samples have no views; render them (e.g. a transform "
                                 "that sets views [1, V, C, H, W]) or pass views_fn=")
            if not isinstance(views, Tensor) or views.dim() != 5 or views.size(0) != len(batch_ids):
                shape = tuple(views.shape) if isinstance(views, Tensor) else type(views).__name__
                raise ValueError(f"views must be [B, V, C, H, W] with B = {len(batch_ids)}, "
                                 f"got {shape}")
            with torch.no_grad():
                feats = teacher.features(views.to(device))
                if with_logits and isinstance(feats, Tensor):
                    logit_rows.append(teacher.head(feats).float().cpu())
            if not isinstance(feats, Tensor) or feats.dim() != 2 or feats.size(0) != len(batch_ids):
                shape = tuple(feats.shape) if isinstance(feats, Tensor) else type(feats).__name__
                raise ValueError(f"teacher.features returned {shape}, expected "
                                 f"[{len(batch_ids)}, D]")
            feats = feats.float().cpu()
            for row, sample_id in enumerate(batch_ids):
                if sample_id in seen:
                    raise ValueError(f"duplicate sample_id {sample_id!r} in the dataset "
                                     "(ids must be unique per shape)")
                seen[sample_id] = len(ids)
                ids.append(sample_id)
                rows.append(feats[row])
    finally:
        if was_training:
            teacher.train()
    matrix = torch.stack(rows) if rows else torch.empty(0, 0)
    meta = {"teacher": type(teacher).__name__}
    meta.update(metadata or {})
    logits = None
    if with_logits:
        logits = torch.cat(logit_rows) if logit_rows else torch.empty(0, 0)
    return FeatureCache.from_tensor(ids, matrix, meta, logits)


class AttachImageFeatures(BaseTransform):
    r"""Puts the cached teacher feature of each sample on ``data.img_feat``
    (``[1, D]``, so that a ``Batch`` holds ``[B, D]``), looked up by the
    sample's ``sample_id``; and, when the cache holds teacher logits, those on
    ``data.img_logits`` (``[1, C]``).

    Args:
        cache (FeatureCache, Mapping or path): The features, or the ``.pt`` file
            written by :meth:`FeatureCache.save`.
        required (bool): Raise when a sample's id is not in the cache. With
            ``False`` such samples pass through without ``img_feat`` (do not
            mix them with others in one batch: collation needs the attribute on
            all or none). (default: ``True``)
        id_key (str): The attribute holding the id. (default: ``"sample_id"``)
    """

    def __init__(self, cache: Union[FeatureCache, Mapping[str, Tensor], PathLike],
                 required: bool = True, id_key: str = "sample_id") -> None:
        if isinstance(cache, (str, os.PathLike)):
            cache = FeatureCache.load(cache)
        elif not isinstance(cache, Mapping):
            raise TypeError("cache must be a FeatureCache, a mapping sample_id -> tensor or "
                            f"a path, got {type(cache).__name__}")
        self.cache = cache
        self.required = bool(required)
        self.id_key = id_key

    def forward(self, data: Any) -> Any:
        sample_id = getattr(data, self.id_key, None)
        if sample_id is None:
            raise ValueError(f"data has no {self.id_key!r}: AttachImageFeatures looks "
                             "features up by a stable sample id")
        _check_id(sample_id)
        if sample_id not in self.cache:
            if self.required:
                raise KeyError(f"no teacher feature for sample_id {sample_id!r} in the cache "
                               f"({len(self.cache)} ids); recompute the cache for this dataset "
                               "or pass required=False")
            return data
        data.img_feat = self.cache[sample_id].reshape(1, -1).float().clone()
        if getattr(self.cache, "logits", None) is not None:
            data.img_logits = self.cache.logits_of(sample_id).reshape(1, -1).float().clone()
        return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_samples={len(self.cache)}, required={self.required})"
