"""The networks of learned insertion: CycleGAN's ResNet generator and 70x70 PatchGAN
discriminator (Zhu et al. 2017, as DetectorGAN uses them), written for synthgen, and the image
history pool.

Architecture facts followed (CycleGAN ``resnet_9blocks`` / ``basic`` D): reflection-padded 7x7
stem with ``ngf`` filters, two stride-2 3x3 downsamplings, ``n_blocks`` residual blocks of two
3x3 convolutions at ``4 ngf`` channels, two stride-2 transposed 3x3 upsamplings, a 7x7 output
convolution and tanh; instance norm without affine parameters or running statistics, so the
convolutions carry biases. The discriminator is four 4x4 convolutions (stride 2, 2, 2, 1;
``ndf`` doubling to ``8 ndf``; no norm on the first, LeakyReLU 0.2) and a 4x4 one-channel
output: each output pixel sees a 70x70 patch. Weights start from N(0, 0.02).

DetectorGAN's generator takes the image and a box-mask channel. Here its output is blended into
the input only near the boxes (:func:`insertion_weight`): pixels farther than the margin from
every box are the input's, exactly, so an inserted image differs from the clean image only
around the object it received.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch import nn


def _norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            _norm(channels),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            _norm(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """``in_channels`` -> 3-channel tanh image, same size (a multiple of 4)."""

    def __init__(self, in_channels: int, ngf: int = 64, n_blocks: int = 9) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7), _norm(ngf), nn.ReLU(True)]
        width = ngf
        for _ in range(2):
            layers += [nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), _norm(2 * width), nn.ReLU(True)]
            width *= 2
        layers += [ResidualBlock(width) for _ in range(n_blocks)]
        for _ in range(2):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 3, stride=2, padding=1, output_padding=1),
                _norm(width // 2),
                nn.ReLU(True),
            ]
            width //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, 3, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PatchDiscriminator(nn.Module):
    """The 70x70 PatchGAN: an image -> a map of real/fake scores (LSGAN: no sigmoid)."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        width = ndf
        for n in range(1, n_layers + 1):
            out = ndf * min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(width, out, 4, stride=stride, padding=1), _norm(out), nn.LeakyReLU(0.2, True)]
            width = out
        layers.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def init_weights(module: nn.Module, gain: float = 0.02) -> None:
    """CycleGAN's ``normal`` init: conv weights N(0, gain), biases 0."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(layer.weight, 0.0, gain)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def box_mask(boxes: list[torch.Tensor], size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``N x 1 x size x size`` masks, 1 inside any of image n's boxes (``K x 4`` xyxy pixels;
    a pixel is inside when its centre is), else 0."""
    centres = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    masks = torch.zeros(len(boxes), 1, size, size, device=device)
    for n, image_boxes in enumerate(boxes):
        for x0, y0, x1, y1 in image_boxes.tolist():
            cols = (centres >= x0) & (centres < x1)
            rows = (centres >= y0) & (centres < y1)
            masks[n, 0] = torch.maximum(masks[n, 0], (rows[:, None] & cols[None, :]).float())
    return masks


def insertion_weight(boxes: list[torch.Tensor], size: int, margin: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """``N x 1 x size x size`` blend weights of the generator's output: 1 inside each box and
    falling linearly to 0 over ``margin x`` the box's shorter side (at least 2 px) around it;
    exactly 0 beyond."""
    centres = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    weights = torch.zeros(len(boxes), 1, size, size, device=device)
    for n, image_boxes in enumerate(boxes):
        for x0, y0, x1, y1 in image_boxes.tolist():
            ramp = max(2.0, margin * min(x1 - x0, y1 - y0))
            dx = torch.clamp(torch.maximum(x0 - centres, centres - x1), min=0)
            dy = torch.clamp(torch.maximum(y0 - centres, centres - y1), min=0)
            distance = torch.maximum(dy[:, None], dx[None, :])
            weights[n, 0] = torch.maximum(weights[n, 0], torch.clamp(1 - distance / ramp, min=0))
    return weights


class BoxGenerator(nn.Module):
    """A ResNet generator conditioned on a box mask, changing the image only near the boxes:
    ``forward(images, boxes)`` with images ``N x 3 x S x S`` in [-1, 1] and ``boxes`` a list of
    ``K x 4`` xyxy pixel tensors per image."""

    def __init__(self, size: int, ngf: int = 64, n_blocks: int | None = None, margin: float = 0.25) -> None:
        super().__init__()
        if n_blocks is None:
            n_blocks = 9 if size >= 256 else 6  # CycleGAN: 9 blocks at 256 px, 6 at 128 px and less
        self.size, self.margin = size, margin
        self.net = ResnetGenerator(4, ngf, n_blocks)

    def forward(self, images: torch.Tensor, boxes: list[torch.Tensor]) -> torch.Tensor:
        mask = box_mask(boxes, self.size, images.device).to(images.dtype)
        drawn = self.net(torch.cat([images, 2 * mask - 1], dim=1))
        weight = insertion_weight(boxes, self.size, self.margin, images.device).to(images.dtype)
        return images * (1 - weight) + drawn * weight


class ImagePool:
    """CycleGAN's history of generated images: the discriminator sees a past fake with
    probability 1/2 once the pool is full (Shrivastava et al. 2017), which steadies training.
    Draws come from its own seeded ``random.Random`` so runs repeat."""

    def __init__(self, capacity: int = 50, seed: int = 0) -> None:
        self.capacity = capacity
        self.images: list[torch.Tensor] = []
        self.rng = random.Random(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.capacity == 0:
            return images
        out = []
        for image in images.detach():
            if len(self.images) < self.capacity:
                self.images.append(image.clone())
                out.append(image)
            elif self.rng.random() < 0.5:
                k = self.rng.randrange(self.capacity)
                out.append(self.images[k].clone())
                self.images[k] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict:
        return {"images": list(self.images), "rng": list(self.rng.getstate()[1]), "version": self.rng.getstate()[0], "gauss": self.rng.getstate()[2]}

    def load_state_dict(self, state: dict) -> None:
        self.images = list(state["images"])
        self.rng.setstate((state["version"], tuple(state["rng"]), state["gauss"]))
