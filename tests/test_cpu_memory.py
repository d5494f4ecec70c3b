"""retain_freed_memory: large blocks come from glibc's heap instead of mmap."""
import ctypes
import subprocess
import sys
import textwrap

import pytest
import torch

from pointcmt_pyg.train import Trainer, retain_freed_memory
from pointcmt_pyg.train import cpu_memory, trainer as trainer_module

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or cpu_memory._glibc() is None
    or not hasattr(ctypes.CDLL(None), "mallinfo2"), reason="needs glibc >= 2.33")

# Run in a fresh interpreter: a heap that already holds freed large blocks
# (any earlier test that trained on the CPU) serves them whatever the setting.
_PROBE = textwrap.dedent("""
    import ctypes, resource, torch
    from pointcmt_pyg.train import retain_freed_memory

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                    "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    size = 96 << 20                                    # over glibc's 32 MiB ceiling
    pages = size // resource.getpagesize()

    def steps(count):
        # what a training step does to a large block: make it, write it, free it
        # (with small allocations between); (bytes mmapped, pages faulted) per step
        out = []
        for _ in range(count):
            mapped, faults = libc.mallinfo2().hblkhd, resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            block = torch.empty(size, dtype=torch.uint8)
            mapped = libc.mallinfo2().hblkhd - mapped
            block.fill_(1)
            small = [bytearray(600) for _ in range(100)]
            del block
            out.append((mapped, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults))
        return out

    assert retain_freed_memory(False)
    for mapped, faults in steps(4):                    # mapped on its own, faulted anew
        assert mapped >= size and faults >= 0.9 * pages, (mapped, faults)
    assert retain_freed_memory(True)
    history = steps(16)
    assert all(mapped < size for mapped, _ in history), history     # from the heap
    assert all(faults < 0.1 * pages for _, faults in history[-3:]), history   # reused
    print("ok")
""")


@glibc
def test_large_blocks_come_from_the_heap_only_when_retained():
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_the_trainer_retains_on_the_cpu_unless_told_not_to(monkeypatch):
    calls = []
    monkeypatch.setattr(trainer_module, "retain_freed_memory", calls.append)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    Trainer(model, opt, device="cpu", progress=False, reuse_cpu_memory=False)
    assert calls == []
    Trainer(model, opt, device="cpu", progress=False)
    assert calls == [True]
    if torch.cuda.is_available():
        Trainer(model, opt, device="cuda", progress=False)
        assert calls == [True]                          # not on a GPU


def test_outside_glibc_it_does_nothing(monkeypatch):
    monkeypatch.setattr(cpu_memory, "_glibc", lambda: None)
    assert retain_freed_memory(True) is False


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="'enabled'"):
        retain_freed_memory("yes")
    model = torch.nn.Linear(3, 2)
    with pytest.raises(TypeError, match="reuse_cpu_memory"):
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), device="cpu",
                reuse_cpu_memory=1)
