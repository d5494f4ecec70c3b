r"""pointcmt-pyg: PointCMT cross-modal training for PyTorch Geometric.

Images teach point clouds during training only (`Yan et al., "Let Images Give You
More: Point Cloud Cross-Modal Training for Shape Analysis", NeurIPS 2022
<https://arxiv.org/abs/2210.04208>`_). Inference runs the point model alone.

.. code-block:: python

    import pointcmt_pyg
    from pointcmt_pyg.nn import CrossModalDistiller

    teacher, cmpg = pointcmt_pyg.load_teacher("runs/teacher.pt"), pointcmt_pyg.load_cmpg("runs/cmpg.pt")
    model = CrossModalDistiller(MyPygNet(), teacher, cmpg)
    loss = model(data).loss

Subpackages: :mod:`~pointcmt_pyg.ops` (FPS, kNN, radius, EMD),
:mod:`~pointcmt_pyg.nn` (teacher, CMPG, distiller, losses),
:mod:`~pointcmt_pyg.models` (PointNet++, DGCNN, Point Transformer on our ops),
:mod:`~pointcmt_pyg.datasets`, :mod:`~pointcmt_pyg.render`,
:mod:`~pointcmt_pyg.train` and :mod:`~pointcmt_pyg.pipeline` (the whole recipe).
"""
__version__ = "0.1.0"

import warnings as _warnings

with _warnings.catch_warnings():
    # PyG 2.8 calls torch.jit.script while it is imported, which torch 2.14
    # deprecates with a FutureWarning on every run of every user: silenced for
    # that import only (the user's own torch.jit.script calls still warn).
    _warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated",
                             category=FutureWarning)
    import torch_geometric  # noqa: F401

from . import ops  # noqa: F401
from .nn import (CMPG, CrossModalDistiller, DistillerOutput, MultiViewTeacher, load_cmpg,
                 load_teacher, save_cmpg, save_teacher)

_SUBMODULES = ("datasets", "models", "render", "train", "pipeline", "cli")
_LAZY = {
    "use_pointcmt_ops": "models",
    "get_model": "models",
    "train_teacher": "train",
    "train_cmpg": "train",
    "train_student": "train",
    "compute_teacher_features": "datasets",
    "AttachImageFeatures": "datasets",
    "PipelineConfig": "pipeline",
    "run_pipeline": "pipeline",
}


def __getattr__(name: str):
    # Subpackages and their main entry points load on first use, so that
    # `import pointcmt_pyg` stays light (no open3d/matplotlib at import time).
    import importlib
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'pointcmt_pyg' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES) + list(_LAZY))


__all__ = ["__version__", "ops", "nn", "MultiViewTeacher", "CMPG", "CrossModalDistiller",
           "DistillerOutput", "load_teacher", "save_teacher", "load_cmpg", "save_cmpg",
           *_SUBMODULES, *_LAZY]
