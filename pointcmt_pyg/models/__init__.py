r"""Point cloud classifiers of PyG's examples on :mod:`pointcmt_pyg.ops`, so
they run from a plain ``pip install`` (no pyg-lib, no torch-cluster), ready to
be PointCMT students (`<https://arxiv.org/abs/2210.04208>`_).

Every model takes a PyG ``Batch`` (``pos`` ``[N, 3]``, ``batch`` ``[N]``,
optional ``x``) and returns logits ``[B, num_classes]``; its classifier head is
the attribute ``mlp`` applied to the global feature (``.features(data)``,
width ``.feat_dim``), which is where
:class:`~pointcmt_pyg.nn.CrossModalDistiller` taps the student.

.. code-block:: python

    from pointcmt_pyg.models import get_model
    model = get_model("dgcnn", num_classes=40)      # or DGCNN(40)

A model written against ``torch_geometric.nn`` (``fps``, ``knn``, ``radius``,
``DynamicEdgeConv``, ...) runs unchanged inside :func:`use_pointcmt_ops`
(see ``docs/using_our_ops.md``).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List

from torch.nn import Module

from .dgcnn import DGCNN, DynamicEdgeConv
from .point_transformer import PointTransformer
from .pointnet2 import PointNet2, PointNet2MSG
from .pyg_patch import PygOpsPatch, pointcmt_ops_active, use_pointcmt_ops

__all__ = [
    "PointNet2",
    "PointNet2MSG",
    "DGCNN",
    "DynamicEdgeConv",
    "PointTransformer",
    "use_pointcmt_ops",
    "pointcmt_ops_active",
    "PygOpsPatch",
    "MODELS",
    "get_model",
    "list_models",
]

#: Registry name -> model class (constructor ``cls(num_classes, **kwargs)``).
MODELS: Dict[str, Callable[..., Module]] = {
    "pointnet2": PointNet2,
    "pointnet2_fc512": functools.partial(PointNet2, head="fc512"),
    "pointnet2_msg": PointNet2MSG,
    "dgcnn": DGCNN,
    "point_transformer": PointTransformer,
}


def list_models() -> List[str]:
    r"""The names accepted by :func:`get_model`."""
    return sorted(MODELS)


def get_model(name: str, num_classes: int, **kwargs: Any) -> Module:
    r"""Builds a registered classifier.

    Args:
        name (str): One of ``"pointnet2"`` (PointNet++ SSG, PyG example),
            ``"pointnet2_fc512"`` (the same with PointCMT's 512-d FC-BN-ReLU
            student head, ``PointNet2(head="fc512")``),
            ``"pointnet2_msg"`` (PointNet++ MSG, PointCMT's student),
            ``"dgcnn"``, ``"point_transformer"`` (case-insensitive; ``-``
            counts as ``_``).
        num_classes (int): Number of classes.
        **kwargs: Further constructor arguments of the model class (e.g.
            ``k=20`` for DGCNN, ``in_channels=3`` for per-point features).

    Raises:
        ValueError: Unknown ``name`` (the message lists the known ones).
        TypeError: ``name`` is not a string, or a keyword the model does not take.
    """
    if not isinstance(name, str):
        raise TypeError(f"'name' must be a str (got {type(name).__name__})")
    key = name.strip().lower().replace("-", "_")
    if key not in MODELS:
        raise ValueError(f"unknown model name={name!r}; known models: {', '.join(list_models())}")
    return MODELS[key](num_classes, **kwargs)
