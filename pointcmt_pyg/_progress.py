r"""Progress bars that honour ``--no-progress`` wherever they are made.

``--no-progress`` (the pipeline and every console command) sets
``TQDM_DISABLE=1`` for the duration of the work, but tqdm reads its
``TQDM_*`` variables once, when it is first imported (PyG imports it long
before), so a bar made later would still draw. Every bar of the package is
made here, which reads the variable at the moment the bar is made.
"""
from __future__ import annotations

import os
from typing import Any, Iterable

__all__ = ["bars_allowed", "progress_bar"]


def bars_allowed() -> bool:
    r"""``False`` while ``TQDM_DISABLE`` is set to a true value."""
    return os.environ.get("TQDM_DISABLE", "").lower() not in ("1", "true", "yes")


def progress_bar(iterable: Iterable[Any], enabled: bool = True, **kwargs: Any) -> Iterable[Any]:
    r"""``tqdm(iterable, **kwargs)`` when ``enabled``, drawn only while bars are
    allowed (:func:`bars_allowed`); ``iterable`` itself when not ``enabled``.

    Under ``--no-progress`` this is a disabled tqdm rather than the bare
    iterable, as before this module existed, because the two give different
    results: ``tqdm.auto`` is ``tqdm.asyncio.tqdm``, whose constructor calls
    ``iter(iterable)`` before its ``__iter__`` iterates the loader again, so
    a bar over a ``DataLoader`` builds one extra iterator, and each one draws
    its base seed from torch's global RNG; the following shuffles, dropout
    masks and FPS starts then differ
    (``tests/test_pipeline.py::test_teacher_stage_alone_is_the_pipelines_stage_one``
    caught it). ``--no-progress`` must not change results."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, dynamic_ncols=True, disable=not bars_allowed(), **kwargs)
