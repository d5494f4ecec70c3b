r"""A compact on-disk store of rendered views: uint8 shards, memory-mapped.

PointCMT's image teacher (`paper <https://arxiv.org/abs/2210.04208>`_) reads
the same rendered views every epoch, so they are rendered once and cached.
One file per shape in float32 made that cache slow to build (one render and
one ``torch.save`` per shape) and large (ModelNet40 at 6 x 64 px: ~960 MB).
This store keeps them as:

* **uint8 codes**: every channel the renderers produce lies in ``[0, 1]``
  (depth ``1 - z / 2`` on the surface and ``0`` off it, shading, normals,
  masks), stored as ``round(255 * x)`` and read back as ``code / 255``. The
  background stays exactly ``0`` and a surface pixel at least ``128 / 255``;
  the depth step is ``2 / 255`` of the shape's depth range (finer than a
  pixel of a 64 px view: ``1 / 64``). A quarter of float32's size.
* **shards**: ``shard-<name>.npy`` (``[n, V, C, H, W]`` uint8) beside
  ``shard-<name>.json`` (its ``n`` sample ids, in order), each written
  atomically, the ``.json`` last, so a shard without its ``.json`` is
  ignored. Reads go through ``numpy.load(mmap_mode="r")``: opening the store
  reads only the ids, and a sample's views are one slice of a mapped file.

:meth:`RenderViews.prerender <pointcmt_pyg.render.RenderViews.prerender>`
fills a store in batches; :class:`ViewStore` is what it writes to.
"""
import json
import os
import uuid
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

__all__ = ["ViewStore", "encode_views", "decode_views", "VIEW_ENCODING"]

#: How views are stored (part of every cache key, so a change of encoding
#: renders into a new folder instead of misreading old files).
VIEW_ENCODING = "uint8/255"


def encode_views(views: Tensor) -> np.ndarray:
    r"""Float views with values in ``[0, 1]`` to uint8 codes ``round(255 * x)``.

    Args:
        views (Tensor): Any shape, floating point, values in ``[0, 1]``.

    Returns:
        numpy.ndarray: uint8 codes of the same shape.
    """
    if not isinstance(views, Tensor) or not views.is_floating_point():
        raise TypeError(f"views must be a floating-point tensor, got "
                        f"{views.dtype if isinstance(views, Tensor) else type(views).__name__}")
    views = views.detach().to("cpu", torch.float32)
    if views.numel() and (not bool(torch.isfinite(views).all())
                          or float(views.min()) < 0.0 or float(views.max()) > 1.0):
        raise ValueError("views must hold finite values in [0, 1] to be stored as uint8, got "
                         f"range [{float(views.min())}, {float(views.max())}]")
    return torch.round(views * 255.0).to(torch.uint8).numpy()


def decode_views(codes: Union[np.ndarray, Tensor]) -> Tensor:
    r"""uint8 codes back to float32 views ``code / 255``."""
    codes = torch.as_tensor(np.asarray(codes))
    if codes.dtype != torch.uint8:
        raise TypeError(f"codes must be uint8, got {codes.dtype}")
    return codes.to(torch.float32) / 255.0


class ViewStore:
    r"""Rendered views of many samples, keyed by ``sample_id``, in uint8 shards.

    Args:
        directory (str or Path): The store's folder (created on the first write).

    Example:
        >>> store = ViewStore("views/0123abcd")
        >>> store.add(["a", "b"], torch.rand(2, 6, 1, 64, 64))
        >>> store.get("a").shape
        torch.Size([6, 1, 64, 64])
    """

    def __init__(self, directory: Union[str, os.PathLike]) -> None:
        self.directory = Path(directory)
        self._index: Optional[Dict[str, Tuple[str, int]]] = None
        self._arrays: Dict[str, np.ndarray] = {}

    def __getstate__(self) -> dict:
        # Sent to spawned DataLoader workers: the path only, not the mappings.
        return {"directory": self.directory, "_index": None, "_arrays": {}}

    # ----------------------------------------------------------- reading
    def refresh(self) -> None:
        r"""Re-reads the list of shards (e.g. after another process wrote one)."""
        index: Dict[str, Tuple[str, int]] = {}
        if self.directory.is_dir():
            for meta in sorted(self.directory.glob("shard-*.json")):
                name = meta.name[len("shard-"):-len(".json")]
                if not (self.directory / f"shard-{name}.npy").is_file():
                    continue
                try:
                    ids = json.loads(meta.read_text())["sample_ids"]
                except (OSError, ValueError, KeyError, TypeError):
                    continue  # foreign or damaged: ignored
                for row, sample_id in enumerate(ids):
                    index.setdefault(sample_id, (name, row))
        self._index = index
        self._arrays = {k: v for k, v in self._arrays.items()
                        if any(n == k for n, _ in index.values())}

    @property
    def index(self) -> Dict[str, Tuple[str, int]]:
        r"""``sample_id -> (shard name, row)``."""
        if self._index is None:
            self.refresh()
        return self._index  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, sample_id: str) -> bool:
        return sample_id in self.index

    def _array(self, name: str) -> np.ndarray:
        array = self._arrays.get(name)
        if array is None:
            array = np.load(self.directory / f"shard-{name}.npy", mmap_mode="r")
            self._arrays[name] = array
        return array

    def get_codes(self, sample_id: str) -> Optional[np.ndarray]:
        r"""The uint8 codes ``[V, C, H, W]`` of ``sample_id`` (``None`` if absent)."""
        entry = self.index.get(sample_id)
        if entry is None:
            return None
        name, row = entry
        return np.array(self._array(name)[row])

    def get(self, sample_id: str) -> Optional[Tensor]:
        r"""The float32 views ``[V, C, H, W]`` of ``sample_id`` (``None`` if absent)."""
        codes = self.get_codes(sample_id)
        return None if codes is None else decode_views(codes)

    def get_many(self, sample_ids: Sequence[str]) -> Tensor:
        r"""Float32 views ``[B, V, C, H, W]`` of several samples, all present."""
        missing = [s for s in sample_ids if s not in self.index]
        if missing:
            raise KeyError(f"{len(missing)} sample ids are not in the store {self.directory}, "
                           f"e.g. {missing[0]!r}")
        return decode_views(np.stack([self.get_codes(s) for s in sample_ids]))

    def nbytes(self) -> int:
        r"""Bytes on disk of the shards' arrays."""
        if not self.directory.is_dir():
            return 0
        return sum(p.stat().st_size for p in self.directory.glob("shard-*.npy"))

    # ----------------------------------------------------------- writing
    def add(self, sample_ids: Sequence[str], views: Union[Tensor, np.ndarray]) -> Optional[str]:
        r"""Writes one new shard holding ``views`` of ``sample_ids``.

        Args:
            sample_ids (sequence of str): ``n`` distinct non-empty ids.
            views (Tensor or numpy.ndarray): ``[n, V, C, H, W]``, float in
                ``[0, 1]`` (encoded here) or already uint8 codes.

        Returns:
            str or None: The shard's name (``None`` when ``n = 0``).
        """
        sample_ids = list(sample_ids)
        if any(not isinstance(s, str) or not s for s in sample_ids):
            raise ValueError("sample_ids must be non-empty strings")
        if len(set(sample_ids)) != len(sample_ids):
            raise ValueError("sample_ids must be distinct")
        codes = views if isinstance(views, np.ndarray) else encode_views(views)
        if codes.dtype != np.uint8:
            raise TypeError(f"views given as an array must be uint8 codes, got {codes.dtype}")
        if codes.ndim != 5 or codes.shape[0] != len(sample_ids):
            raise ValueError(f"views must be [n, V, C, H, W] with n = {len(sample_ids)} "
                             f"sample ids, got {tuple(codes.shape)}")
        if not sample_ids:
            return None
        from ..train.checkpoint import _atomic_write, atomic_write_text
        name = uuid.uuid4().hex[:16]
        codes = np.ascontiguousarray(codes)
        _atomic_write(self.directory / f"shard-{name}.npy", lambda f: np.save(f, codes))
        atomic_write_text(json.dumps({"sample_ids": sample_ids, "shape": list(codes.shape)}),
                          self.directory / f"shard-{name}.json")
        if self._index is not None:
            for row, sample_id in enumerate(sample_ids):
                self._index.setdefault(sample_id, (name, row))
        return name

    def compact(self) -> int:
        r"""Merges every shard into one (after many one-sample writes).

        Returns:
            int: The number of shards merged away.
        """
        self.refresh()
        old = sorted(p.name[len("shard-"):-len(".json")]
                     for p in self.directory.glob("shard-*.json")) if self.directory.is_dir() else []
        if len(old) <= 1:
            return 0
        ids: List[str] = list(self.index)
        merged = np.stack([self.get_codes(s) for s in ids]) if ids else None
        if merged is not None:
            self.add(ids, merged)
        for name in old:
            for suffix in (".json", ".npy"):  # .json first: a half-removed shard is ignored
                try:
                    (self.directory / f"shard-{name}{suffix}").unlink()
                except FileNotFoundError:
                    pass
        self._arrays.clear()
        self.refresh()
        return len(old) - (1 if ids else 0)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({str(self.directory)!r}, samples={len(self)})"
