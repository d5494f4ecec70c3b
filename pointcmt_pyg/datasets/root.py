r"""Where the real datasets live on disk.

The project reads third-party copies of ModelNet etc. from one directory: the
environment variable ``POINTCMT_DATA`` when set, else ``../shared/data`` beside
the working directory or beside the repository checkout.
"""
import os
from pathlib import Path
from typing import Optional, Union

__all__ = ["DATA_ENV", "default_data_root", "resolve_root"]

#: Environment variable naming the data directory.
DATA_ENV = "POINTCMT_DATA"

_REPO = Path(__file__).resolve().parent.parent.parent


def default_data_root() -> Path:
    r"""Returns the default directory holding the real datasets.

    Resolution order: ``$POINTCMT_DATA`` (returned as given, even if it does not
    exist, so that a wrong setting produces a clear "not found" later rather
    than silently reading elsewhere); else ``<cwd>/../shared/data`` if it exists;
    else ``<repository>/../shared/data`` (returned even if absent).
    """
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    beside_cwd = Path.cwd().parent / "shared" / "data"
    if beside_cwd.is_dir():
        return beside_cwd
    return _REPO.parent / "shared" / "data"


def resolve_root(root: Optional[Union[str, os.PathLike]], default_subdir: Optional[str] = None) -> Path:
    r"""Turns a user-supplied dataset root into a :class:`~pathlib.Path`.

    Args:
        root: A directory, or :obj:`None` for
            ``default_data_root() / default_subdir``.
        default_subdir: Sub-directory of the default data root used when
            :obj:`root` is :obj:`None`.

    Raises:
        TypeError: If :obj:`root` is neither :obj:`None`, a string nor a path.
    """
    if root is None:
        base = default_data_root()
        return base / default_subdir if default_subdir else base
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path or None, got {type(root).__name__}")
    return Path(root).expanduser()
