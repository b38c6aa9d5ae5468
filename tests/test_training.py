"""Training data streams, the training loop (loss, checkpoints, resume, finetune) and the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import webdataset as wds
from typer.testing import CliRunner

from synthgen.detectors import build_detector, read_checkpoint, save_checkpoint
from synthgen.errors import InputError, OutputExistsError
from synthgen.imageio import encode_jpeg
from synthgen.sample import Annotation, Sample
from synthgen.training.coco import load_coco
from synthgen.training.data import (
    CocoSource,
    DetectionTransform,
    IteratorSource,
    MixedSource,
    TrainItem,
    make_loader,
    open_source,
    real_subset,
)
from synthgen.training.loop import TrainConfig, finetune, train

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}


def square_scene(rng: np.random.Generator, size: int, classes: tuple[str, ...]) -> tuple[np.ndarray, list[tuple[list[int], int]]]:
    """Noise with one or two flat coloured squares; boxes as (COCO xywh, 1-based class)."""
    image = rng.integers(0, 120, (size, size, 3), dtype=np.uint8)
    boxes = []
    for _ in range(int(rng.integers(1, 3))):
        c = int(rng.integers(0, len(classes)))
        s = int(rng.integers(size // 5, size // 2))
        x, y = (int(v) for v in rng.integers(0, size - s, 2))
        image[y : y + s, x : x + s] = COLOURS[classes[c]]
        boxes.append(([x, y, s, s], c + 1))
    return image, boxes


def make_coco(root: Path, n: int, *, size: int = 128, seed: int = 0, classes=("red", "blue")) -> Path:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(n):
        image, boxes = square_scene(rng, size, classes)
        name = f"images/{i:04d}.png"
        cv2.imwrite(str(root / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
        for box, c in boxes:
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": c, "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
    data = {"images": images, "annotations": anns, "categories": [{"id": k + 1, "name": c} for k, c in enumerate(classes)]}
    path = root / "annotations.json"
    path.write_text(json.dumps(data))
    return path


def make_shards(root: Path, n: int, *, size: int = 128) -> Path:
    """synthgen's WebDataset layout: shard-NNNNNN.tar of <key>.jpg + <key>.json, categories.json."""
    rng = np.random.default_rng(5)
    root.mkdir(parents=True)
    for shard in range(2):
        with wds.TarWriter(str(root / f"shard-{shard:06d}.tar")) as sink:
            for i in range(shard * n // 2, (shard + 1) * n // 2):
                image, boxes = square_scene(rng, size, ("red", "blue"))
                meta = {
                    "index": i,
                    "width": size,
                    "height": size,
                    "boxes": [[x, y, x + w, y + h] for (x, y, w, h), _ in boxes],
                    "labels": [c for _, c in boxes],
                    "names": [("red", "blue")[c - 1] for _, c in boxes],
                }
                sink.write({"__key__": f"{i:010d}", "jpg": encode_jpeg(image, 90), "json": json.dumps(meta).encode()})
    (root / "categories.json").write_text(json.dumps([{"id": 1, "name": "red"}, {"id": 2, "name": "blue"}]))
    return root


def config(out: Path, **overrides) -> TrainConfig:
    settings = dict(
        out=out,
        detector="ssd-mobilenet",
        steps=6,
        batch_size=2,
        lr=1e-3,
        schedule="constant",
        warmup_steps=0,
        image_size=128,
        eval_every=3,
        log_every=1,
        num_workers=0,
        seed=0,
        device="cpu",
        pretrained_backbone=False,  # CI machines have no ImageNet files
        progress=False,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


def read_log(out: Path) -> list[dict[str, str]]:
    with (out / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


# -- data ----------------------------------------------------------------------------------------


def test_real_subset_is_stable_and_nested():
    ids = list(range(100, 400, 3))  # 100 ids, not contiguous
    fifty = real_subset(ids, 50, seed=3)
    assert fifty == real_subset(list(reversed(ids)), 50, seed=3)  # order of the input does not matter
    assert set(fifty) <= set(real_subset(ids, 80, seed=3))
    assert len(set(fifty)) == 50 and set(fifty) <= set(ids)
    assert fifty != real_subset(ids, 50, seed=4)
    assert real_subset(ids, None, seed=0) == sorted(ids)
    with pytest.raises(InputError, match="cannot draw 101 real images from a set of 100"):
        real_subset(ids, 101, seed=0)


def test_crowd_boxes_are_no_targets_but_their_images_still_train(tmp_path):
    path = make_coco(tmp_path, 2)
    data = json.loads(path.read_text())
    for ann in data["annotations"]:
        ann["iscrowd"] = int(ann["image_id"] == 2)  # image 2 has crowd boxes only
    path.write_text(json.dumps(data))
    source = CocoSource(load_coco(path), augment=False)
    items = {len(item.boxes) for item in (source.item(1), source.item(2))}
    assert 0 in items  # image 2: kept, as background
    stream = source.stream(seed=0, part=0, parts=1)
    seen = [next(stream) for _ in range(6)]
    assert sum(len(item.boxes) == 0 for item in seen) == 3  # both images, every epoch


def fake_samples(start: int, step: int):
    """A live stream as synthgen.engine.iter_samples yields it: samples start, start+step, ..."""
    index = start
    while True:
        image = np.full((64, 64, 3), index % 255, dtype=np.uint8)
        yield Sample(index, image, [Annotation(bbox=(4.0, 6.0, 20.0, 10.0), category_id=1, area=200.0)])
        index += step


class ConstantReal:
    categories = [{"id": 1, "name": "face"}]

    def stream(self, seed, part, parts, resume_from=0):
        while True:
            yield TrainItem(np.zeros((64, 64, 3), np.uint8), np.array([[1, 1, 9, 9]], np.float32), np.array([1]), True, "real")


def test_iterator_source_readers_take_their_own_sample_indices():
    source = IteratorSource(fake_samples, [{"id": 1, "name": "face"}])
    second_of_three = source.stream(seed=0, part=1, parts=3)
    indices = [int(next(second_of_three).image[0, 0, 0]) for _ in range(4)]
    assert indices == [1, 4, 7, 10]
    item = next(source.stream(seed=0, part=0, parts=1, resume_from=50))
    assert int(item.image[0, 0, 0]) == 50  # a resumed run moves on to unseen samples
    np.testing.assert_array_equal(item.boxes, [[4, 6, 24, 16]])  # xyxy from the sample's COCO box
    assert item.labels.tolist() == [1] and item.origin == "synthetic" and not item.augment


def test_mix_draws_both_streams_at_the_ratio_from_the_start():
    synthetic = IteratorSource(fake_samples, [{"id": 1, "name": "face"}])
    mixed = MixedSource(ConstantReal(), synthetic, synthetic_fraction=0.3)
    stream = mixed.stream(seed=0, part=0, parts=1)
    origins = [next(stream).origin for _ in range(3000)]
    assert {"real", "synthetic"} == set(origins[:20])  # concatenating endless streams never gets here
    assert origins.count("synthetic") / len(origins) == pytest.approx(0.3, abs=0.03)
    again = mixed.stream(seed=0, part=0, parts=1)
    assert [next(again).origin for _ in range(200)] == origins[:200]  # seeded


def test_mix_needs_the_same_class_names():
    synthetic = IteratorSource(fake_samples, [{"id": 1, "name": "car"}])
    with pytest.raises(InputError, match="name different classes"):
        MixedSource(ConstantReal(), synthetic, 0.5)
    with pytest.raises(InputError, match="strictly between 0 and 1"):
        MixedSource(ConstantReal(), IteratorSource(fake_samples, ConstantReal.categories), 1.0)


def test_transform_scales_boxes_and_augmentation_keeps_them_valid():
    image = np.zeros((100, 200, 3), np.uint8)
    item = TrainItem(image, np.array([[20, 10, 60, 50]], np.float32), np.array([2]), False, "synthetic")
    tensor, target = DetectionTransform(128)(item)
    assert tensor.shape == (3, 128, 128) and tensor.dtype == torch.float32
    torch.testing.assert_close(target["boxes"], torch.tensor([[12.8, 12.8, 38.4, 64.0]]))
    assert target["labels"].tolist() == [2]

    torch.manual_seed(0)
    boxes = np.array([[20, 10, 60, 50], [120, 40, 190, 95]], np.float32)
    for _ in range(20):
        real = TrainItem(np.random.default_rng(1).integers(0, 255, (100, 200, 3), dtype=np.uint8), boxes, np.array([1, 2]), True, "real")
        tensor, target = DetectionTransform(128)(real)
        b = target["boxes"]
        assert tensor.shape == (3, 128, 128) and 0.0 <= float(tensor.min()) and float(tensor.max()) <= 1.0
        assert len(b) == len(target["labels"]) >= 1  # the IoU crop keeps at least one box
        assert bool((b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all())
        assert float(b.min()) >= 0.0 and float(b.max()) <= 128.0


def test_webdataset_shards_and_loader_workers(tmp_path):
    shards = make_shards(tmp_path / "shards", 8)
    source = open_source(str(shards), real=False)
    assert source.categories == [{"id": 1, "name": "red"}, {"id": 2, "name": "blue"}]
    loader = make_loader(source, image_size=96, batch_size=3, seed=0, num_workers=1)
    images, targets = next(iter(loader))
    assert len(images) == 3 and images[0].shape == (3, 96, 96)
    assert all(len(t["boxes"]) == len(t["labels"]) >= 1 and set(t["labels"].tolist()) <= {1, 2} for t in targets)
    with pytest.raises(InputError, match="holds no .tar shards"):
        open_source(str(tmp_path), real=False)
    with pytest.raises(InputError, match="categories.json"):
        (shards / "categories.json").unlink()
        open_source(str(shards / "shard-*.tar"), real=False)


def test_coco_errors_are_actionable(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        open_source(str(tmp_path / "nope.json"), real=True)
    (tmp_path / "empty.json").write_text(json.dumps({"images": [], "categories": [{"id": 1, "name": "x"}]}))
    with pytest.raises(InputError, match="has no images"):
        open_source(str(tmp_path / "empty.json"), real=True)
    path = make_coco(tmp_path / "d", 2)
    (tmp_path / "d" / "images" / "0001.png").unlink()
    with pytest.raises(InputError, match="1 image file"):
        open_source(str(path), real=True)


# -- the loop --------------------------------------------------------------------------------------


def test_a_few_steps_lower_the_loss_and_write_the_run(tmp_path):
    data = make_coco(tmp_path / "data", 8)
    out = tmp_path / "run"
    result = train(config(out, steps=12, batch_size=4, eval_every=6), open_source(str(data), real=True), load_coco(data))
    rows = read_log(out)
    assert [int(r["step"]) for r in rows] == list(range(1, 13))
    losses = [float(r["loss"]) for r in rows]
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:2])
    assert {"classification", "bbox_regression", "val_voc_ap50"} <= set(rows[0])
    assert rows[5]["val_voc_ap50"] != "" and rows[4]["val_voc_ap50"] == ""  # validated every 6 steps
    assert result.best_checkpoint == out / "best.pt" and result.steps == 12
    assert 0.0 <= result.best_metric <= 1.0
    best = read_checkpoint(out / "best.pt", "ssd-mobilenet")
    assert best["categories"] == [{"id": 1, "name": "red"}, {"id": 2, "name": "blue"}] and best["step"] in (6, 12)
    assert (out / "training_curves.png").stat().st_size > 0


class Crash(Exception):
    pass


class CrashingSource:
    """Delegates to ``source`` and crashes when item number ``after`` is asked for."""

    def __init__(self, source, after: int) -> None:
        self.source, self.after, self.categories = source, after, source.categories

    def stream(self, seed, part, parts, resume_from=0):
        for number, item in enumerate(self.source.stream(seed, part, parts, resume_from)):
            if number == self.after:
                raise Crash
            yield item


def test_resume_continues_step_optimizer_and_schedule(tmp_path):
    data = make_coco(tmp_path / "data", 6)
    source = open_source(str(data), real=True)
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(config(straight, steps=6, schedule="cosine"), source)
    # crash while fetching step 4's batch (2 images a step), after step 3 was checkpointed
    with pytest.raises(Crash):
        train(config(split, steps=6, schedule="cosine"), CrashingSource(source, after=6))
    # an interrupted run may also have logged past its last checkpoint; resume drops that
    with (split / "metrics.csv").open("a") as f:
        f.write("4,0.1,9.9\n")
    with pytest.raises(OutputExistsError, match="--resume"):
        train(config(split, steps=6, schedule="cosine"), source)
    result = train(config(split, steps=6, schedule="cosine", resume=True), source)
    assert result.steps == 6
    a, b = read_log(straight), read_log(split)
    assert [int(r["step"]) for r in b] == [1, 2, 3, 4, 5, 6]
    assert [r["lr"] for r in a] == [r["lr"] for r in b]  # the schedule went on where it stopped
    assert [r["loss"] for r in a[:3]] == [r["loss"] for r in b[:3]]  # seeded: same start, same losses
    last = read_checkpoint(split / "last.pt")
    assert last["step"] == 6
    assert int(last["optimizer"]["state"][0]["step"]) == 6  # Adam's moments were restored, not restarted
    with pytest.raises(InputError, match="already reached step 6"):
        train(config(split, steps=6, resume=True), source)


def test_resume_needs_a_run_to_resume(tmp_path):
    data = make_coco(tmp_path / "data", 2)
    with pytest.raises(InputError, match="cannot resume"):
        train(config(tmp_path / "fresh", resume=True), open_source(str(data), real=True))


def test_finetune_keeps_the_backbone_and_recreates_the_head(tmp_path):
    torch.manual_seed(0)
    pretrained = build_detector("ssd-mobilenet", 2, 128, pretrained_backbone=False)
    init = tmp_path / "pre" / "best.pt"
    save_checkpoint(init, pretrained, detector="ssd-mobilenet", categories=[{"id": 1, "name": "red"}, {"id": 2, "name": "blue"}], image_size=128, pretrained_backbone=False)
    data = make_coco(tmp_path / "data", 3, classes=("red",))
    out = tmp_path / "fine"
    finetune(config(out, detector=None, steps=1, lr=1e-7), init, open_source(str(data), real=True))
    tuned = read_checkpoint(out / "last.pt")
    assert tuned["detector"] == "ssd-mobilenet" and tuned["categories"] == [{"id": 1, "name": "red"}]
    before, after = pretrained.state_dict(), tuned["model"]
    stem = "backbone.features.0.0.0.weight"
    torch.testing.assert_close(after[stem], before[stem], atol=1e-5, rtol=0)  # one step at lr 1e-7
    head = "head.classification_head.module_list.0.1.weight"  # the class scores of the first feature map
    assert (after[head].shape[0], before[head].shape[0]) == (6 * 2, 6 * 3)  # 6 anchors x (classes + background)
    with pytest.raises(InputError, match="holds a 'ssd-mobilenet' detector, but 'retinanet-r50'"):
        finetune(config(tmp_path / "other", detector="retinanet-r50"), init, open_source(str(data), real=True))


def test_finetune_keeps_the_pretrained_box_scales_and_refuses_others(tmp_path):
    torch.manual_seed(0)
    pretrained = build_detector("ssd-mobilenet", 1, 128, pretrained_backbone=False, box_scales=(0.05, 0.5))
    init = tmp_path / "pre" / "best.pt"
    save_checkpoint(init, pretrained, detector="ssd-mobilenet", categories=[{"id": 1, "name": "red"}], image_size=128, pretrained_backbone=False, box_scales=(0.05, 0.5))
    data = make_coco(tmp_path / "data", 3, classes=("red",))
    finetune(config(tmp_path / "fine", detector=None, steps=1), init, open_source(str(data), real=True))
    assert read_checkpoint(tmp_path / "fine" / "last.pt")["box_scales"] == [0.05, 0.5]
    with pytest.raises(InputError, match="trained with 0.05,0.5; leave --box-scales out"):
        finetune(config(tmp_path / "other", detector=None, box_scales=(0.2, 0.95)), init, open_source(str(data), real=True))
    # resuming with other boxes is refused the same way
    with pytest.raises(InputError, match="cannot resume .* trained with 0.05,0.5"):
        train(config(tmp_path / "fine", steps=3, resume=True, box_scales=(0.1, 0.9)), open_source(str(data), real=True))


def test_pretrain_command_on_webdataset_shards(tmp_path):
    from synthgen.cli import app as train_app

    shards = make_shards(tmp_path / "shards", 6)
    val = make_coco(tmp_path / "val", 2)
    out = tmp_path / "run"
    args = [
        "pretrain", "--data", str(shards / "shard-{000000..000001}.tar"), "--val", str(val), "--out", str(out),
        "--steps", "2", "--batch-size", "2", "--image-size", "128", "--eval-every", "2", "--num-workers", "0",
        "--device", "cpu", "--no-pretrained-backbone", "--no-progress", "--box-scales", "0.1,0.8",
    ]  # fmt: skip
    result = CliRunner().invoke(train_app, args)
    assert result.exit_code == 0, result.output
    assert "best checkpoint" in result.output
    best = read_checkpoint(out / "best.pt")
    assert best["categories"] == [{"id": 1, "name": "red"}, {"id": 2, "name": "blue"}]
    assert best["box_scales"] == [0.1, 0.8]


def test_learning_rate_schedules():
    from synthgen.training.loop import lr_factor

    cosine = [lr_factor(s, total=110, warmup=10, schedule="cosine") for s in (0, 5, 10, 60, 110)]
    assert cosine == pytest.approx([0.01, 0.505, 1.0, 0.5, 0.0])
    step = [lr_factor(s, total=90, warmup=0, schedule="step") for s in (0, 59, 60, 79, 80)]
    assert step == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])
    assert lr_factor(500, total=100, warmup=10, schedule="constant") == 1.0
