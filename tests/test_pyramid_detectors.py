"""The feature-pyramid detectors on MobileNetV2 (retinanet-mbv2, fcos-mbv2, fasterrcnn-mbv2) and
anchors fitted to the data: they train, reload exactly, and old checkpoints still load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from synthgen.detectors import (
    DETECTORS,
    AnchorSpec,
    BackboneInit,
    anchors_from_boxes,
    anchors_from_coco,
    build_detector,
    check_anchors,
    default_anchors,
    load_detector,
    read_checkpoint,
    save_checkpoint,
)
from synthgen.errors import InputError
from synthgen.training.data import open_source
from synthgen.training.loop import finetune, train
from tests.test_training import config, make_coco

PYRAMID = ["retinanet-mbv2", "fcos-mbv2", "fasterrcnn-mbv2"]
CATEGORIES = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
SIZE = 64


def _batch(seed: int) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, SIZE, SIZE, generator=g) for _ in range(2)]
    targets = [
        {"boxes": torch.tensor([[8.0, 6.0, 30.0, 50.0]]), "labels": torch.tensor([2])},
        {"boxes": torch.tensor([[20.0, 20.0, 44.0, 40.0], [2.0, 2.0, 12.0, 12.0]]), "labels": torch.tensor([1, 2])},
    ]
    return images, targets


def _same_predictions(a: torch.nn.Module, b: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, 48, 80, generator=g), torch.rand(3, 80, 60, generator=g)]  # not square: resized inside
    with torch.no_grad():
        expected, got = a.eval()(images), b.eval()(images)
    assert any(len(out["boxes"]) for out in expected)
    for x, y in zip(expected, got):
        for key in ("boxes", "scores", "labels"):
            torch.testing.assert_close(x[key], y[key])


@pytest.mark.parametrize("name", PYRAMID)
def test_pyramid_detector_trains_and_reloads_with_identical_predictions(tmp_path, name):
    torch.manual_seed(0)
    # The ImageNet layout (frozen batch norm, frozen first blocks) without the ImageNet file.
    model = DETECTORS.get(name).build(2, SIZE, BackboneInit(imagenet_layout=True, load_weights=False), None)
    frozen = model.backbone.body["0"][0].weight
    before = frozen.detach().clone()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    for step in range(2):
        losses = model(*_batch(step))
        loss = sum(losses.values())
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.equal(frozen, before)  # the ImageNet stem stays as it was
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, detector=name, categories=CATEGORIES, image_size=SIZE, pretrained_backbone=True, step=2)
    loaded, meta = load_detector(path)
    assert (meta.detector, meta.num_classes, meta.image_size, meta.anchors) == (name, 2, SIZE, None)
    _same_predictions(model, loaded, seed=5)
    # predictions come back in the input image's pixels, labels in 1..num_classes (and the
    # sigmoid detectors' never-trained class 0, which evaluation drops)
    with torch.no_grad():
        out = loaded([torch.rand(3, 48, 80)])[0]
    if len(out["boxes"]):
        assert float(out["boxes"][:, 2].max()) <= 80 + 1e-3 and float(out["boxes"][:, 3].max()) <= 48 + 1e-3
        assert 0 <= int(out["labels"].min()) and int(out["labels"].max()) <= 2


def test_pyramid_has_a_stride_8_level_for_small_objects():
    model = build_detector("retinanet-mbv2", 1, 128, pretrained_backbone=False)
    with torch.no_grad():
        features = model.backbone(torch.rand(1, 3, 128, 128))
    assert [tuple(f.shape[-2:]) for f in features.values()] == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    assert all(f.shape[1] == 128 for f in features.values())


def test_anchors_are_fitted_to_the_box_quantiles():
    rng = np.random.default_rng(0)
    sizes = np.exp(rng.uniform(np.log(10), np.log(100), 400))
    ratios = np.exp(rng.uniform(np.log(1.0), np.log(3.0), 400))  # height / width
    widths, heights = sizes / np.sqrt(ratios), sizes * np.sqrt(ratios)
    retina = anchors_from_boxes("retinanet-mbv2", widths, heights)
    flat = [v for level in retina.sizes for v in level]
    assert len(retina.sizes) == 5 and all(len(level) == 3 for level in retina.sizes)
    assert flat == sorted(flat)  # smallest anchors on the finest level
    assert flat[0] == pytest.approx(np.percentile(sizes, 2), rel=0.01)
    assert flat[-1] == pytest.approx(np.percentile(sizes, 98), rel=0.01)
    assert retina.aspect_ratios == pytest.approx(np.percentile(ratios, [10, 50, 90]), rel=0.01)
    rcnn = anchors_from_boxes("fasterrcnn-mbv2", widths, heights)
    assert len(rcnn.sizes) == 4 and all(len(level) == 1 for level in rcnn.sizes)
    with pytest.raises(InputError, match="at least 2 boxes"):
        anchors_from_boxes("retinanet-mbv2", [10.0], [20.0])
    with pytest.raises(InputError, match="'fcos-mbv2' keeps its own"):
        anchors_from_boxes("fcos-mbv2", widths, heights)
    with pytest.raises(InputError, match="'ssd-mobilenet' keeps its own .*--box-scales"):
        anchors_from_boxes("ssd-mobilenet", widths, heights)


def test_anchors_from_coco_see_the_boxes_at_the_training_size(tmp_path):
    images = [{"id": 1, "width": 200, "height": 100}, {"id": 2, "width": 100, "height": 100}]
    anns = [{"id": k, "image_id": 1 + k % 2, "bbox": [0, 0, 10 + k, 10 + k], "category_id": 1} for k in range(20)]
    anns.append({"id": 99, "image_id": 1, "bbox": [0, 0, 90, 90], "category_id": 1, "iscrowd": 1})  # ignored
    path = tmp_path / "real.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "x"}]}))
    got = anchors_from_coco("retinanet-mbv2", path, 200)
    w = [(10 + k) * 200 / (200 if k % 2 == 0 else 100) for k in range(20)]
    h = [(10 + k) * 2 for k in range(20)]
    assert got == anchors_from_boxes("retinanet-mbv2", w, h)
    with pytest.raises(InputError, match="no such file"):
        anchors_from_coco("retinanet-mbv2", tmp_path / "missing.json", 200)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(InputError, match="not a COCO JSON"):
        anchors_from_coco("retinanet-mbv2", tmp_path / "bad.json", 200)


def test_anchors_that_do_not_fit_the_pyramid_are_refused():
    with pytest.raises(InputError, match="5 pyramid levels with 3 anchor size"):
        check_anchors("retinanet-mbv2", AnchorSpec(((10.0, 12.0, 14.0),), (1.0,)))
    with pytest.raises(InputError, match="positive"):
        check_anchors("fasterrcnn-mbv2", AnchorSpec(((10.0,), (20.0,), (-1.0,), (80.0,)), (1.0,)))
    with pytest.raises(InputError, match="'retinanet-r50' keeps its own"):
        build_detector("retinanet-r50", 1, 128, pretrained_backbone=False, anchors=default_anchors("retinanet-mbv2"))


def test_fitted_anchors_are_stored_and_rebuilt_exactly(tmp_path):
    torch.manual_seed(3)
    anchors = AnchorSpec(((6.0, 8.0, 10.0), (12.0, 15.0, 19.0), (24.0, 30.0, 38.0), (48.0, 60.0, 76.0), (96.0, 120.0, 150.0)), (1.3, 2.0, 2.9))
    model = build_detector("retinanet-mbv2", 2, SIZE, pretrained_backbone=False, anchors=anchors)
    assert model.anchor_generator.sizes == anchors.sizes
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, detector="retinanet-mbv2", categories=CATEGORIES, image_size=SIZE, pretrained_backbone=False, anchors=anchors)
    loaded, meta = load_detector(path)
    assert meta.anchors == anchors and loaded.anchor_generator.sizes == anchors.sizes
    _same_predictions(model, loaded, seed=6)


@pytest.mark.parametrize("name", ["ssd-mobilenet", "ssdlite-mbv3"])
def test_a_checkpoint_written_before_anchors_existed_still_loads(tmp_path, name):
    torch.manual_seed(4)
    model = build_detector(name, 2, SIZE, pretrained_backbone=False)
    path = tmp_path / "old.pt"
    save_checkpoint(path, model, detector=name, categories=CATEGORIES, image_size=SIZE, pretrained_backbone=False)
    payload = torch.load(path, weights_only=True)
    del payload["anchors"]  # the format as it was written before: no anchors entry
    torch.save(payload, path)
    loaded, meta = load_detector(path)
    assert meta.anchors is None
    _same_predictions(model, loaded, seed=7)


def test_training_with_anchors_from_the_real_boxes_and_finetuning_keeps_them(tmp_path):
    data = make_coco(tmp_path / "data", 3, classes=("red",))
    out = tmp_path / "pre"
    train(config(out, detector="retinanet-mbv2", steps=1, image_size=SIZE, anchors_from=data), open_source(str(data), real=True))
    saved = read_checkpoint(out / "last.pt")
    expected = anchors_from_coco("retinanet-mbv2", data, SIZE)
    assert check_anchors("retinanet-mbv2", saved["anchors"]) == expected
    fine = tmp_path / "fine"
    finetune(config(fine, detector=None, steps=1, image_size=SIZE), out / "last.pt", open_source(str(data), real=True))
    assert read_checkpoint(fine / "last.pt")["anchors"] == saved["anchors"]
    other = make_coco(tmp_path / "other", 3, size=256, classes=("red",))  # other box sizes at the same input size
    with pytest.raises(InputError, match="trained with sizes per level .* leave --anchors-from out"):
        finetune(config(tmp_path / "x", detector=None, steps=1, image_size=SIZE, anchors_from=other), out / "last.pt",
                 open_source(str(data), real=True))


def test_anchors_from_on_a_detector_without_anchors_is_a_clear_error(tmp_path):
    from synthgen.cli import app

    data = make_coco(tmp_path / "data", 2, classes=("red",))
    args = ["finetune", "--data", str(data), "--out", str(tmp_path / "run"), "--detector", "fcos-mbv2", "--anchors-from",
            str(data), "--steps", "1", "--no-pretrained-backbone", "--device", "cpu", "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert "'fcos-mbv2' keeps its own" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("name", ["retinanet-mbv2", "ssd-mobilenet", "fasterrcnn-mbv3"])
def test_inference_size_predicts_as_the_detector_built_at_that_size(name):
    from synthgen.detectors import inference_size

    torch.manual_seed(0)
    small = build_detector(name, 2, SIZE, pretrained_backbone=False).eval()
    large = build_detector(name, 2, 2 * SIZE, pretrained_backbone=False).eval()
    large.load_state_dict(small.state_dict())
    g = torch.Generator().manual_seed(3)
    images = [torch.rand(3, 48, 80, generator=g), torch.rand(3, 80, 60, generator=g)]
    with torch.no_grad():
        before, expected = small(images), large(images)
        with inference_size(small, 2 * SIZE):
            got = small(images)
        after = small(images)
    assert any(len(out["boxes"]) for out in expected)
    for want, have in ((expected, got), (before, after)):  # the larger size inside, its own size restored after
        for x, y in zip(want, have):
            for key in ("boxes", "scores", "labels"):
                torch.testing.assert_close(x[key], y[key])
    with pytest.raises(InputError, match="too small"), inference_size(small, 32):
        pass
