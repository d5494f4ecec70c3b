r"""Runs a user's unchanged PyG point-cloud model on :mod:`pointcmt_pyg.ops`.

In PyG 2.8, ``torch_geometric.nn.fps`` / ``knn`` / ``knn_graph`` /
``radius`` / ``radius_graph`` / ``nearest``, and the layers that search
neighbours themselves (``DynamicEdgeConv``, ``XConv``, ``GravNetConv``,
``knn_interpolate``), all end in the pyg-lib operators ``torch.ops.pyg.fps``,
``torch.ops.pyg.knn``, ``torch.ops.pyg.radius`` and ``torch.ops.pyg.nearest``,
and refuse to run when pyg-lib is missing (``torch_geometric.typing.WITH_FPS``
etc. are ``False``).

:func:`use_pointcmt_ops` registers those four operators, with pyg-lib's
schemas, implemented by :mod:`pointcmt_pyg.ops`, and sets the ``WITH_*`` flags.
Because the patch sits at the operator level, it reaches every caller,
including names a user imported before patching
(``from torch_geometric.nn import fps``) and modules built earlier. Operators
that pyg-lib already provides are left alone.

.. code-block:: python

    from pointcmt_pyg.models import use_pointcmt_ops

    with use_pointcmt_ops():            # scoped
        model = MyPygNet()              # may build DynamicEdgeConv now
        out = model(data)

    use_pointcmt_ops()                  # or for the rest of the process

Part of pointcmt-pyg (PointCMT, `<https://arxiv.org/abs/2210.04208>`_).
"""
from __future__ import annotations

import threading
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor

import torch_geometric.typing as pyg_typing

from .. import ops

__all__ = ["PygOpsPatch", "use_pointcmt_ops", "pointcmt_ops_active", "PYG_SCHEMAS"]

#: pyg-lib's schemas of the operators provided (``pyg_lib/csrc/ops/*.cpp``).
PYG_SCHEMAS: Dict[str, str] = {
    "fps": "fps(Tensor src, Tensor ptr, float ratio=0.5, bool random_start=True) -> Tensor",
    "knn": ("knn(Tensor x, Tensor y, Tensor? ptr_x=None, Tensor? ptr_y=None, int k=1, "
            "bool cosine=False, int num_workers=1) -> Tensor"),
    "radius": ("radius(Tensor x, Tensor y, Tensor? ptr_x=None, Tensor? ptr_y=None, float r=1.0, "
               "int max_num_neighbors=32, int num_workers=1, bool ignore_same_index=False) -> Tensor"),
    "nearest": "nearest(Tensor x, Tensor y, Tensor? ptr_x=None, Tensor? ptr_y=None) -> Tensor",
}

#: ``torch_geometric.typing`` flag of each operator.
_FLAGS: Dict[str, str] = {"fps": "WITH_FPS", "knn": "WITH_KNN", "radius": "WITH_RADIUS", "nearest": "WITH_NEAREST"}


def _ptr_to_batch(ptr: Optional[Tensor], num_points: int, name: str) -> Optional[Tensor]:
    """Cloud id of every row from CSR offsets (``None`` stays ``None``)."""
    if ptr is None:
        return None
    if ptr.dim() != 1 or ptr.numel() < 2:
        raise ValueError(f"'{name}' must be CSR offsets of shape (B + 1,), got {tuple(ptr.shape)}")
    counts = (ptr[1:] - ptr[:-1]).long()
    if int(ptr[0]) != 0 or int(ptr[-1]) != num_points or bool((counts < 0).any()):
        raise ValueError(f"'{name}' must rise from 0 to the number of rows ({num_points}), got {ptr.tolist()}")
    return torch.repeat_interleave(torch.arange(counts.numel(), device=ptr.device), counts)


def _batch_size(ptr_x: Optional[Tensor], ptr_y: Optional[Tensor]) -> Optional[int]:
    ptr = ptr_x if ptr_x is not None else ptr_y
    return None if ptr is None else ptr.numel() - 1


def _pyg_fps(src: Tensor, ptr: Tensor, ratio: float = 0.5, random_start: bool = True) -> Tensor:
    return ops.fps(src.reshape(src.shape[0], -1), ratio=ratio, random_start=random_start, ptr=ptr)


def _pyg_knn(x: Tensor, y: Tensor, ptr_x: Optional[Tensor] = None, ptr_y: Optional[Tensor] = None, k: int = 1,
             cosine: bool = False, num_workers: int = 1) -> Tensor:
    return ops.knn(x, y, k, _ptr_to_batch(ptr_x, x.shape[0], "ptr_x"), _ptr_to_batch(ptr_y, y.shape[0], "ptr_y"),
                   cosine=cosine, batch_size=_batch_size(ptr_x, ptr_y))


def _pyg_radius(x: Tensor, y: Tensor, ptr_x: Optional[Tensor] = None, ptr_y: Optional[Tensor] = None,
                r: float = 1.0, max_num_neighbors: int = 32, num_workers: int = 1,
                ignore_same_index: bool = False) -> Tensor:
    batch_x = _ptr_to_batch(ptr_x, x.shape[0], "ptr_x")
    batch_y = _ptr_to_batch(ptr_y, y.shape[0], "ptr_y")
    batch_size = _batch_size(ptr_x, ptr_y)
    if not ignore_same_index:
        return ops.radius(x, y, r, batch_x, batch_y, max_num_neighbors=max_num_neighbors, batch_size=batch_size)
    # pyg-lib skips the pair (i, i) before counting max_num_neighbors: search
    # one more, drop it, and keep the first max_num_neighbors of each query.
    edge_index = ops.radius(x, y, r, batch_x, batch_y, max_num_neighbors=max_num_neighbors + 1,
                            batch_size=batch_size)
    edge_index = edge_index[:, edge_index[0] != edge_index[1]]
    row = edge_index[0]
    counts = torch.bincount(row, minlength=y.shape[0])
    first = torch.cumsum(counts, 0) - counts
    rank = torch.arange(row.numel(), device=row.device) - first[row]
    return edge_index[:, rank < max_num_neighbors]


def _pyg_nearest(x: Tensor, y: Tensor, ptr_x: Optional[Tensor] = None, ptr_y: Optional[Tensor] = None) -> Tensor:
    x = x.reshape(x.shape[0], -1)
    y = y.reshape(y.shape[0], -1)
    edge_index = ops.knn(x, y, 1, _ptr_to_batch(ptr_x, x.shape[0], "ptr_x"),
                         _ptr_to_batch(ptr_y, y.shape[0], "ptr_y"), batch_size=_batch_size(ptr_x, ptr_y))
    if edge_index.shape[1] != y.shape[0]:
        raise ValueError("nearest: some rows of 'y' belong to a cloud with no rows in 'x'")
    return edge_index[1].clone()  # a fresh tensor, not a view (operator contract)


# The dispatcher leaves out trailing arguments equal to their schema defaults,
# so every implementation repeats the defaults of :data:`PYG_SCHEMAS`.
_IMPLS = {"fps": _pyg_fps, "knn": _pyg_knn, "radius": _pyg_radius, "nearest": _pyg_nearest}


def _fake_dynamic(rows: Optional[int]):
    def fake(x: Tensor, *args, **kwargs) -> Tensor:
        size = torch.library.get_ctx().new_dynamic_size()
        return x.new_empty((size,) if rows is None else (rows, size), dtype=torch.long)
    return fake


_FAKES = {"fps": _fake_dynamic(None), "knn": _fake_dynamic(2), "radius": _fake_dynamic(2),
          "nearest": lambda x, y, ptr_x=None, ptr_y=None: y.new_empty((y.shape[0],), dtype=torch.long)}


def _pyg_has(name: str) -> bool:
    try:
        getattr(torch.ops.pyg, name)
    except (AttributeError, RuntimeError):
        return False
    return True


_LOCK = threading.Lock()
_STATE: Dict[str, object] = {"library": None, "provided": (), "saved_flags": {}, "count": 0}


class PygOpsPatch:
    r"""Handle of one :func:`use_pointcmt_ops` call: :meth:`undo` (or leaving
    the ``with`` block) releases it. Nested/repeated patches are counted; the
    operators and flags are restored when the last handle is released.

    Attributes:
        provided (tuple of str): The ``torch.ops.pyg`` operators served by
            pointcmt-pyg (empty where pyg-lib provides all of them).
    """

    def __init__(self, provided: Tuple[str, ...]) -> None:
        self.provided = provided
        self._released = False

    @property
    def active(self) -> bool:
        return not self._released

    def undo(self) -> None:
        r"""Releases this handle (a second call does nothing)."""
        with _LOCK:
            if self._released:
                return
            self._released = True
            _STATE["count"] = int(_STATE["count"]) - 1
            if _STATE["count"] == 0:
                library = _STATE["library"]
                if library is not None:
                    library._destroy()
                for flag, value in dict(_STATE["saved_flags"]).items():
                    setattr(pyg_typing, flag, value)
                _STATE.update(library=None, provided=(), saved_flags={})

    def __enter__(self) -> "PygOpsPatch":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.undo()

    def __repr__(self) -> str:
        return f"PygOpsPatch(provided={list(self.provided)}, active={self.active})"


def use_pointcmt_ops() -> PygOpsPatch:
    r"""Makes PyG's ``fps``/``knn``/``knn_graph``/``radius``/``radius_graph``/
    ``nearest`` and the layers built on them (``DynamicEdgeConv``,
    ``XConv``, ``GravNetConv``, ``knn_interpolate``) run on
    :mod:`pointcmt_pyg.ops` when pyg-lib does not provide them.

    Takes effect at once; use the returned handle as a context manager (or
    call its :meth:`~PygOpsPatch.undo`) to restore the previous state, or
    keep it for the rest of the process.

    Semantics are PyG's: ``fps`` samples ``ceil(ratio * n)`` points per cloud,
    ``knn``/``radius`` return ``[2, E]`` with row 0 indexing ``y``. Where
    several neighbours tie or ``radius`` has more than ``max_num_neighbors``
    candidates, our ops pick the lowest indices, which may differ from the
    choice of pyg-lib's kernels.

    Returns:
        PygOpsPatch: The handle.
    """
    with _LOCK:
        if int(_STATE["count"]) == 0:
            missing = [name for name in PYG_SCHEMAS if not _pyg_has(name)]
            library = None
            if missing:
                library = torch.library.Library("pyg", "FRAGMENT")
                for name in missing:
                    library.define(PYG_SCHEMAS[name])
                    library.impl(name, _IMPLS[name], "CompositeExplicitAutograd")
                    torch.library.register_fake(f"pyg::{name}", _FAKES[name], lib=library)
            saved: Dict[str, bool] = {}
            for name in PYG_SCHEMAS:
                flag = _FLAGS[name]
                saved[flag] = bool(getattr(pyg_typing, flag, False))
                setattr(pyg_typing, flag, True)
            _STATE.update(library=library, provided=tuple(missing), saved_flags=saved)
        _STATE["count"] = int(_STATE["count"]) + 1
        return PygOpsPatch(tuple(_STATE["provided"]))  # type: ignore[arg-type]


def pointcmt_ops_active() -> bool:
    r"""Whether a :func:`use_pointcmt_ops` patch is in effect."""
    return int(_STATE["count"]) > 0


def provided_ops() -> List[str]:
    r"""The ``torch.ops.pyg`` operators currently served by pointcmt-pyg."""
    return list(_STATE["provided"])  # type: ignore[arg-type]
