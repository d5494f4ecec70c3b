r"""The Cross-Modal Point Generator (CMPG) of PointCMT (Stage II of `Yan et al.,
"Let Images Give You More", NeurIPS 2022 <https://arxiv.org/abs/2210.04208>`_).

The CMPG decodes a global feature into a point cloud. It is trained once to
reconstruct each shape's points from the teacher's image feature (EMD loss),
then frozen; in Stage III it maps both the student's point feature and the
teacher's image feature into point clouds whose EMD is the feature
enhancement loss. As in the paper (and the official code) it is a single
``Dropout(0.5)`` + ``Linear(512, 3 * 1024, bias=False)``; hidden layers and
the point count are configurable here.
"""
import os
from pathlib import Path
from typing import Any, Dict, Sequence, Union

from torch import Tensor, nn

from .teacher import _finish_load, _load_payload, _save_module

__all__ = ["CMPG", "save_cmpg", "load_cmpg"]

PathLike = Union[str, os.PathLike]

_CMPG_FORMAT = "pointcmt_pyg.CMPG"


def _check_positive_int(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class CMPG(nn.Module):
    r"""Cross-Modal Point Generator: a global feature ``[B, in_dim]`` to a
    point cloud ``[B, num_points, 3]``.

    Structure: every ``Linear`` is preceded by ``Dropout(dropout)``; hidden
    layers (``Linear`` with bias, then ``ReLU``) have the sizes in ``hidden``;
    the output layer is ``Linear(last, 3 * num_points, bias=False)``, and its
    output is read as ``num_points`` consecutive ``(x, y, z)`` triples. With
    the defaults this is exactly the paper's
    ``Sequential(Dropout(0.5), Linear(512, 3072, bias=False))``.

    Args:
        in_dim (int): Feature size ``D`` (the teacher's ``feat_dim``). (default: ``512``)
        num_points (int): Number of generated points ``P``. (default: ``1024``)
        hidden (sequence of int): Hidden layer sizes. (default: ``()``)
        dropout (float): Dropout probability in ``[0, 1)``. (default: ``0.5``)

    Attributes:
        net (nn.Sequential): The layers.

    Example:
        >>> cmpg = CMPG(in_dim=teacher.feat_dim)
        >>> points = cmpg(teacher.features(views))   # [B, 1024, 3]
    """

    def __init__(self, in_dim: int = 512, num_points: int = 1024, hidden: Sequence[int] = (),
                 dropout: float = 0.5) -> None:
        super().__init__()
        _check_positive_int("in_dim", in_dim)
        _check_positive_int("num_points", num_points)
        if isinstance(hidden, int) or not all(
                isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden):
            raise ValueError(f"hidden must be a sequence of positive ints, got {hidden!r}")
        if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")
        self.in_dim, self.num_points = in_dim, num_points
        self.hidden, self.dropout = tuple(int(h) for h in hidden), float(dropout)
        layers = []
        prev = in_dim
        for size in self.hidden:
            layers += [nn.Dropout(self.dropout), nn.Linear(prev, size), nn.ReLU(inplace=True)]
            prev = size
        layers += [nn.Dropout(self.dropout), nn.Linear(prev, 3 * num_points, bias=False)]
        self.net = nn.Sequential(*layers)

    def config(self) -> Dict[str, Any]:
        r"""The constructor arguments."""
        return {"in_dim": self.in_dim, "num_points": self.num_points,
                "hidden": list(self.hidden), "dropout": self.dropout}

    def forward(self, f: Tensor) -> Tensor:
        r"""Generates points ``[B, num_points, 3]`` from features ``f [B, in_dim]``."""
        if not isinstance(f, Tensor):
            raise TypeError(f"f must be a tensor [B, {self.in_dim}], got {type(f).__name__}")
        if f.dim() != 2 or f.size(1) != self.in_dim:
            raise ValueError(f"f must have shape [B, {self.in_dim}] (in_dim={self.in_dim}), "
                             f"got {tuple(f.shape)}")
        if not f.is_floating_point():
            raise TypeError(f"f must be floating point, got {f.dtype}")
        return self.net(f).view(f.size(0), self.num_points, 3)


def save_cmpg(cmpg: CMPG, path: PathLike) -> Path:
    r"""Writes ``cmpg`` (constructor config + ``state_dict``) to ``path``
    atomically (temporary file, then rename).

    Raises:
        TypeError: ``cmpg`` is not a :class:`CMPG`.
    """
    if not isinstance(cmpg, CMPG):
        raise TypeError(f"cmpg must be a CMPG, got {type(cmpg).__name__}")
    return _save_module(cmpg, cmpg.config(), _CMPG_FORMAT, path)


def load_cmpg(path: PathLike, map_location: Any = "cpu") -> CMPG:
    r"""Reads a CMPG written by :func:`save_cmpg`.

    Args:
        path: The file.
        map_location: As :func:`torch.load`; a device (string or
            ``torch.device``) also moves the module there. (default: ``"cpu"``)

    Returns:
        CMPG: In eval mode (dropout off).

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file is not a CMPG file, or is damaged.
    """
    payload = _load_payload(path, _CMPG_FORMAT, map_location)
    try:
        cmpg = CMPG(**payload["config"])
    except TypeError as error:
        raise ValueError(f"bad CMPG config in {str(path)!r}: {error}") from None
    return _finish_load(cmpg, payload, path, map_location)
