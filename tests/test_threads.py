"""The op wrappers run their own torch ops on one OpenMP thread of the calling
thread (pointcmt_pyg/ops/_threads.py, issue 10), and put everything back,
also when they raise."""
import ctypes
import sys
import threading

import pytest
import torch

import pointcmt_pyg.ops as ops
from pointcmt_pyg.ops import _validation

pytestmark = pytest.mark.skipif(ops.backend() != "extension",
                                reason="the compiled extension is not loaded")


def _libgomp():
    try:
        return ctypes.CDLL("libgomp.so.1")
    except OSError:
        pytest.skip("torch does not use libgomp here")


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _cloud(n=2048, clouds=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, generator=g), torch.arange(clouds).repeat_interleave(n // clouds)


@pytest.mark.parametrize("call", ["knn", "knn_graph", "radius", "radius_graph", "fps", "emd"])
def test_wrapper_torch_ops_run_on_one_thread_and_are_restored(call, two_threads, monkeypatch):
    gomp = _libgomp()
    x, batch = _cloud()
    seen = []
    real = _validation.check_points

    def spy(*args, **kwargs):
        seen.append(gomp.omp_get_max_threads())
        return real(*args, **kwargs)

    for name in ("emd", "fps", "knn", "radius"):   # the modules (ops.<name> is the function)
        monkeypatch.setattr(sys.modules[f"pointcmt_pyg.ops.{name}"], "check_points", spy)
    runs = {
        "knn": lambda: ops.knn(x, x, 8, batch, batch),
        "knn_graph": lambda: ops.knn_graph(x, 8, batch),
        "radius": lambda: ops.radius(x, x[:64], 0.2, batch, batch[:64]),
        "radius_graph": lambda: ops.radius_graph(x, 0.1, batch),
        "fps": lambda: ops.fps(x, batch, ratio=0.25),
        "emd": lambda: ops.emd(x.view(4, -1, 3), x.flip(0).view(4, -1, 3)),
    }
    assert gomp.omp_get_max_threads() == 2
    runs[call]()
    assert seen and set(seen) == {1}            # inside the wrapper: one thread
    assert gomp.omp_get_max_threads() == 2      # after it: as before
    assert torch.get_num_threads() == 2


def test_restored_when_the_wrapper_raises(two_threads):
    gomp = _libgomp()
    x, batch = _cloud()
    with pytest.raises(ValueError, match="'x' contains NaN"):
        ops.knn(torch.full_like(x, float("nan")), x, 4, batch, batch)
    with pytest.raises(ValueError, match="'k'"):
        ops.knn(x, x, 0, batch, batch)
    assert gomp.omp_get_max_threads() == 2


def test_nested_enter_and_other_threads(two_threads):
    gomp = _libgomp()

    def other_thread():
        seen = []
        t = threading.Thread(target=lambda: seen.append(gomp.omp_get_max_threads()))
        t.start()
        t.join()
        return seen[0]

    before = other_thread()                      # what a new thread gets without us
    torch.ops.pointcmt._serial_torch_ops(True)
    torch.ops.pointcmt._serial_torch_ops(True)
    assert other_thread() == before              # only the calling thread changes
    assert gomp.omp_get_max_threads() == 1
    torch.ops.pointcmt._serial_torch_ops(False)
    assert gomp.omp_get_max_threads() == 1      # the outer enter still holds
    torch.ops.pointcmt._serial_torch_ops(False)
    assert gomp.omp_get_max_threads() == 2
    torch.ops.pointcmt._serial_torch_ops(False)  # an unmatched exit changes nothing
    assert gomp.omp_get_max_threads() == 2


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_results_do_not_depend_on_threads(threads):
    """The kernels split work over torch.get_num_threads() threads (claimed
    chunks, cpu/parallel.h); the answer must not change with that number."""
    x, batch = _cloud(4096, 8, seed=1)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        want = (ops.knn(x, x, 16, batch, batch), ops.radius(x, x, 0.15, batch, batch, 32),
                ops.fps(x, batch, ratio=0.5, random_start=False), ops.emd(x.view(8, -1, 3), x.flip(0).view(8, -1, 3))[1])
        torch.set_num_threads(threads)
        got = (ops.knn(x, x, 16, batch, batch), ops.radius(x, x, 0.15, batch, batch, 32),
               ops.fps(x, batch, ratio=0.5, random_start=False), ops.emd(x.view(8, -1, 3), x.flip(0).view(8, -1, 3))[1])
    finally:
        torch.set_num_threads(before)
    for a, b in zip(want, got):
        assert torch.equal(a, b)
