r"""PointNet++ classifiers (`Qi et al., "PointNet++: Deep Hierarchical Feature
Learning on Point Sets in a Metric Space" <https://arxiv.org/abs/1706.02413>`_)
on :mod:`pointcmt_pyg.ops`, so they run without pyg-lib / torch-cluster.

* :class:`PointNet2` is the single-scale-grouping network of PyG's
  ``examples/pointnet2_classification.py``: the same layer sizes and the same
  attribute names, so a ``state_dict`` of that example's ``Net`` loads as is.
* :class:`PointNet2MSG` is the multi-scale-grouping network used as the
  student by PointCMT (`Yan et al., NeurIPS 2022
  <https://arxiv.org/abs/2210.04208>`_): the radii, neighbour counts and MLP
  widths of the official PointNet++ classification MSG, and the PointCMT head
  (``1024 -> 512`` FC-BN-ReLU giving the 512-d global feature, then one linear
  classifier ``mlp``).

Farthest point sampling starts at a random point of each cloud while training
(as PyG does) and at the first point in eval mode, so predictions of a model in
``eval()`` are deterministic.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.nn import BatchNorm1d, Linear, Module, ModuleList, ReLU, Sequential

from torch_geometric.nn import MLP, PointNetConv, global_max_pool

from ..ops import fps, radius, radius_padded
from ._dense import check_grouping, dense_global_mlp_max, dense_point_conv, supports_dense
from ._inputs import unpack_cloud_batch

__all__ = ["SAModule", "MSGSAModule", "GlobalSAModule", "PointNet2", "PointNet2MSG"]


def _check_ratio_radius(ratio: float, r: float) -> None:
    if not 0.0 < float(ratio) <= 1.0:
        raise ValueError(f"'ratio' must lie in (0, 1] (got {ratio})")
    if not float(r) > 0.0:
        raise ValueError(f"'r' must be > 0 (got {r})")


class SAModule(Module):
    r"""Set abstraction: farthest point sampling of ``ratio`` of the points,
    grouping of the points within radius ``r`` of every sample (at most
    ``max_num_neighbors``, the lowest indices), and a PointNet
    (:class:`torch_geometric.nn.PointNetConv`, max aggregation) on
    ``[x_j, pos_j - pos_i]``.

    Args:
        ratio (float): Fraction of points kept, in ``(0, 1]``.
        r (float): Grouping radius.
        nn (torch.nn.Module): The shared MLP, ``in_channels + 3 -> out``.
        max_num_neighbors (int): Neighbours per sample. (default: ``64``, as
            in PyG's example)
        grouping (str): ``"dense"`` (default: the first linear layer split
            per point and per centre, a max over padded neighbour slots; see
            :mod:`pointcmt_pyg.models._dense`) or ``"message_passing"``
            (PyG's ``PointNetConv``, the reference). Same parameters and
            results either way; an MLP the dense path does not cover always
            uses message passing.
    """

    def __init__(self, ratio: float, r: float, nn: Module, max_num_neighbors: int = 64,
                 grouping: str = "dense") -> None:
        super().__init__()
        _check_ratio_radius(ratio, r)
        self.ratio = float(ratio)
        self.r = float(r)
        self.max_num_neighbors = int(max_num_neighbors)
        self.grouping = check_grouping(grouping)
        self.conv = PointNetConv(nn, add_self_loops=False)

    def forward(self, x: Optional[Tensor], pos: Tensor, batch: Tensor,
                num_clouds: Optional[int] = None) -> Tuple[Tensor, Tensor, Tensor]:
        idx = fps(pos, batch, ratio=self.ratio, random_start=self.training, batch_size=num_clouds)
        pos_dst, batch_dst = pos[idx], batch[idx]
        x = _group(self.conv, self.grouping, x, idx, pos, pos_dst, batch, batch_dst, self.r,
                   self.max_num_neighbors, num_clouds)
        return x, pos_dst, batch_dst


def _group(conv: PointNetConv, grouping: str, x: Optional[Tensor], idx: Tensor, pos: Tensor,
           pos_dst: Tensor, batch: Tensor, batch_dst: Tensor, r: float, max_num_neighbors: int,
           num_clouds: Optional[int]) -> Tensor:
    """One PointNet over the radius neighbourhoods of the samples ``idx``."""
    if grouping == "dense" and supports_dense(conv.local_nn) and conv.global_nn is None:
        slots = radius_padded(pos, pos_dst, r, batch, batch_dst,
                              max_num_neighbors=max_num_neighbors, batch_size=num_clouds)
        return dense_point_conv(conv.local_nn, x, pos, pos_dst, slots)
    row, col = radius(pos, pos_dst, r, batch, batch_dst, max_num_neighbors=max_num_neighbors,
                      batch_size=num_clouds)
    x_dst = None if x is None else x[idx]
    return conv((x, x_dst), (pos, pos_dst), torch.stack([col, row], dim=0))


class MSGSAModule(Module):
    r"""Multi-scale set abstraction: one farthest point sampling, then one
    grouping + PointNet per scale ``(r, max_num_neighbors, nn)``; the
    per-scale features are concatenated.

    Args:
        ratio (float): Fraction of points kept, in ``(0, 1]``.
        radii (sequence of float): Grouping radius of every scale.
        max_num_neighbors (sequence of int): Neighbours per sample, per scale.
        nns (sequence of torch.nn.Module): The shared MLP of every scale.
        grouping (str): ``"dense"`` or ``"message_passing"``, as in
            :class:`SAModule`. (default: ``"dense"``)
    """

    def __init__(self, ratio: float, radii: Sequence[float], max_num_neighbors: Sequence[int],
                 nns: Sequence[Module], grouping: str = "dense") -> None:
        super().__init__()
        self.grouping = check_grouping(grouping)
        if not (len(radii) == len(max_num_neighbors) == len(nns)) or len(radii) == 0:
            raise ValueError(f"'radii', 'max_num_neighbors' and 'nns' must have the same non-zero "
                             f"length (got {len(radii)}, {len(max_num_neighbors)}, {len(nns)})")
        for r in radii:
            _check_ratio_radius(ratio, r)
        self.ratio = float(ratio)
        self.radii = [float(r) for r in radii]
        self.max_num_neighbors = [int(k) for k in max_num_neighbors]
        self.convs = ModuleList([PointNetConv(nn, add_self_loops=False) for nn in nns])

    def forward(self, x: Optional[Tensor], pos: Tensor, batch: Tensor,
                num_clouds: Optional[int] = None) -> Tuple[Tensor, Tensor, Tensor]:
        idx = fps(pos, batch, ratio=self.ratio, random_start=self.training, batch_size=num_clouds)
        pos_dst, batch_dst = pos[idx], batch[idx]
        outs = [_group(conv, self.grouping, x, idx, pos, pos_dst, batch, batch_dst, r, k,
                       num_clouds)
                for r, k, conv in zip(self.radii, self.max_num_neighbors, self.convs)]
        return torch.cat(outs, dim=-1), pos_dst, batch_dst


class GlobalSAModule(Module):
    r"""Global set abstraction: ``nn([x, pos])`` on every point, then a max
    over each cloud.

    Args:
        nn (torch.nn.Module): The shared MLP, ``in_channels + 3 -> out``.
        grouping (str): ``"dense"`` (default: the max per cloud as a max over
            each cloud's rows, :func:`~pointcmt_pyg.models._dense.dense_global_mlp_max`)
            or ``"message_passing"`` (PyG's ``global_max_pool``, the reference).
    """

    def __init__(self, nn: Module, grouping: str = "dense") -> None:
        super().__init__()
        self.nn = nn
        self.grouping = check_grouping(grouping)

    def forward(self, x: Tensor, pos: Tensor, batch: Tensor,
                num_clouds: Optional[int] = None) -> Tuple[Tensor, Tensor, Tensor]:
        h = torch.cat([x, pos], dim=1)
        if self.grouping == "dense":
            x = dense_global_mlp_max(self.nn, h, batch, size=num_clouds)
        else:
            x = global_max_pool(self.nn(h), batch, size=num_clouds)
        pos = pos.new_zeros((x.shape[0], 3))
        batch = torch.arange(x.shape[0], device=batch.device)
        return x, pos, batch


def _check_classes(num_classes: int, in_channels: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"'num_classes' must be a positive int (got {num_classes!r})")
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 0:
        raise ValueError(f"'in_channels' must be a non-negative int (got {in_channels!r})")


def _pointcmt_head(in_dim: int, feat_dim: int, num_classes: int) -> Tuple[Module, Module]:
    """The head of PointCMT's official student: ``Linear(in_dim, feat_dim, no
    bias) - BatchNorm - ReLU`` (the global feature), then ``Linear(feat_dim,
    num_classes)`` (the classifier), built in that order."""
    fc = Sequential(Linear(in_dim, feat_dim, bias=False), BatchNorm1d(feat_dim), ReLU())
    return fc, Linear(feat_dim, num_classes)


def _point_features(x: Optional[Tensor], in_channels: int, model_name: str) -> Optional[Tensor]:
    """``data.x`` when the model takes per-point features, else ``None``."""
    if in_channels == 0:
        return None
    if x is None:
        raise ValueError(f"{model_name} was built with in_channels={in_channels} but 'data.x' is None")
    if x.shape[1] != in_channels:
        raise ValueError(f"{model_name} was built with in_channels={in_channels} but 'data.x' has "
                         f"{x.shape[1]} features per point")
    return x


class PointNet2(Module):
    r"""PointNet++ SSG classifier, the architecture of PyG's
    ``examples/pointnet2_classification.py`` on our ``fps``/``radius``.

    ``SA(0.5, r=0.2, MLP[3+F, 64, 64, 128]) -> SA(0.25, r=0.4, MLP[128+3, 128,
    128, 256]) -> GlobalSA(MLP[256+3, 256, 512, 1024]) -> mlp``, with the head
    ``mlp = MLP([1024, 512, 256, num_classes], dropout=0.5, norm=None)``.

    ``head="fc512"`` (registered as ``"pointnet2_fc512"``) puts the head of
    PointCMT's official student (`Yan et al., NeurIPS 2022
    <https://arxiv.org/abs/2210.04208>`_; as :class:`PointNet2MSG`) on the
    same set abstractions: ``fc = Linear(1024, 512, bias=False) - BatchNorm -
    ReLU`` gives a 512-d global feature, the width of the teacher's image
    feature, and ``mlp = Linear(512, num_classes)`` classifies it (no
    dropout). A :class:`~pointcmt_pyg.nn.CrossModalDistiller` then feeds the
    student's feature to the CMPG and the teacher feature to the student's
    head directly, without the learned projections that a 1024-d feature
    needs: the paper's set-up.

    Args:
        num_classes (int): Number of classes.
        in_channels (int): Per-point features ``F`` read from ``data.x``;
            ``0`` uses positions only and ignores ``data.x``. (default: ``0``)
        dropout (float, optional): Dropout of the ``"pyg"`` head; ``None``
            means ``0.5``, and the ``"fc512"`` head takes none.
            (default: ``None``)
        max_num_neighbors (int): Neighbours per sample in the set
            abstractions. (default: ``64``)
        grouping (str): ``"dense"`` (default) or ``"message_passing"`` (PyG's
            ``PointNetConv``): the implementation of the set abstractions,
            same parameters and results (:class:`SAModule`).
        head (str): ``"pyg"`` (default: PyG's example, its ``state_dict``)
            or ``"fc512"`` (PointCMT's student head, above).

    Attributes:
        fc: The ``1024 -> 512`` FC-BN-ReLU of the ``"fc512"`` head (``None``
            with ``"pyg"``).
        mlp: The classifier head, applied to the global feature.
        feat_dim (int): Width of the global feature (``1024``, or ``512``
            with ``head="fc512"``).
    """

    def __init__(self, num_classes: int, in_channels: int = 0, dropout: Optional[float] = None,
                 max_num_neighbors: int = 64, grouping: str = "dense", head: str = "pyg") -> None:
        super().__init__()
        _check_classes(num_classes, in_channels)
        if head not in ("pyg", "fc512"):
            raise ValueError(f"'head' must be 'pyg' or 'fc512' (got {head!r})")
        if head == "fc512" and dropout is not None:
            raise ValueError(f"'dropout' applies to head='pyg' only; head='fc512' has no dropout "
                             f"(got dropout={dropout!r})")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.head = head
        self.feat_dim = 1024 if head == "pyg" else 512
        self.sa1_module = SAModule(0.5, 0.2, MLP([in_channels + 3, 64, 64, 128]), max_num_neighbors,
                                   grouping)
        self.sa2_module = SAModule(0.25, 0.4, MLP([128 + 3, 128, 128, 256]), max_num_neighbors,
                                   grouping)
        self.sa3_module = GlobalSAModule(MLP([256 + 3, 256, 512, 1024]), grouping)
        self.fc: Optional[Module] = None
        if head == "pyg":
            self.mlp = MLP([1024, 512, 256, num_classes], dropout=0.5 if dropout is None else dropout,
                           norm=None)
        else:
            self.fc, self.mlp = _pointcmt_head(1024, self.feat_dim, num_classes)

    def features(self, data: Any) -> Tensor:
        r"""The global feature ``[B, feat_dim]`` (the input of :attr:`mlp`)."""
        x, pos, batch, num_clouds = unpack_cloud_batch(data, type(self).__name__)
        x = _point_features(x, self.in_channels, type(self).__name__)
        x, pos, batch = self.sa1_module(x, pos, batch, num_clouds)
        x, pos, batch = self.sa2_module(x, pos, batch, num_clouds)
        x, _, _ = self.sa3_module(x, pos, batch, num_clouds)
        return x if self.fc is None else self.fc(x)

    def forward(self, data: Any) -> Tensor:
        r"""Logits ``[B, num_classes]`` of a PyG batch (``pos``, ``batch``,
        optional ``x``)."""
        return self.mlp(self.features(data))


def _shared_mlp(channels: List[int]) -> MLP:
    """Linear (no bias) + BatchNorm + ReLU on every layer, as the official
    PointNet++ shared MLPs (1x1 convolutions)."""
    return MLP(channels, plain_last=False, bias=False)


class PointNet2MSG(Module):
    r"""PointNet++ MSG classifier as used by PointCMT.

    Set abstractions of the official classification MSG (ratios stated for
    the usual 1024 input points: 512 then 128 samples)::

        SA-MSG(0.5,  r=(0.1, 0.2, 0.4), k=(16, 32, 128),
               [F+3, 32, 32, 64], [F+3, 64, 64, 128], [F+3, 64, 96, 128])
        SA-MSG(0.25, r=(0.2, 0.4, 0.8), k=(32, 64, 128),
               [320+3, 64, 64, 128], [323, 128, 128, 256], [323, 128, 128, 256])
        GlobalSA([640+3, 256, 512, 1024])
        fc:  Linear(1024, 512, bias=False) - BatchNorm - ReLU   -> global feature (512)
        mlp: Linear(512, num_classes)                           -> logits

    The 512-d global feature matches the 512-d image feature of the PointCMT
    teacher, as in the official code.

    Args:
        num_classes (int): Number of classes.
        in_channels (int): Per-point features ``F`` read from ``data.x``;
            ``0`` uses positions only. (default: ``0``)
        grouping (str): ``"dense"`` (default) or ``"message_passing"``, as in
            :class:`PointNet2`.

    Attributes:
        mlp: The classifier head (``nn.Linear``), applied to the global feature.
        feat_dim (int): Width of the global feature (``512``).
    """

    def __init__(self, num_classes: int, in_channels: int = 0, grouping: str = "dense") -> None:
        super().__init__()
        _check_classes(num_classes, in_channels)
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.feat_dim = 512
        c_in = in_channels + 3
        self.sa1_module = MSGSAModule(
            0.5, (0.1, 0.2, 0.4), (16, 32, 128),
            [_shared_mlp([c_in, 32, 32, 64]), _shared_mlp([c_in, 64, 64, 128]),
             _shared_mlp([c_in, 64, 96, 128])], grouping)
        c_in = 64 + 128 + 128 + 3
        self.sa2_module = MSGSAModule(
            0.25, (0.2, 0.4, 0.8), (32, 64, 128),
            [_shared_mlp([c_in, 64, 64, 128]), _shared_mlp([c_in, 128, 128, 256]),
             _shared_mlp([c_in, 128, 128, 256])], grouping)
        self.sa3_module = GlobalSAModule(_shared_mlp([128 + 256 + 256 + 3, 256, 512, 1024]), grouping)
        self.fc, self.mlp = _pointcmt_head(1024, self.feat_dim, num_classes)

    def features(self, data: Any) -> Tensor:
        r"""The global feature ``[B, 512]`` (the input of :attr:`mlp`)."""
        x, pos, batch, num_clouds = unpack_cloud_batch(data, type(self).__name__)
        x = _point_features(x, self.in_channels, type(self).__name__)
        x, pos, batch = self.sa1_module(x, pos, batch, num_clouds)
        x, pos, batch = self.sa2_module(x, pos, batch, num_clouds)
        x, _, _ = self.sa3_module(x, pos, batch, num_clouds)
        return self.fc(x)

    def forward(self, data: Any) -> Tensor:
        r"""Logits ``[B, num_classes]`` of a PyG batch (``pos``, ``batch``,
        optional ``x``)."""
        return self.mlp(self.features(data))
