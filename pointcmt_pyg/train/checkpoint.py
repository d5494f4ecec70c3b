r"""Atomic checkpoint files for PointCMT training (`paper
<https://arxiv.org/abs/2210.04208>`_).

A checkpoint is written to a temporary file in the target's directory, flushed
to disk, then moved over the target with :func:`os.replace` (atomic on POSIX
and Windows). A crash or kill during the write leaves either the previous
file or the new one, never a truncated one. Loading uses
``torch.load(weights_only=True)`` by default: checkpoints written by
:class:`~pointcmt_pyg.train.Trainer` hold only tensors and plain Python
containers, numbers and strings.
"""
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Union

import torch

__all__ = ["atomic_save", "load_checkpoint", "atomic_write_text"]

PathLike = Union[str, os.PathLike]


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(str(directory), os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: PathLike, write) -> Path:
    path = Path(path)
    if path.exists() and path.is_dir():
        raise ValueError(f"path {str(path)!r} is a directory, expected a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def atomic_save(obj: Any, path: PathLike) -> Path:
    r"""Saves ``obj`` with :func:`torch.save` atomically.

    Args:
        obj: What to save (a ``state_dict``, a dict of them, ...).
        path: Target file; its directory is created when missing.

    Returns:
        Path: ``path``.

    Raises:
        ValueError: ``path`` is a directory.
    """
    return _atomic_write(path, lambda handle: torch.save(obj, handle))


def atomic_write_text(text: str, path: PathLike) -> Path:
    r"""Writes ``text`` (UTF-8) to ``path`` atomically (e.g. a JSON log)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    data = text.encode("utf-8")
    return _atomic_write(path, lambda handle: handle.write(data))


def load_checkpoint(path: PathLike, map_location: Any = "cpu", weights_only: bool = True) -> Any:
    r"""Loads a file written by :func:`atomic_save`.

    Args:
        path: The checkpoint file.
        map_location: As :func:`torch.load`. (default: ``"cpu"``)
        weights_only: As :func:`torch.load`; keep ``True`` for files you did
            not write yourself. (default: ``True``)

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file is not a readable checkpoint (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as error:
        raise ValueError(f"cannot read checkpoint {str(path)!r}: {error}") from error
