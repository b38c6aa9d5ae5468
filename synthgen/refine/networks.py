"""SOD-MTGAN's two networks, written for synthgen from the paper's description (Bai et al.,
ECCV 2018; no public implementation exists).

* :class:`SuperResolver` (G): a low-resolution region crop ``(N, 3, s, s)`` in [0, 1] becomes
  a ``(N, 3, 4s, 4s)`` one. A convolutional stem and residual blocks at the low resolution, two
  stride-2 de-convolutions (transposed 4x4 convolutions: the paper's 4x up-sampling), then
  residual refinement blocks at the high resolution and a 3-channel output convolution. The
  network predicts the difference to the bicubic up-sampling of its input (a global skip, as
  VDSR/EDSR do): G starts as bicubic interpolation and only has to learn the missing detail,
  which a short CPU budget can afford. No batch norm (EDSR: it hurts super-resolution, and a
  region's colours must not depend on the other regions of its batch).
* :class:`MultiTaskDiscriminator` (D): a classification trunk (torchvision's ResNet-18/50, or
  MobileNetV2) over a ``4s``-pixel crop, global average pooling, and three linear heads: real
  or fake (one logit), the class of the region (``K + 1`` logits, 0 the background) and
  class-specific box offsets (``4 K``, R-CNN deltas relative to the region's proposal).
"""

from __future__ import annotations

import urllib.error
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from synthgen.errors import InputError, NotAvailableError

SCALE = 4  # the paper's up-sampling factor
TRUNKS = ("mobilenet_v2", "resnet18", "resnet50")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class _Residual(nn.Module):
    """conv 3x3 - PReLU - conv 3x3, added to the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.PReLU(channels), nn.Conv2d(channels, channels, 3, padding=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SuperResolver(nn.Module):
    """G: 4x super-resolution of region crops (see the module docstring). ``channels`` is the
    width, ``blocks`` the number of residual blocks before the up-sampling and ``refine_blocks``
    after it."""

    def __init__(self, channels: int = 64, blocks: int = 4, refine_blocks: int = 2) -> None:
        super().__init__()
        if min(channels, blocks, refine_blocks) < 1:
            raise InputError(f"the generator needs at least 1 channel and 1 block of each kind, got {channels}, {blocks}, {refine_blocks}")
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.PReLU(channels))
        self.low = nn.Sequential(*(_Residual(channels) for _ in range(blocks)))
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1), nn.PReLU(channels),
            nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1), nn.PReLU(channels),
        )
        self.refine = nn.Sequential(*(_Residual(channels) for _ in range(refine_blocks)))
        self.out = nn.Conv2d(channels, 3, 3, padding=1)
        nn.init.zeros_(self.out.weight)  # starts as bicubic up-sampling exactly
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.stem(x)
        features = features + self.low(features)
        detail = self.out(self.refine(self.upsample(features)))
        base = F.interpolate(x, scale_factor=SCALE, mode="bicubic", align_corners=False)
        return base + detail


def _trunk(name: str, pretrained: bool) -> tuple[nn.Module, int]:
    """The feature layers of a torchvision classifier and their output width."""
    from torchvision import models

    if name not in TRUNKS:
        raise InputError(f"unknown discriminator trunk {name!r}; choose one of: {', '.join(TRUNKS)}")
    weights = {
        "mobilenet_v2": models.MobileNet_V2_Weights.IMAGENET1K_V1,
        "resnet18": models.ResNet18_Weights.IMAGENET1K_V1,
        "resnet50": models.ResNet50_Weights.IMAGENET1K_V1,
    }[name] if pretrained else None
    if weights is not None:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        try:
            net = getattr(models, name)(weights=weights)
        except (urllib.error.URLError, OSError, RuntimeError) as err:
            raise NotAvailableError(
                f"the ImageNet weights of the {name} trunk are not available ({cached} is missing and downloading "
                f"failed: {type(err).__name__}). Pass --no-pretrained-trunk to start it from random weights, or "
                "--trunk mobilenet_v2, whose file synthgen's detectors use too"
            ) from None
    else:
        net = getattr(models, name)(weights=None)
    if name == "mobilenet_v2":
        return net.features, net.last_channel
    layers = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
    return layers, net.fc.in_features


class MultiTaskDiscriminator(nn.Module):
    """D: trunk + pooled features + three heads, on ``[0, 1]`` crops (normalised inside).
    ``forward`` returns ``(real_logit (N,), class_logits (N, K+1), box_deltas (N, K, 4))``."""

    def __init__(self, num_classes: int, trunk: str = "mobilenet_v2", pretrained: bool = True) -> None:
        super().__init__()
        if num_classes < 1:
            raise InputError(f"the discriminator needs at least one object class, got {num_classes}")
        self.num_classes = num_classes
        self.trunk, width = _trunk(trunk, pretrained)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.fc_gan = nn.Linear(width, 1)
        self.fc_cls = nn.Linear(width, num_classes + 1)
        self.fc_reg = nn.Linear(width, 4 * num_classes)
        for head, std in ((self.fc_gan, 0.01), (self.fc_cls, 0.01), (self.fc_reg, 0.001)):  # Fast R-CNN's head init
            nn.init.normal_(head.weight, std=std)
            nn.init.zeros_(head.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.trunk((x - self.mean) / self.std)
        pooled = torch.flatten(F.adaptive_avg_pool2d(features, 1), 1)
        return self.fc_gan(pooled).squeeze(1), self.fc_cls(pooled), self.fc_reg(pooled).view(-1, self.num_classes, 4)


def build_networks(architecture: dict[str, Any], pretrained_trunk: bool = False) -> tuple[SuperResolver, MultiTaskDiscriminator]:
    """G and D of a run's ``architecture`` (random weights; ImageNet trunk with ``pretrained_trunk``)."""
    generator = SuperResolver(int(architecture["channels"]), int(architecture["blocks"]), int(architecture["refine_blocks"]))
    discriminator = MultiTaskDiscriminator(int(architecture["num_classes"]), str(architecture["trunk"]), pretrained_trunk)
    return generator, discriminator
