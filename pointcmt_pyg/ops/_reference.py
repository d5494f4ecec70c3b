r"""Pure-PyTorch references of the point ops, at the level of the raw
``torch.ops.pointcmt`` schemas (packed points + CSR ``ptr``).

They are the definition the compiled kernels are tested against, index for
index, and the fallback when the extension is not built. To make "identical"
hold bit for bit, every distance is summed over the coordinates one at a time
in ascending order, ``acc = (a_0 - b_0)^2; acc += (a_d - b_d)^2``, exactly as
the C++/CUDA kernels do (no matrix-product expansion, no reordered reduction,
no fused multiply-add), and ties always go to the lowest index:

* FPS: the naive algorithm. The running distance of every point to the set
  sampled so far starts at ``+inf``; each step records the current point,
  takes the minimum with the squared distance to it and moves to the first
  point holding the largest running distance.
* kNN: squared Euclidean distance, or ``1 - <a, b> / (|a| |b|)`` when
  ``cosine`` (a zero vector has similarity 0, distance 1); neighbours sorted
  by ``(distance, index)``; missing ones (cloud smaller than ``k``) are
  ``inf`` / ``-1``.
* radius: rows of ``x`` with squared distance ``< r * r`` (``r * r`` is
  computed in double precision, then rounded to the points' dtype); the first
  ``max_num_neighbors`` of them in ascending index order, ``-1`` padded.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
from torch import Tensor

#: Upper bound on the number of elements of one (queries x points) distance
#: block, so the references run on large clouds without huge temporaries.
_BLOCK_ELEMS = 1 << 22


def sequential_sqdist(a: Tensor, b: Tensor) -> Tensor:
    """Squared Euclidean distances ``[..., m, n]`` between ``a [..., m, D]``
    and ``b [..., n, D]``, summed over ``d = 0 .. D-1`` in order."""
    acc = None
    for d in range(a.shape[-1]):
        diff = a[..., :, d, None] - b[..., None, :, d]
        sq = diff * diff
        acc = sq if acc is None else acc + sq
    assert acc is not None
    return acc


def sequential_dot(a: Tensor, b: Tensor) -> Tensor:
    """Dot products ``[..., m, n]`` summed over ``d`` in order."""
    acc = None
    for d in range(a.shape[-1]):
        prod = a[..., :, d, None] * b[..., None, :, d]
        acc = prod if acc is None else acc + prod
    assert acc is not None
    return acc


def sequential_norm(a: Tensor) -> Tensor:
    """Euclidean norms ``[..., m]`` of ``a [..., m, D]``: ``sqrt`` of the
    squares summed over ``d`` in order."""
    acc = None
    for d in range(a.shape[-1]):
        sq = a[..., d] * a[..., d]
        acc = sq if acc is None else acc + sq
    assert acc is not None
    return correctly_rounded_sqrt(acc)


def correctly_rounded_sqrt(v: Tensor) -> Tensor:
    """IEEE (correctly rounded) square root, as ``std::sqrt`` in the kernels.

    ``torch.sqrt`` on CPU may be off by one unit in the last place (it uses
    SIMD approximations), so CPU tensors go through numpy's hardware sqrt;
    CUDA's ``sqrt`` is correctly rounded already.
    """
    if v.device.type == "cpu":
        import numpy as np

        return torch.from_numpy(np.sqrt(v.detach().contiguous().numpy()))
    return torch.sqrt(v)


def cosine_distance(a: Tensor, b: Tensor, norm_a: Tensor, norm_b: Tensor) -> Tensor:
    """``1 - cos(a, b)`` as ``[m, n]``; pairs with a zero vector get 1."""
    dot = sequential_dot(a, b)
    denom = norm_a[:, None] * norm_b[None, :]
    safe = torch.where(denom > 0, denom, torch.ones_like(denom))
    return torch.where(denom > 0, 1 - dot / safe, torch.ones_like(dot))


def _ranges(ptr: Tensor) -> List[Tuple[int, int]]:
    bounds = ptr.tolist()
    return list(zip(bounds[:-1], bounds[1:]))


def fps_reference(x: Tensor, ptr: Tensor, out_ptr: Tensor, start: Tensor, num_out: int) -> Tensor:
    """Farthest point sampling, all clouds at once (padded to the largest)."""
    out = torch.empty(num_out, dtype=torch.long, device=x.device)
    if num_out == 0:
        return out
    num_points, dim = x.shape
    num_clouds = ptr.numel() - 1
    counts = (ptr[1:] - ptr[:-1]).long()
    num_samples = (out_ptr[1:] - out_ptr[:-1]).long()
    max_points = int(counts.max())
    max_samples = int(num_samples.max())

    local = torch.arange(max_points, device=x.device)
    valid = local[None, :] < counts[:, None]
    rows = (ptr[:-1, None] + local[None, :]).clamp(max=max(num_points - 1, 0))
    points = x[rows]  # [B, P, D]
    # Padding slots hold -1, below every real distance, so they are never picked.
    dist = torch.full((num_clouds, max_points), float("inf"), dtype=x.dtype, device=x.device)
    dist = torch.where(valid, dist, torch.full_like(dist, -1))
    current = start.long().clone()
    picked = torch.empty((num_clouds, max_samples), dtype=torch.long, device=x.device)
    cloud = torch.arange(num_clouds, device=x.device)
    for step in range(max_samples):
        picked[:, step] = current
        centre = points[cloud, current]  # [B, D]
        acc = None
        for d in range(dim):
            diff = points[:, :, d] - centre[:, d, None]
            sq = diff * diff
            acc = sq if acc is None else acc + sq
        dist = torch.minimum(dist, acc)
        current = dist.argmax(dim=1)  # first maximum: ties to the lowest index
    keep = torch.arange(max_samples, device=x.device)[None, :] < num_samples[:, None]
    out.copy_((picked + ptr[:-1, None])[keep])
    return out


def knn_reference(x: Tensor, y: Tensor, ptr_x: Tensor, ptr_y: Tensor, k: int,
                  cosine: bool) -> Tuple[Tensor, Tensor]:
    """k nearest rows of ``x`` for every row of ``y`` within its cloud."""
    num_queries = y.shape[0]
    dist = torch.full((num_queries, k), float("inf"), dtype=y.dtype, device=y.device)
    idx = torch.full((num_queries, k), -1, dtype=torch.long, device=y.device)
    norm_x = sequential_norm(x) if cosine else None
    norm_y = sequential_norm(y) if cosine else None
    for (xs, xe), (ys, ye) in zip(_ranges(ptr_x), _ranges(ptr_y)):
        n = xe - xs
        if n == 0 or ye == ys:
            continue
        kk = min(k, n)
        step = max(1, _BLOCK_ELEMS // n)
        for qs in range(ys, ye, step):
            qe = min(ye, qs + step)
            if cosine:
                d = cosine_distance(y[qs:qe], x[xs:xe], norm_y[qs:qe], norm_x[xs:xe])
            else:
                d = sequential_sqdist(y[qs:qe], x[xs:xe])
            # A stable sort keeps equal distances in ascending index order.
            values, order = torch.sort(d, dim=1, stable=True)
            dist[qs:qe, :kk] = values[:, :kk]
            idx[qs:qe, :kk] = order[:, :kk] + xs
    return dist, idx


def radius_reference(x: Tensor, y: Tensor, ptr_x: Tensor, ptr_y: Tensor, r: float,
                     max_num_neighbors: int) -> Tensor:
    """The first ``max_num_neighbors`` rows of ``x`` (ascending index) within
    squared distance ``< r * r`` of every row of ``y``, same cloud."""
    num_queries = y.shape[0]
    out = torch.full((num_queries, max_num_neighbors), -1, dtype=torch.long, device=y.device)
    r2 = torch.tensor(r * r, dtype=x.dtype, device=x.device)
    for (xs, xe), (ys, ye) in zip(_ranges(ptr_x), _ranges(ptr_y)):
        n = xe - xs
        if n == 0 or ye == ys:
            continue
        kk = min(max_num_neighbors, n)
        step = max(1, _BLOCK_ELEMS // n)
        for qs in range(ys, ye, step):
            qe = min(ye, qs + step)
            inside = sequential_sqdist(y[qs:qe], x[xs:xe]) < r2
            # Stable sort of "outside" flags: points inside first, in index order.
            order = torch.sort((~inside).to(torch.uint8), dim=1, stable=True).indices[:, :kk]
            hit = inside.gather(1, order)
            out[qs:qe, :kk] = torch.where(hit, order + xs, torch.full_like(order, -1))
    return out


_CUDA_FALLBACK_LIBRARY = None


def register_device_fallback(name: str, fn) -> None:
    """Serves CUDA tensors with the reference ``fn`` when the loaded extension
    was built without CUDA kernels (a CPU-only build on a GPU machine), so a
    CUDA input is slow rather than an error."""
    global _CUDA_FALLBACK_LIBRARY
    from . import _ext

    if _ext.backend() != "extension":
        return  # the references are registered for every device already
    if torch._C._dispatch_has_kernel_for_dispatch_key(f"pointcmt::{name}", "CUDA"):
        return
    if _CUDA_FALLBACK_LIBRARY is None:
        _CUDA_FALLBACK_LIBRARY = torch.library.Library("pointcmt", "IMPL")
    _CUDA_FALLBACK_LIBRARY.impl(name, fn, "CUDA")
