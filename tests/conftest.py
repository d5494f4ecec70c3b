"""Shared pytest fixtures.

``shared_data``: the directory with the real datasets (``$POINTCMT_DATA`` or
``../shared/data`` beside the repository). Tests that need it skip with a reason
when it is absent, and fail instead when ``POINTCMT_REQUIRE_DATA=1`` (CI).
"""
import os
import socket
from pathlib import Path

import pytest
import torch

os.environ.setdefault("POINTCMT_QUIET", "1")

REPO = Path(__file__).resolve().parent.parent


def _data_root() -> Path:
    env = os.environ.get("POINTCMT_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def require_path(path: Path) -> Path:
    """Returns ``path`` if it exists; else skips (or fails under POINTCMT_REQUIRE_DATA=1)."""
    if path.exists():
        return path
    msg = f"real data not found at {path} (set POINTCMT_DATA)"
    if os.environ.get("POINTCMT_REQUIRE_DATA") == "1":
        pytest.fail(msg + " and POINTCMT_REQUIRE_DATA=1")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-data directory (see /work/shared/data/README.md)."""
    return require_path(_data_root())


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def free_port() -> int:
    """A TCP port free on this machine now (for a test's process group), never a fixed one."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: Why the torch-cluster cross-checks skip (one message, printed again in the summary).
TORCH_CLUSTER_SKIP = ("optional cross-check against torch-cluster, which is not installed: it compiles "
                      "from source for ~15 minutes on 2 cores (`make baselines`); bench/ops.py runs the "
                      "same comparison wherever it is installed")


def pytest_terminal_summary(terminalreporter):
    skipped = [r for r in terminalreporter.stats.get("skipped", [])
               if "torch-cluster" in str(getattr(r, "longrepr", ""))]
    if skipped:
        terminalreporter.write_line(
            f"note: {len(skipped)} torch-cluster cross-checks skipped ({TORCH_CLUSTER_SKIP}).")
