r"""A PyG transform that renders each sample's views for PointCMT's image
teacher (`paper <https://arxiv.org/abs/2210.04208>`_), with a disk cache.

Rendering happens per sample, before collation: each ``Data`` gets
``views`` of shape ``[1, V, C, H, W]`` (float32), so that a PyG ``Batch``
holds ``[B, V, C, H, W]``.
"""
import hashlib
import json
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

from .mesh import MeshRenderer
from .points import ImageSize, PointRenderer

__all__ = ["RenderViews", "SOURCES"]

SOURCES = ("auto", "points", "mesh")


class RenderViews(BaseTransform):
    r"""Puts rendered views on ``data.views`` (``[1, V, C, H, W]``, float32).

    With ``source="auto"`` a sample with a mesh (``mesh_pos`` and
    ``mesh_face``) is ray-cast with :class:`~pointcmt_pyg.render.MeshRenderer`,
    any other sample is projected from ``pos`` with
    :class:`~pointcmt_pyg.render.PointRenderer`. Both use the same cameras and
    the same depth encoding, so the ``"depth"`` channel means the same in both.
    Point clouds only give ``"depth"``.

    Put this transform *before* random augmentation: with a cache, the views
    of a sample are rendered once (from whatever it looked like then) and
    reused for every later epoch.

    Args:
        num_views (int): Number of views ``V``. (default: ``6``)
        image_size (int or (int, int)): Image size. (default: ``64``)
        channels (sequence of str): Image channels (see
            :data:`pointcmt_pyg.render.CHANNELS`). (default: ``("depth",)``)
        splat (int): Point splat radius in pixels (point clouds only). (default: ``1``)
        source (str): ``"auto"``, ``"points"`` (always project ``pos``) or
            ``"mesh"`` (require a mesh). (default: ``"auto"``)
        layout (str), up (int), padding (float), directions (Tensor, optional):
            Cameras, as in :func:`~pointcmt_pyg.render.camera_directions` and
            :func:`~pointcmt_pyg.render.view_frames`.
        cache_dir (str or Path, optional): When given, views are stored as
            ``cache_dir/<config hash>/<sha1 of sample_id>.pt`` (written
            atomically) and read back on later calls. The key is the sample's
            ``sample_id`` plus every setting that changes the images, so a
            changed configuration renders anew into its own folder.

    Example:
        >>> dataset = ModelNet(root, transform=RenderViews(12, 64, cache_dir="views"))
        >>> dataset[0].views.shape
        torch.Size([1, 12, 1, 64, 64])
    """

    def __init__(self, num_views: int = 6, image_size: ImageSize = 64,
                 channels: Sequence[str] = ("depth",), splat: int = 1, source: str = "auto",
                 layout: str = "auto", up: int = 2, padding: float = 0.05,
                 directions: Optional[Union[Tensor, Sequence[Sequence[float]]]] = None,
                 cache_dir: Optional[Union[str, os.PathLike]] = None) -> None:
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        if isinstance(channels, str):
            channels = (channels,)
        channels = tuple(channels)
        if source == "points" and channels != ("depth",):
            raise ValueError(f"point clouds render only channels=('depth',), got {channels!r}")
        self.source, self.channels = source, channels
        self.mesh_renderer = MeshRenderer(num_views=num_views, image_size=image_size,
                                          channels=channels, directions=directions,
                                          layout=layout, up=up, padding=padding)
        self.point_renderer = PointRenderer(num_views=num_views, image_size=image_size,
                                            splat=splat, directions=directions, layout=layout,
                                            up=up, padding=padding)
        config = {"source": source, "points": self.point_renderer.config(),
                  "mesh": self.mesh_renderer.config()}
        self.config = config
        self.config_hash = hashlib.sha1(
            json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
        self.cache_dir = None if cache_dir is None else Path(cache_dir) / self.config_hash

    @staticmethod
    def _has_mesh(data: Data) -> bool:
        return (getattr(data, "mesh_pos", None) is not None
                and getattr(data, "mesh_face", None) is not None)

    def render(self, data: Data) -> Tensor:
        r"""Renders one sample without the cache: ``[V, C, H, W]`` float32."""
        use_mesh = self.source == "mesh" or (self.source == "auto" and self._has_mesh(data))
        if use_mesh:
            if not self._has_mesh(data):
                raise ValueError(f"RenderViews(source='mesh') needs data.mesh_pos and "
                                 f"data.mesh_face (sample {getattr(data, 'sample_id', '?')!r} "
                                 "has no mesh)")
            return self.mesh_renderer(data.mesh_pos, data.mesh_face)
        if self.channels != ("depth",):
            raise ValueError(f"sample {getattr(data, 'sample_id', '?')!r} has no mesh and point "
                             f"clouds render only channels=('depth',), not {self.channels!r}")
        pos = getattr(data, "pos", None)
        if not isinstance(pos, Tensor):
            raise ValueError(f"RenderViews needs data.pos (sample "
                             f"{getattr(data, 'sample_id', '?')!r} has none)")
        if pos.dim() != 2 or pos.size(1) != 3 or pos.size(0) == 0:
            raise ValueError(f"data.pos must be a non-empty [N, 3] tensor, got {tuple(pos.shape)}")
        return self.point_renderer(pos.float())[0].cpu()

    def cache_path(self, sample_id: str) -> Path:
        r"""The cache file of ``sample_id`` (needs ``cache_dir``)."""
        if self.cache_dir is None:
            raise ValueError("RenderViews has no cache_dir")
        return self.cache_dir / (hashlib.sha1(sample_id.encode("utf-8")).hexdigest() + ".pt")

    def _cached(self, data: Data) -> Tensor:
        sample_id = getattr(data, "sample_id", None)
        if not isinstance(sample_id, str) or not sample_id:
            raise ValueError("RenderViews with cache_dir needs a non-empty string "
                             f"data.sample_id to key the cache, got {sample_id!r}")
        path = self.cache_path(sample_id)
        if path.is_file():
            try:
                entry = torch.load(path, map_location="cpu", weights_only=True)
            except Exception:  # unreadable (e.g. foreign file): render and overwrite
                entry = None
            if isinstance(entry, dict) and entry.get("sample_id") == sample_id:
                return entry["views"]
        views = self.render(data)
        from ..train.checkpoint import atomic_save, atomic_write_text
        config_file = self.cache_dir / "config.json"
        if not config_file.exists():
            atomic_write_text(json.dumps(self.config, indent=1, sort_keys=True), config_file)
        atomic_save({"sample_id": sample_id, "views": views}, path)
        return views

    def forward(self, data: Data) -> Data:
        views = self.render(data) if self.cache_dir is None else self._cached(data)
        data.views = views.to(torch.float32).unsqueeze(0)
        return data

    def __repr__(self) -> str:
        renderer = self.point_renderer
        return (f"{self.__class__.__name__}(num_views={renderer.num_views}, "
                f"image_size={renderer.image_size}, channels={self.channels}, "
                f"source={self.source!r}, cache_dir={str(self.cache_dir) if self.cache_dir else None})")
