"""The TorchScript paths of :func:`~pointcmt_pyg.ops.fps`,
:func:`~pointcmt_pyg.ops.knn`, :func:`~pointcmt_pyg.ops.knn_graph`,
:func:`~pointcmt_pyg.ops.radius` and :func:`~pointcmt_pyg.ops.radius_graph`.

Each public op is a plain annotated function: in eager mode (and under
``torch.compile``) it runs its Python implementation, with the detailed
argument checks and error messages of :mod:`._validation`; when a caller is
compiled with ``torch.jit.script`` (as in torch-cluster's tests, or an older
PyG model), TorchScript compiles the branch that calls these functions
instead. They compute the same thing with the same kernels
(``torch.ops.pointcmt.*``): same indices, same order, half precision computed
in float32. The checks here are the ones TorchScript can express (string
concatenation instead of f-strings, no ``isinstance`` on Python numbers:
TorchScript's types already reject those) and name the argument as in eager
mode; they are tested against the eager path in ``tests/test_torchscript.py``.

Nothing here is decorated or uses constructs TorchScript rejects; a scripted
module that calls the ops can be saved with ``torch.jit.save`` and loaded
where ``pointcmt_pyg`` (the schemas of ``torch.ops.pointcmt``) is imported.
"""
from typing import List, Optional, Tuple, Union

import torch
from torch import Tensor

from ._validation import check_same_num_clouds


def _points(x: Tensor, name: str) -> Tensor:
    if x.dim() != 2:
        raise ValueError("'" + name + "' must have shape (N, D), got a tensor with "
                         + str(x.dim()) + " dimensions")
    if x.dtype == torch.float16 or x.dtype == torch.bfloat16:
        x = x.float()
    elif x.dtype != torch.float32 and x.dtype != torch.float64:
        raise TypeError("'" + name + "' must be float32, float64, float16 or bfloat16 (got "
                        + str(x.dtype) + ")")
    if x.size(1) < 1:
        raise ValueError("'" + name + "' must have at least one coordinate (D >= 1)")
    if x.numel() == 0:
        raise ValueError("'" + name + "' is empty: a point cloud needs at least one point")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("'" + name + "' contains NaN or Inf values")
    return x


def _same_dtype(x: Tensor, y: Tensor) -> None:
    if x.dtype != y.dtype:
        raise TypeError("'x' and 'y' must have the same dtype (got " + str(x.dtype) + " and "
                        + str(y.dtype) + ")")


def _same(x: Tensor, y: Tensor) -> None:
    if x.device != y.device:
        raise ValueError("'x' and 'y' must be on the same device")
    if x.size(1) != y.size(1):
        raise ValueError("'x' and 'y' must have the same number of coordinates D (got "
                         + str(x.size(1)) + " and " + str(y.size(1)) + ")")


def _batch_to_ptr(batch: Optional[Tensor], num_points: int, device: torch.device, name: str,
                  batch_size: Optional[int]) -> Tensor:
    if batch is None:
        if batch_size is not None and batch_size != 1:
            raise ValueError("'batch_size' is " + str(batch_size) + " but '" + name
                             + "' is None (one cloud)")
        return torch.tensor([0, num_points], dtype=torch.long, device=device)
    if batch.dim() != 1 or batch.numel() != num_points:
        raise ValueError("'" + name + "' must be a vector with one entry per point ("
                         + str(num_points) + ")")
    if batch.is_floating_point() or batch.dtype == torch.bool:
        raise TypeError("'" + name + "' must be an integer tensor (got " + str(batch.dtype) + ")")
    if batch.device != device:
        raise ValueError("'" + name + "' must be on the same device as the points")
    batch = batch.to(torch.long)
    num_clouds = 1
    if batch_size is not None:
        num_clouds = batch_size
    elif num_points > 0:
        num_clouds = int(batch.max()) + 1
    if num_points > 0:
        if bool((batch[1:] < batch[:-1]).any()):
            raise ValueError("'" + name + "' must be sorted (points of one cloud contiguous, "
                             "ids ascending)")
        if int(batch[0]) < 0 or int(batch[-1]) >= num_clouds:
            raise ValueError("'" + name + "' has cloud ids outside [0, " + str(num_clouds) + ")")
    counts = torch.bincount(batch, minlength=num_clouds)[:num_clouds]
    ptr = torch.zeros(num_clouds + 1, dtype=torch.long, device=device)
    ptr[1:] = torch.cumsum(counts, 0)
    return ptr


def _padded_to_edges(idx: Tensor, mask: Optional[Tensor]) -> Tensor:
    if mask is None:
        keep = idx >= 0
        if bool(keep.all()):
            num_queries, width = idx.size(0), idx.size(1)
            row = torch.arange(num_queries, device=idx.device, dtype=idx.dtype)
            return torch.stack([row.view(-1, 1).expand(num_queries, width).reshape(-1),
                                idx.reshape(-1)], dim=0)
    else:
        keep = mask
    kept = keep.nonzero()
    row = kept[:, 0]
    return torch.stack([row, idx[row, kept[:, 1]]], dim=0)


def _check_flow(flow: str) -> None:
    if flow != "source_to_target" and flow != "target_to_source":
        raise ValueError("'flow' must be 'source_to_target' or 'target_to_source' (got '"
                         + flow + "')")


# ------------------------------------------------------------------- fps
def fps_script(x: Tensor, batch: Optional[Tensor], ratio: Optional[Union[float, Tensor]],
               random_start: bool, batch_size: Optional[int],
               ptr: Optional[Union[Tensor, List[int]]]) -> Tensor:
    if x.dim() > 2:
        x = x.reshape(x.size(0), -1)
    x = _points(x, "x")
    num_points = x.size(0)
    if ptr is not None:
        if isinstance(ptr, Tensor):
            cloud_ptr = ptr.to(torch.long)
        else:
            cloud_ptr = torch.tensor(ptr, dtype=torch.long, device=x.device)
        if cloud_ptr.dim() != 1 or cloud_ptr.numel() < 2:
            raise ValueError("'ptr' must be a vector of size B + 1 >= 2")
        if cloud_ptr.device != x.device:
            raise ValueError("'ptr' must be on the same device as the points")
        if (int(cloud_ptr[0]) != 0 or int(cloud_ptr[-1]) != num_points
                or bool((cloud_ptr[1:] < cloud_ptr[:-1]).any())):
            raise ValueError("'ptr' must start at 0, be non-decreasing and end at the number of "
                             "points (" + str(num_points) + ")")
        cloud_ptr = cloud_ptr.contiguous()
    else:
        cloud_ptr = _batch_to_ptr(batch, num_points, x.device, "batch", batch_size)
    num_clouds = cloud_ptr.numel() - 1
    counts = cloud_ptr[1:] - cloud_ptr[:-1]
    if ratio is None:
        num_samples = torch.ceil(counts.to(torch.float32) * 0.5).to(torch.long)
    elif isinstance(ratio, Tensor):
        if not ratio.is_floating_point():
            raise TypeError("'ratio' must be a floating-point tensor (got " + str(ratio.dtype) + ")")
        if ratio.dim() > 1 or (ratio.dim() == 1 and ratio.numel() != 1
                               and ratio.numel() != num_clouds):
            raise ValueError("'ratio' must be a scalar or hold one value per cloud ("
                             + str(num_clouds) + ")")
        if ratio.device != x.device:
            raise ValueError("'ratio' must be on the same device as 'x'")
        if bool(((ratio <= 0) | (ratio > 1) | ratio.isnan()).any()):
            raise ValueError("'ratio' must lie in (0, 1]")
        num_samples = torch.ceil(counts.to(ratio.dtype) * ratio).to(torch.long)
    else:
        if not (0.0 < ratio <= 1.0):
            raise ValueError("'ratio' must lie in (0, 1] (got " + str(ratio) + ")")
        num_samples = torch.ceil(counts.to(torch.float32) * ratio).to(torch.long)
    out_ptr = torch.zeros(num_clouds + 1, dtype=torch.long, device=x.device)
    out_ptr[1:] = torch.cumsum(num_samples, 0)
    if random_start:
        start = (torch.rand(counts.shape, dtype=torch.float64, device=counts.device)
                 * counts).to(torch.long)
        start = torch.minimum(start, (counts - 1).clamp(min=0))
    else:
        start = torch.zeros_like(counts)
    return torch.ops.pointcmt.fps(x.contiguous(), cloud_ptr, out_ptr, start, int(out_ptr[-1]))


# ------------------------------------------------------------------- knn
def knn_script(x: Tensor, y: Tensor, k: int, batch_x: Optional[Tensor],
               batch_y: Optional[Tensor], cosine: bool, batch_size: Optional[int]) -> Tensor:
    _same_dtype(x, y)
    x = _points(x, "x")
    y = _points(y, "y")
    _same(x, y)
    if k < 1:
        raise ValueError("'k' must be >= 1 (got " + str(k) + ")")
    ptr_x = _batch_to_ptr(batch_x, x.size(0), x.device, "batch_x", batch_size)
    ptr_y = _batch_to_ptr(batch_y, y.size(0), y.device, "batch_y", batch_size)
    ptr_x, ptr_y = check_same_num_clouds(ptr_x, ptr_y)
    found = torch.ops.pointcmt.knn(x.contiguous(), y.contiguous(), ptr_x, ptr_y, k, cosine)
    return _padded_to_edges(found[1], None)


def knn_graph_script(x: Tensor, k: int, batch: Optional[Tensor], loop: bool, flow: str,
                     cosine: bool, batch_size: Optional[int]) -> Tensor:
    x = _points(x, "x")
    if k < 1:
        raise ValueError("'k' must be >= 1 (got " + str(k) + ")")
    _check_flow(flow)
    ptr = _batch_to_ptr(batch, x.size(0), x.device, "batch", batch_size)
    x = x.contiguous()
    width = k if loop else k + 1
    idx = torch.ops.pointcmt.knn(x, x, ptr, ptr, width, cosine)[1]
    if loop:
        edge_index = _padded_to_edges(idx, None)
    else:
        own = torch.arange(x.size(0), device=x.device).view(-1, 1)
        edge_index = _padded_to_edges(idx, (idx >= 0) & (idx != own))
    if flow == "source_to_target":
        return edge_index.flip([0])
    return edge_index


# ---------------------------------------------------------------- radius
def _check_r(r: float) -> None:
    if not (r > 0.0) or r == float("inf"):
        raise ValueError("'r' must be a positive finite radius (got " + str(r) + ")")


def _max_neighbours(max_num_neighbors: Optional[int], ptr: Tensor) -> int:
    if max_num_neighbors is None:
        return max(1, int((ptr[1:] - ptr[:-1]).max()))
    if max_num_neighbors < 1:
        raise ValueError("'max_num_neighbors' must be >= 1 (got " + str(max_num_neighbors) + ")")
    return max_num_neighbors


def radius_script(x: Tensor, y: Tensor, r: float, batch_x: Optional[Tensor],
                  batch_y: Optional[Tensor], max_num_neighbors: Optional[int],
                  batch_size: Optional[int]) -> Tensor:
    _same_dtype(x, y)
    x = _points(x, "x")
    y = _points(y, "y")
    _same(x, y)
    _check_r(r)
    ptr_x = _batch_to_ptr(batch_x, x.size(0), x.device, "batch_x", batch_size)
    ptr_y = _batch_to_ptr(batch_y, y.size(0), y.device, "batch_y", batch_size)
    ptr_x, ptr_y = check_same_num_clouds(ptr_x, ptr_y)
    max_num = _max_neighbours(max_num_neighbors, ptr_x)
    idx = torch.ops.pointcmt.radius(x.contiguous(), y.contiguous(), ptr_x, ptr_y, r, max_num)
    return _padded_to_edges(idx, None)


def radius_graph_slots(x: Tensor, ptr: Tensor, r: float, max_num: int,
                       loop: bool) -> Tuple[Tensor, Tensor]:
    r"""The padded neighbour slots of a radius graph and the mask of those
    kept (the scripted :func:`radius_graph`; the eager one does the same cut
    with :func:`~pointcmt_pyg.ops._edges.padded_to_edges`): with
    ``loop=False`` one extra slot for the point itself, then the first
    ``max_num`` others."""
    x = x.contiguous()
    if loop:
        idx = torch.ops.pointcmt.radius(x, x, ptr, ptr, r, max_num)
        return idx, idx >= 0
    idx = torch.ops.pointcmt.radius(x, x, ptr, ptr, r, max_num + 1)
    mask = (idx >= 0) & (idx != torch.arange(x.size(0), device=x.device).view(-1, 1))
    return idx, mask & (torch.cumsum(mask.to(torch.int32), dim=1) <= max_num)


def radius_graph_script(x: Tensor, r: float, batch: Optional[Tensor], loop: bool,
                        max_num_neighbors: Optional[int], flow: str,
                        batch_size: Optional[int]) -> Tensor:
    x = _points(x, "x")
    _check_r(r)
    _check_flow(flow)
    ptr = _batch_to_ptr(batch, x.size(0), x.device, "batch", batch_size)
    max_num = _max_neighbours(max_num_neighbors, ptr)
    idx, mask = radius_graph_slots(x, ptr, r, max_num, loop)
    edge_index = _padded_to_edges(idx, mask)
    if flow == "source_to_target":
        return edge_index.flip([0])
    return edge_index
