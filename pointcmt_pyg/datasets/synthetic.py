r"""Procedural 3D shapes: the embedded default dataset (no download needed).

Each class is a composition of primitives (box, cylinder, cone, ellipsoid,
torus) with random proportions, placement and part counts, then deformed
(taper, twist, bend, anisotropic scale), rotated about the up axis (z) and
normalised to the box ``[-0.5, 0.5]^3`` (:func:`~pointcmt_pyg.datasets.transforms.normalize_bbox`,
mesh and points together). Points are sampled area-weighted on the mesh with
Gaussian noise added; the mesh is kept as ``mesh_pos`` / ``mesh_face`` so that
both mesh ray-casting and point projection can render views for the PointCMT
teacher (`Yan et al., NeurIPS 2022 <https://arxiv.org/abs/2210.04208>`_).

Several classes share primitives and differ only by proportions or
composition (table / stool / bench / chair, bottle / rocket / lamp, snowman /
dumbbell, ...), so a point model does not separate them after one epoch.

Everything is deterministic given ``seed``: sample ``i`` of class ``c`` in
split ``s`` is drawn from its own RNG seeded by ``(seed, s, c, i)``, so the
samples do not depend on the number of classes or samples requested.
"""
import math
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch_geometric.data import Data

from .base import PointCloudDataset, make_data, shallow, stable_seed
from .transforms import sample_surface

__all__ = ["SyntheticShapes", "SYNTHETIC_CLASSES", "make_shape"]

Mesh = Tuple[np.ndarray, np.ndarray]  # vertices [V, 3] float64, faces [F, 3] int64

_SEG = 16  # angular resolution of round primitives


# --------------------------------------------------------------------------- primitives
def _grid(points: np.ndarray, wrap_u: bool = False) -> np.ndarray:
    r"""Faces of a (nu, nv) grid of vertices laid out row-major; wrap_u closes the u direction."""
    nu, nv = points.shape[:2]
    idx = np.arange(nu * nv).reshape(nu, nv)
    if wrap_u:
        idx = np.concatenate([idx, idx[:1]], axis=0)
    a, b, c, d = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
    return np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])


def _merge(*meshes: Mesh) -> Mesh:
    verts, faces, off = [], [], 0
    for v, f in meshes:
        verts.append(v)
        faces.append(f + off)
        off += len(v)
    return np.concatenate(verts), np.concatenate(faces)


def box(size, center=(0.0, 0.0, 0.0), res: int = 3) -> Mesh:
    r"""Axis-aligned box with each face subdivided res x res (so deformations bend it)."""
    size, center = np.asarray(size, float), np.asarray(center, float)
    t = np.linspace(-0.5, 0.5, res + 1)
    u, v = np.meshgrid(t, t, indexing="ij")
    parts = []
    for axis in range(3):
        for sign in (-0.5, 0.5):
            p = np.zeros(u.shape + (3,))
            o = [a for a in range(3) if a != axis]
            p[..., axis], p[..., o[0]], p[..., o[1]] = sign, u, v
            parts.append((p.reshape(-1, 3), _grid(p)))
    verts, faces = _merge(*parts)
    return verts * size + center, faces


def _revolve(profile_r: np.ndarray, profile_z: np.ndarray, center, seg: int = _SEG, cap_bottom=True, cap_top=True) -> Mesh:
    r"""Surface of revolution about z of a (r, z) profile, optionally capped."""
    theta = np.linspace(0, 2 * np.pi, seg, endpoint=False)
    r, z = profile_r[None, :], profile_z[None, :]
    p = np.stack([np.cos(theta)[:, None] * r, np.sin(theta)[:, None] * r, np.broadcast_to(z, (seg, z.shape[1]))], -1)
    verts, faces = p.reshape(-1, 3), _grid(p, wrap_u=True)
    n = len(profile_r)
    extra_v, extra_f = [], []
    for cap, j in ((cap_bottom, 0), (cap_top, n - 1)):
        if cap and profile_r[j] > 0:
            ring = np.arange(seg) * n + j  # vertices of profile point j around the axis
            centre = len(verts) + len(extra_v)
            extra_v.append([0.0, 0.0, profile_z[j]])
            extra_f.append(np.stack([np.full(seg, centre), ring, np.roll(ring, -1)], 1))
    if extra_v:
        verts = np.concatenate([verts, np.asarray(extra_v)])
        faces = np.concatenate([faces, *extra_f])
    return verts + np.asarray(center, float), faces


def cylinder(radius: float, height: float, center=(0.0, 0.0, 0.0), seg: int = _SEG) -> Mesh:
    r"""Closed z-aligned cylinder centred at :obj:`center`."""
    z = np.linspace(-height / 2, height / 2, 4)
    return _revolve(np.full(4, radius), z, center, seg)


def frustum(r_bottom: float, r_top: float, height: float, center=(0.0, 0.0, 0.0), seg: int = _SEG) -> Mesh:
    r"""Closed z-aligned truncated cone (a cone when :obj:`r_top` is 0)."""
    z = np.linspace(-height / 2, height / 2, 4)
    return _revolve(np.linspace(r_bottom, r_top, 4), z, center, seg)


def ellipsoid(radii, center=(0.0, 0.0, 0.0), seg: int = _SEG) -> Mesh:
    r"""Ellipsoid with semi-axes :obj:`radii`."""
    phi = np.linspace(0, np.pi, seg // 2 + 1)[1:-1]
    r, z = np.sin(phi), -np.cos(phi)
    v, f = _revolve(r, z, (0, 0, 0), seg, cap_bottom=False, cap_top=False)
    # poles
    n, ring = len(phi), np.arange(seg) * len(phi)
    south, north = len(v), len(v) + 1
    v = np.concatenate([v, [[0, 0, -1.0], [0, 0, 1.0]]])
    f = np.concatenate([f, np.stack([np.full(seg, south), np.roll(ring, -1), ring], 1),
                        np.stack([np.full(seg, north), ring + n - 1, np.roll(ring, -1) + n - 1], 1)])
    return v * np.asarray(radii, float) + np.asarray(center, float), f


def torus(major: float, minor: float, center=(0.0, 0.0, 0.0), seg: int = _SEG, arc: float = 2 * np.pi) -> Mesh:
    r"""Torus about z (or an open arc of one when :obj:`arc` < 2 pi)."""
    full = arc >= 2 * np.pi - 1e-9
    theta = np.linspace(0, arc, seg, endpoint=not full)
    phi = np.linspace(0, 2 * np.pi, seg // 2 + 2, endpoint=False)
    ct, st, cp, sp = np.cos(theta)[:, None], np.sin(theta)[:, None], np.cos(phi)[None], np.sin(phi)[None]
    p = np.stack([(major + minor * cp) * ct, (major + minor * cp) * st, np.broadcast_to(minor * sp, ct.shape[:1] + sp.shape[1:])], -1)
    # Close the tube (phi) direction by wrapping: transpose so phi is the wrapped u axis.
    q = np.ascontiguousarray(p.transpose(1, 0, 2))
    faces = _grid(q, wrap_u=True)
    verts = q.reshape(-1, 3)
    if full:  # also wrap theta: connect last column to first
        nu, nv = q.shape[:2]
        idx = np.arange(nu * nv).reshape(nu, nv)
        a, b = idx[:, -1], idx[:, 0]
        a2, b2 = np.roll(a, -1), np.roll(b, -1)
        faces = np.concatenate([faces, np.stack([a, a2, b2], 1), np.stack([a, b2, b], 1)])
    return verts + np.asarray(center, float), faces


def _rotate_x(mesh: Mesh, angle: float) -> Mesh:
    c, s = math.cos(angle), math.sin(angle)
    v = mesh[0] @ np.array([[1, 0, 0], [0, c, -s], [0, s, c]]).T
    return v, mesh[1]


def _rotate_y(mesh: Mesh, angle: float) -> Mesh:
    c, s = math.cos(angle), math.sin(angle)
    v = mesh[0] @ np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]).T
    return v, mesh[1]


def _rotate_z(mesh: Mesh, angle: float) -> Mesh:
    c, s = math.cos(angle), math.sin(angle)
    v = mesh[0] @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]).T
    return v, mesh[1]


def _shift(mesh: Mesh, offset) -> Mesh:
    return mesh[0] + np.asarray(offset, float), mesh[1]


# --------------------------------------------------------------------------- classes
def _legs(rng, n: int, half_x: float, half_y: float, height: float, thick: float, round_legs: bool,
          inset: float = 0.9, splay: float = 0.0) -> List[Mesh]:
    if n == 4:
        corners = [(sx * half_x * inset, sy * half_y * inset) for sx in (-1, 1) for sy in (-1, 1)]
    else:
        corners = [(half_x * inset * math.cos(a), half_y * inset * math.sin(a))
                   for a in np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, np.pi)]
    legs = []
    for x, y in corners:
        leg = cylinder(thick / 2, height, seg=8) if round_legs else box((thick, thick, height))
        if splay:
            ang = math.atan2(y, x)
            leg = _rotate_z(_rotate_y(_rotate_z(leg, -ang), splay), ang)
        legs.append(_shift(leg, (x, y, height / 2)))
    return legs


def _table(rng) -> Mesh:
    w, d = rng.uniform(0.8, 1.4), rng.uniform(0.6, 1.0)
    h, t = rng.uniform(0.5, 0.9), rng.uniform(0.04, 0.1)
    legs = _legs(rng, 4, w / 2, d / 2, h, rng.uniform(0.04, 0.1), rng.random() < 0.4)
    return _merge(box((w, d, t), (0, 0, h + t / 2)), *legs)


def _stool(rng) -> Mesh:
    r, h, t = rng.uniform(0.25, 0.45), rng.uniform(0.5, 0.9), rng.uniform(0.04, 0.1)
    n = int(rng.choice([3, 4]))
    legs = _legs(rng, n, r, r, h, rng.uniform(0.04, 0.08), True, inset=0.8, splay=rng.uniform(0.0, 0.2))
    return _merge(cylinder(r, t, (0, 0, h + t / 2)), *legs)


def _chair(rng) -> Mesh:
    w, d = rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6)
    h, t = rng.uniform(0.35, 0.5), rng.uniform(0.04, 0.08)
    back_h = rng.uniform(0.25, 0.7)
    legs = _legs(rng, 4, w / 2, d / 2, h, rng.uniform(0.03, 0.06), rng.random() < 0.5)
    back = box((w, t, back_h), (0, -d / 2 + t / 2, h + t + back_h / 2))
    return _merge(box((w, d, t), (0, 0, h + t / 2)), back, *legs)


def _bench(rng) -> Mesh:
    w, d = rng.uniform(1.2, 2.0), rng.uniform(0.3, 0.5)
    h, t = rng.uniform(0.35, 0.55), rng.uniform(0.04, 0.1)
    if rng.random() < 0.5:
        legs = _legs(rng, 4, w / 2, d / 2, h, rng.uniform(0.04, 0.08), rng.random() < 0.5)
    else:  # two slab legs
        legs = [box((t, d * 0.9, h), (sx * w * 0.4, 0, h / 2)) for sx in (-1, 1)]
    return _merge(box((w, d, t), (0, 0, h + t / 2)), *legs)


def _bed(rng) -> Mesh:
    w, d, h = rng.uniform(1.6, 2.2), rng.uniform(0.9, 1.6), rng.uniform(0.25, 0.45)
    head_h = rng.uniform(0.3, 0.7)
    parts = [box((w, d, h), (0, 0, h / 2)), box((0.06, d, h + head_h), (-w / 2, 0, (h + head_h) / 2))]
    if rng.random() < 0.5:
        parts.append(box((0.06, d, h + head_h * 0.4), (w / 2, 0, (h + head_h * 0.4) / 2)))
    if rng.random() < 0.6:
        parts.append(box((0.25, d * 0.7, 0.12), (-w / 2 + 0.2, 0, h + 0.06)))  # pillow
    return _merge(*parts)


def _sofa(rng) -> Mesh:
    w, d, h = rng.uniform(1.4, 2.2), rng.uniform(0.7, 1.0), rng.uniform(0.3, 0.45)
    back_h, arm_w, arm_h = rng.uniform(0.3, 0.6), rng.uniform(0.1, 0.25), rng.uniform(0.1, 0.3)
    parts = [box((w, d, h), (0, 0, h / 2)), box((w, 0.2, h + back_h), (0, -d / 2 + 0.1, (h + back_h) / 2))]
    for sx in (-1, 1):
        parts.append(box((arm_w, d, h + arm_h), (sx * (w / 2 + arm_w / 2), 0, (h + arm_h) / 2)))
    return _merge(*parts)


def _shelf(rng) -> Mesh:
    w, d, h = rng.uniform(0.6, 1.2), rng.uniform(0.25, 0.45), rng.uniform(1.0, 2.0)
    t, n = rng.uniform(0.03, 0.06), int(rng.integers(3, 7))
    parts = [box((t, d, h), (sx * (w / 2 - t / 2), 0, h / 2)) for sx in (-1, 1)]
    parts += [box((w, d, t), (0, 0, z)) for z in np.linspace(t / 2, h - t / 2, n)]
    if rng.random() < 0.5:
        parts.append(box((w, t, h), (0, -d / 2 + t / 2, h / 2)))  # back panel
    return _merge(*parts)


def _lamp(rng) -> Mesh:
    base_r, pole_h = rng.uniform(0.12, 0.25), rng.uniform(0.6, 1.2)
    shade_h, shade_b, shade_t = rng.uniform(0.2, 0.4), rng.uniform(0.2, 0.35), rng.uniform(0.05, 0.2)
    return _merge(cylinder(base_r, 0.04, (0, 0, 0.02)), cylinder(0.02, pole_h, (0, 0, pole_h / 2)),
                  frustum(shade_b, shade_t, shade_h, (0, 0, pole_h + shade_h / 2 - 0.05)))


def _bottle(rng) -> Mesh:
    r, body_h = rng.uniform(0.12, 0.25), rng.uniform(0.4, 0.8)
    shoulder_h, neck_r, neck_h = rng.uniform(0.05, 0.2), rng.uniform(0.04, 0.08), rng.uniform(0.1, 0.3)
    return _merge(cylinder(r, body_h, (0, 0, body_h / 2)),
                  frustum(r, neck_r, shoulder_h, (0, 0, body_h + shoulder_h / 2)),
                  cylinder(neck_r, neck_h, (0, 0, body_h + shoulder_h + neck_h / 2)))


def _mug(rng) -> Mesh:
    r, h = rng.uniform(0.2, 0.35), rng.uniform(0.3, 0.6)
    handle_r, handle_t = rng.uniform(0.08, 0.16), rng.uniform(0.02, 0.04)
    # Half ring bulging towards +x in the xz plane.
    handle = _rotate_x(_rotate_z(torus(handle_r, handle_t, arc=np.pi, seg=12), -np.pi / 2), np.pi / 2)
    return _merge(frustum(r * rng.uniform(0.8, 1.0), r, h, (0, 0, h / 2)), _shift(handle, (r, 0, h / 2)))


def _rocket(rng) -> Mesh:
    r, body_h, nose_h = rng.uniform(0.08, 0.18), rng.uniform(0.6, 1.2), rng.uniform(0.15, 0.4)
    n_fins, fin = int(rng.integers(3, 5)), rng.uniform(0.1, 0.25)
    parts = [cylinder(r, body_h, (0, 0, body_h / 2)), frustum(r, 0.0, nose_h, (0, 0, body_h + nose_h / 2))]
    for a in np.linspace(0, 2 * np.pi, n_fins, endpoint=False):
        parts.append(_rotate_z(box((fin, 0.02, fin * 1.5), (r + fin / 2, 0, fin * 0.75)), a))
    return _merge(*parts)


def _dumbbell(rng) -> Mesh:
    bar_l, bar_r = rng.uniform(0.6, 1.2), rng.uniform(0.03, 0.07)
    end_r = rng.uniform(0.12, 0.3)
    if rng.random() < 0.5:
        ends = [ellipsoid((end_r, end_r, end_r), (0, 0, sz * bar_l / 2)) for sz in (-1, 1)]
    else:
        ends = [cylinder(end_r, end_r * 0.8, (0, 0, sz * bar_l / 2)) for sz in (-1, 1)]
    mesh = _merge(cylinder(bar_r, bar_l, (0, 0, 0)), *ends)
    return _rotate_y(mesh, np.pi / 2)  # lying


def _snowman(rng) -> Mesh:
    n = int(rng.choice([2, 3]))
    radii = np.sort(rng.uniform(0.12, 0.35, n))[::-1]
    parts, z = [], 0.0
    for r in radii:
        z += r
        parts.append(ellipsoid((r, r, r * rng.uniform(0.85, 1.1)), (0, 0, z)))
        z += r * 0.75
    return _merge(*parts)


def _ring(rng) -> Mesh:
    major, minor = rng.uniform(0.3, 0.5), rng.uniform(0.05, 0.18)
    mesh = torus(major, minor, seg=20)
    return _rotate_x(mesh, rng.uniform(0, np.pi / 2))


def _house(rng) -> Mesh:
    w, d, h = rng.uniform(0.6, 1.2), rng.uniform(0.6, 1.2), rng.uniform(0.4, 0.9)
    roof_h = rng.uniform(0.2, 0.6)
    roof = frustum(1.0, 0.0, roof_h, (0, 0, 0), seg=4)
    roof = _rotate_z(roof, np.pi / 4)
    roof = (roof[0] * np.array([w / math.sqrt(2) * 1.1, d / math.sqrt(2) * 1.1, 1]) + np.array([0, 0, h + roof_h / 2]), roof[1])
    parts = [box((w, d, h), (0, 0, h / 2)), roof]
    if rng.random() < 0.5:
        parts.append(box((0.1, 0.1, roof_h), (w / 4, 0, h + roof_h * 0.7)))  # chimney
    return _merge(*parts)


def _monitor(rng) -> Mesh:
    w, h, t = rng.uniform(0.6, 1.2), rng.uniform(0.4, 0.8), rng.uniform(0.03, 0.08)
    pole_h = rng.uniform(0.1, 0.3)
    base = box((w * 0.4, 0.25, 0.03), (0, 0, 0.015)) if rng.random() < 0.5 else cylinder(0.15, 0.03, (0, 0, 0.015))
    return _merge(base, box((0.05, 0.05, pole_h), (0, 0, pole_h / 2)), box((w, t, h), (0, 0, pole_h + h / 2)))


#: Class names and their generators, in label order.
SYNTHETIC_CLASSES: Dict[str, Callable[[np.random.Generator], Mesh]] = {
    "table": _table, "stool": _stool, "chair": _chair, "bench": _bench, "bed": _bed, "sofa": _sofa,
    "shelf": _shelf, "lamp": _lamp, "bottle": _bottle, "mug": _mug, "rocket": _rocket, "dumbbell": _dumbbell,
    "snowman": _snowman, "ring": _ring, "house": _house, "monitor": _monitor,
}
_NAMES = list(SYNTHETIC_CLASSES)


def _deform(v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    r"""Random taper, twist, bend and anisotropic scale about the shape's own box."""
    v = v - (v.min(0) + v.max(0)) / 2
    ext = np.maximum(v.max(0) - v.min(0), 1e-9)
    zn = v[:, 2] / ext[2]  # in [-0.5, 0.5]
    taper = 1.0 + rng.uniform(-0.25, 0.25) * zn
    twist = rng.uniform(-0.35, 0.35) * zn
    c, s = np.cos(twist), np.sin(twist)
    x, y = v[:, 0] * taper, v[:, 1] * taper
    x, y = c * x - s * y, s * x + c * y
    bend = rng.uniform(-0.15, 0.15) * ext[2]
    x = x + bend * (zn ** 2)
    out = np.stack([x, y, v[:, 2]], 1)
    return out * rng.uniform(0.8, 1.25, size=3)


def make_shape(label: int, rng: np.random.Generator) -> Mesh:
    r"""One random mesh of class :obj:`label`: composed, deformed, with a
    random rotation about z, not yet normalised."""
    v, f = SYNTHETIC_CLASSES[_NAMES[label]](rng)
    v = _deform(v, rng)
    v, f = _rotate_z((v, f), rng.uniform(0, 2 * np.pi))
    return v, f


_CACHE: Dict[tuple, List[Data]] = {}


class SyntheticShapes(PointCloudDataset):
    r"""Procedural shape classification dataset (meshes and points).

    Args:
        split: Any name; ``"train"``, ``"val"`` and ``"test"`` give disjoint
            random draws (the split name is part of every sample's seed).
        num_classes: Number of classes, 2 to 16 (the first :obj:`num_classes`
            of :data:`SYNTHETIC_CLASSES`).
        samples_per_class: Shapes per class.
        num_points: Points sampled on each mesh.
        seed: Base seed; same arguments give identical samples.
        noise: Standard deviation of the Gaussian noise added to the points
            (in units of the normalised box, whose longest side is 1).
        transform: PyG transform applied on every access.
        pre_transform: Transform applied once per access before :obj:`transform`.

    Samples are generated at construction (a few ms each) and kept in a
    process-wide cache, so constructing the same dataset again is free.
    ``sample_id`` is ``"<class>/<split>/s<seed>_<index>"``.
    """

    def __init__(self, split: str = "train", num_classes: int = 10, samples_per_class: int = 40,
                 num_points: int = 1024, seed: int = 0, noise: float = 0.005,
                 transform: Optional[Callable] = None, pre_transform: Optional[Callable] = None) -> None:
        if not isinstance(split, str) or not split or "/" in split:
            raise ValueError(f"split must be a non-empty name without '/', got {split!r}")
        for name, value, lo in (("num_classes", num_classes, 2), ("samples_per_class", samples_per_class, 1),
                                ("num_points", num_points, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise ValueError(f"{name} must be an int >= {lo}, got {value!r}")
        if num_classes > len(_NAMES):
            raise ValueError(f"num_classes must be at most {len(_NAMES)}, got {num_classes}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        if not isinstance(noise, (int, float)) or not (0 <= noise < math.inf):
            raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
        super().__init__(None, transform=transform, pre_transform=pre_transform)
        self.split, self.samples_per_class, self.num_points, self.seed, self.noise = (
            split, samples_per_class, num_points, seed, float(noise))
        self._classes = _NAMES[:num_classes]
        self._labels = torch.arange(num_classes).repeat_interleave(samples_per_class)
        self._sample_ids = [f"{self._classes[c]}/{split}/s{seed}_{i:04d}"
                            for c in range(num_classes) for i in range(samples_per_class)]
        key = (split, num_classes, samples_per_class, num_points, seed, self.noise)
        if key not in _CACHE:
            _CACHE[key] = [self._generate(c, i) for c in range(num_classes) for i in range(samples_per_class)]
        self._samples = _CACHE[key]

    def _generate(self, label: int, index: int) -> Data:
        name = self._classes[label]
        sid = f"{name}/{self.split}/s{self.seed}_{index:04d}"
        shape_seed = stable_seed("synthetic", self.seed, self.split, name, index)
        v, f = make_shape(label, np.random.default_rng(shape_seed))
        lo, hi = v.min(0), v.max(0)
        v = (v - (lo + hi) / 2) / max(float((hi - lo).max()), 1e-9)
        mesh_pos, mesh_face = torch.from_numpy(v), torch.from_numpy(f.astype(np.int64))
        gen = torch.Generator().manual_seed(shape_seed)
        pos = sample_surface(mesh_pos, mesh_face, self.num_points, generator=gen)
        if self.noise > 0:
            pos = pos + self.noise * torch.randn(pos.shape, generator=gen, dtype=pos.dtype)
        return make_data(pos, label, sid, mesh_pos, mesh_face)

    def get(self, idx: int) -> Data:
        data = shallow(self._samples[idx])
        if self.pre_transform is not None:
            data = self.pre_transform(data)
        return data

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({len(self)}, split={self.split!r}, num_classes={self.num_classes}, "
                f"seed={self.seed})")
