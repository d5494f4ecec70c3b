r"""Point clouds to depth (and shaded) images by orthographic projection and a z-buffer.

How PointCMT (`Yan et al., NeurIPS 2022 <https://arxiv.org/abs/2210.04208>`_)
gets images for shapes without meshes (ScanObjectNN, ModelNet point sets):
every shape of a PyG batch ``(pos, batch)`` is projected into ``V`` depth
images from a fixed set of camera directions (SimpleView-style: by default
the six axis directions), keeping per pixel the nearest point with a
``scatter_reduce(..., "amin")`` z-buffer. Each point may cover a square of
``(2 * splat + 1)^2`` pixels so that sparse clouds give closed surfaces.
Pure torch, on the device of the input (CPU or CUDA), vectorised over all
shapes, views and points at once.

Conventions (see :mod:`pointcmt_pyg.render.cameras`): each shape is first
normalised by its bounding box (centre ``(min + max) / 2``, divided by the
largest extent) unless ``normalize=False``; pixels hold ``1 - z / 2`` for the
nearest normalised depth ``z`` in ``[0, 1]`` (``0.5`` to ``1``, nearer is
brighter) and ``0`` where no point lands. Row ``0`` is the top of the image.

Besides ``"depth"``, a view can hold the channels of the mesh renderer
(:data:`CHANNELS`, same encodings as :mod:`pointcmt_pyg.render.mesh`), so
point clouds without meshes get silhouettes and shading too:

* ``"mask"``: the silhouette, ``1`` where a (splatted) point lands, else ``0``.
* ``"shading"``: ``0.2 + 0.8 * |n . d|`` with a light at the camera, for the
  normal ``n`` of the point that wins the pixel's z-test.
* ``"normal"``: three channels, ``((n . right + 1) / 2, (n . up + 1) / 2,
  |n . d|)`` with ``n`` turned towards the camera.

Point normals are estimated by PCA (`Hoppe et al., SIGGRAPH 1992
<https://doi.org/10.1145/133994.134011>`_): the eigenvector of the smallest
eigenvalue of the covariance of each point's ``normal_k`` nearest neighbours
in its own cloud (:func:`pointcmt_pyg.ops.knn`), so the sign of ``n`` is
arbitrary, which both encodings ignore (two-sided, as for ModelNet meshes).
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cameras import _check_int, camera_directions, pixel_value_from_depth, view_frames

__all__ = ["CHANNELS", "PointRenderer", "render_points", "estimate_normals"]

ImageSize = Union[int, Tuple[int, int]]

#: Image channels a view can hold, and how many planes each adds.
CHANNELS = {"depth": 1, "shading": 1, "normal": 3, "mask": 1}


def _check_channels(channels: Union[str, Sequence[str]]) -> Tuple[str, ...]:
    r"""``channels`` as a tuple of names from :data:`CHANNELS`, or a clear error."""
    if isinstance(channels, str):
        channels = (channels,)
    try:
        channels = tuple(channels)
    except TypeError:
        raise ValueError(f"channels must be a name or a sequence of names from "
                         f"{tuple(CHANNELS)}, got {channels!r}") from None
    if not channels or any(not isinstance(c, str) or c not in CHANNELS for c in channels):
        raise ValueError(f"channels must be a non-empty sequence of names from "
                         f"{tuple(CHANNELS)}, got {channels!r}")
    if len(set(channels)) != len(channels):
        raise ValueError(f"channels must not repeat a name, got {channels!r}")
    return channels


def estimate_normals(pos: Tensor, batch: Optional[Tensor] = None, k: int = 16) -> Tensor:
    r"""Unit normals of point clouds by local PCA (`Hoppe et al., 1992
    <https://doi.org/10.1145/133994.134011>`_).

    The normal of a point is the eigenvector of the smallest eigenvalue of the
    covariance of its ``k`` nearest neighbours (itself included) in the same
    cloud. Its sign is arbitrary. Eigenvectors are computed in float64.

    Args:
        pos (Tensor): Points ``[N, 3]``, floating point.
        batch (LongTensor, optional): Cloud index ``[N]`` of every point, in
            any order. (default: one cloud)
        k (int): Neighbours per point (a cloud with fewer points uses all of
            them). (default: ``16``)

    Returns:
        Tensor: ``[N, 3]`` unit normals in the dtype of ``pos``.

    Example:
        >>> normals = estimate_normals(data.pos, data.batch, k=16)
    """
    from ..ops import knn
    _check_int("k", k, minimum=1)
    if not isinstance(pos, Tensor) or not pos.is_floating_point() or pos.dim() != 2 \
            or pos.size(1) != 3:
        raise ValueError(f"pos must be a floating-point [N, 3] tensor, got "
                         f"{tuple(pos.shape) if isinstance(pos, Tensor) else type(pos).__name__}")
    n = pos.size(0)
    if n == 0:
        return pos.new_zeros(0, 3)
    if batch is None:
        batch = torch.zeros(n, dtype=torch.long, device=pos.device)
    order = torch.argsort(batch, stable=True)
    p, b = pos[order].contiguous(), batch[order].contiguous()
    work = p if p.dtype in (torch.float32, torch.float64) else p.float()
    query, neighbour = knn(work, work, k, b, b)
    p64 = p.double()
    count = torch.bincount(query, minlength=n).clamp_min(1).double().unsqueeze(1)
    mean = torch.zeros(n, 3, dtype=torch.float64, device=pos.device).index_add_(
        0, query, p64[neighbour]) / count
    d = p64[neighbour] - mean[query]
    cov = torch.zeros(n, 9, dtype=torch.float64, device=pos.device).index_add_(
        0, query, (d.unsqueeze(2) * d.unsqueeze(1)).reshape(-1, 9)).view(n, 3, 3)
    normal = torch.linalg.eigh(cov)[1][..., 0]          # eigenvalues ascending
    out = torch.empty_like(normal)
    out[order] = normal
    return out.to(pos.dtype)


def _image_hw(image_size: ImageSize) -> Tuple[int, int]:
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        size = (image_size, image_size)
    elif isinstance(image_size, (tuple, list)) and len(image_size) == 2:
        size = tuple(image_size)
    else:
        raise ValueError(f"image_size must be an int or a pair (H, W), got {image_size!r}")
    for s in size:
        if not isinstance(s, int) or isinstance(s, bool) or s < 1:
            raise ValueError(f"image_size must hold positive ints, got {image_size!r}")
    return size  # type: ignore[return-value]


def _bbox_normalize(pos: Tensor, batch: Tensor, num_shapes: int) -> Tensor:
    r"""Per-shape ``(pos - (min + max) / 2) / max(max - min)``; a shape with
    zero extent (one point) is only centred."""
    index = batch.unsqueeze(1).expand(-1, 3)
    lo = pos.new_full((num_shapes, 3), float("inf")).scatter_reduce(0, index, pos, "amin")
    hi = pos.new_full((num_shapes, 3), float("-inf")).scatter_reduce(0, index, pos, "amax")
    centre = (lo + hi) / 2
    extent = (hi - lo).amax(dim=1, keepdim=True)
    extent = torch.where(extent > 0, extent, torch.ones_like(extent))
    return (pos - centre[batch]) / extent[batch]


class PointRenderer(nn.Module):
    r"""Renders batches of point clouds into ``[B, V, C, H, W]`` images
    (``C = 1`` for the default depth images).

    Args:
        num_views (int): Number of views ``V`` (ignored when ``directions``
            is given). (default: ``6``)
        image_size (int or (int, int)): ``H = W`` or ``(H, W)``. (default: ``64``)
        splat (int): Splat radius in pixels: each point covers the
            ``(2 * splat + 1)^2`` pixels around its own. (default: ``1``)
        directions (Tensor, optional): Explicit ``[V, 3]`` camera directions
            (from the shape towards the camera).
        layout (str): Camera layout of
            :func:`~pointcmt_pyg.render.cameras.camera_directions` when
            ``directions`` is not given. (default: ``"auto"``: the six axis
            directions for ``V = 6``)
        up (int): World up axis. (default: ``2``, z as in ModelNet)
        padding (float): Relative margin around the normalised cube. (default: ``0.05``)
        normalize (bool): Normalise each shape by its bounding box first;
            with ``False`` the points must already lie in ``[-0.5, 0.5]^3``
            (points outside a view's window are dropped, depths are clamped).
            (default: ``True``)
        channels (sequence of str): Names from :data:`CHANNELS`, stacked in
            order (``"normal"`` adds three). (default: ``("depth",)``)
        normal_k (int): Neighbours of the PCA normals (``"shading"`` and
            ``"normal"`` only). (default: ``16``)

    Example:
        >>> renderer = PointRenderer(num_views=6, image_size=64)
        >>> views = renderer(data.pos, data.batch)   # [B, 6, 1, 64, 64]
        >>> shaded = PointRenderer(6, 64, channels=("depth", "shading"))(data.pos, data.batch)
    """

    def __init__(self, num_views: int = 6, image_size: ImageSize = 64, splat: int = 1,
                 directions: Optional[Union[Tensor, Sequence[Sequence[float]]]] = None,
                 layout: str = "auto", up: int = 2, padding: float = 0.05,
                 normalize: bool = True, channels: Union[str, Sequence[str]] = ("depth",),
                 normal_k: int = 16) -> None:
        super().__init__()
        self.image_size = _image_hw(image_size)
        _check_int("splat", splat, minimum=0)
        self.channels = _check_channels(channels)
        _check_int("normal_k", normal_k, minimum=1)
        self.normal_k = normal_k
        if not isinstance(normalize, bool):
            raise TypeError(f"normalize must be a bool, got {type(normalize).__name__}")
        if directions is None:
            directions = camera_directions(num_views, layout=layout, up=up)
        frames, half_width, depth_range = view_frames(directions, up=up, padding=padding)
        self.num_views = frames.size(0)
        self.splat, self.up, self.padding, self.normalize = splat, up, float(padding), normalize
        self.layout = layout
        self.register_buffer("frames", frames, persistent=False)
        self.register_buffer("half_width", half_width, persistent=False)
        self.register_buffer("depth_range", depth_range, persistent=False)

    @property
    def num_channels(self) -> int:
        r"""``C``, the number of image channels."""
        return sum(CHANNELS[c] for c in self.channels)

    def config(self) -> dict:
        r"""Everything that determines the images (for cache keys)."""
        config = {"renderer": "points", "directions": self.frames[:, 2].tolist(),
                  "image_size": list(self.image_size), "splat": self.splat, "up": self.up,
                  "padding": self.padding, "normalize": self.normalize}
        if self.channels != ("depth",):     # depth-only keys stay as they were: caches stay valid
            config["channels"] = list(self.channels)
            if {"shading", "normal"} & set(self.channels):
                config["normal_k"] = self.normal_k
        return config

    def extra_repr(self) -> str:
        return (f"num_views={self.num_views}, image_size={self.image_size}, splat={self.splat}, "
                f"normalize={self.normalize}, channels={self.channels}")

    def forward(self, pos: Tensor, batch: Optional[Tensor] = None,
                batch_size: Optional[int] = None) -> Tensor:
        r"""Renders the shapes.

        Args:
            pos (Tensor): Points ``[N, 3]`` (with ``batch``) or dense ``[B, N, 3]``.
            batch (LongTensor, optional): Shape index ``[N]`` of each point
                (PyG); ``None`` means one shape (or the dense batch).
            batch_size (int, optional): Number of shapes ``B``; defaults to
                ``batch.max() + 1``. Shapes without points give blank images.

        Returns:
            Tensor: ``[B, V, C, H, W]`` in the floating dtype of ``pos``.
        """
        if not isinstance(pos, Tensor):
            raise TypeError(f"pos must be a tensor, got {type(pos).__name__}")
        if not pos.is_floating_point():
            raise TypeError(f"pos must be a floating-point tensor, got {pos.dtype}")
        if pos.dim() == 3:
            if batch is not None:
                raise ValueError("pass batch only with pos of shape [N, 3], not a dense [B, N, 3]")
            if pos.size(2) != 3:
                raise ValueError(f"pos must be [N, 3] or [B, N, 3], got {tuple(pos.shape)}")
            if batch_size is not None and batch_size != pos.size(0):
                raise ValueError(f"batch_size={batch_size} differs from the dense batch {pos.size(0)}")
            batch_size = pos.size(0)
            batch = torch.arange(batch_size, device=pos.device).repeat_interleave(pos.size(1))
            pos = pos.reshape(-1, 3)
        elif pos.dim() != 2 or pos.size(1) != 3:
            raise ValueError(f"pos must be [N, 3] or [B, N, 3], got {tuple(pos.shape)}")
        n = pos.size(0)
        if batch is None:
            batch = torch.zeros(n, dtype=torch.long, device=pos.device)
            if batch_size is None:
                batch_size = 1
        else:
            if not isinstance(batch, Tensor) or batch.dtype != torch.long or batch.shape != (n,):
                got = (f"{batch.dtype} {tuple(batch.shape)}" if isinstance(batch, Tensor)
                       else type(batch).__name__)
                raise ValueError(f"batch must be a LongTensor of shape [{n}], got {got}")
            if batch.device != pos.device:
                raise ValueError(f"batch is on {batch.device}, pos on {pos.device}")
            if n and int(batch.min()) < 0:
                raise ValueError("batch must hold non-negative shape indices")
            if batch_size is None:
                batch_size = int(batch.max()) + 1 if n else 0
            elif n and int(batch.max()) >= batch_size:
                raise ValueError(f"batch holds index {int(batch.max())} >= batch_size={batch_size}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 0:
            raise ValueError(f"batch_size must be a non-negative int, got {batch_size!r}")
        if n and not bool(torch.isfinite(pos).all()):
            raise ValueError("pos holds NaN or infinite coordinates")
        return self._render(pos, batch, batch_size)

    def _render(self, pos: Tensor, batch: Tensor, num_shapes: int) -> Tensor:
        H, W = self.image_size
        V, s = self.num_views, self.splat
        dtype, device = pos.dtype, pos.device
        if self.normalize and pos.size(0):
            pos = _bbox_normalize(pos, batch, num_shapes)
        frames = self.frames.to(device=device, dtype=dtype)          # [V, 3, 3]
        hw = self.half_width.to(device=device, dtype=dtype)          # [V]
        dr = self.depth_range.to(device=device, dtype=dtype)         # [V]
        x, y, z = pos[:, 0:1], pos[:, 1:2], pos[:, 2:3]               # [N, 1]
        # Elementwise products (no matmul) so every point's result does not
        # depend on which other points share the batch: bit-identical images.
        a = x * frames[:, 0, 0] + y * frames[:, 0, 1] + z * frames[:, 0, 2]   # [N, V]
        b = x * frames[:, 1, 0] + y * frames[:, 1, 1] + z * frames[:, 1, 2]
        t = x * frames[:, 2, 0] + y * frames[:, 2, 1] + z * frames[:, 2, 2]
        depth = ((0.5 * dr - t) / dr).clamp(0.0, 1.0)
        inside = (a.abs() <= hw) & (b.abs() <= hw)
        col = torch.floor((a + hw) / (2 * hw) * W).long().clamp(0, W - 1)
        row = torch.floor((hw - b) / (2 * hw) * H).long().clamp(0, H - 1)
        view = torch.arange(V, device=device).expand_as(col)
        flat = ((batch.unsqueeze(1) * V + view) * H + row) * W + col    # [N, V]
        zbuf = torch.full((num_shapes * V * H * W,), float("inf"), dtype=dtype, device=device)
        zbuf = zbuf.scatter_reduce(0, flat[inside], depth[inside], "amin", include_self=True)
        if self.channels != ("depth",):
            return self._render_channels(pos, batch, num_shapes, frames, flat, inside, depth, zbuf)
        if s and zbuf.numel():
            # Splatting every point over its (2s+1)^2 square and keeping the
            # minimum equals a (2s+1)^2 minimum filter of the point z-buffer.
            zbuf = -F.max_pool2d(-zbuf.view(num_shapes * V, 1, H, W), 2 * s + 1, stride=1,
                                 padding=s).reshape(-1)
        hit = torch.isfinite(zbuf)
        img = torch.where(hit, pixel_value_from_depth(torch.where(hit, zbuf, 0.0)),
                          torch.zeros_like(zbuf))
        return img.view(num_shapes, V, 1, H, W)

    def _render_channels(self, pos: Tensor, batch: Tensor, num_shapes: int, frames: Tensor,
                         flat: Tensor, inside: Tensor, depth: Tensor, zbuf: Tensor) -> Tensor:
        r"""Every channel of :attr:`channels`: the z-buffer also records which
        point wins each pixel (the highest index among equal depths), the
        splat's minimum filter which pixel each output pixel took its depth
        from, and the shading channels read the winning point's normal."""
        H, W = self.image_size
        V, s = self.num_views, self.splat
        n = pos.size(0)
        planes = num_shapes * V
        point = torch.arange(n, device=pos.device).unsqueeze(1).expand_as(flat)
        front = inside & (depth == zbuf[flat])
        owner = torch.full_like(zbuf, -1, dtype=torch.long).scatter_reduce(
            0, flat[front], point[front], "amax", include_self=True)
        if s and zbuf.numel():
            neg, src = F.max_pool2d(-zbuf.view(planes, 1, H, W), 2 * s + 1, stride=1, padding=s,
                                    return_indices=True)
            zbuf = -neg.reshape(-1)
            plane_start = torch.arange(planes, device=pos.device).view(planes, 1, 1, 1) * (H * W)
            owner = owner[(src + plane_start).reshape(-1)]
        hit = torch.isfinite(zbuf)
        owner = torch.where(hit, owner, 0)
        images = []
        if {"shading", "normal"} & set(self.channels):
            normal = estimate_normals(pos, batch, self.normal_k)                 # [N, 3]
            cam = torch.einsum("nj,vij->nvi", normal, frames)                    # [N, V, 3]
            view = torch.arange(V, device=pos.device).view(1, V, 1).expand(
                num_shapes, V, H * W).reshape(-1)
            cam = cam[owner, view] if n else cam.new_zeros(zbuf.numel(), 3)     # [pixels, 3]
            facing = cam[:, 2].abs()
        for name in self.channels:
            if name == "depth":
                img = torch.where(hit, pixel_value_from_depth(torch.where(hit, zbuf, 0.0)), 0.0)
                planes_of = [img]
            elif name == "mask":
                planes_of = [hit.to(zbuf.dtype)]
            elif name == "shading":
                planes_of = [torch.where(hit, 0.2 + 0.8 * facing, 0.0)]
            else:
                sign = torch.where(cam[:, 2] < 0, -1.0, 1.0).to(cam.dtype)
                planes_of = [torch.where(hit, (sign * cam[:, 0] + 1) / 2, 0.0),
                             torch.where(hit, (sign * cam[:, 1] + 1) / 2, 0.0),
                             torch.where(hit, facing, 0.0)]
            images.extend(p.view(num_shapes, V, 1, H, W) for p in planes_of)
        return torch.cat(images, dim=2).to(zbuf.dtype)


def render_points(pos: Tensor, batch: Optional[Tensor] = None, num_views: int = 6,
                  image_size: ImageSize = 64, splat: int = 1, *,
                  directions: Optional[Union[Tensor, Sequence[Sequence[float]]]] = None,
                  layout: str = "auto", up: int = 2, padding: float = 0.05,
                  normalize: bool = True, batch_size: Optional[int] = None,
                  channels: Union[str, Sequence[str]] = ("depth",), normal_k: int = 16) -> Tensor:
    r"""Renders point clouds into images, ``[B, V, C, H, W]`` (``C = 1`` for depth).

    A functional shortcut for :class:`PointRenderer` (see there for the
    arguments and the image conventions); build a :class:`PointRenderer`
    once when rendering many batches.

    Example:
        >>> views = render_points(data.pos, data.batch, num_views=6, image_size=64)
    """
    renderer = PointRenderer(num_views=num_views, image_size=image_size, splat=splat,
                             directions=directions, layout=layout, up=up, padding=padding,
                             normalize=normalize, channels=channels, normal_k=normal_k)
    return renderer(pos, batch, batch_size=batch_size)
