r"""Reuse of freed CPU memory during training (glibc's ``mallopt``).

PyTorch's CPU tensors come from ``malloc``. glibc serves blocks larger than
its *mmap threshold* (at most 32 MiB, its dynamic default's ceiling) with a
fresh ``mmap`` and unmaps them on ``free``, so a training step that makes and
frees hundreds of edge blocks of 50-500 MB (PointNet++ MSG's set abstraction
on 32 clouds of 1,024 points) page-faults and zeroes every one of them anew:
``torch.relu`` of a ``[2^20, 96]`` float32 block took 149 ms, 34 ms with the
freed memory kept, and a PointNet++ MSG step was 1.4-2.1x faster
(BENCHMARKS.md, session 25). The kernel time spent faulting showed up as
``sys`` time: 15 of 26 s of a profiled MSG run.

:func:`retain_freed_memory` raises the mmap threshold and the trim threshold
to 1 GiB, so that blocks up to that size come from the heap and freed ones
stay there for the next step. The process's resident memory then stays near
its peak instead of falling between steps, what a caching allocator (the
CUDA one, jemalloc, tcmalloc) does anyway, and the peak itself grows: glibc
cannot always refit an aligned block into the hole an equal one left, so the
heap grows by a few blocks before it settles. Measured here (PointNet++ MSG,
dense, B = 32 real clouds of 1,024 points, 8 steps, 2 threads): 9.77 -> 6.90 s
per step (median), peak resident memory 7.8 -> 10.8 GB, resident after the
last step 1.4 -> 9.3 GB (``bench/step_memory.py``). :class:`~pointcmt_pyg.train.Trainer`
calls it when it trains on the CPU (its ``reuse_cpu_memory`` argument).

It only acts under glibc (Linux); elsewhere it does nothing and returns
``False``. The setting is process-wide and affects only later allocations.
"""
from __future__ import annotations

import ctypes
import sys
from typing import Optional

__all__ = ["retain_freed_memory", "RETAINED_BLOCK_BYTES"]

#: Blocks up to this size come from (and return to) the heap once
#: :func:`retain_freed_memory` is on (mallopt takes an ``int``).
RETAINED_BLOCK_BYTES = 1 << 30

# glibc's steady state in a process that frees large blocks: its dynamic mmap
# threshold has climbed to DEFAULT_MMAP_THRESHOLD_MAX (32 MiB on 64-bit), the
# trim threshold to twice that (malloc.c, "dynamic mmap threshold").
_GLIBC_MMAP_THRESHOLD_MAX = 32 << 20
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_libc: Optional[ctypes.CDLL] = None


def _glibc() -> Optional[ctypes.CDLL]:
    global _libc
    if _libc is None:
        if not sys.platform.startswith("linux"):
            return None
        try:
            libc = ctypes.CDLL(None)
        except OSError:
            return None
        if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
            return None         # musl and other C libraries: leave them alone
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        _libc = libc
    return _libc


def retain_freed_memory(enabled: bool = True) -> bool:
    r"""Keep freed CPU blocks of up to :data:`RETAINED_BLOCK_BYTES` in the
    heap for reuse (``enabled=True``), or go back to glibc's steady-state
    behaviour for a process that frees large blocks (``enabled=False``:
    blocks over 32 MiB mapped and unmapped one by one).

    Args:
        enabled (bool): Retain (``True``) or release (``False``).

    Returns:
        bool: Whether the setting was applied (``False`` outside glibc).
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"'enabled' must be a bool (got {type(enabled).__name__})")
    libc = _glibc()
    if libc is None:
        return False
    if enabled:
        mmap_threshold = trim_threshold = RETAINED_BLOCK_BYTES
    else:
        mmap_threshold, trim_threshold = _GLIBC_MMAP_THRESHOLD_MAX, 2 * _GLIBC_MMAP_THRESHOLD_MAX
    mapped = libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1
    trimmed = libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1
    return mapped and trimmed
