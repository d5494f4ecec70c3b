r"""Point Transformer classifier (`Zhao et al., "Point Transformer"
<https://arxiv.org/abs/2012.09164>`_), the architecture of PyG's
``examples/point_transformer_classification.py`` on :mod:`pointcmt_pyg.ops`
(``fps``, ``knn``, ``knn_graph``) instead of torch-cluster, usable as a
PointCMT student (`<https://arxiv.org/abs/2210.04208>`_).

Differences from the example, none of which changes the layer sizes: the
classifier head is called ``mlp`` (the example's ``lin``) so that
:class:`~pointcmt_pyg.nn.CrossModalDistiller` finds it, the dummy all-ones
input feature is created on the device of ``pos``, forward returns logits
(not log-probabilities), and farthest point sampling starts at the first point
in eval mode (deterministic predictions; random start while training).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

from torch import Tensor
from torch.nn import BatchNorm1d, Linear, Module, ModuleList, ReLU, Sequential

from torch_geometric.nn import PointTransformerConv, global_mean_pool
from torch_geometric.utils import scatter

from ..ops import fps, knn, knn_graph
from ._inputs import unpack_cloud_batch

__all__ = ["TransformerBlock", "transition_down", "PointTransformer"]


class TransformerBlock(Module):
    r"""``lin_in -> ReLU -> PointTransformerConv -> lin_out -> ReLU`` (the
    example's block, without a skip connection).

    Args:
        in_channels (int): Input width.
        out_channels (int): Output width.
        hidden_channels (int): Width entering the attention.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int) -> None:
        super().__init__()
        self.lin_in = Linear(in_channels, hidden_channels)
        self.lin_out = Linear(out_channels, out_channels)
        self.pos_nn = Sequential(Linear(3, 64), ReLU(), Linear(64, out_channels))
        self.attn_nn = Sequential(Linear(out_channels, 64), ReLU(), Linear(64, out_channels))
        self.transformer = PointTransformerConv(hidden_channels, out_channels,
                                                pos_nn=self.pos_nn, attn_nn=self.attn_nn)

    def forward(self, x: Tensor, pos: Tensor, edge_index: Tensor) -> Tensor:
        x = self.lin_in(x).relu()
        x = self.transformer(x, pos, edge_index)
        return self.lin_out(x).relu()


def transition_down(x: Tensor, pos: Tensor, batch: Tensor, mlp: Module, k: int = 16, ratio: float = 0.25,
                    random_start: bool = True, num_clouds: Optional[int] = None) -> Tuple[Tensor, Tensor, Tensor]:
    r"""The example's transition down: farthest point sampling of ``ratio``
    of the points, ``mlp`` on every point, and a max over the ``k`` nearest
    points of each sample (the sample itself included).

    Returns:
        ``(x, pos, batch)`` of the samples.
    """
    idx = fps(pos, batch, ratio=ratio, random_start=random_start, batch_size=num_clouds)
    sub_batch = batch[idx]
    centre, neighbour = knn(pos, pos[idx], k, batch, sub_batch, batch_size=num_clouds)
    x = mlp(x)
    x_out = scatter(x[neighbour], centre, dim=0, dim_size=idx.shape[0], reduce="max")
    return x_out, pos[idx], sub_batch


class PointTransformer(Module):
    r"""Point Transformer classifier of PyG's example::

        mlp_input         Linear(F, d0) - BatchNorm - ReLU       (F = 1: all-ones dummy)
        transformer_input TransformerBlock(d0, d0, d0) on the kNN graph (k)
        for i: TransitionDown(Linear(d_i, d_i+1) - BN - ReLU, ratio 0.25, k)
               TransformerBlock(d_i+1, d_i+1, d_i+1) on a new kNN graph
        global mean pool                                          -> global feature (d_last)
        mlp               Linear(d_last, 64) - ReLU - Linear(64, 64) - ReLU - Linear(64, C)

    Args:
        num_classes (int): Number of classes.
        in_channels (int): Per-point features ``F`` read from ``data.x``;
            ``0`` uses one all-ones feature per point (as the example).
            (default: ``0``)
        dim_model (sequence of int): Widths of the stages. (default:
            ``(32, 64, 128, 256, 512)``, the example's)
        k (int): Neighbours of the kNN graphs and the pooling. (default: ``16``)

    Attributes:
        mlp: The classifier head, applied to the global feature.
        feat_dim (int): Width of the global feature (``dim_model[-1]``).
    """

    def __init__(self, num_classes: int, in_channels: int = 0,
                 dim_model: Sequence[int] = (32, 64, 128, 256, 512), k: int = 16) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"'num_classes' must be a positive int (got {num_classes!r})")
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 0:
            raise ValueError(f"'in_channels' must be a non-negative int (got {in_channels!r})")
        dim_model = [int(d) for d in dim_model]
        if len(dim_model) == 0 or min(dim_model) < 1:
            raise ValueError(f"'dim_model' must be a non-empty list of positive widths (got {dim_model})")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"'k' must be a positive int (got {k!r})")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.k = k
        self.feat_dim = dim_model[-1]
        num_features = max(in_channels, 1)

        self.mlp_input = Sequential(Linear(num_features, dim_model[0]), BatchNorm1d(dim_model[0]), ReLU())
        self.transformer_input = TransformerBlock(dim_model[0], dim_model[0], dim_model[0])
        self.transformers_down = ModuleList()
        self.mlp_down = ModuleList()
        for i in range(len(dim_model) - 1):
            self.mlp_down.append(Sequential(Linear(dim_model[i], dim_model[i + 1]),
                                            BatchNorm1d(dim_model[i + 1]), ReLU()))
            self.transformers_down.append(TransformerBlock(dim_model[i + 1], dim_model[i + 1], dim_model[i + 1]))
        self.mlp = Sequential(Linear(dim_model[-1], 64), ReLU(), Linear(64, 64), ReLU(), Linear(64, num_classes))

    def features(self, data: Any) -> Tensor:
        r"""The global feature ``[B, dim_model[-1]]`` (the input of :attr:`mlp`)."""
        name = type(self).__name__
        x, pos, batch, num_clouds = unpack_cloud_batch(data, name)
        if self.in_channels == 0:
            x = pos.new_ones((pos.shape[0], 1))
        elif x is None or x.shape[1] != self.in_channels:
            got = "None" if x is None else f"{x.shape[1]} features per point"
            raise ValueError(f"{name} was built with in_channels={self.in_channels} but 'data.x' is {got}")

        x = self.mlp_input(x)
        edge_index = knn_graph(pos, k=self.k, batch=batch, batch_size=num_clouds)
        x = self.transformer_input(x, pos, edge_index)
        for mlp_down, transformer in zip(self.mlp_down, self.transformers_down):
            x, pos, batch = transition_down(x, pos, batch, mlp_down, self.k, 0.25, self.training, num_clouds)
            edge_index = knn_graph(pos, k=self.k, batch=batch, batch_size=num_clouds)
            x = transformer(x, pos, edge_index)
        return global_mean_pool(x, batch, size=num_clouds)

    def forward(self, data: Any) -> Tensor:
        r"""Logits ``[B, num_classes]`` of a PyG batch (``pos``, ``batch``,
        optional ``x``)."""
        return self.mlp(self.features(data))
