r"""k nearest neighbours in any dimension: the grouping of DGCNN's EdgeConv
(`Wang et al., "Dynamic Graph CNN for Learning on Point Clouds"
<https://arxiv.org/abs/1801.07829>`_, on 3-d points and on 64/128-d features)
and of the PointCMT students (`<https://arxiv.org/abs/2210.04208>`_).

:func:`knn` and :func:`knn_graph` are drop-in replacements for
``torch_geometric.nn.knn`` / ``knn_graph`` (PyG 2.8); :func:`knn_dense` is the
same search on padded ``(B, N, D)`` batches, returning distances too.

The search is exact: squared Euclidean distances (or ``1 - cosine
similarity``), neighbours of every query sorted by ``(distance, index)``, so
equal distances go to the lower index.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from . import _ext
from ._threads import serial_torch_ops
from ._script import knn_graph_script, knn_script
from ._edges import padded_to_edges
from ._reference import knn_reference, register_device_fallback
from ._validation import batch_to_ptr, check_points, check_same, check_same_num_clouds, compute_dtype

_ext.register_reference("knn", knn_reference)
register_device_fallback("knn", knn_reference)


@torch.library.register_fake("pointcmt::knn")
def _knn_fake(x: Tensor, y: Tensor, ptr_x: Tensor, ptr_y: Tensor, k: int, cosine: bool) -> Tuple[Tensor, Tensor]:
    return y.new_empty((y.shape[0], k)), y.new_empty((y.shape[0], k), dtype=torch.long)


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"'k' must be an int (got {type(k).__name__})")
    if k < 1:
        raise ValueError(f"'k' must be >= 1 (got {k})")


def _check_flag(value: bool, name: str) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"'{name}' must be a bool (got {type(value).__name__})")


def _check_flow(flow: str) -> None:
    if flow not in ("source_to_target", "target_to_source"):
        raise ValueError(f"'flow' must be 'source_to_target' or 'target_to_source' (got {flow!r})")


def knn(
    x: Tensor,
    y: Tensor,
    k: int,
    batch_x: Optional[Tensor] = None,
    batch_y: Optional[Tensor] = None,
    cosine: bool = False,
    num_workers: int = 1,
    batch_size: Optional[int] = None,
) -> Tensor:
    r"""Finds for every row of ``y`` its ``k`` nearest rows of ``x`` in the
    same cloud; same arguments and result as ``torch_geometric.nn.knn``.

    Args:
        x (torch.Tensor): Points ``(N, D)``, float32 or float64 (float16 and bfloat16 are computed in float32), any ``D``.
        y (torch.Tensor): Queries ``(M, D)``, same dtype and device.
        k (int): Number of neighbours, ``>= 1``.
        batch_x (torch.Tensor, optional): Sorted cloud id of every row of ``x``.
        batch_y (torch.Tensor, optional): Sorted cloud id of every row of ``y``.
        cosine (bool): Rank by ``1 - cosine similarity`` instead of the
            Euclidean distance. (default: ``False``)
        num_workers (int): Accepted for compatibility; the CPU kernel uses
            torch's intra-op threads. (default: ``1``)
        batch_size (int, optional): The number of clouds ``B``; needed under
            ``torch.compile`` when a batch vector is given.

    Returns:
        torch.Tensor: ``[2, E]`` int64: row 0 indexes ``y``, row 1 indexes
        ``x``; query by query, each query's neighbours nearest first (ties to
        the lower index). A cloud with fewer than ``k`` points gives all of
        them.

    Callers compiled with ``torch.jit.script`` get the same result
    (:mod:`pointcmt_pyg.ops._script`).
    """
    if not torch.jit.is_scripting():
        return _knn_eager(x, y, k, batch_x, batch_y, cosine, num_workers, batch_size)
    return knn_script(x, y, k, batch_x, batch_y, cosine, batch_size)


@torch.jit.unused
@serial_torch_ops
def _knn_eager(x: Tensor, y: Tensor, k: int, batch_x: Optional[Tensor], batch_y: Optional[Tensor],
               cosine: bool, num_workers: int, batch_size: Optional[int]) -> Tensor:
    return padded_to_edges(_knn_slots(x, y, k, batch_x, batch_y, cosine, batch_size))


@serial_torch_ops
def knn_padded(
    x: Tensor,
    y: Tensor,
    k: int,
    batch_x: Optional[Tensor] = None,
    batch_y: Optional[Tensor] = None,
    cosine: bool = False,
    batch_size: Optional[int] = None,
) -> Tensor:
    r"""The search of :func:`knn` as padded neighbour slots (what DGCNN's
    dense EdgeConv gathers from).

    Args: as :func:`knn`.

    Returns:
        torch.Tensor: ``[M, k]`` int64: row ``i`` holds the neighbours of
        ``y[i]`` (indices into ``x``), nearest first (ties to the lower
        index), then ``-1`` where its cloud has fewer than ``k`` points.
        :func:`knn` returns exactly the non-negative entries, row by row.
    """
    return _knn_slots(x, y, k, batch_x, batch_y, cosine, batch_size)


def _knn_slots(x: Tensor, y: Tensor, k: int, batch_x: Optional[Tensor], batch_y: Optional[Tensor],
               cosine: bool, batch_size: Optional[int]) -> Tensor:
    check_points(x, "x")
    if y is not x:   # queries among the points themselves: checked once
        check_points(y, "y")
        check_same(x, y, "x", "y")
    x, y = compute_dtype(x), compute_dtype(y)
    _check_k(k)
    _check_flag(cosine, "cosine")
    ptr_x = batch_to_ptr(batch_x, x.shape[0], x.device, "batch_x", batch_size)
    ptr_y = batch_to_ptr(batch_y, y.shape[0], y.device, "batch_y", batch_size)
    ptr_x, ptr_y = check_same_num_clouds(ptr_x, ptr_y)
    return torch.ops.pointcmt.knn(x.contiguous(), y.contiguous(), ptr_x, ptr_y, k, cosine)[1]


def knn_graph(
    x: Tensor,
    k: int,
    batch: Optional[Tensor] = None,
    loop: bool = False,
    flow: str = "source_to_target",
    cosine: bool = False,
    num_workers: int = 1,
    batch_size: Optional[int] = None,
) -> Tensor:
    r"""Edges from every point to its ``k`` nearest neighbours in its cloud;
    same arguments and result as ``torch_geometric.nn.knn_graph``.

    As in PyG, ``loop=False`` searches ``k + 1`` neighbours and drops the
    point itself, so a point whose own index is not among its ``k + 1``
    nearest (duplicates of lower index) keeps ``k + 1`` edges.

    Args:
        x (torch.Tensor): Points ``(N, D)``, float32 or float64 (float16 and bfloat16 are computed in float32), any ``D``.
        k (int): Number of neighbours, ``>= 1``.
        batch (torch.Tensor, optional): Sorted cloud id of every point.
        loop (bool): Keep self-loops. (default: ``False``)
        flow (str): ``"source_to_target"`` (row 0 = neighbour, row 1 = centre)
            or ``"target_to_source"`` (the reverse).
        cosine (bool): Use ``1 - cosine similarity``. (default: ``False``)
        num_workers (int): Accepted for compatibility.
        batch_size (int, optional): The number of clouds ``B``.

    Returns:
        torch.Tensor: ``[2, E]`` int64 edge index.
    """
    if not torch.jit.is_scripting():
        return _knn_graph_eager(x, k, batch, loop, flow, cosine, num_workers, batch_size)
    return knn_graph_script(x, k, batch, loop, flow, cosine, batch_size)


@torch.jit.unused
@serial_torch_ops
def _knn_graph_eager(x: Tensor, k: int, batch: Optional[Tensor], loop: bool, flow: str,
                     cosine: bool, num_workers: int, batch_size: Optional[int]) -> Tensor:
    check_points(x, "x")
    x = compute_dtype(x)
    _check_k(k)
    _check_flag(loop, "loop")
    _check_flag(cosine, "cosine")
    _check_flow(flow)
    ptr = batch_to_ptr(batch, x.shape[0], x.device, "batch", batch_size)
    x = x.contiguous()
    _, idx = torch.ops.pointcmt.knn(x, x, ptr, ptr, k if loop else k + 1, cosine)
    return padded_to_edges(idx, skip_self=not loop, neighbour_first=flow == "source_to_target")


@serial_torch_ops
def knn_dense(x: Tensor, y: Tensor, k: int, cosine: bool = False) -> Tuple[Tensor, Tensor]:
    r"""k nearest neighbours on padded batches.

    Args:
        x (torch.Tensor): Points ``(B, N, D)``, float32 or float64 (float16 and bfloat16 are computed in float32).
        y (torch.Tensor): Queries ``(B, M, D)``, same dtype, device and ``D``.
        k (int): Number of neighbours, ``>= 1``.
        cosine (bool): Use ``1 - cosine similarity``. (default: ``False``)

    Returns:
        (torch.Tensor, torch.Tensor): ``dist (B, M, k)`` (squared Euclidean
        distance, or ``1 - cosine similarity``) and ``idx (B, M, k)`` int64
        indices into ``x[b]``, sorted by ``(dist, idx)``; when ``k > N`` the
        missing neighbours are ``inf`` / ``-1``.
    """
    check_points(x, "x", ndim=3)
    check_points(y, "y", ndim=3)
    check_same(x, y, "x", "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"'x' and 'y' must hold the same number of clouds (got {x.shape[0]} and {y.shape[0]})")
    x, y = compute_dtype(x), compute_dtype(y)
    _check_k(k)
    _check_flag(cosine, "cosine")
    num_clouds, num_points, dim = x.shape
    num_queries = y.shape[1]
    ptr_x = torch.arange(num_clouds + 1, device=x.device) * num_points
    ptr_y = torch.arange(num_clouds + 1, device=x.device) * num_queries
    dist, idx = torch.ops.pointcmt.knn(x.reshape(-1, dim).contiguous(), y.reshape(-1, dim).contiguous(),
                                       ptr_x, ptr_y, k, cosine)
    dist = dist.view(num_clouds, num_queries, k)
    idx = idx.view(num_clouds, num_queries, k)
    local = idx - ptr_x[:-1].view(-1, 1, 1)
    return dist, torch.where(idx >= 0, local, idx)
