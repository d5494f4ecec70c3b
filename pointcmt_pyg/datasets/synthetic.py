r"""Procedural 3D shapes: the embedded default dataset (no download needed).

Each class is a composition of primitives (box, cylinder, cone, ellipsoid,
torus, stepped prisms and surfaces of revolution) with random proportions,
placement and part counts, then deformed (taper, twist, bend, anisotropic
scale), rotated about the up axis (z) and normalised to the box
``[-0.5, 0.5]^3`` (:func:`~pointcmt_pyg.datasets.transforms.normalize_bbox`,
mesh and points together). Points are sampled area-weighted on the mesh with
Gaussian noise added; the mesh is kept as ``mesh_pos`` / ``mesh_face`` so that
both mesh ray-casting and point projection can render views for the PointCMT
teacher (`Yan et al., NeurIPS 2022 <https://arxiv.org/abs/2210.04208>`_).

The first ten classes (the demo's default) are five *fine-detail twins*,
the premise of PointCMT that rendered images show what sparse point clouds
miss: both classes of a pair draw their coarse shape from the same
distribution, and the second adds a detail about 6 % of the shape's longest
side (about four pixels of a 64 px view): crate / slatted_crate (horizontal
grooves around the sides), column / ribbed_column (thin protruding rings),
panel / grille (a grid of small through-holes), cup / mug (a thin wire
handle) and brick / studded_brick (two rows of small studs on top). The mesh
views show the detail clearly as notches in the silhouette, holes or a thin
loop, while in 512 noisy sampled points it is a sparse, irregular shift of a
minority of the points (the detail holds up to about a third of the surface)
that a point model learns slowly from 27 examples per class. The remaining six classes (table, chair,
shelf, lamp, bottle, rocket) are coarse compositions.

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
from .transforms import RandomScan, sample_surface

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


def _chair(rng) -> Mesh:
    w, d = rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6)
    h, t = rng.uniform(0.35, 0.5), rng.uniform(0.04, 0.08)
    back_h = rng.uniform(0.25, 0.7)
    legs = _legs(rng, 4, w / 2, d / 2, h, rng.uniform(0.03, 0.06), rng.random() < 0.5)
    back = box((w, t, back_h), (0, -d / 2 + t / 2, h + t + back_h / 2))
    return _merge(box((w, d, t), (0, 0, h + t / 2)), back, *legs)


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


def _rocket(rng) -> Mesh:
    r, body_h, nose_h = rng.uniform(0.08, 0.18), rng.uniform(0.6, 1.2), rng.uniform(0.15, 0.4)
    n_fins, fin = int(rng.integers(3, 5)), rng.uniform(0.1, 0.25)
    parts = [cylinder(r, body_h, (0, 0, body_h / 2)), frustum(r, 0.0, nose_h, (0, 0, body_h + nose_h / 2))]
    for a in np.linspace(0, 2 * np.pi, n_fins, endpoint=False):
        parts.append(_rotate_z(box((fin, 0.02, fin * 1.5), (r + fin / 2, 0, fin * 0.75)), a))
    return _merge(*parts)


# --------------------------------------------------------------------------- fine-detail twins
# Each pair below draws its coarse shape from the same distribution; the
# second class adds a detail a few render pixels wide (a 64 px axis view of
# the unit box has pixels of about 0.016), which only a minority of 512 noisy
# sampled points falls on.
_DETAIL = 0.06  # typical size of a fine detail, in units of the shape's longest side


def _rect_outline(half_x: float, half_y: float, res: int = 3) -> np.ndarray:
    r"""Closed outline ``[4 * res, 2]`` of an axis-aligned rectangle, counter-clockwise."""
    t = np.arange(res) / res
    corners = np.array([[half_x, -half_y], [half_x, half_y], [-half_x, half_y], [-half_x, -half_y]])
    return np.concatenate([corners[k] + t[:, None] * (corners[(k + 1) % 4] - corners[k]) for k in range(4)])


def _profile_prism(half_x: float, half_y: float, insets: np.ndarray, zs: np.ndarray, res: int = 3) -> Mesh:
    r"""Closed vertical prism of a rectangle whose sides are pushed in by
    ``insets[k]`` at height ``zs[k]`` (a step profile cuts grooves), capped."""
    rings = [np.concatenate([_rect_outline(half_x - e, half_y - e, res), np.full((4 * res, 1), z)], 1)
             for e, z in zip(insets, zs)]
    p = np.ascontiguousarray(np.stack(rings, 1))  # [K, L, 3]: u = around the outline (wrapped), v = up
    verts, faces = p.reshape(-1, 3), _grid(p, wrap_u=True)
    k, n = p.shape[:2]
    ring_first, ring_last = np.arange(k) * n, np.arange(k) * n + n - 1
    c0, c1 = len(verts), len(verts) + 1
    verts = np.concatenate([verts, [[0.0, 0.0, zs[0]], [0.0, 0.0, zs[-1]]]])
    faces = np.concatenate([faces, np.stack([np.full(k, c0), np.roll(ring_first, -1), ring_first], 1),
                            np.stack([np.full(k, c1), ring_last, np.roll(ring_last, -1)], 1)])
    return verts, faces


def _step_profile(base: float, height: float, centres: np.ndarray, width: float, step: float):
    r"""A (value, z) profile from 0 to ``height`` equal to ``base`` except
    ``base + step`` on bands of ``width`` around ``centres`` (vertical walls)."""
    vals, zs = [base], [0.0]
    for c in np.sort(centres):
        lo, hi = c - width / 2, c + width / 2
        vals += [base, base + step, base + step, base]
        zs += [lo, lo, hi, hi]
    vals.append(base)
    zs.append(height)
    return np.asarray(vals), np.asarray(zs)


def _band_centres(rng, height: float, width: float) -> np.ndarray:
    r"""3 to 5 evenly spaced band centres, clear of the ends and at least two
    band widths apart."""
    margin = max(2 * width, height * 0.1)
    fit = int((height - 2 * margin) // (2 * width)) + 1
    n = max(2, min(int(rng.integers(3, 6)), fit))
    return np.linspace(margin, height - margin, n)


def _crate_mesh(rng, slatted: bool) -> Mesh:
    w, d, h = rng.uniform(0.55, 1.0, size=3)
    s = max(w, d, h)
    width, depth = _DETAIL * s * rng.uniform(1.0, 1.3), _DETAIL * s * rng.uniform(0.8, 1.1)
    centres = _band_centres(rng, h, width) if slatted else np.zeros(0)
    insets, zs = _step_profile(0.0, h, centres, width, depth)
    return _profile_prism(w / 2, d / 2, insets, zs)


def _crate(rng) -> Mesh:
    return _crate_mesh(rng, False)


def _slatted_crate(rng) -> Mesh:
    r"""A crate whose four sides carry horizontal grooves (the plain crate's twin)."""
    return _crate_mesh(rng, True)


def _column_mesh(rng, ribbed: bool) -> Mesh:
    r, h = rng.uniform(0.12, 0.22), rng.uniform(0.7, 1.0)
    width, height = _DETAIL * h * rng.uniform(1.0, 1.3), _DETAIL * h * rng.uniform(0.8, 1.1)
    centres = _band_centres(rng, h, width) if ribbed else np.zeros(0)
    radii, zs = _step_profile(r, h, centres, width, height)
    return _revolve(radii, zs, (0, 0, 0), seg=20)


def _column(rng) -> Mesh:
    return _column_mesh(rng, False)


def _ribbed_column(rng) -> Mesh:
    r"""A column girdled by thin protruding rings (the plain column's twin)."""
    return _column_mesh(rng, True)


def _panel_mesh(rng, perforated: bool) -> Mesh:
    r"""An upright plate (x wide, z high, y thin) on two feet; perforated:
    a grid of square through-holes one detail wide, one detail apart."""
    w, h, t = rng.uniform(0.6, 1.0), rng.uniform(0.5, 0.9), rng.uniform(0.02, 0.03)
    foot_h = rng.uniform(0.05, 0.12)
    feet = [box((0.12, 0.3, foot_h), (sx * w * 0.3, 0, foot_h / 2)) for sx in (-1, 1)]
    cell = _DETAIL * max(w, h + foot_h) * rng.uniform(1.0, 1.3)
    nx, nz = max(3, int(round(w / cell))) | 1, max(3, int(round(h / cell))) | 1  # odd: solid rim
    xs, zs = np.linspace(-w / 2, w / 2, nx + 1), np.linspace(0, h, nz + 1)
    hole = np.zeros((nx, nz), bool)
    if perforated:
        hole[1:-1:2, 1:-1:2] = True
    def walls(x0, z0, x1, z1):
        r"""The four y-spanning walls around the rectangle [x0, x1] x [z0, z1]."""
        return [[(xa, -t / 2, za), (xb, -t / 2, zb), (xb, t / 2, zb), (xa, t / 2, za)]
                for (xa, za), (xb, zb) in (((x0, z0), (x1, z0)), ((x1, z0), (x1, z1)),
                                           ((x1, z1), (x0, z1)), ((x0, z1), (x0, z0)))]

    quads = []
    for i in range(nx):
        for j in range(nz):
            x0, x1, z0, z1 = xs[i], xs[i + 1], zs[j], zs[j + 1]
            if not hole[i, j]:
                quads += [[(x0, y, z0), (x1, y, z0), (x1, y, z1), (x0, y, z1)] for y in (-t / 2, t / 2)]
            else:  # the four walls of the hole
                quads += walls(x0, z0, x1, z1)
    quads += walls(-w / 2, 0, w / 2, h)  # outer rim of the plate
    q = np.asarray(quads, float)  # [Q, 4, 3]
    verts = q.reshape(-1, 3)
    base = np.arange(len(q))[:, None] * 4
    faces = np.concatenate([base + [0, 1, 2], base + [0, 2, 3]])
    plate = _shift((verts, faces), (0, 0, foot_h))
    return _merge(plate, *feet)


def _panel(rng) -> Mesh:
    return _panel_mesh(rng, False)


def _grille(rng) -> Mesh:
    r"""The panel with a grid of small square through-holes (its twin)."""
    return _panel_mesh(rng, True)


def _cup_mesh(rng, handle: bool) -> Mesh:
    r, h = rng.uniform(0.2, 0.3), rng.uniform(0.35, 0.55)
    body = frustum(r * rng.uniform(0.75, 0.95), r, h, (0, 0, h / 2), seg=20)
    if not handle:
        return body
    handle_r, handle_t = rng.uniform(0.1, 0.14), _DETAIL * h * rng.uniform(0.6, 0.8)
    # Thin half ring bulging towards +x in the xz plane.
    ring = _rotate_x(_rotate_z(torus(handle_r, handle_t, arc=np.pi, seg=12), -np.pi / 2), np.pi / 2)
    return _merge(body, _shift(ring, (r * 0.95, 0, h / 2)))


def _cup(rng) -> Mesh:
    return _cup_mesh(rng, False)


def _mug(rng) -> Mesh:
    r"""The cup with a thin wire handle (its twin)."""
    return _cup_mesh(rng, True)


def _brick_mesh(rng, studded: bool) -> Mesh:
    w, d, h = rng.uniform(0.7, 1.0), rng.uniform(0.35, 0.6), rng.uniform(0.15, 0.3)
    parts = [box((w, d, h), (0, 0, h / 2))]
    if studded:
        r, sh = _DETAIL * w * rng.uniform(0.7, 0.9), _DETAIL * w * rng.uniform(0.8, 1.1)
        nx, ny = int(rng.integers(3, 6)), 2
        for x in (np.arange(nx) + 0.5) / nx * w - w / 2:
            for y in (np.arange(ny) + 0.5) / ny * d - d / 2:
                parts.append(_revolve(np.full(2, r), np.array([h, h + sh]), (x, y, 0), seg=10, cap_bottom=False))
    return _merge(*parts)


def _brick(rng) -> Mesh:
    return _brick_mesh(rng, False)


def _studded_brick(rng) -> Mesh:
    r"""The brick with two rows of small studs on top (its twin)."""
    return _brick_mesh(rng, True)


#: Class names and their generators, in label order.
SYNTHETIC_CLASSES: Dict[str, Callable[[np.random.Generator], Mesh]] = {
    "crate": _crate, "slatted_crate": _slatted_crate, "column": _column, "ribbed_column": _ribbed_column,
    "panel": _panel, "grille": _grille, "cup": _cup, "mug": _mug, "brick": _brick,
    "studded_brick": _studded_brick,
    "table": _table, "chair": _chair, "shelf": _shelf, "lamp": _lamp, "bottle": _bottle, "rocket": _rocket,
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
            of :data:`SYNTHETIC_CLASSES`; 10 gives the five fine-detail twins).
        samples_per_class: Shapes per class.
        num_points: Points sampled on each mesh.
        seed: Base seed; same arguments give identical samples.
        noise: Standard deviation of the Gaussian noise added to the points
            (in units of the normalised box, whose longest side is 1).
        scan (bool): Points from a single-view scan (:func:`~pointcmt_pyg.datasets.transforms.scan_points`:
            only the side facing one random viewpoint, as a depth sensor
            sees it) instead of the whole surface. The mesh, which the
            teacher's views are rendered from, stays whole, and
            ``complete_pos`` ``[1, num_points, 3]`` holds points sampled on
            the whole surface (the CMPG's training target).
        transform: PyG transform applied on every access.
        pre_transform: Transform applied once per access before :obj:`transform`.

    Samples are generated at construction (a few ms each) and kept in a
    process-wide cache, so constructing the same dataset again is free.
    ``sample_id`` is ``"<class>/<split>/s<seed>_<index>"``.
    """

    def __init__(self, split: str = "train", num_classes: int = 10, samples_per_class: int = 40,
                 num_points: int = 1024, seed: int = 0, noise: float = 0.005, scan: bool = False,
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
        if not isinstance(scan, bool):
            raise TypeError(f"scan must be a bool, got {type(scan).__name__}")
        super().__init__(None, transform=transform, pre_transform=pre_transform)
        self.split, self.samples_per_class, self.num_points, self.seed, self.noise = (
            split, samples_per_class, num_points, seed, float(noise))
        self.scan = scan
        self._classes = _NAMES[:num_classes]
        self._labels = torch.arange(num_classes).repeat_interleave(samples_per_class)
        self._sample_ids = [f"{self._classes[c]}/{split}/s{seed}_{i:04d}"
                            for c in range(num_classes) for i in range(samples_per_class)]
        key = (split, num_classes, samples_per_class, num_points, seed, self.noise, scan)
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
        if not self.scan:
            return make_data(pos, label, sid, mesh_pos, mesh_face)
        # One scan of the float64 mesh, drawn from the shape's own RNG.
        scan = RandomScan(self.noise, generator=gen)(Data(pos=pos, mesh_pos=mesh_pos, mesh_face=mesh_face)).pos
        return make_data(scan, label, sid, mesh_pos, mesh_face,
                         complete_pos=pos.to(torch.float32).unsqueeze(0).contiguous())

    def get(self, idx: int) -> Data:
        data = shallow(self._samples[idx])
        if self.pre_transform is not None:
            data = self.pre_transform(data)
        return data

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({len(self)}, split={self.split!r}, num_classes={self.num_classes}, "
                f"seed={self.seed})")
