r"""Point clouds to depth images by orthographic projection and a z-buffer.

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
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cameras import _check_int, camera_directions, pixel_value_from_depth, view_frames

__all__ = ["PointRenderer", "render_points"]

ImageSize = Union[int, Tuple[int, int]]


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
    r"""Renders batches of point clouds into ``[B, V, 1, H, W]`` depth images.

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

    Example:
        >>> renderer = PointRenderer(num_views=6, image_size=64)
        >>> views = renderer(data.pos, data.batch)   # [B, 6, 1, 64, 64]
    """

    def __init__(self, num_views: int = 6, image_size: ImageSize = 64, splat: int = 1,
                 directions: Optional[Union[Tensor, Sequence[Sequence[float]]]] = None,
                 layout: str = "auto", up: int = 2, padding: float = 0.05,
                 normalize: bool = True) -> None:
        super().__init__()
        self.image_size = _image_hw(image_size)
        _check_int("splat", splat, minimum=0)
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

    def config(self) -> dict:
        r"""Everything that determines the images (for cache keys)."""
        return {"renderer": "points", "directions": self.frames[:, 2].tolist(),
                "image_size": list(self.image_size), "splat": self.splat, "up": self.up,
                "padding": self.padding, "normalize": self.normalize}

    def extra_repr(self) -> str:
        return (f"num_views={self.num_views}, image_size={self.image_size}, splat={self.splat}, "
                f"normalize={self.normalize}")

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
            Tensor: ``[B, V, 1, H, W]`` in the floating dtype of ``pos``.
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
        if s and zbuf.numel():
            # Splatting every point over its (2s+1)^2 square and keeping the
            # minimum equals a (2s+1)^2 minimum filter of the point z-buffer.
            zbuf = -F.max_pool2d(-zbuf.view(num_shapes * V, 1, H, W), 2 * s + 1, stride=1,
                                 padding=s).reshape(-1)
        hit = torch.isfinite(zbuf)
        img = torch.where(hit, pixel_value_from_depth(torch.where(hit, zbuf, 0.0)),
                          torch.zeros_like(zbuf))
        return img.view(num_shapes, V, 1, H, W)


def render_points(pos: Tensor, batch: Optional[Tensor] = None, num_views: int = 6,
                  image_size: ImageSize = 64, splat: int = 1, *,
                  directions: Optional[Union[Tensor, Sequence[Sequence[float]]]] = None,
                  layout: str = "auto", up: int = 2, padding: float = 0.05,
                  normalize: bool = True, batch_size: Optional[int] = None) -> Tensor:
    r"""Renders point clouds into depth images, ``[B, V, 1, H, W]``.

    A functional shortcut for :class:`PointRenderer` (see there for the
    arguments and the image conventions); build a :class:`PointRenderer`
    once when rendering many batches.

    Example:
        >>> views = render_points(data.pos, data.batch, num_views=6, image_size=64)
    """
    renderer = PointRenderer(num_views=num_views, image_size=image_size, splat=splat,
                             directions=directions, layout=layout, up=up, padding=padding,
                             normalize=normalize)
    return renderer(pos, batch, batch_size=batch_size)
