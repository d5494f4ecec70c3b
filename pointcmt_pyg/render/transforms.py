r"""A PyG transform that renders each sample's views for PointCMT's image
teacher (`paper <https://arxiv.org/abs/2210.04208>`_), with a disk cache.

Rendering happens per sample, before collation: each ``Data`` gets
``views`` of shape ``[1, V, C, H, W]`` (float32), so that a PyG ``Batch``
holds ``[B, V, C, H, W]``. Views are 8-bit images (values ``code / 255``),
whether or not they come from the cache (:mod:`pointcmt_pyg.render.cache`),
so a cached run and an uncached one see the same pixels.
:meth:`RenderViews.prerender` fills the cache in batches beforehand.
"""
import hashlib
import json
import os
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

from .._progress import progress_bar
from .cache import VIEW_ENCODING, ViewStore, decode_views, encode_views
from .mesh import MeshRenderer
from .points import ImageSize, PointRenderer, _check_channels

__all__ = ["RenderViews", "SOURCES"]

SOURCES = ("auto", "points", "mesh")


class RenderViews(BaseTransform):
    r"""Puts rendered views on ``data.views`` (``[1, V, C, H, W]``, float32).

    With ``source="auto"`` a sample with a mesh (``mesh_pos`` and
    ``mesh_face``) is ray-cast with :class:`~pointcmt_pyg.render.MeshRenderer`,
    any other sample is projected from ``pos`` with
    :class:`~pointcmt_pyg.render.PointRenderer`. Both use the same cameras and
    the same depth and shading encodings, so every channel means the same in
    both (point clouds shade with PCA normals,
    :func:`~pointcmt_pyg.render.estimate_normals`).

    Put this transform *before* random augmentation: with a cache, the views
    of a sample are rendered once (from whatever it looked like then) and
    reused for every later epoch.

    Args:
        num_views (int): Number of views ``V``. (default: ``6``)
        image_size (int or (int, int)): Image size. (default: ``64``)
        channels (sequence of str): Image channels (see
            :data:`pointcmt_pyg.render.CHANNELS`). (default: ``("depth",)``)
        splat (int): Point splat radius in pixels (point clouds only). (default: ``1``)
        normal_k (int): Neighbours of the point clouds' PCA normals
            (``"shading"`` and ``"normal"`` only). (default: ``16``)
        source (str): ``"auto"``, ``"points"`` (always project ``pos``) or
            ``"mesh"`` (require a mesh). (default: ``"auto"``)
        layout (str), up (int), padding (float), directions (Tensor, optional):
            Cameras, as in :func:`~pointcmt_pyg.render.camera_directions` and
            :func:`~pointcmt_pyg.render.view_frames`.
        cache_dir (str or Path, optional): When given, views are stored in
            a :class:`~pointcmt_pyg.render.cache.ViewStore` at
            ``cache_dir/<config hash>/`` (uint8 shards, written atomically,
            memory-mapped when read) and read back on later calls. The key is
            the sample's ``sample_id`` plus every setting that changes the
            images, so a changed configuration renders anew into its own
            folder. A sample missing from the cache is rendered and written
            as a one-sample shard; :meth:`prerender` renders a whole dataset
            in batches into one shard per chunk instead.

    Example:
        >>> dataset = ModelNet(root, transform=RenderViews(12, 64, cache_dir="views"))
        >>> dataset[0].views.shape
        torch.Size([1, 12, 1, 64, 64])
    """

    def __init__(self, num_views: int = 6, image_size: ImageSize = 64,
                 channels: Sequence[str] = ("depth",), splat: int = 1, source: str = "auto",
                 layout: str = "auto", up: int = 2, padding: float = 0.05,
                 directions: Optional[Union[Tensor, Sequence[Sequence[float]]]] = None,
                 cache_dir: Optional[Union[str, os.PathLike]] = None, normal_k: int = 16) -> None:
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        channels = _check_channels(channels)
        self.source, self.channels = source, channels
        self.mesh_renderer = MeshRenderer(num_views=num_views, image_size=image_size,
                                          channels=channels, directions=directions,
                                          layout=layout, up=up, padding=padding)
        self.point_renderer = PointRenderer(num_views=num_views, image_size=image_size,
                                            splat=splat, directions=directions, layout=layout,
                                            up=up, padding=padding, channels=channels,
                                            normal_k=normal_k)
        config = {"source": source, "points": self.point_renderer.config(),
                  "mesh": self.mesh_renderer.config(), "encoding": VIEW_ENCODING}
        self.config = config
        self.config_hash = hashlib.sha1(
            json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
        self.cache_dir = None if cache_dir is None else Path(cache_dir) / self.config_hash
        self.store = None if self.cache_dir is None else ViewStore(self.cache_dir)

    @staticmethod
    def _has_mesh(data: Data) -> bool:
        return (getattr(data, "mesh_pos", None) is not None
                and getattr(data, "mesh_face", None) is not None)

    def render(self, data: Data) -> Tensor:
        r"""Renders one sample without the cache: ``[V, C, H, W]`` float32
        holding 8-bit values (``code / 255``, as the cache stores them)."""
        return decode_views(self._render_codes(data))

    def _uses_mesh(self, data: Data) -> bool:
        return self.source == "mesh" or (self.source == "auto" and self._has_mesh(data))

    def _render_codes(self, data: Data) -> Any:
        return encode_views(self._render_float(data))

    def _render_float(self, data: Data) -> Tensor:
        if self._uses_mesh(data):
            if not self._has_mesh(data):
                raise ValueError(f"RenderViews(source='mesh') needs data.mesh_pos and "
                                 f"data.mesh_face (sample {getattr(data, 'sample_id', '?')!r} "
                                 "has no mesh)")
            return self.mesh_renderer(data.mesh_pos, data.mesh_face)
        return self.point_renderer(self._points(data))[0].cpu()

    def _points(self, data: Data) -> Tensor:
        pos = getattr(data, "pos", None)
        if not isinstance(pos, Tensor):
            raise ValueError(f"RenderViews needs data.pos (sample "
                             f"{getattr(data, 'sample_id', '?')!r} has none)")
        if pos.dim() != 2 or pos.size(1) != 3 or pos.size(0) == 0:
            raise ValueError(f"data.pos must be a non-empty [N, 3] tensor, got {tuple(pos.shape)}")
        return pos.float()

    @staticmethod
    def _sample_id(data: Data) -> str:
        sample_id = getattr(data, "sample_id", None)
        if not isinstance(sample_id, str) or not sample_id:
            raise ValueError("RenderViews with cache_dir needs a non-empty string "
                             f"data.sample_id to key the cache, got {sample_id!r}")
        return sample_id

    def _require_store(self) -> ViewStore:
        if self.store is None:
            raise ValueError("RenderViews has no cache_dir")
        return self.store

    def is_cached(self, sample_id: str) -> bool:
        r"""Whether the cache holds ``sample_id``'s views (needs ``cache_dir``)."""
        store = self._require_store()
        if sample_id not in store:
            store.refresh()  # another process (a DataLoader worker) may have added it
        return sample_id in store

    def _write_config(self) -> None:
        from ..train.checkpoint import atomic_write_text
        config_file = self.cache_dir / "config.json"
        if not config_file.exists():
            atomic_write_text(json.dumps(self.config, indent=1, sort_keys=True), config_file)

    def _cached(self, data: Data) -> Tensor:
        sample_id = self._sample_id(data)
        store = self._require_store()
        if self.is_cached(sample_id):
            return store.get(sample_id)
        codes = self._render_codes(data)
        self._write_config()
        store.add([sample_id], codes[None])
        return decode_views(codes)

    def prerender(self, dataset: Any, batch_size: int = 256, chunk_size: int = 4096,
                  progress: bool = True, desc: str = "render") -> int:
        r"""Renders every sample of ``dataset`` that the cache lacks, in batches.

        Point clouds go through :class:`~pointcmt_pyg.render.PointRenderer`
        ``batch_size`` shapes at a time (the same images as one at a time:
        each point's pixel does not depend on the other shapes); meshes are
        ray-cast one by one. Every ``chunk_size`` samples become one shard.

        Args:
            dataset: Indexable samples (``Data`` with ``sample_id`` and
                ``pos``, or a mesh), *without* this transform applied.
            batch_size (int): Point clouds rendered together. (default: ``256``)
            chunk_size (int): Samples per written shard. (default: ``4096``)
            progress (bool): Show a tqdm bar. (default: ``True``)
            desc (str): The bar's label.

        Returns:
            int: How many samples were rendered (the others were cached).
        """
        for name, value in (("batch_size", batch_size), ("chunk_size", chunk_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        store = self._require_store()
        store.refresh()
        rendered = 0
        ids: List[str] = []
        codes: List[Any] = []
        pending: List[Data] = []

        def flush_points() -> None:
            if not pending:
                return
            pos = [self._points(d) for d in pending]
            batch = torch.cat([torch.full((len(p),), i, dtype=torch.long)
                               for i, p in enumerate(pos)])
            images = self.point_renderer(torch.cat(pos), batch, batch_size=len(pos)).cpu()
            codes.extend(encode_views(images))
            ids.extend(self._sample_id(d) for d in pending)
            pending.clear()

        def flush_shard() -> None:
            flush_points()
            if ids:
                self._write_config()
                store.add(ids, np.stack(codes))
                ids.clear()
                codes.clear()

        seen = set()
        for i in progress_bar(range(len(dataset)), progress, desc=desc, unit="shape"):
            data = dataset[i]
            sample_id = self._sample_id(data)
            if sample_id in store or sample_id in seen:
                continue
            seen.add(sample_id)
            rendered += 1
            if self._uses_mesh(data):
                ids.append(sample_id)
                codes.append(self._render_codes(data))
            else:
                pending.append(data)
                if len(pending) == batch_size:
                    flush_points()
            if len(ids) + len(pending) >= chunk_size:
                flush_shard()
        flush_shard()
        return rendered

    def forward(self, data: Data) -> Data:
        views = self.render(data) if self.cache_dir is None else self._cached(data)
        data.views = views.to(torch.float32).unsqueeze(0)
        return data

    def __repr__(self) -> str:
        renderer = self.point_renderer
        return (f"{self.__class__.__name__}(num_views={renderer.num_views}, "
                f"image_size={renderer.image_size}, channels={self.channels}, "
                f"source={self.source!r}, cache_dir={str(self.cache_dir) if self.cache_dir else None})")
