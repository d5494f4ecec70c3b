"""The scripts in bench/ import only names that the package still has.

bench/ablate_pointcmt.py and bench/final_epoch.py imported ``pointcmt_pyg.pipeline._evaluate`` for weeks after
it had become ``evaluate_classifier`` (commit e821efb), and failed at import; nothing ran them in CI. Running
every script would cost minutes, so this reads their ``from pointcmt_pyg... import name`` statements (at any
depth: some import inside functions) and checks that each module has each name.
"""
import ast
import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def package_imports(path: Path):
    r"""``(line, module, name)`` of every ``from pointcmt_pyg[.x] import name`` in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "pointcmt_pyg":
            for alias in node.names:
                yield node.lineno, node.module, alias.name


SCRIPTS = sorted(BENCH.glob("*.py"))


def test_the_bench_folder_is_found():
    assert len(SCRIPTS) >= 10
    assert any(list(package_imports(p)) for p in SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bench_script_imports_exist(script):
    missing = []
    for line, module, name in package_imports(script):
        mod = importlib.import_module(module)
        if name != "*" and not hasattr(mod, name):
            try:  # a submodule imported by name (from pointcmt_pyg import ops)
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                missing.append(f"{script.name}:{line}: {module}.{name}")
    assert not missing, "bench scripts import names the package no longer has: " + ", ".join(missing)


def test_the_check_catches_a_missing_name(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from pointcmt_pyg.pipeline import _evaluate\n")
    (line, module, name), = package_imports(bad)
    assert (line, module, name) == (2, "pointcmt_pyg.pipeline", "_evaluate")
    assert not hasattr(importlib.import_module(module), name)
