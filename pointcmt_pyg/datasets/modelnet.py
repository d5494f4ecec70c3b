r"""ModelNet meshes (``.off``) as a PyG dataset, files in sorted order, meshes kept.

Reads the layout of Princeton's ModelNet archives (the one PyG's
:class:`torch_geometric.datasets.ModelNet` extracts to ``root/raw``):
``<root>/<class>/{train,test}/<class>_NNNN.off`` or ``<root>/raw/<class>/...``.
Used by PointCMT (`Yan et al., NeurIPS 2022 <https://arxiv.org/abs/2210.04208>`_),
whose teacher renders the meshes.
"""
import os
import urllib.request
import warnings
import zipfile
from pathlib import Path
from typing import Callable, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

# folder.py imports read_off from here lazily (inside read_shape), so this is not circular.
from .folder import PointCloudFolder, _visible_entries
from .root import default_data_root

__all__ = ["read_off", "ModelNet", "MODELNET10_CLASSES", "MODELNET40_CLASSES"]


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


MODELNET10_CLASSES = ["bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table", "toilet"]
MODELNET40_CLASSES = [
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone", "cup", "curtain",
    "desk", "door", "dresser", "flower_pot", "glass_box", "guitar", "keyboard", "lamp", "laptop", "mantel", "monitor",
    "night_stand", "person", "piano", "plant", "radio", "range_hood", "sink", "sofa", "stairs", "stool", "table",
    "tent", "toilet", "tv_stand", "vase", "wardrobe", "xbox",
]


class ModelNet(PointCloudFolder):
    r"""ModelNet10/40 meshes with points sampled on them and the mesh kept.

    Compatible with the folder that :class:`torch_geometric.datasets.ModelNet`
    downloads (``root/raw/<class>/{train,test}/*.off``) and with the extracted
    Princeton archive itself (``root/<class>/...`` or
    ``root/ModelNet{10,40}/<class>/...``). Differences from PyG's class:
    files are read in *sorted* order (PyG globs them unsorted), samples are
    read lazily (no ``processed/`` step), and each sample is
    ``Data(pos=[num_points, 3], y=[1], sample_id, mesh_pos=[Nv, 3], mesh_face=[F, 3])``
    where ``pos`` is sampled on the surface (area-weighted, seeded by the
    sample id, so identical on every access and machine) instead of PyG's
    ``pos`` = vertices and ``face`` = [3, F].

    Labels are indices into the official sorted class list of ModelNet10/40
    (identical to PyG's labels), also when only some class folders are
    present (a warning says which are missing).

    Args:
        root: Dataset directory; :obj:`None` for
            ``<data root>/ModelNet_off/ModelNet{name}`` (see
            :func:`~pointcmt_pyg.datasets.default_data_root`).
        name: ``"10"`` or ``"40"``.
        train: Training split if :obj:`True`, else the test split.
        num_points: Points sampled on each mesh.
        transform: PyG transform applied on every access.
        pre_transform: Transform applied when a sample is read.
        seed: Base seed of the surface sampling.
        download: If no class folder exists, download and extract the
            Princeton archive into ``root/raw`` (as PyG does). Without internet
            this fails with a message saying where to put the data.
        in_memory: Read all meshes at construction and keep them.
        cache_dir: With :obj:`in_memory`, a directory for a processed cache file.

    Raises:
        FileNotFoundError: No ModelNet data under :obj:`root` (and no download).
        ValueError: Naming the folder or file, for an unknown class folder, a
            class without the split, or (when read) a corrupt ``.off`` file.
    """

    urls = {
        "10": "http://3dvision.princeton.edu/projects/2014/3DShapeNets/ModelNet10.zip",
        "40": "http://modelnet.cs.princeton.edu/ModelNet40.zip",
    }

    def __init__(self, root: Optional[Union[str, os.PathLike]] = None, name: str = "10", train: bool = True,
                 num_points: int = 1024, transform: Optional[Callable] = None,
                 pre_transform: Optional[Callable] = None, seed: int = 0, download: bool = True,
                 in_memory: bool = False, cache_dir: Optional[Union[str, os.PathLike]] = None) -> None:
        name = str(name)
        if name not in ("10", "40"):
            raise ValueError(f"name must be '10' or '40', got {name!r}")
        if not isinstance(train, bool):
            raise TypeError(f"train must be a bool, got {type(train).__name__}")
        if num_points is None:
            raise ValueError("num_points must be a positive int (points are sampled on the meshes), got None")
        self.name = name
        split = "train" if train else "test"
        root_path = (default_data_root() / "ModelNet_off" / f"ModelNet{name}") if root is None else Path(root).expanduser()
        self._init_common(root_path, split, num_points, "first", seed, transform, pre_transform)
        official = MODELNET10_CLASSES if name == "10" else MODELNET40_CLASSES

        data_dir = self._find_data_dir(root_path, official)
        download_error = ""
        if data_dir is None and download:
            download_error = self._download(root_path)
            data_dir = self._find_data_dir(root_path, official)
        if data_dir is None:
            raise FileNotFoundError(
                f"ModelNet{name} not found under {root_path}. Put the extracted ModelNet{name} archive "
                f"({self.urls[name]}) so that {root_path / 'raw'}/<class>/{{train,test}}/<class>_NNNN.off exist "
                f"(as torch_geometric.datasets.ModelNet does), or pass root=<folder with the class folders>"
                f"{'' if download else ', or allow download=True where internet is available'}."
                f"{(' Download failed: ' + download_error) if download_error else ''}")
        self.data_dir = data_dir

        present = [e.name for e in _visible_entries(data_dir) if e.is_dir()]
        unknown = [c for c in present if c not in official]
        if unknown:
            raise ValueError(f"folder(s) {[str(data_dir / c) for c in unknown]} are not ModelNet{name} classes")
        missing = [c for c in official if c not in present]
        if missing:
            warnings.warn(f"ModelNet{name} under {data_dir} has {len(present)} of {len(official)} class folders "
                          f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}); labels keep the official "
                          f"class indices", stacklevel=2)
        files: List[Path] = []
        labels: List[int] = []
        for label, cls in enumerate(official):
            if cls not in present:
                continue
            folder = data_dir / cls / split
            if not folder.is_dir():
                raise ValueError(f"class folder {data_dir / cls} has no '{split}' sub-folder (expected {folder}/*.off)")
            entries = [e for e in _visible_entries(folder) if e.is_file() and e.name.lower().endswith(".off")]
            if not entries:
                raise ValueError(f"empty class folder {folder}: no .off files")
            files.extend(folder / e.name for e in entries)
            labels.extend([label] * len(entries))
        self._init_files(official, files, labels, in_memory, cache_dir)

    @staticmethod
    def _find_data_dir(root: Path, official: List[str]) -> Optional[Path]:
        for cand in (root / "raw", root, *(root / f"ModelNet{n}" for n in ("10", "40"))):
            if cand.is_dir() and any((cand / c).is_dir() for c in official):
                return cand
        return None

    def _download(self, root: Path) -> str:
        """Downloads and extracts the archive into ``root/raw``; returns an error text ('' on success)."""
        url = self.urls[self.name]
        zip_path = root / f"ModelNet{self.name}.zip"
        try:
            root.mkdir(parents=True, exist_ok=True)
            print(f"Downloading {url} to {root} ...")
            with urllib.request.urlopen(url, timeout=30) as resp, open(zip_path, "wb") as out:
                while True:
                    chunk = resp.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
            with zipfile.ZipFile(zip_path) as zf:
                zf.extractall(root)
            extracted = root / f"ModelNet{self.name}"
            if extracted.is_dir() and not (root / "raw").exists():
                os.rename(extracted, root / "raw")
        except Exception as e:  # no internet, proxy, disk full ...
            return f"{url}: {type(e).__name__}: {e}"
        finally:
            if zip_path.exists():
                zip_path.unlink()
        return ""

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}{self.name}({len(self)}, split={self.split!r})"

