r"""Camera directions and orthographic view frames shared by the point and mesh
renderers of PointCMT (`paper <https://arxiv.org/abs/2210.04208>`_).

Every view looks at the centre of a shape that was normalised into the cube
``[-0.5, 0.5]^3`` (bounding-box centre at the origin, largest extent 1; the
project's :func:`~pointcmt_pyg.datasets.transforms.normalize_bbox`). A view
is a unit *direction* ``d`` pointing from the shape towards the camera; the
camera looks along ``-d`` with an orthographic projection. Its image plane
is spanned by ``right`` (image columns, left to right) and ``up`` (image
rows, bottom to top), so that ``(right, up, d)`` is a right-handed
orthonormal frame.

Each view's square window is the smallest one that contains the projection of
the whole cube, ``half_width = 0.5 * max(|right|_1, |up|_1) * (1 + padding)``,
so a normalised shape is never clipped and axis-aligned views use the full
image. Depth runs along ``-d`` from the cube's nearest possible point:
``z = 0.5 * |d|_1 - p . d``, normalised to ``z / |d|_1`` in ``[0, 1]``
for points in the cube.
"""
import math
from typing import Sequence, Tuple, Union

import torch
from torch import Tensor

__all__ = ["LAYOUTS", "camera_directions", "view_frames", "pixel_value_from_depth"]

LAYOUTS = ("auto", "axes", "ring", "dodecahedron", "sphere")


def _check_int(name: str, value, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_up(up) -> None:
    if up not in (0, 1, 2) or isinstance(up, bool):
        raise ValueError(f"up must be the index of the world up axis (0, 1 or 2), got {up!r}")


def camera_directions(num_views: int = 6, layout: str = "auto", up: int = 2,
                      elevation: float = 30.0, dtype: torch.dtype = torch.float64) -> Tensor:
    r"""Unit vectors from the shape's centre towards ``num_views`` cameras.

    Layouts:

    * ``"axes"`` (6 views, SimpleView): ``+x, -x, +y, -y, +z, -z``.
    * ``"ring"``: ``num_views`` cameras evenly spaced in azimuth around the
      ``up`` axis, ``elevation`` degrees above the horizontal plane
      (MVCNN-style; 12 views is the classic choice).
    * ``"dodecahedron"`` (20 views): the vertices of a regular dodecahedron.
    * ``"sphere"``: ``num_views`` near-uniform directions (Fibonacci lattice).
    * ``"auto"``: ``"axes"`` for 6 views, ``"dodecahedron"`` for 20, else
      ``"ring"``.

    Args:
        num_views (int): Number of views.
        layout (str): One of :data:`LAYOUTS`.
        up (int): World up axis (``2`` = z, as in ModelNet). Only ``"ring"``
            and the image orientation depend on it.
        elevation (float): Ring elevation in degrees, in ``(-90, 90)``.
        dtype: Floating dtype of the result. (default: ``torch.float64``)

    Returns:
        Tensor: ``[num_views, 3]`` unit vectors.
    """
    _check_int("num_views", num_views)
    _check_up(up)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout == "auto":
        layout = {6: "axes", 20: "dodecahedron"}.get(num_views, "ring")
    if layout == "axes":
        if num_views != 6:
            raise ValueError(f"layout 'axes' has 6 views, got num_views={num_views}")
        dirs = torch.tensor([[1., 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]],
                            dtype=torch.float64)
    elif layout == "dodecahedron":
        if num_views != 20:
            raise ValueError(f"layout 'dodecahedron' has 20 views, got num_views={num_views}")
        phi = (1 + math.sqrt(5)) / 2
        pts = [[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]
        for a in (-1, 1):
            for b in (-1, 1):
                pts += [[0, a / phi, b * phi], [a / phi, b * phi, 0], [a * phi, 0, b / phi]]
        dirs = torch.tensor(pts, dtype=torch.float64)
        dirs = dirs / dirs.norm(dim=1, keepdim=True)
    elif layout == "ring":
        if not isinstance(elevation, (int, float)) or not -90 < elevation < 90:
            raise ValueError(f"elevation must be a number of degrees in (-90, 90), got {elevation!r}")
        az = torch.arange(num_views, dtype=torch.float64) * (2 * math.pi / num_views)
        el = math.radians(elevation)
        a, b = (up + 1) % 3, (up + 2) % 3  # horizontal axes, right-handed with up
        dirs = torch.zeros(num_views, 3, dtype=torch.float64)
        dirs[:, a] = math.cos(el) * torch.cos(az)
        dirs[:, b] = math.cos(el) * torch.sin(az)
        dirs[:, up] = math.sin(el)
    else:  # sphere
        i = torch.arange(num_views, dtype=torch.float64) + 0.5
        h = 1 - 2 * i / num_views
        r = torch.sqrt((1 - h * h).clamp_min(0))
        theta = math.pi * (3 - math.sqrt(5)) * i
        a, b = (up + 1) % 3, (up + 2) % 3
        dirs = torch.zeros(num_views, 3, dtype=torch.float64)
        dirs[:, a], dirs[:, b], dirs[:, up] = r * torch.cos(theta), r * torch.sin(theta), h
    return dirs.to(dtype)


def _as_directions(directions: Union[Tensor, Sequence[Sequence[float]]]) -> Tensor:
    try:
        dirs = torch.as_tensor(directions, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise TypeError("directions must be a [V, 3] tensor or nested sequence of numbers, "
                        f"got {type(directions).__name__}") from None
    if dirs.dim() != 2 or dirs.size(1) != 3 or dirs.size(0) == 0:
        raise ValueError(f"directions must have shape [V, 3] with V >= 1, got {tuple(dirs.shape)}")
    norm = dirs.norm(dim=1, keepdim=True)
    if not torch.isfinite(dirs).all() or (norm < 1e-12).any():
        raise ValueError("directions must be finite and non-zero")
    return dirs / norm


def view_frames(directions: Union[Tensor, Sequence[Sequence[float]]], up: int = 2,
                padding: float = 0.05) -> Tuple[Tensor, Tensor, Tensor]:
    r"""Orthographic camera frames for the given view directions.

    Args:
        directions: ``[V, 3]`` vectors from the shape towards the cameras
            (normalised here).
        up (int): World up axis; a view looking along it uses the axis
            ``(up + 2) % 3`` as its up instead (y for z up: the top view
            shows x to the right, y up).
        padding (float): Relative margin around the normalised cube, ``>= 0``.

    Returns:
        ``(frames [V, 3, 3], half_width [V], depth_range [V])`` in float64:
        ``frames[v]`` holds the rows ``right, up, d``; a point ``p`` of the
        normalised cube maps to the image-plane coordinates
        ``(p . right, p . up)`` inside ``[-half_width, half_width]`` and to the
        normalised depth ``(0.5 * depth_range - p . d) / depth_range`` in
        ``[0, 1]`` (``depth_range = |d|_1``).
    """
    _check_up(up)
    if not isinstance(padding, (int, float)) or isinstance(padding, bool) or not (
            math.isfinite(padding) and padding >= 0):
        raise ValueError(f"padding must be a finite number >= 0, got {padding!r}")
    dirs = _as_directions(directions)
    world_up = torch.zeros(3, dtype=torch.float64)
    world_up[up] = 1.0
    fallback = torch.zeros(3, dtype=torch.float64)
    fallback[(up + 2) % 3] = 1.0
    frames = []
    for d in dirs:
        ref = world_up if torch.linalg.cross(d, world_up).norm() > 1e-6 else fallback
        forward = -d
        right = torch.linalg.cross(forward, ref)
        right = right / right.norm()
        cam_up = torch.linalg.cross(right, forward)
        cam_up = cam_up / cam_up.norm()
        frames.append(torch.stack([right, cam_up, d]))
    frames = torch.stack(frames)
    # Snap values that are zero up to rounding (e.g. cos(pi/2)) so that
    # axis-aligned views project exactly.
    frames = torch.where(frames.abs() < 1e-12, torch.zeros_like(frames), frames)
    l1 = frames.abs().sum(dim=2)  # [V, 3]
    half_width = 0.5 * torch.maximum(l1[:, 0], l1[:, 1]) * (1 + padding)
    return frames, half_width, l1[:, 2]


def pixel_value_from_depth(depth: Tensor) -> Tensor:
    r"""Maps normalised depth ``z`` in ``[0, 1]`` (``0`` = nearest possible
    point of the cube) to the pixel value ``1 - z / 2`` in ``[0.5, 1]``: nearer
    is brighter, and any surface stays clearly apart from the background ``0``.
    """
    return 1.0 - 0.5 * depth.clamp(0.0, 1.0)
