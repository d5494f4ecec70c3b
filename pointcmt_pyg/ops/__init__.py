r"""Point-cloud operators: farthest point sampling, k nearest neighbours, radius
search and the Earth Mover's Distance.

Drop-in replacements for ``torch_geometric.nn.fps`` / ``knn`` / ``knn_graph`` /
``radius`` / ``radius_graph`` (which need pyg-lib or torch-cluster, neither of
which installs from PyPI with pip alone), backed by the C++/CUDA kernels in
``csrc/`` or, when the extension is not built, by pure-PyTorch references.
"""
from ._ext import backend, compiled_cuda_ops, has_cuda_kernels, load_error
from .fps import fps, fps_dense
from .knn import knn, knn_dense, knn_graph, knn_padded
from .radius import radius, radius_graph, radius_padded
from .emd import emd, emd_loss
from .slot_max import slot_max
from .segment_max import segment_max
from .gather_max import gather_max

__all__ = [
    "backend",
    "has_cuda_kernels",
    "compiled_cuda_ops",
    "load_error",
    "fps",
    "fps_dense",
    "knn",
    "knn_dense",
    "knn_graph",
    "knn_padded",
    "radius",
    "radius_graph",
    "radius_padded",
    "emd",
    "emd_loss",
    "slot_max",
    "segment_max",
    "gather_max",
]
