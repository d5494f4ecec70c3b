r"""View rendering for PointCMT's image teacher (`paper <https://arxiv.org/abs/2210.04208>`_).

* :func:`render_points` / :class:`PointRenderer`: batched point clouds to
  depth, silhouette and shaded images (orthographic projection, z-buffer by
  scatter-min, PCA normals), pure torch.
* :func:`render_mesh`: triangle meshes to depth / shaded-normal images with
  open3d's headless ``RaycastingScene`` (no OpenGL).
* :func:`save_montage`: a PNG of one shape's views, to look at what the teacher sees.
* :class:`RenderViews`: a PyG transform that puts ``views`` ``[1, V, C, H, W]``
  on each ``Data`` (mesh when present, else points), with an optional disk cache.
* :class:`ViewStore`: that cache, uint8 views in memory-mapped shards
  (:meth:`RenderViews.prerender` fills it in batches).
"""
from .cameras import LAYOUTS, camera_directions, view_frames
from .points import CHANNELS, PointRenderer, estimate_normals, render_points
from .mesh import MeshRenderer, read_off, render_mesh
from .montage import save_montage
from .cache import ViewStore, decode_views, encode_views
from .transforms import RenderViews

__all__ = [
    "LAYOUTS",
    "camera_directions",
    "view_frames",
    "PointRenderer",
    "render_points",
    "estimate_normals",
    "CHANNELS",
    "MeshRenderer",
    "render_mesh",
    "read_off",
    "save_montage",
    "RenderViews",
    "ViewStore",
    "encode_views",
    "decode_views",
]
