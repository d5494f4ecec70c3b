r"""The multi-view image teacher of PointCMT (Stage I of `Yan et al., "Let Images
Give You More", NeurIPS 2022 <https://arxiv.org/abs/2210.04208>`_).

Every rendered view of a shape runs through the same torchvision ResNet
(ResNet-18 by default, as in the paper); the per-view features are
max-pooled over the views into one global image feature (512-d for
ResNet-18), and a linear head classifies it. The global feature is what the
CMPG and the point-cloud student learn from.
"""
import os
from pathlib import Path
from typing import Any, Dict, Union

import torch
from torch import Tensor, nn

__all__ = ["RESNET_BACKBONES", "MultiViewTeacher", "adapt_first_conv", "narrow_resnet18",
           "save_teacher", "load_teacher"]

PathLike = Union[str, os.PathLike]

RESNET_BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                    "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d",
                    "wide_resnet50_2", "wide_resnet101_2", "resnet18_w16")


def narrow_resnet18(width: int = 16) -> nn.Module:
    r"""A ResNet-18 with ``width``, ``2 width``, ``4 width``, ``8 width``
    channels in its four stages instead of 64 ... 512: with ``width=16`` a
    quarter of the channels (0.7 M parameters instead of 11.2 M, a 128-d
    feature), the lighter backbone of SimpleView (`Goyal et al., ICML 2021
    <https://arxiv.org/abs/2106.05304>`_), whose depth-image classifier uses
    ResNet-18 at that width. A ``torchvision.models.ResNet`` (same layer names
    and initialisation), so it fits wherever a torchvision ResNet does."""
    from torchvision.models.resnet import BasicBlock, ResNet
    _check_positive_int("width", width)
    net = ResNet(BasicBlock, [2, 2, 2, 2])
    net.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    net.inplanes = width
    net.layer1 = net._make_layer(BasicBlock, width, 2)
    net.layer2 = net._make_layer(BasicBlock, 2 * width, 2, stride=2)
    net.layer3 = net._make_layer(BasicBlock, 4 * width, 2, stride=2)
    net.layer4 = net._make_layer(BasicBlock, 8 * width, 2, stride=2)
    net.fc = nn.Linear(8 * width, 1000)
    for m in net.modules():   # torchvision's initialisation of the replaced layers
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return net

_TEACHER_FORMAT = "pointcmt_pyg.MultiViewTeacher"


def _check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def adapt_first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    r"""Returns a copy of ``conv`` that takes ``in_channels`` input channels
    (``conv`` itself when it already does).

    The new kernel is the old one averaged over its input channels and scaled
    by ``old_in / in_channels``: an image whose ``in_channels`` channels are
    all equal gives the same response as the old layer on an image whose
    channels are all that value (for a 3-channel ImageNet kernel and one
    channel: the sum over RGB). So pretrained weights stay meaningful.
    """
    _check_positive_int("in_channels", in_channels)
    if conv.in_channels == in_channels:
        return conv
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
                    device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        mean = conv.weight.mean(dim=1, keepdim=True)
        new.weight.copy_(mean.expand(-1, in_channels, -1, -1) * (conv.in_channels / in_channels))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


class MultiViewTeacher(nn.Module):
    r"""Per-view torchvision ResNet, max over views, linear head.

    Args:
        num_classes (int): Number of classes of the head.
        backbone (str): A torchvision ResNet by name, one of
            :data:`RESNET_BACKBONES`; ``"resnet18_w16"`` is the lighter
            SimpleView-style ResNet-18 with a quarter of the channels
            (:func:`narrow_resnet18`, 128-d feature, no pretrained weights).
            (default: ``"resnet18"``)
        in_channels (int): Channels ``C`` of the views (1 for depth images,
            3 for RGB / normals). The first convolution is adapted with
            :func:`adapt_first_conv` when ``C != 3``. (default: ``1``)
        weights: Passed to torchvision (e.g. ``"IMAGENET1K_V1"`` or a
            ``ResNet18_Weights`` member) to start from pretrained weights;
            needs the internet or torchvision's download cache.
            (default: ``None``, random initialisation)

    Attributes:
        backbone (nn.Module): The ResNet without its ``fc`` (it returns the
            pooled per-view feature).
        head (nn.Linear): ``feat_dim -> num_classes``.
        feat_dim (int): Size of the global image feature (512 for ResNet-18).

    Example:
        >>> teacher = MultiViewTeacher(num_classes=40)
        >>> feat = teacher.features(batch.views)    # [B, 512]
        >>> logits = teacher(batch.views)           # [B, 40]
    """

    def __init__(self, num_classes: int, backbone: str = "resnet18", in_channels: int = 1,
                 weights: Any = None) -> None:
        super().__init__()
        _check_positive_int("num_classes", num_classes)
        _check_positive_int("in_channels", in_channels)
        if backbone not in RESNET_BACKBONES:
            raise ValueError(f"backbone must be a torchvision ResNet, one of {RESNET_BACKBONES}, "
                             f"got {backbone!r}")
        import torchvision

        if backbone == "resnet18_w16":
            if weights is not None:
                raise ValueError("backbone 'resnet18_w16' has no pretrained weights: pass weights=None")
            net = narrow_resnet18(16)
        else:
            net = torchvision.models.get_model(backbone, weights=weights)
        if not isinstance(net, torchvision.models.ResNet):  # pragma: no cover
            raise ValueError(f"torchvision's {backbone!r} is not a ResNet")
        net.conv1 = adapt_first_conv(net.conv1, in_channels)
        feat_dim = net.fc.in_features
        net.fc = nn.Identity()
        self.backbone = net
        self.head = nn.Linear(feat_dim, num_classes)
        self.num_classes, self.backbone_name = num_classes, backbone
        self.in_channels, self.feat_dim = in_channels, feat_dim

    def config(self) -> Dict[str, Any]:
        r"""The constructor arguments (without ``weights``: the state_dict has them)."""
        return {"num_classes": self.num_classes, "backbone": self.backbone_name,
                "in_channels": self.in_channels}

    def extra_repr(self) -> str:
        return (f"backbone={self.backbone_name!r}, in_channels={self.in_channels}, "
                f"feat_dim={self.feat_dim}, num_classes={self.num_classes}")

    def _check_views(self, views: Tensor) -> None:
        if not isinstance(views, Tensor):
            raise TypeError(f"views must be a tensor [B, V, C, H, W], got {type(views).__name__}")
        if views.dim() != 5:
            raise ValueError(f"views must have 5 dimensions [B, V, C, H, W], got shape "
                             f"{tuple(views.shape)} (a single shape's views [V, C, H, W] "
                             "need a leading batch dimension)")
        if views.size(2) != self.in_channels:
            raise ValueError(f"views have {views.size(2)} channels (dim 2 of "
                             f"{tuple(views.shape)}), the teacher takes in_channels="
                             f"{self.in_channels}")
        if views.size(0) == 0 or views.size(1) == 0:
            raise ValueError(f"views must hold at least one shape and one view, got "
                             f"{tuple(views.shape)}")
        if not views.is_floating_point():
            raise TypeError(f"views must be floating point, got {views.dtype}")

    def view_features(self, views: Tensor) -> Tensor:
        r"""Per-view features ``[B, V, feat_dim]`` of ``views [B, V, C, H, W]``."""
        self._check_views(views)
        B, V = views.shape[:2]
        feats = self.backbone(views.flatten(0, 1))
        return feats.view(B, V, -1)

    def features(self, views: Tensor) -> Tensor:
        r"""The global image feature ``[B, feat_dim]``: per-view ResNet
        features max-pooled over the ``V`` views."""
        return self.view_features(views).amax(dim=1)

    def forward(self, views: Tensor) -> Tensor:
        r"""Class logits ``[B, num_classes]`` of ``views [B, V, C, H, W]``."""
        return self.head(self.features(views))


# ------------------------------------------------------------------ files
def _save_module(module: nn.Module, config: Dict[str, Any], fmt: str, path: PathLike) -> Path:
    from ..train.checkpoint import atomic_save  # lazy: keeps `nn` free of the trainer
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    return atomic_save({"format": fmt, "format_version": 1, "config": dict(config),
                        "state_dict": state}, path)


def _load_payload(path: PathLike, fmt: str, map_location: Any) -> Dict[str, Any]:
    from ..train.checkpoint import load_checkpoint
    payload = load_checkpoint(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{str(path)!r} is not a {fmt.split('.')[-1]} file (format {got!r}); "
                         f"write it with save_{'teacher' if 'Teacher' in fmt else 'cmpg'}")
    if not isinstance(payload.get("config"), dict) or not isinstance(payload.get("state_dict"), dict):
        raise ValueError(f"{str(path)!r} lacks its config or state_dict")
    return payload


def _finish_load(module: nn.Module, payload: Dict[str, Any], path: PathLike,
                 map_location: Any) -> nn.Module:
    try:
        module.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as error:
        raise ValueError(f"the state_dict in {str(path)!r} does not fit its config: {error}") from None
    if isinstance(map_location, (str, torch.device)):
        module.to(map_location)
    return module.eval()


def save_teacher(teacher: MultiViewTeacher, path: PathLike) -> Path:
    r"""Writes ``teacher`` (constructor config + ``state_dict``) to ``path``
    atomically (temporary file, then rename).

    Raises:
        TypeError: ``teacher`` is not a :class:`MultiViewTeacher`.
    """
    if not isinstance(teacher, MultiViewTeacher):
        raise TypeError(f"teacher must be a MultiViewTeacher, got {type(teacher).__name__}")
    return _save_module(teacher, teacher.config(), _TEACHER_FORMAT, path)


def load_teacher(path: PathLike, map_location: Any = "cpu") -> MultiViewTeacher:
    r"""Reads a teacher written by :func:`save_teacher`.

    Args:
        path: The file.
        map_location: As :func:`torch.load`; a device (string or
            ``torch.device``) also moves the module there. (default: ``"cpu"``)

    Returns:
        MultiViewTeacher: In eval mode.

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file is not a teacher file, or is damaged.
    """
    payload = _load_payload(path, _TEACHER_FORMAT, map_location)
    try:
        teacher = MultiViewTeacher(**payload["config"])
    except TypeError as error:
        raise ValueError(f"bad teacher config in {str(path)!r}: {error}") from None
    return _finish_load(teacher, payload, path, map_location)
