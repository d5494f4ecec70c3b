"""Loads the compiled ops (``pointcmt_pyg._C``) or, failing that, registers the
pure-PyTorch references under the same ``torch.ops.pointcmt`` schemas.

Either way every op is reachable as ``torch.ops.pointcmt.<name>`` with one
schema, so fake kernels, autograd and ``torch.compile`` work the same on both
backends. ``backend()`` says which one is live.

Environment:
    POINTCMT_DISABLE_EXT=1: ignore a built extension and use the references.
    POINTCMT_EXT_PATH=/path/_C.so: load the extension from this file instead
        (development builds, see ``tools/dev_build.py``).

In a source checkout (``csrc/`` beside the package, as after ``pip install -e .``)
an in-place ``_C.so`` older than any of its sources is still loaded, but with a
warning naming the newest source: it runs the kernels as they were when it was
built, not as the checkout has them (``make setup`` rebuilds it).
"""
from __future__ import annotations

import glob
import os
import warnings
from typing import Callable, Dict, List, Optional, Tuple

import torch

#: The schemas of the ``pointcmt`` library. They must equal the ones declared in
#: ``csrc/pointcmt.cpp`` (``tests/test_ext.py`` checks it when the extension is
#: built); they are used to declare the ops when the extension is absent.
SCHEMAS: Dict[str, str] = {
    "fps": "fps(Tensor x, Tensor ptr, Tensor out_ptr, Tensor start, int num_out) -> Tensor",
    "knn": "knn(Tensor x, Tensor y, Tensor ptr_x, Tensor ptr_y, int k, bool cosine) -> (Tensor, Tensor)",
    "radius": "radius(Tensor x, Tensor y, Tensor ptr_x, Tensor ptr_y, float r, int max_num_neighbors) -> Tensor",
    "emd": "emd(Tensor x, Tensor y, float eps, int max_iters) -> (Tensor, Tensor, Tensor)",
    "slot_max": "slot_max(Tensor block) -> (Tensor, Tensor)",
    "slot_max_backward": "slot_max_backward(Tensor grad, Tensor slot, int width) -> Tensor",
    "segment_max": "segment_max(Tensor src, Tensor ptr) -> (Tensor, Tensor)",
    "segment_max_backward": "segment_max_backward(Tensor grad, Tensor arg, Tensor ptr, int num_rows) -> Tensor",
    "gather_max": "gather_max(Tensor values, Tensor slots) -> (Tensor, Tensor)",
}

#: Ops of the extension that are not point ops (CPU only, called by the
#: wrappers only when the extension is loaded): ``_serial_torch_ops`` runs the
#: wrappers' own torch ops on one thread (:mod:`pointcmt_pyg.ops._threads`);
#: ``slots_to_edges`` turns padded neighbour slots into an edge index
#: (:mod:`pointcmt_pyg.ops._edges`, whose torch version serves other devices).
INTERNAL_SCHEMAS: Dict[str, str] = {
    "_serial_torch_ops": "_serial_torch_ops(bool enter) -> ()",
    "slots_to_edges": "slots_to_edges(Tensor idx, bool skip_self, int max_kept, bool neighbour_first) -> Tensor",
}

_BACKEND: Optional[str] = None
_LOAD_ERROR: Optional[str] = None
_PY_LIBRARY: Optional[torch.library.Library] = None
_REFERENCES: Dict[str, Callable] = {}


def _truthy(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _load_extension() -> bool:
    global _LOAD_ERROR
    if _truthy("POINTCMT_DISABLE_EXT"):
        _LOAD_ERROR = "disabled by POINTCMT_DISABLE_EXT"
        return False
    path = os.environ.get("POINTCMT_EXT_PATH")
    try:
        if path:
            torch.ops.load_library(path)
        else:
            from pointcmt_pyg import _C  # noqa: F401  (registers the ops)
    except (ImportError, OSError) as exc:
        _LOAD_ERROR = str(exc)
        return False
    return True


#: Source files whose change needs a rebuild of the extension (the Makefile's setup rule lists the same set).
SOURCE_PATTERNS: Tuple[str, ...] = ("*.cpp", "*.h", "*/*.cpp", "*/*.h", "*/*.cu", "*/*.cuh", "*/*/*.cuh")


def sources_newer_than(library: str, csrc: str) -> List[str]:
    """The extension's sources under ``csrc`` modified after ``library`` was
    written, newest first (empty when ``csrc`` or ``library`` does not exist).

    Args:
        library (str): Path of the built extension (``pointcmt_pyg/_C*.so``).
        csrc (str): The source tree it was built from (the checkout's ``csrc/``).
    """
    if not (os.path.isdir(csrc) and os.path.isfile(library)):
        return []
    built = os.path.getmtime(library)
    sources = {path for pattern in SOURCE_PATTERNS for path in glob.glob(os.path.join(csrc, pattern))}
    changed = sorted(((os.path.getmtime(path), path) for path in sources), reverse=True)
    return [path for mtime, path in changed if mtime > built]


def _warn_if_stale() -> None:
    """Warns when the in-place extension of a source checkout predates its sources."""
    from pointcmt_pyg import _C

    library = getattr(_C, "__file__", None)
    if not library:
        return
    csrc = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(library))), "csrc")
    newer = sources_newer_than(library, csrc)
    if newer:
        warnings.warn(
            f"pointcmt_pyg: the compiled ops ({library}) are older than {len(newer)} of their sources "
            f"(newest: {os.path.relpath(newer[0], os.path.dirname(csrc))}); they run the kernels as built, "
            "not as the checkout has them. Rebuild with `make setup` (or `pip install --no-build-isolation -e .`).",
            stacklevel=3,
        )


def _define_reference_library() -> None:
    """Declares the schemas in Python and registers the pure-torch references."""
    global _PY_LIBRARY
    _PY_LIBRARY = torch.library.Library("pointcmt", "DEF")
    for name, schema in SCHEMAS.items():
        _PY_LIBRARY.define(schema)


def register_reference(name: str, fn: Callable) -> None:
    """Registers ``fn`` as the implementation of ``pointcmt::name`` when the
    extension is not loaded (no-op otherwise). Called by each op module."""
    _REFERENCES[name] = fn
    if _PY_LIBRARY is not None:
        _PY_LIBRARY.impl(name, fn, "CompositeExplicitAutograd")


def backend() -> str:
    """Returns ``"extension"`` when the compiled ops are in use, else ``"reference"``."""
    assert _BACKEND is not None
    return _BACKEND


def load_error() -> Optional[str]:
    """Why the extension is not in use (``None`` when it is)."""
    return _LOAD_ERROR


def compiled_cuda_ops() -> Tuple[str, ...]:
    """The ops whose CUDA kernels the loaded extension registered, read when it
    was loaded (before any pure-PyTorch fallback for CUDA tensors was added)."""
    return _COMPILED_CUDA_OPS


def has_cuda_kernels() -> bool:
    """True when the loaded extension carries a compiled CUDA kernel for every op."""
    return _BACKEND == "extension" and set(_COMPILED_CUDA_OPS) == set(SCHEMAS)


_COMPILED_CUDA_OPS: Tuple[str, ...] = ()
if _load_extension():
    _BACKEND = "extension"
    if not os.environ.get("POINTCMT_EXT_PATH") and not _truthy("POINTCMT_QUIET"):
        _warn_if_stale()
    _COMPILED_CUDA_OPS = tuple(sorted(
        name for name in SCHEMAS
        if torch._C._dispatch_has_kernel_for_dispatch_key(f"pointcmt::{name}", "CUDA")))
else:
    _BACKEND = "reference"
    if not _truthy("POINTCMT_DISABLE_EXT") and not _truthy("POINTCMT_QUIET"):
        warnings.warn(
            "pointcmt_pyg: compiled ops not available, using the (slower) pure-PyTorch "
            f"references. Build with `pip install --no-build-isolation .` ({_LOAD_ERROR})",
            stacklevel=2,
        )
    _define_reference_library()
