r"""Point clouds and meshes stored as ``root/<class>/<split>/<name>.<ext>``.

Supported files (one shape each):

=====================  =======================================================
``.npy``               array [N, >=3]; the first three columns are xyz
``.npz``               array under ``pos``/``points``/``xyz``/``data`` (or the
                       only array); an optional ``label``/``y`` entry must equal
                       the class index of the folder
``.txt`` / ``.xyz``    text, comma or whitespace separated, first three columns
                       (``modelnet40_normal_resampled`` style ``x,y,z,nx,ny,nz``)
``.pcd``               Point Cloud Data, ascii or binary (own reader), binary
                       compressed through open3d
``.ply``               through open3d: a mesh when it has faces, else points
``.off`` / ``.obj``    triangle meshes: ``pos`` is sampled on the surface
                       (area-weighted, seeded by the sample id), the mesh is kept
                       as ``mesh_pos`` / ``mesh_face``
=====================  =======================================================

Construction only lists the files (sorted); samples are read on access, or all
at once with ``in_memory=True`` (optionally cached as one tensor file under
``cache_dir``). Used for the PointCMT pipeline
(`Yan et al., NeurIPS 2022 <https://arxiv.org/abs/2210.04208>`_).
"""
import hashlib
import os
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from .base import PointCloudDataset, check_sample_ids_unique, make_data, shallow, stable_seed
from .root import resolve_root
from .transforms import sample_surface

__all__ = ["PointCloudFolder", "read_shape", "read_pcd", "read_obj", "POINT_EXTENSIONS", "MESH_EXTENSIONS"]

POINT_EXTENSIONS = (".npy", ".npz", ".txt", ".xyz", ".pcd", ".ply")
MESH_EXTENSIONS = (".off", ".obj")
_NPZ_KEYS = ("pos", "points", "xyz", "data", "pc", "point_cloud")
_PCD_TYPES = {("F", 4): "<f4", ("F", 8): "<f8", ("I", 1): "<i1", ("I", 2): "<i2", ("I", 4): "<i4",
              ("I", 8): "<i8", ("U", 1): "<u1", ("U", 2): "<u2", ("U", 4): "<u4", ("U", 8): "<u8"}


# --------------------------------------------------------------------------- readers
def _xyz(arr: np.ndarray, path: Path) -> Tensor:
    if arr.ndim != 2 or arr.shape[1] < 3:
        raise ValueError(f"{path}: expected an array of shape [N, >=3], got {list(arr.shape)}")
    if arr.shape[0] == 0:
        raise ValueError(f"{path}: holds no points")
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{path}: expected numbers, got dtype {arr.dtype}")
    xyz = np.ascontiguousarray(arr[:, :3], dtype=np.float32)
    if not np.isfinite(xyz).all():
        raise ValueError(f"{path}: holds non-finite coordinates")
    return torch.from_numpy(xyz)


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:  # corrupt header, truncated data, pickled objects
        raise ValueError(f"{path}: cannot read .npy file ({type(e).__name__}: {e})") from None


def _read_npz(path: Path) -> Tuple[np.ndarray, Optional[int]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise ValueError(f"{path}: cannot read .npz file ({type(e).__name__}: {e})") from None
    label = None
    for key in ("label", "y", "labels"):
        if key in arrays:
            lab = arrays.pop(key).reshape(-1)
            if lab.size != 1 or not np.issubdtype(lab.dtype, np.integer):
                raise ValueError(f"{path}: '{key}' must be a single integer label, got {lab!r}")
            label = int(lab[0])
    for key in _NPZ_KEYS:
        if key in arrays:
            return arrays[key], label
    if len(arrays) == 1:
        return next(iter(arrays.values())), label
    raise ValueError(f"{path}: .npz file has no point array (looked for {list(_NPZ_KEYS)}, found {sorted(arrays)})")


def _read_text(path: Path) -> np.ndarray:
    try:
        with open(path, "r") as fh:
            first = fh.readline()
        delimiter = "," if "," in first else None
        arr = np.loadtxt(path, delimiter=delimiter, usecols=(0, 1, 2), ndmin=2, dtype=np.float64, comments="#")
    except (ValueError, IndexError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot parse point text file ({type(e).__name__}: {e})") from None
    return arr


def read_pcd(path: Union[str, os.PathLike]) -> Tensor:
    r"""Reads the xyz fields of a PCD file (``DATA ascii`` or ``binary``; ``binary_compressed``
    goes through open3d). Points with NaN coordinates (organised clouds) are dropped.

    Raises:
        ValueError: Naming :obj:`path`, for a malformed header or truncated data.
    """
    path = Path(path)
    raw = path.read_bytes()
    header: Dict[str, List[str]] = {}
    offset = 0
    while True:
        end = raw.find(b"\n", offset)
        if end < 0:
            raise ValueError(f"{path}: corrupt PCD file (no DATA line in the header)")
        try:
            line = raw[offset:end].decode("ascii").strip()
        except UnicodeDecodeError:
            raise ValueError(f"{path}: corrupt PCD file (binary bytes in the header)") from None
        offset = end + 1
        if not line or line.startswith("#"):
            continue
        key, *vals = line.split()
        header[key.upper()] = vals
        if key.upper() == "DATA":
            break
        if len(header) > 20:
            raise ValueError(f"{path}: corrupt PCD file (header too long or not a PCD file)")
    try:
        fields = header["FIELDS"]
        npts = int(header["POINTS"][0]) if "POINTS" in header else int(header["WIDTH"][0]) * int(header["HEIGHT"][0])
        sizes = [int(s) for s in header.get("SIZE", ["4"] * len(fields))]
        types = header.get("TYPE", ["F"] * len(fields))
        counts = [int(c) for c in header.get("COUNT", ["1"] * len(fields))]
        mode = header["DATA"][0].lower()
    except (KeyError, ValueError, IndexError) as e:
        raise ValueError(f"{path}: corrupt PCD header ({type(e).__name__}: {e})") from None
    if not all(f in fields for f in ("x", "y", "z")):
        raise ValueError(f"{path}: PCD file has no x/y/z fields (fields {fields})")
    if not (len(fields) == len(sizes) == len(types) == len(counts)):
        raise ValueError(f"{path}: corrupt PCD header (FIELDS/SIZE/TYPE/COUNT lengths differ)")
    if mode == "ascii":
        try:
            rows = raw[offset:].decode("ascii").split("\n")
            rows = [r.split() for r in rows if r.strip()]
            cols = []
            for f, c in zip(fields, counts):
                cols.extend([f] * c)
            idx = [cols.index(a) for a in ("x", "y", "z")]
            arr = np.asarray([[r[i] for i in idx] for r in rows[:npts]], dtype=np.float64)
        except (ValueError, IndexError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: corrupt ascii PCD data ({type(e).__name__}: {e})") from None
        if arr.shape[0] != npts:
            raise ValueError(f"{path}: truncated PCD file ({arr.shape[0]} of {npts} points)")
    elif mode == "binary":
        try:
            dtype = np.dtype([(f, _PCD_TYPES[(t.upper(), s)], (c,)) if c > 1 else (f, _PCD_TYPES[(t.upper(), s)])
                              for f, s, t, c in zip(fields, sizes, types, counts)])
        except KeyError:
            raise ValueError(f"{path}: unsupported PCD TYPE/SIZE {list(zip(types, sizes))}") from None
        need = npts * dtype.itemsize
        if len(raw) - offset < need:
            raise ValueError(f"{path}: truncated PCD file ({len(raw) - offset} data bytes, header promises {need})")
        rec = np.frombuffer(raw, dtype=dtype, count=npts, offset=offset)
        arr = np.stack([rec["x"], rec["y"], rec["z"]], axis=1).astype(np.float64)
    elif mode == "binary_compressed":
        arr = _read_open3d_points(path)
    else:
        raise ValueError(f"{path}: unknown PCD DATA mode {mode!r}")
    arr = arr[~np.isnan(arr).any(axis=1)]
    return _xyz(arr, path)


def _open3d():
    try:
        import open3d as o3d
    except ImportError:  # pragma: no cover - depends on the install
        raise ImportError("reading .ply / compressed .pcd files needs open3d "
                          "(pip install open3d, or pointcmt-pyg[pointcmt])") from None
    return o3d


def _read_open3d_points(path: Path) -> np.ndarray:
    o3d = _open3d()
    pcd = o3d.io.read_point_cloud(str(path))
    arr = np.asarray(pcd.points, dtype=np.float64)
    if arr.shape[0] == 0:
        raise ValueError(f"{path}: open3d read no points (corrupt or empty file)")
    return arr


def _read_ply(path: Path) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    o3d = _open3d()
    mesh = o3d.io.read_triangle_mesh(str(path))
    tris = np.asarray(mesh.triangles, dtype=np.int64)
    if tris.shape[0] > 0:
        verts = np.asarray(mesh.vertices, dtype=np.float64)
        return _check_mesh(verts, tris, path)
    return _xyz(_read_open3d_points(path), path), None, None


def read_obj(path: Union[str, os.PathLike]) -> Tuple[Tensor, Tensor]:
    r"""Reads vertices and faces (fan-triangulated) of a Wavefront ``.obj`` file.

    Returns:
        ``(mesh_pos [Nv, 3] float32, mesh_face [F, 3] long)``.
    """
    path = Path(path)
    verts, polys = [], []
    try:
        with open(path, "r") as fh:
            for line in fh:
                if line.startswith("v "):
                    verts.append([float(t) for t in line.split()[1:4]])
                elif line.startswith("f "):
                    idx = []
                    for tok in line.split()[1:]:
                        i = int(tok.split("/")[0])
                        idx.append(i - 1 if i > 0 else len(verts) + i)
                    if len(idx) < 3:
                        raise ValueError(f"face with {len(idx)} vertices")
                    polys.append(idx)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot parse .obj file ({type(e).__name__}: {e})") from None
    tris = [(p[0], p[j], p[j + 1]) for p in polys for j in range(1, len(p) - 1)]
    pos, _, face = _check_mesh(np.asarray(verts, dtype=np.float64).reshape(-1, 3),
                               np.asarray(tris, dtype=np.int64).reshape(-1, 3), path)
    return pos, face


def _check_mesh(verts: np.ndarray, tris: np.ndarray, path: Path):
    if verts.shape[0] == 0 or tris.shape[0] == 0:
        raise ValueError(f"{path}: mesh has {verts.shape[0]} vertices and {tris.shape[0]} faces; need both")
    if tris.min() < 0 or tris.max() >= verts.shape[0]:
        raise ValueError(f"{path}: face indices must lie in [0, {verts.shape[0]})")
    pos = _xyz(verts, path)
    return pos, pos, torch.from_numpy(np.ascontiguousarray(tris))


def read_shape(path: Union[str, os.PathLike]) -> Dict[str, object]:
    r"""Reads one shape file of a supported extension.

    Returns:
        A dict with ``pos`` [N, 3] float32 (points; for meshes the vertices),
        ``mesh_pos`` / ``mesh_face`` (meshes only, else :obj:`None`) and
        ``label`` (an ``.npz`` label entry, else :obj:`None`).

    Raises:
        ValueError: Naming the file, for an unknown extension or a corrupt file.
    """
    path = Path(path)
    ext = path.suffix.lower()
    out: Dict[str, object] = {"mesh_pos": None, "mesh_face": None, "label": None}
    if ext == ".npy":
        out["pos"] = _xyz(_read_npy(path), path)
    elif ext == ".npz":
        arr, out["label"] = _read_npz(path)
        out["pos"] = _xyz(arr, path)
    elif ext in (".txt", ".xyz"):
        out["pos"] = _xyz(_read_text(path), path)
    elif ext == ".pcd":
        out["pos"] = read_pcd(path)
    elif ext == ".ply":
        out["pos"], out["mesh_pos"], out["mesh_face"] = _read_ply(path)
    elif ext == ".off":
        from .modelnet import read_off  # modelnet builds on this module

        out["mesh_pos"], out["mesh_face"] = read_off(path)
        out["pos"] = out["mesh_pos"]
    elif ext == ".obj":
        out["mesh_pos"], out["mesh_face"] = read_obj(path)
        out["pos"] = out["mesh_pos"]
    else:
        raise ValueError(f"{path}: unknown file extension {path.suffix!r} "
                         f"(supported: {', '.join(POINT_EXTENSIONS + MESH_EXTENSIONS)})")
    return out


def fixed_size(pos: Tensor, num_points: Optional[int], sampling: str, seed: int) -> Tensor:
    r"""Brings a stored cloud to :obj:`num_points` points: the first ones
    (``"first"``) or a subset seeded by :obj:`seed` (``"random"``); clouds with
    fewer points get seeded repeats."""
    n = pos.size(0)
    if num_points is None or n == num_points:
        return pos
    gen = torch.Generator().manual_seed(seed)
    if n > num_points:
        idx = torch.arange(num_points) if sampling == "first" else torch.randperm(n, generator=gen)[:num_points].sort().values
    else:
        idx = torch.cat([torch.arange(n), torch.randint(n, (num_points - n,), generator=gen)])
    return pos[idx]


# --------------------------------------------------------------------------- dataset
def _visible_entries(folder: Path) -> List[os.DirEntry]:
    with os.scandir(folder) as it:
        return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)


class PointCloudFolder(PointCloudDataset):
    r"""A classification dataset read from ``root/<class>/<split>/<name>.<ext>``.

    Class names are the sorted sub-directories of :obj:`root` (or
    :obj:`classes`); a sample's label is the index of its class; its
    ``sample_id`` is ``"<class>/<split>/<name>"``.

    Args:
        root: Dataset directory (:obj:`None`: the default data root, see
            :func:`~pointcmt_pyg.datasets.default_data_root`).
        split: Sub-directory of each class folder (``"train"``, ``"test"``, ...).
        num_points: Points per sample (meshes: sampled on the surface; point
            files: see :obj:`sampling`); :obj:`None` keeps the stored points
            (meshes then need an explicit number and raise).
        sampling: For point files with more than :obj:`num_points` points:
            ``"first"`` (default, the usual convention for pre-sampled files) or
            ``"random"`` (a fixed subset seeded by the sample id).
        classes: Explicit class list (label order). Must name exactly the class
            folders under :obj:`root`.
        transform: PyG transform applied on every access.
        pre_transform: Transform applied when a sample is read (before
            :obj:`transform`, and before caching when :obj:`in_memory`).
        seed: Base seed of the per-sample surface/subset sampling.
        in_memory: Read all samples at construction and keep them.
        cache_dir: With :obj:`in_memory`, keep the processed samples in one
            ``.pt`` file there, keyed by the file list (names, sizes, mtimes) and
            the arguments; later constructions load it instead of the files.

    Raises:
        ValueError: Naming the folder or file: missing :obj:`root` or split,
            an empty class folder, an unknown extension, class folders that do
            not match :obj:`classes`, duplicate sample ids, and (when read) a
            corrupt file or an ``.npz`` label that differs from its folder.
    """

    def __init__(self, root: Optional[Union[str, os.PathLike]] = None, split: str = "train",
                 num_points: Optional[int] = 1024, sampling: str = "first",
                 classes: Optional[Sequence[str]] = None, transform: Optional[Callable] = None,
                 pre_transform: Optional[Callable] = None, seed: int = 0, in_memory: bool = False,
                 cache_dir: Optional[Union[str, os.PathLike]] = None) -> None:
        root_path = resolve_root(root)
        self._init_common(root_path, split, num_points, sampling, seed, transform, pre_transform)
        if not root_path.is_dir():
            raise ValueError(f"root {str(root_path)!r} is not a directory: expected "
                             f"root/<class>/{split}/<name>.<ext> (set POINTCMT_DATA or pass root)")
        found = [e.name for e in _visible_entries(root_path) if e.is_dir()]
        if classes is None:
            class_list = found
        else:
            if isinstance(classes, str) or not all(isinstance(c, str) for c in classes):
                raise TypeError("classes must be a sequence of class-folder names")
            class_list = list(classes)
            if len(set(class_list)) != len(class_list):
                raise ValueError(f"classes has duplicate names: {class_list}")
            missing = [c for c in class_list if c not in found]
            extra = [c for c in found if c not in class_list]
            if missing:
                raise ValueError(f"classes do not match the folders under {root_path}: no folder for "
                                 f"{missing} (e.g. {root_path / missing[0]})")
            if extra:
                raise ValueError(f"classes do not match the folders under {root_path}: folder(s) "
                                 f"{[str(root_path / c) for c in extra]} not in classes")
        if not class_list:
            raise ValueError(f"no class folders under {root_path}: expected root/<class>/{split}/<name>.<ext>")

        has_split = [c for c in class_list if (root_path / c / split).is_dir()]
        if not has_split:
            splits = sorted({e.name for c in class_list for e in _visible_entries(root_path / c) if e.is_dir()})
            raise ValueError(f"no '{split}' split under {root_path} (class folders have splits {splits})")
        files: List[Path] = []
        labels: List[int] = []
        for label, cls in enumerate(class_list):
            folder = root_path / cls / split
            if not folder.is_dir():
                if not any(e.is_dir() or e.is_file() for e in _visible_entries(root_path / cls)):
                    raise ValueError(f"empty class folder {root_path / cls}")
                raise ValueError(f"class folder {root_path / cls} has no '{split}' sub-folder "
                                 f"(expected {folder}/<name>.<ext>)")
            entries = [e for e in _visible_entries(folder) if e.is_file()]
            if not entries:
                raise ValueError(f"empty class folder {folder}: no shape files")
            for e in entries:
                ext = os.path.splitext(e.name)[1].lower()
                if ext not in POINT_EXTENSIONS + MESH_EXTENSIONS:
                    raise ValueError(f"{folder / e.name}: unknown file extension {ext or '(none)'!r} "
                                     f"(supported: {', '.join(POINT_EXTENSIONS + MESH_EXTENSIONS)})")
                files.append(folder / e.name)
                labels.append(label)
        self._init_files(class_list, files, labels, in_memory, cache_dir)

    def _init_common(self, root_path: Path, split: str, num_points: Optional[int], sampling: str, seed: int,
                     transform: Optional[Callable], pre_transform: Optional[Callable]) -> None:
        if not isinstance(split, str) or not split or "/" in split or os.sep in split:
            raise ValueError(f"split must be a folder name such as 'train', got {split!r}")
        if num_points is not None and (isinstance(num_points, bool) or not isinstance(num_points, int) or num_points <= 0):
            raise ValueError(f"num_points must be a positive int or None, got {num_points!r}")
        if sampling not in ("first", "random"):
            raise ValueError(f"sampling must be 'first' or 'random', got {sampling!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        PointCloudDataset.__init__(self, str(root_path), transform=transform, pre_transform=pre_transform)
        self.root_path, self.split, self.num_points, self.sampling, self.seed = root_path, split, num_points, sampling, seed

    def _init_files(self, classes: List[str], files: List[Path], labels: List[int], in_memory: bool,
                    cache_dir: Optional[Union[str, os.PathLike]]) -> None:
        self._classes = list(classes)
        self._files = files
        self._labels = torch.tensor(labels, dtype=torch.long)
        self._sample_ids = [f"{f.parent.parent.name}/{self.split}/{f.stem}" for f in files]
        check_sample_ids_unique(self._sample_ids, self._files)
        self._cache: Optional[List[Data]] = None
        if in_memory:
            self._cache = self._load_all(cache_dir)
        elif cache_dir is not None:
            raise ValueError("cache_dir needs in_memory=True")

    @property
    def files(self) -> List[Path]:
        r"""Paths of the samples of this (view of the) dataset, in order."""
        return [self._files[i] for i in self.indices()]

    def _read(self, idx: int) -> Data:
        path, label, sid = self._files[idx], int(self._labels[idx]), self._sample_ids[idx]
        shape = read_shape(path)
        if shape["label"] is not None and shape["label"] != label:
            raise ValueError(f"{path}: label {shape['label']} in the file does not match its class folder "
                             f"{self._classes[label]!r} (label {label})")
        sample_seed = stable_seed(self.seed, sid)
        if shape["mesh_face"] is not None:
            if self.num_points is None:
                raise ValueError(f"{path}: a mesh needs num_points to sample the surface (got None)")
            gen = torch.Generator().manual_seed(sample_seed)
            pos = sample_surface(shape["mesh_pos"], shape["mesh_face"], self.num_points, generator=gen)
            data = make_data(pos, label, sid, shape["mesh_pos"], shape["mesh_face"])
        else:
            data = make_data(fixed_size(shape["pos"], self.num_points, self.sampling, sample_seed), label, sid)
        if self.pre_transform is not None:
            data = self.pre_transform(data)
        return data

    def _fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(repr((str(self.root_path.resolve()), self.split, self.num_points, self.sampling, self.seed,
                       self._classes, repr(self.pre_transform))).encode())
        for f in self._files:
            st = f.stat()
            h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:20]

    def _load_all(self, cache_dir) -> List[Data]:
        cache_file = None
        if cache_dir is not None:
            cache_file = Path(cache_dir) / f"{type(self).__name__.lower()}_{self.split}_{self._fingerprint()}.pt"
            if cache_file.is_file():
                blob = torch.load(cache_file, weights_only=True)
                if blob.get("sample_ids") == self._sample_ids:
                    return self._from_blob(blob)
        samples = [self._read(i) for i in range(len(self._files))]
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
            torch.save(self._to_blob(samples), tmp)
            os.replace(tmp, cache_file)
        return samples

    def _to_blob(self, samples: List[Data]) -> dict:
        keys = set(samples[0].keys()) if samples else set()
        same_keys = all(set(d.keys()) == keys for d in samples)
        same_shape = len({tuple(d.pos.shape) for d in samples}) == 1
        if same_keys and keys == {"pos", "y", "sample_id"} and same_shape:
            # Fixed-size point clouds: one stacked tensor loads much faster than thousands of dicts.
            return {"sample_ids": self._sample_ids, "pos": torch.stack([d.pos for d in samples]),
                    "y": torch.cat([d.y for d in samples])}
        return {"sample_ids": self._sample_ids, "samples": [d.to_dict() for d in samples]}

    @staticmethod
    def _from_blob(blob: dict) -> List[Data]:
        if "samples" in blob:
            return [Data.from_dict(d) for d in blob["samples"]]
        return [make_data(pos, int(y), sid) for pos, y, sid in zip(blob["pos"], blob["y"], blob["sample_ids"])]

    def get(self, idx: int) -> Data:
        if self._cache is not None:
            return shallow(self._cache[idx])
        return self._read(idx)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({len(self)}, split={self.split!r}, "
                f"num_classes={self.num_classes}, root={str(self.root_path)!r})")
