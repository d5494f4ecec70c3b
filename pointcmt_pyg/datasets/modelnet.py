r"""ModelNet meshes (``.off``) as a PyG dataset, files in sorted order, meshes kept.

Reads the layout of Princeton's ModelNet archives (the one PyG's
:class:`torch_geometric.datasets.ModelNet` extracts to ``root/raw``):
``<root>/<class>/{train,test}/<class>_NNNN.off`` or ``<root>/raw/<class>/...``.
Used by PointCMT (`Yan et al., NeurIPS 2022 <https://arxiv.org/abs/2210.04208>`_),
whose teacher renders the meshes.
"""
import os
from pathlib import Path
from typing import Tuple, Union

import numpy as np
import torch
from torch import Tensor

__all__ = ["read_off"]


def _fan_triangulate(polys) -> np.ndarray:
    tris = []
    for poly in polys:
        for j in range(1, len(poly) - 1):
            tris.append((poly[0], poly[j], poly[j + 1]))
    return np.asarray(tris, dtype=np.int64).reshape(-1, 3)


def read_off(path: Union[str, os.PathLike]) -> Tuple[Tensor, Tensor]:
    r"""Reads an OFF mesh, tolerating ModelNet's ``OFF`` glued to the counts
    line (``OFF490 518 0``), comments and polygons (fan-triangulated).

    Returns:
        ``(mesh_pos [Nv, 3] float32, mesh_face [F, 3] long)``.

    Raises:
        ValueError: Naming :obj:`path`, if the file is not a valid OFF mesh with
            at least one face.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("ascii")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not an ASCII OFF file ({e})") from None
    lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines or not lines[0].upper().startswith(("OFF", "COFF", "NOFF")):
        raise ValueError(f"{path}: not an OFF file (first line {lines[0][:40] if lines else ''!r})")
    head = lines[0]
    rest_of_head = head[head.upper().index("OFF") + 3:].split()
    if rest_of_head:  # counts glued to the keyword
        counts, body = rest_of_head, lines[1:]
    else:
        if len(lines) < 2:
            raise ValueError(f"{path}: OFF header has no counts line")
        counts, body = lines[1].split(), lines[2:]
    try:
        nv, nf = int(counts[0]), int(counts[1])
    except (ValueError, IndexError):
        raise ValueError(f"{path}: bad OFF counts line {' '.join(counts)!r}") from None
    if nv <= 0 or nf <= 0:
        raise ValueError(f"{path}: OFF mesh has {nv} vertices and {nf} faces; need at least one of each")
    if len(body) < nv + nf:
        raise ValueError(f"{path}: truncated OFF file ({len(body)} data lines, header promises {nv + nf})")
    try:
        vert_tokens = " ".join(body[:nv]).split()
        if len(vert_tokens) == 3 * nv:
            verts = np.asarray(vert_tokens, dtype=np.float64).reshape(nv, 3)
        else:  # extra per-vertex columns (colours, normals): keep the first three
            verts = np.asarray([ln.split()[:3] for ln in body[:nv]], dtype=np.float64)
        face_lines = body[nv:nv + nf]
        tokens = " ".join(face_lines).split()
        faces = None
        if len(tokens) == 4 * nf:
            arr = np.asarray(tokens, dtype=np.int64).reshape(nf, 4)
            if np.all(arr[:, 0] == 3):
                faces = arr[:, 1:]
        if faces is None:
            polys = []
            for ln in face_lines:
                vals = [int(t) for t in ln.split()]
                k = vals[0]
                if k < 3 or len(vals) < k + 1:
                    raise ValueError(f"bad face line {ln[:60]!r}")
                polys.append(vals[1:k + 1])
            faces = _fan_triangulate(polys)
    except ValueError as e:
        raise ValueError(f"{path}: cannot parse OFF data ({e})") from None
    if verts.shape != (nv, 3) or not np.isfinite(verts).all():
        raise ValueError(f"{path}: OFF vertices must be {nv} finite xyz triples")
    if faces.size == 0 or faces.min() < 0 or faces.max() >= nv:
        raise ValueError(f"{path}: OFF face indices must lie in [0, {nv})")
    return torch.from_numpy(verts.astype(np.float32)), torch.from_numpy(np.ascontiguousarray(faces))
