r"""DGCNN classifier (`Wang et al., "Dynamic Graph CNN for Learning on Point
Clouds" <https://arxiv.org/abs/1801.07829>`_), the architecture of PyG's
``examples/dgcnn_classification.py``, on :func:`pointcmt_pyg.ops.knn`.

PyG's ``DynamicEdgeConv`` calls pyg-lib's kNN directly (and refuses to be
built without it), so this module brings :class:`DynamicEdgeConv`: the same
operator, arguments and parameter names, with the graph built by our ``knn``.
Used as a PointCMT student (`<https://arxiv.org/abs/2210.04208>`_).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple, Union

import torch
from torch import Tensor
from torch.nn import Linear, Module

from torch_geometric.nn import MLP, MessagePassing
from torch_geometric.nn.inits import reset

from ..ops import knn, knn_padded
from ._dense import check_grouping, dense_edge_conv, global_max_pool_for, supports_dense
from ._inputs import unpack_cloud_batch

__all__ = ["DynamicEdgeConv", "DGCNN"]


class DynamicEdgeConv(MessagePassing):
    r"""The dynamic edge convolution of DGCNN,

    .. math::
        \mathbf{x}^{\prime}_i = \square_{j \in \mathcal{N}_k(i)}
        h_{\mathbf{\Theta}}(\mathbf{x}_i \, \Vert \, \mathbf{x}_j - \mathbf{x}_i),

    where :math:`\mathcal{N}_k(i)` are the ``k`` nearest neighbours of
    :math:`\mathbf{x}_i` in feature space within its cloud (the point itself
    included, as in PyG), found by :func:`pointcmt_pyg.ops.knn`. Equal to
    ``torch_geometric.nn.DynamicEdgeConv`` (same arguments, same
    ``state_dict``) without needing pyg-lib.

    Args:
        nn (torch.nn.Module): :math:`h_{\mathbf{\Theta}}`, mapping
            ``[-1, 2 * in_channels]`` to ``[-1, out_channels]``.
        k (int): Number of nearest neighbours.
        aggr (str): ``"max"``, ``"mean"`` or ``"add"``. (default: ``"max"``)
        num_workers (int): Accepted for compatibility with PyG. (default: ``1``)
        grouping (str): ``"dense"`` (default: with ``aggr="max"``, the first
            linear layer split per point, a max over the padded kNN slots; see
            :mod:`pointcmt_pyg.models._dense`) or ``"message_passing"`` (PyG's
            propagation, the reference). Same parameters and results.
        **kwargs: Further arguments of
            :class:`torch_geometric.nn.conv.MessagePassing`.
    """

    def __init__(self, nn: Callable, k: int, aggr: str = "max", num_workers: int = 1,
                 grouping: str = "dense", **kwargs: Any) -> None:
        super().__init__(aggr=aggr, flow="source_to_target", **kwargs)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"'k' must be a positive int (got {k!r})")
        self.grouping = check_grouping(grouping)
        self.nn = nn
        self.k = k
        self.num_workers = num_workers
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset(self.nn)

    def forward(self, x: Union[Tensor, Tuple[Tensor, Tensor]],
                batch: Union[Optional[Tensor], Tuple[Optional[Tensor], Optional[Tensor]]] = None,
                batch_size: Optional[int] = None) -> Tensor:
        r"""Args:
            x: Node features ``[N, F]`` or a bipartite pair
                ``([N, F], [M, F])`` (neighbours, centres).
            batch: Sorted cloud ids ``[N]`` or a pair of them. (default: one
                cloud)
            batch_size (int, optional): Number of clouds (saves a device sync).

        Returns:
            torch.Tensor: ``[N, out_channels]`` (``[M, out_channels]`` if
            bipartite).
        """
        if isinstance(x, Tensor):
            x = (x, x)
        if x[0].dim() != 2 or x[1].dim() != 2:
            raise ValueError("DynamicEdgeConv: 'x' must be node features [N, F] (static graphs are "
                             f"not supported), got shapes {tuple(x[0].shape)} and {tuple(x[1].shape)}")
        if isinstance(batch, Tensor) or batch is None:
            batch = (batch, batch)
        if self.grouping == "dense" and self.aggr == "max" and supports_dense(self.nn):
            slots = knn_padded(x[0], x[1], self.k, batch[0], batch[1], batch_size=batch_size)
            return dense_edge_conv(self.nn, x[0], x[1], slots)
        # Row 0 of knn indexes the centres x[1], row 1 the neighbours x[0]:
        # flipped, edges go neighbour (source j) -> centre (target i).
        edge_index = knn(x[0], x[1], self.k, batch[0], batch[1], num_workers=self.num_workers,
                         batch_size=batch_size).flip([0])
        return self.propagate(edge_index, x=x)

    def message(self, x_i: Tensor, x_j: Tensor) -> Tensor:
        return self.nn(torch.cat([x_i, x_j - x_i], dim=-1))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(nn={self.nn}, k={self.k})"


class DGCNN(Module):
    r"""DGCNN classifier, the architecture of PyG's
    ``examples/dgcnn_classification.py``::

        conv1 = DynamicEdgeConv(MLP([2 * (3 + F), 64, 64, 64]), k)
        conv2 = DynamicEdgeConv(MLP([2 * 64, 128]), k)
        lin1  = Linear(128 + 64, 1024)
        global max pool                      -> global feature (1024)
        mlp   = MLP([1024, 512, 256, num_classes], dropout=0.5, norm=None)

    Attribute names match the example's ``Net``, so its ``state_dict`` loads.

    Args:
        num_classes (int): Number of classes.
        k (int): Neighbours of the dynamic graphs. (default: ``20``)
        aggr (str): Aggregation of the edge convolutions. (default: ``"max"``)
        in_channels (int): Per-point features ``F`` read from ``data.x`` and
            concatenated to ``pos``; ``0`` uses positions only and ignores
            ``data.x``. (default: ``0``)
        dropout (float): Dropout of the head. (default: ``0.5``)
        grouping (str): ``"dense"`` (default) or ``"message_passing"``: the
            implementation of the EdgeConvs (:class:`DynamicEdgeConv`) and of
            the global max pool, same parameters and results.

    Attributes:
        mlp: The classifier head, applied to the global feature.
        feat_dim (int): Width of the global feature (``1024``).
    """

    def __init__(self, num_classes: int, k: int = 20, aggr: str = "max", in_channels: int = 0,
                 dropout: float = 0.5, grouping: str = "dense") -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"'num_classes' must be a positive int (got {num_classes!r})")
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 0:
            raise ValueError(f"'in_channels' must be a non-negative int (got {in_channels!r})")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.feat_dim = 1024
        self.conv1 = DynamicEdgeConv(MLP([2 * (3 + in_channels), 64, 64, 64]), k, aggr,
                                     grouping=grouping)
        self.conv2 = DynamicEdgeConv(MLP([2 * 64, 128]), k, aggr, grouping=grouping)
        self.grouping = check_grouping(grouping)
        self.lin1 = Linear(128 + 64, self.feat_dim)
        self.mlp = MLP([self.feat_dim, 512, 256, num_classes], dropout=dropout, norm=None)

    def features(self, data: Any) -> Tensor:
        r"""The global feature ``[B, 1024]`` (the input of :attr:`mlp`)."""
        name = type(self).__name__
        x, pos, batch, num_clouds = unpack_cloud_batch(data, name)
        h = pos
        if self.in_channels > 0:
            if x is None or x.shape[1] != self.in_channels:
                got = "None" if x is None else f"{x.shape[1]} features per point"
                raise ValueError(f"{name} was built with in_channels={self.in_channels} but 'data.x' is {got}")
            h = torch.cat([pos, x.to(pos.dtype)], dim=1)
        x1 = self.conv1(h, batch, num_clouds)
        x2 = self.conv2(x1, batch, num_clouds)
        out = self.lin1(torch.cat([x1, x2], dim=1))
        return global_max_pool_for(self.grouping)(out, batch, size=num_clouds)

    def forward(self, data: Any) -> Tensor:
        r"""Logits ``[B, num_classes]`` of a PyG batch (``pos``, ``batch``,
        optional ``x``)."""
        return self.mlp(self.features(data))
