"""The extension loader: one schema per op whichever backend is live."""
import os
import subprocess
import sys

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


def test_cpp_schemas_match_python_schemas():
    """csrc/pointcmt.cpp and _ext.SCHEMAS declare the same ops, byte for byte."""
    with open(os.path.join(ROOT, "csrc", "pointcmt.cpp")) as f:
        cpp = f.read()
    declared = {}
    for line in cpp.splitlines():
        line = line.strip()
        if line.startswith('m.def("'):
            schema = line[len('m.def("'):line.rindex('")')]
            declared[schema.split("(")[0]] = schema
    assert declared == _ext.SCHEMAS


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
