r"""Triangle meshes to depth and shaded-normal images by headless ray casting.

The image modality of PointCMT (`Yan et al., NeurIPS 2022
<https://arxiv.org/abs/2210.04208>`_) for shapes that come with meshes, such
as ModelNet's ``.off`` files: open3d's ``RaycastingScene`` (Embree on the
CPU, no OpenGL, no display) casts one orthographic ray per pixel from ``V``
viewpoints (e.g. 12 around the object or the 20 vertices of a dodecahedron).

The cameras, the window and the depth are those of the point renderer
(:mod:`pointcmt_pyg.render.cameras`), so ``"depth"`` images of a mesh and of
points sampled on it line up pixel for pixel. Channels:

* ``"depth"``: ``1 - z / 2`` for the normalised depth ``z`` in ``[0, 1]`` of
  the first hit (nearer is brighter), ``0`` for the background.
* ``"shading"``: Lambertian shading with a light at the camera,
  ``0.2 + 0.8 * |n . d|`` for the face normal ``n`` (two-sided: ModelNet's
  face orientation is not consistent), ``0`` for the background.
* ``"normal"``: three channels, the camera-space normal turned towards the
  camera, ``((n . right + 1) / 2, (n . up + 1) / 2, |n . d|)``, ``0`` for
  the background.
* ``"mask"``: ``1`` where the mesh is hit, else ``0``.
"""
import os
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .cameras import _check_int, camera_directions, pixel_value_from_depth, view_frames
from .points import CHANNELS, ImageSize, _check_channels, _image_hw

__all__ = ["CHANNELS", "MeshRenderer", "render_mesh", "read_off"]



def read_off(path: Union[str, os.PathLike]) -> Tuple[Tensor, Tensor]:
    r"""Reads an OFF mesh; tolerates ModelNet's ``OFF`` glued to the counts
    line (``OFF490 518 0``), comments and polygons (fan-triangulated).

    The project's single OFF reader,
    :func:`pointcmt_pyg.datasets.modelnet.read_off`, re-exported here.

    Returns:
        ``(mesh_pos [Nv, 3] float32, mesh_face [F, 3] long)``.

    Raises:
        ValueError: Naming :obj:`path`, if it is not a valid OFF mesh.
    """
    from ..datasets.modelnet import read_off as _read_off  # lazy: no import cycle
    return _read_off(path)


def _as_array(name: str, value) -> np.ndarray:
    if isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a tensor or array, got {type(value).__name__}") from None
    if arr.dtype == object:
        raise TypeError(f"{name} must be a numeric tensor or array, got dtype object")
    return arr


def _check_mesh(vertices, faces) -> Tuple[np.ndarray, np.ndarray]:
    v = _as_array("vertices", vertices)
    f = _as_array("faces", faces)
    if v.ndim != 2 or v.shape[1] != 3 or v.shape[0] == 0:
        raise ValueError(f"vertices must have shape [Nv, 3] with Nv >= 1, got {tuple(v.shape)}")
    if not np.issubdtype(v.dtype, np.floating):
        raise TypeError(f"vertices must be floating point, got {v.dtype}")
    if not np.isfinite(v).all():
        raise ValueError("vertices hold NaN or infinite coordinates")
    if f.ndim != 2 or f.shape[1] != 3 or f.shape[0] == 0:
        raise ValueError(f"faces must have shape [F, 3] with F >= 1 (triangles), got {tuple(f.shape)}")
    if not np.issubdtype(f.dtype, np.integer):
        raise TypeError(f"faces must hold integer vertex indices, got {f.dtype}")
    if f.min() < 0 or f.max() >= v.shape[0]:
        raise ValueError(f"faces index vertices outside [0, {v.shape[0]}): "
                         f"min {int(f.min())}, max {int(f.max())}")
    return v.astype(np.float64), f.astype(np.int64)


class MeshRenderer:
    r"""Renders one triangle mesh into ``[V, C, H, W]`` float32 images.

    Args:
        num_views (int): Number of views (ignored with ``directions``). (default: ``12``)
        image_size (int or (int, int)): ``H = W`` or ``(H, W)``. (default: ``128``)
        channels (sequence of str): Names from :data:`CHANNELS`, stacked in
            order (``"normal"`` adds three). (default: ``("depth", "shading")``)
        directions (Tensor, optional): Explicit ``[V, 3]`` camera directions.
        layout (str): Layout of :func:`~pointcmt_pyg.render.cameras.camera_directions`.
            (default: ``"auto"``: a ring at 30 degrees for 12 views, the
            dodecahedron for 20, the axes for 6)
        up (int): World up axis. (default: ``2``, z as in ModelNet)
        padding (float): Relative margin around the normalised cube. (default: ``0.05``)
        normalize (bool): Normalise the mesh by its vertices' bounding box
            (centre ``(min + max) / 2``, divide by the largest extent).
            (default: ``True``)
        num_threads (int): Threads for open3d; ``0`` = all. (default: ``0``)
    """

    def __init__(self, num_views: int = 12, image_size: ImageSize = 128,
                 channels: Sequence[str] = ("depth", "shading"),
                 directions: Optional[Union[Tensor, Sequence[Sequence[float]]]] = None,
                 layout: str = "auto", up: int = 2, padding: float = 0.05,
                 normalize: bool = True, num_threads: int = 0) -> None:
        self.image_size = _image_hw(image_size)
        channels = _check_channels(channels)
        if not isinstance(normalize, bool):
            raise TypeError(f"normalize must be a bool, got {type(normalize).__name__}")
        _check_int("num_threads", num_threads, minimum=0)
        if directions is None:
            directions = camera_directions(num_views, layout=layout, up=up)
        self.frames, self.half_width, self.depth_range = view_frames(directions, up=up,
                                                                     padding=padding)
        self.num_views = self.frames.size(0)
        self.channels, self.up, self.padding = channels, up, float(padding)
        self.normalize, self.num_threads = normalize, num_threads

    @property
    def num_channels(self) -> int:
        r"""``C``, the number of image channels."""
        return sum(CHANNELS[c] for c in self.channels)

    def config(self) -> dict:
        r"""Everything that determines the images (for cache keys)."""
        return {"renderer": "mesh", "directions": self.frames[:, 2].tolist(),
                "image_size": list(self.image_size), "channels": list(self.channels),
                "up": self.up, "padding": self.padding, "normalize": self.normalize}

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(num_views={self.num_views}, "
                f"image_size={self.image_size}, channels={self.channels})")

    def rays(self) -> np.ndarray:
        r"""The ``[V, H, W, 6]`` orthographic rays (origin, unit direction) in
        normalised coordinates; pixel centres, row 0 at the top."""
        H, W = self.image_size
        hw = self.half_width.numpy()[:, None]                                   # [V, 1]
        a = -hw + (np.arange(W) + 0.5)[None] * (2 * hw / W)                     # [V, W]
        b = hw - (np.arange(H) + 0.5)[None] * (2 * hw / H)                      # [V, H]
        frames = self.frames.numpy()
        right, up, d = frames[:, 0], frames[:, 1], frames[:, 2]                 # [V, 3]
        dr = self.depth_range.numpy()
        origin = (a[:, None, :, None] * right[:, None, None, :]
                  + b[:, :, None, None] * up[:, None, None, :]
                  + (dr[:, None, None, None] * d[:, None, None, :]))           # [V, H, W, 3]
        direction = np.broadcast_to(-d[:, None, None, :], origin.shape)
        return np.concatenate([origin, direction], axis=-1)

    def __call__(self, vertices, faces) -> Tensor:
        r"""Renders ``vertices [Nv, 3]`` / ``faces [F, 3]`` (tensors or arrays).

        Returns:
            Tensor: ``[V, C, H, W]`` float32 on the CPU.
        """
        try:
            import open3d as o3d
        except ImportError as e:  # pragma: no cover
            raise ImportError("render_mesh needs open3d (pip install open3d)") from e
        v, f = _check_mesh(vertices, faces)
        if self.normalize:
            lo, hi = v.min(axis=0), v.max(axis=0)
            extent = float((hi - lo).max())
            v = (v - (lo + hi) / 2) / (extent if extent > 0 else 1.0)
        scene = o3d.t.geometry.RaycastingScene(nthreads=self.num_threads)
        scene.add_triangles(o3d.core.Tensor(v.astype(np.float32)),
                            o3d.core.Tensor(f.astype(np.uint32)))
        rays = self.rays()
        out = scene.cast_rays(o3d.core.Tensor(rays.astype(np.float32)), nthreads=self.num_threads)
        t_hit = torch.from_numpy(out["t_hit"].numpy().astype(np.float64))      # [V, H, W]
        normal = torch.from_numpy(out["primitive_normals"].numpy().astype(np.float64))
        hit = torch.isfinite(t_hit)
        dr = self.depth_range[:, None, None]
        frames = self.frames
        images = []
        for name in self.channels:
            if name == "depth":
                depth = (torch.where(hit, t_hit, dr) - 0.5 * dr) / dr
                img = torch.where(hit, pixel_value_from_depth(depth), 0.0)[:, None]
            elif name == "mask":
                img = hit.double()[:, None]
            else:
                n = torch.where(hit[..., None], normal, 0.0)
                cam = torch.einsum("vhwj,vij->vihw", n, frames)                  # [V, 3, H, W]
                facing = cam[:, 2:3].abs()
                if name == "shading":
                    img = torch.where(hit[:, None], 0.2 + 0.8 * facing, 0.0)
                else:
                    sign = torch.where(cam[:, 2:3] < 0, -1.0, 1.0)
                    rgb = torch.cat([(sign * cam[:, :2] + 1) / 2, facing], dim=1)
                    img = torch.where(hit[:, None], rgb, 0.0)
            images.append(img)
        return torch.cat(images, dim=1).float().contiguous()


def render_mesh(vertices, faces, num_views: int = 12, image_size: ImageSize = 128,
                channels: Sequence[str] = ("depth", "shading"), *,
                directions: Optional[Union[Tensor, Sequence[Sequence[float]]]] = None,
                layout: str = "auto", up: int = 2, padding: float = 0.05,
                normalize: bool = True, num_threads: int = 0) -> Tensor:
    r"""Renders a triangle mesh into ``[V, C, H, W]`` float32 images with
    open3d ray casting (headless). A functional shortcut for
    :class:`MeshRenderer`; see there and the module docstring for the
    arguments and channels.

    Example:
        >>> mesh_pos, mesh_face = read_off("ModelNet10/sofa/train/sofa_0001.off")
        >>> views = render_mesh(mesh_pos, mesh_face, num_views=12, image_size=128)
    """
    return MeshRenderer(num_views=num_views, image_size=image_size, channels=channels,
                        directions=directions, layout=layout, up=up, padding=padding,
                        normalize=normalize, num_threads=num_threads)(vertices, faces)
