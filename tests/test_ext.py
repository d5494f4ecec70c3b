"""The extension loader: one schema per op whichever backend is live."""
import os
import subprocess
import sys
import warnings

import pytest
import torch

import pointcmt_pyg.ops as ops
from pointcmt_pyg.ops import _ext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_backend_is_known():
    assert ops.backend() in ("extension", "reference")
    if os.environ.get("POINTCMT_DISABLE_EXT") == "1":
        assert ops.backend() == "reference"


@pytest.mark.parametrize("name", sorted(_ext.SCHEMAS))
def test_every_op_is_registered_with_the_declared_schema(name):
    op = getattr(torch.ops.pointcmt, name).default
    assert str(op._schema) == "pointcmt::" + _ext.SCHEMAS[name]


@pytest.mark.skipif(ops.backend() != "extension", reason="the compiled extension is not loaded")
@pytest.mark.parametrize("name", sorted(_ext.INTERNAL_SCHEMAS))
def test_internal_ops_are_registered_with_the_declared_schema(name):
    op = getattr(torch.ops.pointcmt, name).default
    assert str(op._schema) == "pointcmt::" + _ext.INTERNAL_SCHEMAS[name]


def test_cpp_schemas_match_python_schemas():
    """csrc/pointcmt.cpp and _ext.SCHEMAS declare the same ops, byte for byte."""
    with open(os.path.join(ROOT, "csrc", "pointcmt.cpp")) as f:
        cpp = f.read()
    declared = {}
    for line in cpp.splitlines():
        line = line.strip()
        if line.startswith('m.def("'):
            schema = line[len('m.def("'):line.index('"', len('m.def("'))]
            declared[schema.split("(")[0]] = schema
    assert declared == {**_ext.SCHEMAS, **_ext.INTERNAL_SCHEMAS}


def test_extension_is_built_in_ci():
    """CI builds the extension; a silent fallback to the references must not pass there."""
    if os.environ.get("POINTCMT_REQUIRE_EXT") != "1":
        pytest.skip("set POINTCMT_REQUIRE_EXT=1 to require the compiled ops")
    if os.environ.get("POINTCMT_DISABLE_EXT", "0") not in ("", "0"):
        pytest.skip("the extension is disabled on purpose (reference-path run)")
    assert ops.backend() == "extension", ops.load_error()


def test_package_imports_and_runs_without_extension():
    code = (
        "import torch, pointcmt_pyg.ops as o;"
        "assert o.backend() == 'reference', o.backend();"
        "x = torch.rand(10, 3);"
        "print(o.fps(x, ratio=0.5, random_start=False).tolist())"
    )
    env = dict(os.environ, POINTCMT_DISABLE_EXT="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert len(eval(out.stdout.strip())) == 5


# ------------------------------------------------------------------ CUDA dispatch without a GPU
CUDA_KEYSET = torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA)


def test_cuda_kernels_are_compiled_when_the_build_says_so():
    """CI builds with FORCE_CUDA=1: every op must then carry its compiled CUDA kernel, from
    csrc/cuda/<op>_cuda.cu (a backward op from its op's file), not a Python fallback (a build that silently drops them fails)."""
    if os.environ.get("FORCE_CUDA") != "1" or os.environ.get("POINTCMT_REQUIRE_EXT") != "1":
        pytest.skip("set FORCE_CUDA=1 and POINTCMT_REQUIRE_EXT=1 (as CI does) to require CUDA kernels")
    if os.environ.get("POINTCMT_DISABLE_EXT", "0") not in ("", "0"):
        pytest.skip("the extension is disabled on purpose (reference-path run)")
    assert ops.backend() == "extension", ops.load_error()
    assert ops.compiled_cuda_ops() == tuple(sorted(_ext.SCHEMAS))
    assert ops.has_cuda_kernels()
    for name in _ext.SCHEMAS:
        cuda_line = next(line for line in torch._C._dispatch_dump(f"pointcmt::{name}").splitlines()
                         if line.startswith("CUDA:"))
        stem = name[:-len("_backward")] if name.endswith("_backward") else name   # a backward op lives with its op
        assert f"csrc/cuda/{stem}_cuda.cu" in cuda_line, cuda_line


def test_register_device_fallback_serves_cuda_dispatch_with_the_reference():
    """A CPU-only build serves CUDA tensors with the pure-PyTorch reference. Reached at the
    dispatcher without a GPU: an op with only a CPU kernel gets the fallback for the CUDA key,
    and redispatching to that key (on CPU tensors) runs the reference, not the CPU kernel."""
    code = """
import torch, pointcmt_pyg.ops as o
from pointcmt_pyg.ops._reference import register_device_fallback
assert o.backend() == "extension", o.load_error()
lib = torch.library.Library("pointcmt", "FRAGMENT")
lib.define("fallback_probe(Tensor x) -> Tensor")
lib.impl("fallback_probe", lambda x: x * 2, "CPU")
assert not torch._C._dispatch_has_kernel_for_dispatch_key("pointcmt::fallback_probe", "CUDA")
register_device_fallback("fallback_probe", lambda x: x + 1)
register_device_fallback("fallback_probe", lambda x: x - 1)     # already served: a no-op
op = torch.ops.pointcmt.fallback_probe.default
x = torch.tensor([1.0, 2.0])
assert torch.equal(op(x), x * 2)
assert torch.equal(op.redispatch(torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA), x), x + 1)
print("ok")
"""
    if ops.backend() != "extension":
        pytest.skip("the reference backend registers its ops for every device already")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, POINTCMT_QUIET="1"))
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_cpu_only_build_answers_cuda_dispatch_like_the_cpu_kernels():
    """In a build without CUDA kernels, the CUDA key of every op is the reference: it must give
    the CPU kernels' indices (FPS, kNN, radius) and a certified assignment (EMD)."""
    if ops.backend() != "extension" or ops.compiled_cuda_ops():
        pytest.skip("needs the extension built without CUDA kernels (the CUDA key is compiled code here)")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 3, generator=g)
    ptr, out_ptr, start = torch.tensor([0, 15, 40]), torch.tensor([0, 5, 13]), torch.zeros(2, dtype=torch.long)
    fps = torch.ops.pointcmt.fps.default
    assert torch.equal(fps.redispatch(CUDA_KEYSET, x, ptr, out_ptr, start, 13), fps(x, ptr, out_ptr, start, 13))
    knn = torch.ops.pointcmt.knn.default
    for got, want in zip(knn.redispatch(CUDA_KEYSET, x, x, ptr, ptr, 4, False), knn(x, x, ptr, ptr, 4, False)):
        assert torch.equal(got, want)
    radius = torch.ops.pointcmt.radius.default
    for got, want in zip(radius.redispatch(CUDA_KEYSET, x, x, ptr, ptr, 0.3, 8), radius(x, x, ptr, ptr, 0.3, 8)):
        assert torch.equal(got, want)
    a, b = torch.rand(2, 16, 3, generator=g), torch.rand(2, 16, 3, generator=g)
    dist, assignment, gap = torch.ops.pointcmt.emd.default.redispatch(CUDA_KEYSET, a, b, 1e-3, 100000)
    assert all(sorted(row.tolist()) == list(range(16)) for row in assignment)
    cpu_cost = torch.ops.pointcmt.emd.default(a, b, 1e-3, 100000)[0].double().sum(1)
    cost = dist.double().sum(1)
    assert torch.all((cost - cpu_cost).abs() <= gap.double() + 1e-3 * cpu_cost + 1e-6)


def _touch(path, mtime):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x")
    os.utime(path, (mtime, mtime))


def test_sources_newer_than_lists_only_sources_changed_after_the_build(tmp_path):
    csrc = tmp_path / "csrc"
    library = tmp_path / "pointcmt_pyg" / "_C.so"
    _touch(library, 1000)
    _touch(csrc / "pointcmt.cpp", 900)
    _touch(csrc / "cpu" / "emd_cpu.cpp", 1100)
    _touch(csrc / "cuda" / "kernels" / "knn.cuh", 1200)
    _touch(csrc / "cpu" / "notes.txt", 1300)          # not a source
    assert _ext.sources_newer_than(str(library), str(csrc)) == [
        str(csrc / "cuda" / "kernels" / "knn.cuh"), str(csrc / "cpu" / "emd_cpu.cpp")]
    os.utime(library, (1500, 1500))                   # rebuilt
    assert _ext.sources_newer_than(str(library), str(csrc)) == []
    assert _ext.sources_newer_than(str(library), str(tmp_path / "nowhere")) == []   # an installed wheel
    assert _ext.sources_newer_than(str(tmp_path / "missing.so"), str(csrc)) == []


def test_a_stale_in_place_build_warns_and_names_the_newest_source(tmp_path, monkeypatch):
    import types

    import pointcmt_pyg

    library = tmp_path / "pointcmt_pyg" / "_C.so"
    _touch(library, 1000)
    _touch(tmp_path / "csrc" / "cpu" / "fps_cpu.cpp", 900)
    fake = types.ModuleType("pointcmt_pyg._C")
    fake.__file__ = str(library)
    monkeypatch.setattr(pointcmt_pyg, "_C", fake, raising=False)
    monkeypatch.setitem(sys.modules, "pointcmt_pyg._C", fake)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _ext._warn_if_stale()                          # up to date: silent
    _touch(tmp_path / "csrc" / "cpu" / "fps_cpu.cpp", 1100)
    with pytest.warns(UserWarning, match=r"older than 1 of their sources \(newest: csrc/cpu/fps_cpu.cpp\).*make setup"):
        _ext._warn_if_stale()
