r"""pointcmt-pyg: PointCMT cross-modal training for PyTorch Geometric.

Images teach point clouds during training only (`Yan et al., "Let Images Give You
More: Point Cloud Cross-Modal Training for Shape Analysis", NeurIPS 2022
<https://arxiv.org/abs/2210.04208>`_). Inference runs the point model alone.
"""
__version__ = "0.1.0"

from . import ops  # noqa: F401

__all__ = ["ops", "__version__"]
