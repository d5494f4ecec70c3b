r"""Point-cloud transforms in PyTorch Geometric style.

All transforms are :class:`torch_geometric.transforms.BaseTransform` subclasses
acting on :class:`~torch_geometric.data.Data` with ``pos`` [N, 3] and, when a
sample has a mesh, ``mesh_pos`` [Nv, 3] / ``mesh_face`` [F, 3]. Random
transforms draw from the global torch RNG (so :func:`torch.manual_seed` and the
per-worker seeding of :class:`~torch.utils.data.DataLoader` control them), or
from an explicit :class:`torch.Generator` when one is given. They never modify
their input in place.

Normalisation used everywhere in the package (:func:`normalize_bbox`): centre
the axis-aligned bounding box at the origin (``(min + max) / 2``) and divide by
its *largest extent*, so that the cloud fits in the cube ``[-0.5, 0.5]^3`` with
its longest side exactly 1 (and therefore inside the sphere of radius
``sqrt(3) / 2``). The official PointCMT code's ``scale()`` (`Yan et al.,
NeurIPS 2022 <https://arxiv.org/abs/2210.04208>`_) divides by the same largest
extent but shifts each axis by ``(min - (size - extent)) / 2``, which centres
an axis only when its minimum is 0 (``x`` in ``[3, 4]`` comes out in ``[1, 2]``);
a mean-centring normalisation would move the centre towards dense regions.
``tests/test_transforms.py`` checks both against a hand-computed case.
"""
import math
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

__all__ = [
    "normalize_bbox",
    "sample_surface",
    "scan_points",
    "RandomScan",
    "NormalizeBoundingBox",
    "RandomScale",
    "RandomShift",
    "Jitter",
    "RandomRotateUp",
    "SamplePoints",
    "SampleSurface",
]

# Per-point attributes that SamplePoints subsamples together with ``pos``.
_POINT_KEYS = ("pos", "x", "normal", "mask", "point_mask")


def _check_pos(pos: Tensor, name: str = "pos") -> None:
    if not isinstance(pos, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(pos).__name__}")
    if pos.dim() < 2 or pos.size(-1) != 3:
        raise ValueError(f"{name} must have shape [..., N, 3], got {list(pos.shape)}")
    if not pos.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {pos.dtype}")
    if pos.size(-2) == 0:
        raise ValueError(f"{name} must hold at least one point, got shape {list(pos.shape)}")


def bbox_center_scale(pos: Tensor) -> Tuple[Tensor, Tensor]:
    r"""Centre ``(min + max) / 2`` [..., 1, 3] and largest extent [..., 1, 1] of
    :obj:`pos` [..., N, 3] (an extent of 0 is replaced by 1)."""
    _check_pos(pos)
    lo = pos.amin(dim=-2, keepdim=True)
    hi = pos.amax(dim=-2, keepdim=True)
    center = (lo + hi) / 2
    extent = (hi - lo).amax(dim=-1, keepdim=True)
    extent = torch.where(extent > 0, extent, torch.ones_like(extent))
    return center, extent


def normalize_bbox(pos: Tensor, return_params: bool = False
                   ) -> Union[Tensor, Tuple[Tensor, Tensor, Tensor]]:
    r"""Centres the bounding box of :obj:`pos` at the origin and scales its
    largest extent to 1 (result in ``[-0.5, 0.5]^3``).

    Args:
        pos: Points [N, 3] or batched [B, N, 3] (each cloud on its own).
        return_params: Also return ``center`` [..., 1, 3] and ``scale``
            [..., 1, 1] such that ``out = (pos - center) / scale``.

    A cloud of a single point (or all points equal) is only centred.
    """
    center, scale = bbox_center_scale(pos)
    out = (pos - center) / scale
    return (out, center, scale) if return_params else out


class NormalizeBoundingBox(BaseTransform):
    r"""Applies :func:`normalize_bbox` to ``data.pos`` and the *same* centre and
    scale to ``data.mesh_pos`` (if present), so mesh and points stay aligned.

    Args:
        reference: ``"pos"`` (default) computes the box from the points;
            ``"mesh"`` from the mesh vertices when the sample has a mesh (then
            both fit in ``[-0.5, 0.5]^3``; with ``"pos"`` the mesh may exceed it
            slightly where sampled points miss its extremes).
    """

    def __init__(self, reference: str = "pos") -> None:
        if reference not in ("pos", "mesh"):
            raise ValueError(f"reference must be 'pos' or 'mesh', got {reference!r}")
        self.reference = reference

    def forward(self, data: Data) -> Data:
        mesh_pos = getattr(data, "mesh_pos", None)
        ref = mesh_pos if (self.reference == "mesh" and mesh_pos is not None) else data.pos
        center, scale = bbox_center_scale(ref)
        data.pos = (data.pos - center) / scale
        if mesh_pos is not None:
            data.mesh_pos = (mesh_pos - center) / scale
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(reference={self.reference!r})"


def _uniform(shape: Sequence[int], lo: float, hi: float, generator: Optional[torch.Generator],
             like: Tensor) -> Tensor:
    r = torch.rand(*shape, generator=generator, dtype=torch.float64)
    return (lo + (hi - lo) * r).to(device=like.device, dtype=like.dtype)


def _check_generator(generator: Optional[torch.Generator]) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")


class RandomScale(BaseTransform):
    r"""Multiplies coordinates by a factor drawn uniformly from :obj:`scales`.

    Args:
        scales: ``(low, high)`` with ``0 < low <= high``; PointNet++/PointCMT use
            ``(2/3, 3/2)`` per axis.
        anisotropic: One factor per axis (default) or one for all axes.
        apply_to_mesh: Apply the same factors to ``mesh_pos``.
        generator: Optional RNG (default: the global torch RNG).
    """

    def __init__(self, scales: Tuple[float, float] = (2.0 / 3.0, 1.5), anisotropic: bool = True,
                 apply_to_mesh: bool = True, generator: Optional[torch.Generator] = None) -> None:
        if not (isinstance(scales, (tuple, list)) and len(scales) == 2):
            raise ValueError(f"scales must be a (low, high) pair, got {scales!r}")
        lo, hi = float(scales[0]), float(scales[1])
        if not (0 < lo <= hi) or not math.isfinite(hi):
            raise ValueError(f"scales must satisfy 0 < low <= high, got {scales!r}")
        _check_generator(generator)
        self.scales, self.anisotropic, self.apply_to_mesh, self.generator = (lo, hi), anisotropic, apply_to_mesh, generator

    def forward(self, data: Data) -> Data:
        _check_pos(data.pos)
        factor = _uniform((3 if self.anisotropic else 1,), *self.scales, self.generator, data.pos)
        data.pos = data.pos * factor
        if self.apply_to_mesh and getattr(data, "mesh_pos", None) is not None:
            data.mesh_pos = data.mesh_pos * factor.to(data.mesh_pos.dtype)
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(scales={self.scales}, anisotropic={self.anisotropic})"


class RandomShift(BaseTransform):
    r"""Translates the whole cloud by an offset drawn uniformly from
    ``[-shift, shift]`` per axis.

    Args:
        shift: Non-negative maximal offset (PointNet++/PointCMT: 0.2).
        apply_to_mesh: Apply the same offset to ``mesh_pos``.
        generator: Optional RNG (default: the global torch RNG).
    """

    def __init__(self, shift: float = 0.2, apply_to_mesh: bool = True,
                 generator: Optional[torch.Generator] = None) -> None:
        if not isinstance(shift, (int, float)) or not (0 <= shift < math.inf):
            raise ValueError(f"shift must be a finite number >= 0, got {shift!r}")
        _check_generator(generator)
        self.shift, self.apply_to_mesh, self.generator = float(shift), apply_to_mesh, generator

    def forward(self, data: Data) -> Data:
        _check_pos(data.pos)
        offset = _uniform((3,), -self.shift, self.shift, self.generator, data.pos)
        data.pos = data.pos + offset
        if self.apply_to_mesh and getattr(data, "mesh_pos", None) is not None:
            data.mesh_pos = data.mesh_pos + offset.to(data.mesh_pos.dtype)
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(shift={self.shift})"


class Jitter(BaseTransform):
    r"""Adds per-point Gaussian noise ``clip(sigma * N(0, 1), -clip, clip)`` to
    ``pos`` (the mesh is left untouched).

    Args:
        sigma: Non-negative standard deviation (PointNet: 0.01).
        clip: Positive bound of the noise (PointNet: 0.05); :obj:`None` for no clipping.
        generator: Optional RNG (default: the global torch RNG).
    """

    def __init__(self, sigma: float = 0.01, clip: Optional[float] = 0.05,
                 generator: Optional[torch.Generator] = None) -> None:
        if not isinstance(sigma, (int, float)) or not (0 <= sigma < math.inf):
            raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
        if clip is not None and (not isinstance(clip, (int, float)) or not clip > 0):
            raise ValueError(f"clip must be a number > 0 or None, got {clip!r}")
        _check_generator(generator)
        self.sigma, self.clip, self.generator = float(sigma), clip, generator

    def forward(self, data: Data) -> Data:
        _check_pos(data.pos)
        noise = torch.randn(data.pos.shape, generator=self.generator, dtype=torch.float64) * self.sigma
        if self.clip is not None:
            noise = noise.clamp(-self.clip, self.clip)
        data.pos = data.pos + noise.to(device=data.pos.device, dtype=data.pos.dtype)
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(sigma={self.sigma}, clip={self.clip})"


def rotation_about_axis(angle: float, axis: int, dtype=torch.float32) -> Tensor:
    r"""The 3x3 right-handed rotation by :obj:`angle` radians about coordinate
    :obj:`axis`, to be applied as ``pos @ R.T``."""
    c, s = math.cos(angle), math.sin(angle)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    rot = torch.eye(3, dtype=torch.float64)
    rot[i, i], rot[i, j], rot[j, i], rot[j, j] = c, -s, s, c
    return rot.to(dtype)


class RandomRotateUp(BaseTransform):
    r"""Rotates about the up axis by an angle drawn uniformly from
    ``[-degrees, degrees]``.

    Args:
        axis: Index of the up axis. ``2`` (z, default) for ModelNet ``.off``
            meshes, the ``.npy``/``.pcd`` copies in ``../shared/data`` and
            :class:`SyntheticShapes`; ``1`` (y) for ScanObjectNN and the
            ``modelnet40_normal_resampled`` text files.
        degrees: Maximal absolute angle in degrees (180: any rotation).
        apply_to_mesh: Apply the same rotation to ``mesh_pos``.
        generator: Optional RNG (default: the global torch RNG).
    """

    def __init__(self, axis: int = 2, degrees: float = 180.0, apply_to_mesh: bool = True,
                 generator: Optional[torch.Generator] = None) -> None:
        if axis not in (0, 1, 2) or isinstance(axis, bool):
            raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
        if not isinstance(degrees, (int, float)) or not (0 <= degrees < math.inf):
            raise ValueError(f"degrees must be a finite number >= 0, got {degrees!r}")
        _check_generator(generator)
        self.axis, self.degrees, self.apply_to_mesh, self.generator = axis, float(degrees), apply_to_mesh, generator

    def forward(self, data: Data) -> Data:
        _check_pos(data.pos)
        angle = math.radians(float(_uniform((1,), -self.degrees, self.degrees, self.generator,
                                            torch.empty(0, dtype=torch.float64))))
        rot = rotation_about_axis(angle, self.axis, data.pos.dtype).to(data.pos.device)
        data.pos = data.pos @ rot.T
        if self.apply_to_mesh and getattr(data, "mesh_pos", None) is not None:
            data.mesh_pos = data.mesh_pos @ rot.T.to(data.mesh_pos.dtype)
        normal = getattr(data, "normal", None)
        if isinstance(normal, Tensor) and normal.dim() == 2 and normal.size(-1) == 3:
            data.normal = normal @ rot.T.to(normal.dtype)
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(axis={self.axis}, degrees={self.degrees})"


class SamplePoints(BaseTransform):
    r"""Fixed-size subsampling of a point cloud to :obj:`num` points.

    Unlike :class:`torch_geometric.transforms.SamplePoints` (which samples the
    *faces* of a mesh, see :class:`SampleSurface`), this picks existing points:
    a random subset without replacement when the cloud has at least :obj:`num`
    points, else all points plus random repeats. Per-point attributes
    (``x``, ``normal``, ``mask``, ``point_mask``) follow ``pos``.

    Args:
        num: Positive number of points.
        mode: ``"random"`` (default) or ``"first"`` (the first :obj:`num`
            points, deterministic; repeats cycle when there are fewer).
        generator: Optional RNG (default: the global torch RNG).
    """

    def __init__(self, num: int, mode: str = "random", generator: Optional[torch.Generator] = None) -> None:
        if not isinstance(num, int) or isinstance(num, bool) or num <= 0:
            raise ValueError(f"num must be a positive int, got {num!r}")
        if mode not in ("random", "first"):
            raise ValueError(f"mode must be 'random' or 'first', got {mode!r}")
        _check_generator(generator)
        self.num, self.mode, self.generator = num, mode, generator

    def forward(self, data: Data) -> Data:
        _check_pos(data.pos)
        n = data.pos.size(0)
        if self.mode == "first":
            idx = torch.arange(self.num) % n
        elif n >= self.num:
            idx = torch.randperm(n, generator=self.generator)[: self.num]
        else:
            extra = torch.randint(n, (self.num - n,), generator=self.generator)
            idx = torch.cat([torch.randperm(n, generator=self.generator), extra])
        idx = idx.to(data.pos.device)
        for key in _POINT_KEYS:
            value = getattr(data, key, None)
            if isinstance(value, Tensor) and value.dim() >= 1 and value.size(0) == n:
                data[key] = value[idx]
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.num}, mode={self.mode!r})"


def sample_surface(mesh_pos: Tensor, mesh_face: Tensor, num: int,
                   generator: Optional[torch.Generator] = None) -> Tensor:
    r"""Samples :obj:`num` points uniformly on the surface of a triangle mesh
    (faces picked with probability proportional to their area, then uniform
    barycentric coordinates).

    Args:
        mesh_pos: Vertices [Nv, 3] float.
        mesh_face: Triangles [F, 3] long (indices into :obj:`mesh_pos`).
        num: Positive number of points.
        generator: Optional RNG (pass a seeded one for reproducible samples).

    Returns:
        Points [num, 3] with the dtype of :obj:`mesh_pos`.
    """
    _check_pos(mesh_pos, "mesh_pos")
    if not isinstance(mesh_face, Tensor) or mesh_face.dim() != 2 or mesh_face.size(1) != 3:
        shape = list(mesh_face.shape) if isinstance(mesh_face, Tensor) else type(mesh_face).__name__
        raise ValueError(f"mesh_face must be a [F, 3] tensor, got {shape}")
    if mesh_face.numel() == 0:
        raise ValueError("mesh_face must hold at least one triangle")
    if int(mesh_face.min()) < 0 or int(mesh_face.max()) >= mesh_pos.size(0):
        raise ValueError(f"mesh_face indices must lie in [0, {mesh_pos.size(0)}), got "
                         f"[{int(mesh_face.min())}, {int(mesh_face.max())}]")
    if not isinstance(num, int) or isinstance(num, bool) or num <= 0:
        raise ValueError(f"num must be a positive int, got {num!r}")
    # NumPy arithmetic (single-threaded, fast for one mesh); random numbers from torch.
    v = mesh_pos.detach().to("cpu", torch.float64).numpy()
    f = mesh_face.detach().cpu().long().numpy()
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    area = np.linalg.norm(np.cross(b - a, c - a), axis=1)
    if not np.isfinite(area).all():
        raise ValueError("mesh_pos holds non-finite coordinates")
    if area.sum() <= 0:
        # Degenerate mesh (all faces have zero area): fall back to uniform face choice.
        area = np.ones_like(area)
    cdf = np.cumsum(area)
    cdf /= cdf[-1]
    r = torch.rand(num, 3, generator=generator, dtype=torch.float64).numpy()
    face_idx = np.minimum(np.searchsorted(cdf, r[:, 0], side="right"), len(cdf) - 1)
    u, w = r[:, 1:2], r[:, 2:3]
    flip = (u + w) > 1
    u, w = np.where(flip, 1 - u, u), np.where(flip, 1 - w, w)
    a, b, c = a[face_idx], b[face_idx], c[face_idx]
    pts = a + u * (b - a) + w * (c - a)
    return torch.from_numpy(pts).to(device=mesh_pos.device, dtype=mesh_pos.dtype)


def scan_points(mesh_pos: torch.Tensor, mesh_face: torch.Tensor, num: int,
                generator: Optional[torch.Generator] = None, elevation: Tuple[float, float] = (10.0, 50.0)
                ) -> torch.Tensor:
    r"""A single-view scan of a mesh: :obj:`num` points where parallel rays
    from one random viewpoint first hit the surface (open3d ray casting), so
    only the side facing the sensor is sampled, with a density proportional
    to the surface's projected area, as a depth sensor sees it.

    The viewpoint has a uniform azimuth and an elevation drawn uniformly from
    :obj:`elevation` (degrees above the horizontal); the rays' origins are
    uniform over a square that covers the mesh's bounding sphere.

    Args:
        mesh_pos: Vertices ``[Nv, 3]``.
        mesh_face: Triangles ``[F, 3]``.
        num: Number of points.
        generator: Optional RNG for the viewpoint and the rays (default: the
            global torch RNG).
        elevation: Range of the viewpoint's elevation, degrees.

    Returns:
        Points ``[num, 3]`` float64.
    """
    import open3d as o3d
    _check_pos(mesh_pos, "mesh_pos")
    if not isinstance(num, int) or isinstance(num, bool) or num <= 0:
        raise ValueError(f"num must be a positive int, got {num!r}")
    v = mesh_pos.detach().cpu().double().numpy()
    f = mesh_face.detach().cpu().long().numpy()
    centre = (v.min(0) + v.max(0)) / 2
    radius = float(np.linalg.norm(v - centre, axis=1).max()) or 1.0
    u = torch.rand(2, generator=generator, dtype=torch.float64).numpy()
    az = 2 * np.pi * u[0]
    el = np.deg2rad(elevation[0] + (elevation[1] - elevation[0]) * u[1])
    d = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])  # towards the sensor
    right = np.cross([0.0, 0.0, 1.0], d)
    right /= np.linalg.norm(right)
    up = np.cross(d, right)
    scene = o3d.t.geometry.RaycastingScene(nthreads=1)
    scene.add_triangles(o3d.core.Tensor(v.astype(np.float32)), o3d.core.Tensor(f.astype(np.uint32)))
    hits: List[np.ndarray] = []
    count, tries = 0, 0
    while count < num:
        # A thin part seen edge-on takes more rounds of rays; a mesh that no ray hits is an error.
        if (tries >= 8 and count == 0) or tries == 256:
            raise ValueError(f"mesh_pos/mesh_face: {count} of {num} points hit after {tries * 4 * num} rays "
                             "(an empty or degenerate mesh)")
        tries += 1
        ab = (2 * torch.rand(4 * num, 2, generator=generator, dtype=torch.float64).numpy() - 1) * radius
        origin = centre + 2 * radius * d + ab[:, :1] * right + ab[:, 1:] * up
        rays = np.concatenate([origin, np.broadcast_to(-d, origin.shape)], 1).astype(np.float32)
        t_hit = scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy().astype(np.float64)
        ok = np.isfinite(t_hit)
        pts = origin[ok] - t_hit[ok, None] * d
        hits.append(pts)
        count += len(pts)
    return torch.from_numpy(np.concatenate(hits)[:num])


class SampleSurface(BaseTransform):
    r"""Replaces ``data.pos`` by :obj:`num` points sampled on the mesh
    (``mesh_pos``, ``mesh_face``) with :func:`sample_surface`; the mesh is kept.

    Args:
        num: Positive number of points.
        generator: Optional RNG (default: the global torch RNG).
    """

    def __init__(self, num: int, generator: Optional[torch.Generator] = None) -> None:
        if not isinstance(num, int) or isinstance(num, bool) or num <= 0:
            raise ValueError(f"num must be a positive int, got {num!r}")
        _check_generator(generator)
        self.num, self.generator = num, generator

    def forward(self, data: Data) -> Data:
        if getattr(data, "mesh_pos", None) is None or getattr(data, "mesh_face", None) is None:
            raise ValueError(f"SampleSurface needs data.mesh_pos and data.mesh_face "
                             f"(sample {getattr(data, 'sample_id', '?')!r} has no mesh)")
        data.pos = sample_surface(data.mesh_pos, data.mesh_face, self.num, self.generator).float()
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.num})"


class RandomScan(BaseTransform):
    r"""Replaces ``data.pos`` by a new single-view scan of the mesh
    (:func:`scan_points` from a random viewpoint, same number of points, plus
    Gaussian :obj:`noise`): every access sees the shape from another side, as
    a sensor circling it would. The mesh and ``complete_pos`` are kept.

    Args:
        noise: Standard deviation of the noise added to the points.
        generator: Optional RNG (default: the global torch RNG).
    """

    def __init__(self, noise: float = 0.005, generator: Optional[torch.Generator] = None) -> None:
        if not isinstance(noise, (int, float)) or isinstance(noise, bool) or not (0 <= noise < math.inf):
            raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
        _check_generator(generator)
        self.noise, self.generator = float(noise), generator

    def forward(self, data: Data) -> Data:
        if getattr(data, "mesh_pos", None) is None or getattr(data, "mesh_face", None) is None:
            raise ValueError(f"RandomScan needs data.mesh_pos and data.mesh_face "
                             f"(sample {getattr(data, 'sample_id', '?')!r} has no mesh)")
        pts = scan_points(data.mesh_pos, data.mesh_face, data.pos.size(0), self.generator)
        if self.noise > 0:
            pts = pts + self.noise * torch.randn(pts.shape, generator=self.generator, dtype=pts.dtype)
        data.pos = pts.to(data.pos.dtype)
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(noise={self.noise})"
