"""Threads of the op wrappers: their own torch ops run on one thread.

Around each kernel, a wrapper runs some 25 small torch ops (argument checks,
``batch`` -> ``ptr``, edge construction), each on tensors of 10^4-10^5
elements. Under torch's default OpenMP backend every one of them is an
OpenMP region on all intra-op threads, ending at a barrier where the threads
that arrived first spin until the last one arrives. On cores shared with
another multi-threaded process (a second training run, a notebook, CI), that
last thread is often not scheduled yet: ``perf record`` of ``knn`` at two
threads beside a two-thread matmul loop put 32-39 % of the samples in
libgomp's wait loops, against 16-18 % in the search itself, and the call took
1.5-2x its one-thread time (issue 10).

:func:`serial_torch_ops` (a decorator) sets the OpenMP team of torch's ops *on
the calling thread* to one thread for the wrapper's duration, through the
extension's ``pointcmt::_serial_torch_ops`` (``omp_set_num_threads`` is per
thread in OpenMP). Torch's global thread count, other threads, and our
kernels are untouched: the kernels split their work over
``torch.get_num_threads()`` threads with their own claim-based loop
(``csrc/cpu/parallel.h``), which never waits for a thread that has not
started and blocks instead of spinning.

It does nothing when the compiled extension is not loaded (the pure-PyTorch
references are the slow path anyway), while ``torch.compile`` traces, for
tensors that are not on the CPU, and at one thread.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

import torch

from . import _ext

F = TypeVar("F", bound=Callable[..., Any])


def _active(first: Any) -> bool:
    if torch.compiler.is_compiling():   # first: dynamo cannot trace the rest
        return False
    return (_ext.backend() == "extension" and isinstance(first, torch.Tensor)
            and first.device.type == "cpu" and torch.get_num_threads() > 1)


def serial_torch_ops(fn: F) -> F:
    """Decorator: ``fn``'s own torch ops run on one thread of the calling
    thread (see the module docstring); its first argument decides (a CPU
    tensor). Exception-safe and nestable."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        first = args[0] if args else next(iter(kwargs.values()), None)
        if not _active(first):
            return fn(*args, **kwargs)
        torch.ops.pointcmt._serial_torch_ops(True)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.ops.pointcmt._serial_torch_ops(False)
    return wrapper  # type: ignore[return-value]
