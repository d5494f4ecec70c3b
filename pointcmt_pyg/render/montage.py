r"""A montage PNG of one shape's rendered views: what PointCMT's image teacher
sees (`paper <https://arxiv.org/abs/2210.04208>`_). Uses matplotlib's
headless Agg canvas; no display needed."""
import math
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

__all__ = ["save_montage"]


def save_montage(views: Union[Tensor, np.ndarray], path: Union[str, os.PathLike],
                 ncols: Optional[int] = None, title: Optional[str] = None,
                 view_titles: Optional[Sequence[str]] = None, cmap: str = "gray",
                 tile_inches: float = 1.6, dpi: int = 100) -> Path:
    r"""Saves a grid of one shape's views as a PNG.

    One-channel views are drawn with ``cmap`` on the fixed range ``[0, 1]``
    (the renderers' range; the background is black), three-channel views as
    RGB; with any other channel count every channel gets its own row block.

    Args:
        views: ``[V, C, H, W]`` or ``[1, V, C, H, W]`` (a sample's ``data.views``).
        path: Output PNG; its directory is created when missing.
        ncols (int, optional): Tiles per row. (default: ``ceil(sqrt(V))``)
        title (str, optional): Figure title (e.g. the sample id and label).
        view_titles (sequence of str, optional): One caption per view.
        cmap (str): Matplotlib colour map for one-channel tiles.
        tile_inches (float): Size of one tile in inches.
        dpi (int): Resolution of the PNG.

    Returns:
        Path: ``path``.
    """
    if isinstance(views, np.ndarray):
        views = torch.from_numpy(views)
    if not isinstance(views, Tensor):
        raise TypeError(f"views must be a tensor or array, got {type(views).__name__}")
    if views.dim() == 5 and views.size(0) == 1:
        views = views[0]
    if views.dim() != 4 or views.size(0) == 0:
        raise ValueError(f"views must be [V, C, H, W] or [1, V, C, H, W], got {tuple(views.shape)}")
    views = views.detach().float().cpu()
    V, C = views.shape[:2]
    if C in (1, 3):
        tiles = [views[v] for v in range(V)]
        captions = list(view_titles) if view_titles is not None else [f"view {v}" for v in range(V)]
    else:
        tiles = [views[v, c:c + 1] for c in range(C) for v in range(V)]
        base = list(view_titles) if view_titles is not None else [f"view {v}" for v in range(V)]
        captions = [f"{base[v]} ch {c}" for c in range(C) for v in range(V)]
    if view_titles is not None and len(view_titles) != V:
        raise ValueError(f"view_titles has {len(view_titles)} entries for {V} views")
    if ncols is None:
        ncols = V if C not in (1, 3) else math.ceil(math.sqrt(V))
    if not isinstance(ncols, int) or isinstance(ncols, bool) or ncols < 1:
        raise ValueError(f"ncols must be a positive int, got {ncols!r}")
    nrows = math.ceil(len(tiles) / ncols)

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(tile_inches * ncols, tile_inches * nrows + (0.4 if title else 0)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k >= len(tiles):
            continue
        tile = tiles[k]
        if tile.size(0) == 3:
            ax.imshow(tile.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
        else:
            ax.imshow(tile[0].numpy(), cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(captions[k], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return path
