r"""Radius (ball) search in any dimension: the grouping of PointNet++'s set
abstraction (`Qi et al. <https://arxiv.org/abs/1706.02413>`_), used by the
PointCMT students (`<https://arxiv.org/abs/2210.04208>`_).

:func:`radius` and :func:`radius_graph` are drop-in replacements for
``torch_geometric.nn.radius`` / ``radius_graph`` (PyG 2.8).

Which neighbours are kept: every row of ``x`` with squared distance
``< r * r`` to the query, in its cloud; when more than ``max_num_neighbors``
are in range, the ones with the **lowest indices** are kept (the first
``max_num_neighbors`` in ascending index order). This is deterministic and
the same on CPU and CUDA, and the edges come out in that order.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from . import _ext
from ._threads import serial_torch_ops
from ._script import radius_graph_script, radius_script
from ._edges import padded_to_edges
from ._reference import radius_reference, register_device_fallback
from ._validation import batch_to_ptr, check_points, check_same, check_same_num_clouds, compute_dtype

_ext.register_reference("radius", radius_reference)
register_device_fallback("radius", radius_reference)


@torch.library.register_fake("pointcmt::radius")
def _radius_fake(x: Tensor, y: Tensor, ptr_x: Tensor, ptr_y: Tensor, r: float, max_num_neighbors: int) -> Tensor:
    return y.new_empty((y.shape[0], max_num_neighbors), dtype=torch.long)


def _check_r(r: float) -> float:
    if isinstance(r, Tensor) and r.numel() == 1:
        r = float(r)
    if isinstance(r, bool) or not isinstance(r, (int, float)):
        raise TypeError(f"'r' must be a float (got {type(r).__name__})")
    if not math.isfinite(r) or r <= 0:
        raise ValueError(f"'r' must be a positive finite radius (got {r})")
    return float(r)


def _check_max_num_neighbors(max_num_neighbors: Optional[int], ptr: Tensor) -> int:
    if max_num_neighbors is None:
        return max(1, int((ptr[1:] - ptr[:-1]).max()))  # every neighbour
    if isinstance(max_num_neighbors, bool) or not isinstance(max_num_neighbors, int):
        raise TypeError(f"'max_num_neighbors' must be an int (got {type(max_num_neighbors).__name__})")
    if max_num_neighbors < 1:
        raise ValueError(f"'max_num_neighbors' must be >= 1 (got {max_num_neighbors})")
    return max_num_neighbors


def _check_flag(value: bool, name: str) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"'{name}' must be a bool (got {type(value).__name__})")


def radius(
    x: Tensor,
    y: Tensor,
    r: float,
    batch_x: Optional[Tensor] = None,
    batch_y: Optional[Tensor] = None,
    max_num_neighbors: Optional[int] = 32,
    num_workers: int = 1,
    batch_size: Optional[int] = None,
) -> Tensor:
    r"""Finds for every row of ``y`` the rows of ``x`` of its cloud within
    distance ``r``; same arguments and result as ``torch_geometric.nn.radius``.

    Args:
        x (torch.Tensor): Points ``(N, D)``, float32 or float64 (float16 and bfloat16 are computed in float32), any ``D``.
        y (torch.Tensor): Queries ``(M, D)``, same dtype and device.
        r (float): The radius, ``> 0`` (a point counts when its squared
            distance is ``< r * r``).
        batch_x (torch.Tensor, optional): Sorted cloud id of every row of ``x``.
        batch_y (torch.Tensor, optional): Sorted cloud id of every row of ``y``.
        max_num_neighbors (int, optional): Keep at most this many neighbours
            per query: those with the lowest indices. ``None``: all.
            (default: ``32``)
        num_workers (int): Accepted for compatibility.
        batch_size (int, optional): The number of clouds ``B``.

    Returns:
        torch.Tensor: ``[2, E]`` int64: row 0 indexes ``y``, row 1 indexes
        ``x``, query by query, neighbours in ascending index order.

    Callers compiled with ``torch.jit.script`` get the same result
    (:mod:`pointcmt_pyg.ops._script`).
    """
    if not torch.jit.is_scripting():
        return _radius_eager(x, y, r, batch_x, batch_y, max_num_neighbors, num_workers,
                             batch_size)
    return radius_script(x, y, r, batch_x, batch_y, max_num_neighbors, batch_size)


@torch.jit.unused
@serial_torch_ops
def _radius_eager(x: Tensor, y: Tensor, r: float, batch_x: Optional[Tensor],
                  batch_y: Optional[Tensor], max_num_neighbors: Optional[int], num_workers: int,
                  batch_size: Optional[int]) -> Tensor:
    return padded_to_edges(_radius_slots(x, y, r, batch_x, batch_y, max_num_neighbors, batch_size))


@serial_torch_ops
def radius_padded(
    x: Tensor,
    y: Tensor,
    r: float,
    batch_x: Optional[Tensor] = None,
    batch_y: Optional[Tensor] = None,
    max_num_neighbors: Optional[int] = 32,
    batch_size: Optional[int] = None,
) -> Tensor:
    r"""The search of :func:`radius` as padded neighbour slots (what the
    dense grouping of the students gathers from).

    Args: as :func:`radius`.

    Returns:
        torch.Tensor: ``[M, K]`` int64, ``K = max_num_neighbors`` (or the
        largest cloud when ``None``): row ``i`` holds the neighbours of
        ``y[i]`` (indices into ``x``) in ascending order, then ``-1``.
        :func:`radius` returns exactly the non-negative entries, row by row.
    """
    return _radius_slots(x, y, r, batch_x, batch_y, max_num_neighbors, batch_size)


def _radius_slots(x: Tensor, y: Tensor, r: float, batch_x: Optional[Tensor],
                  batch_y: Optional[Tensor], max_num_neighbors: Optional[int],
                  batch_size: Optional[int]) -> Tensor:
    check_points(x, "x")
    if y is not x:   # queries among the points themselves: checked once
        check_points(y, "y")
        check_same(x, y, "x", "y")
    x, y = compute_dtype(x), compute_dtype(y)
    r = _check_r(r)
    ptr_x = batch_to_ptr(batch_x, x.shape[0], x.device, "batch_x", batch_size)
    ptr_y = batch_to_ptr(batch_y, y.shape[0], y.device, "batch_y", batch_size)
    ptr_x, ptr_y = check_same_num_clouds(ptr_x, ptr_y)
    max_num = _check_max_num_neighbors(max_num_neighbors, ptr_x)
    return torch.ops.pointcmt.radius(x.contiguous(), y.contiguous(), ptr_x, ptr_y, r, max_num)


def radius_graph(
    x: Tensor,
    r: float,
    batch: Optional[Tensor] = None,
    loop: bool = False,
    max_num_neighbors: Optional[int] = 32,
    flow: str = "source_to_target",
    num_workers: int = 1,
    batch_size: Optional[int] = None,
) -> Tensor:
    r"""Edges between all points of a cloud closer than ``r``; same arguments
    and result as ``torch_geometric.nn.radius_graph``.

    With ``loop=False`` the point itself does not count towards
    ``max_num_neighbors`` (as in PyG): every point keeps its
    ``max_num_neighbors`` lowest-index neighbours other than itself.

    Args:
        x (torch.Tensor): Points ``(N, D)``, float32 or float64 (float16 and bfloat16 are computed in float32), any ``D``.
        r (float): The radius, ``> 0``.
        batch (torch.Tensor, optional): Sorted cloud id of every point.
        loop (bool): Keep self-loops. (default: ``False``)
        max_num_neighbors (int, optional): At most this many neighbours per
            point, the lowest indices first; ``None``: all. (default: ``32``)
        flow (str): ``"source_to_target"`` (row 0 = neighbour, row 1 = centre)
            or ``"target_to_source"``.
        num_workers (int): Accepted for compatibility.
        batch_size (int, optional): The number of clouds ``B``.

    Returns:
        torch.Tensor: ``[2, E]`` int64 edge index.
    """
    if not torch.jit.is_scripting():
        return _radius_graph_eager(x, r, batch, loop, max_num_neighbors, flow, num_workers,
                                   batch_size)
    return radius_graph_script(x, r, batch, loop, max_num_neighbors, flow, batch_size)


@torch.jit.unused
@serial_torch_ops
def _radius_graph_eager(x: Tensor, r: float, batch: Optional[Tensor], loop: bool,
                        max_num_neighbors: Optional[int], flow: str, num_workers: int,
                        batch_size: Optional[int]) -> Tensor:
    check_points(x, "x")
    x = compute_dtype(x)
    r = _check_r(r)
    _check_flag(loop, "loop")
    if flow not in ("source_to_target", "target_to_source"):
        raise ValueError(f"'flow' must be 'source_to_target' or 'target_to_source' (got {flow!r})")
    ptr = batch_to_ptr(batch, x.shape[0], x.device, "batch", batch_size)
    max_num = _check_max_num_neighbors(max_num_neighbors, ptr)
    # loop=False: one more slot for the point itself, then its first max_num others.
    idx = torch.ops.pointcmt.radius(x.contiguous(), x.contiguous(), ptr, ptr, r, max_num + (0 if loop else 1))
    return padded_to_edges(idx, skip_self=not loop, max_kept=max_num,
                           neighbour_first=flow == "source_to_target")
