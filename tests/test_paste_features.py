"""Paste features users of copy-paste tools ask for: visibility and amodal boxes, pasting into
labelled images (kept annotations), class balance, distractors; each deterministic and
resumable like every paste run."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from synthgen.backgrounds.labels import BackgroundLabels, KeptObject, SourceLabels, SourceObject
from synthgen.compositor import CompositeConfig, Compositor
from synthgen.compositor.augment import ObjectPatch
from synthgen.compositor.render import _Owners, class_picker
from synthgen.engine import PasteSpec, RunOptions, iter_samples, run_paste
from synthgen.errors import InputError
from tests.test_compositor import FakeBackgrounds, FakeCutout, FakeObjects
from tests.test_engine import tree_digest


def spec_for(objects_dir: Path, backgrounds_dir: Path, composite: CompositeConfig, **changes) -> PasteSpec:
    return PasteSpec(objects=str(objects_dir), backgrounds=str(backgrounds_dir), composite=composite, **changes)


def solid(w: int, h: int) -> ObjectPatch:
    return ObjectPatch(np.full((h, w, 4), 255, np.uint8), np.ones((h, w), bool), (0, 0, w, h), w * h)


def hand_made(comp: Compositor, layout, height=224, width=256, kept=()):
    """Annotations of a scene laid out by hand: ``kept`` (class, x, y, mask[, crowd]) at the
    bottom, then ``layout`` (class, x, y, patch) pasted in order, through the compositor's own
    bookkeeping."""
    placed, owners = [], _Owners(height, width, [])
    owners._placed = placed
    if kept:
        comp._keep_labels([KeptObject(c, (x, y), ObjectPatch(None, m, (0, 0, m.shape[1], m.shape[0]), int(m.sum())), *crowd)
                           for c, x, y, m, *crowd in kept], (0, 0), placed)
    for class_id, x, y, patch in layout:
        ex0, ey0, ex1, ey1 = patch.extent
        box = (max(x + ex0, 0), max(y + ey0, 0), min(x + ex1, width), min(y + ey1, height))
        inside = int(patch.mask[box[1] - y : box[3] - y, box[0] - x : box[2] - x].sum())
        comp._commit(owners, placed, patch, x, y, box, inside, class_id)
    cfg = comp.config
    return [comp._annotation(owners, k, p, True, cfg.box, cfg.min_visible) for k, p in enumerate(placed)]


def compositor(**changes) -> Compositor:
    config = CompositeConfig(width=256, height=224, objects_per_image=(3, 6), scale=(0.15, 0.5)).replace(**changes)
    return Compositor(config, FakeObjects(), FakeBackgrounds())


# -- 1. visibility and amodal boxes -------------------------------------------------------------


def test_visible_and_amodal_boxes_and_visibility_of_a_known_scene():
    comp = compositor(min_visible=0.2, truncation=0.6)
    a, b, c = hand_made(comp, [(0, 10, 10, solid(40, 30)), (1, 30, 0, solid(40, 60)), (0, -10, 100, solid(20, 20))])
    # b covers a's columns 30..49 entirely: a keeps columns 10..29.
    assert a.bbox == a.visible_bbox == (10.0, 10.0, 20.0, 30.0)
    assert a.amodal_bbox == (10.0, 10.0, 40.0, 30.0)
    assert a.area == 600 and a.visible_fraction == pytest.approx(0.5)
    assert b.bbox == b.amodal_bbox == (30.0, 0.0, 40.0, 60.0) and b.visible_fraction == 1.0
    # c sticks out 10 px on the left: its amodal box reaches past the image.
    assert c.visible_bbox == (0.0, 100.0, 10.0, 20.0) and c.amodal_bbox == (-10.0, 100.0, 20.0, 20.0)
    assert c.visible_fraction == pytest.approx(0.5)


def test_amodal_main_box_is_the_whole_object_clipped_to_the_image():
    comp = compositor(min_visible=0.2, truncation=0.6, box="amodal")
    a, b, c = hand_made(comp, [(0, 10, 10, solid(40, 30)), (1, 30, 0, solid(40, 60)), (0, -10, 100, solid(20, 20))])
    assert a.bbox == (10.0, 10.0, 40.0, 30.0) and a.visible_bbox == (10.0, 10.0, 20.0, 30.0) and a.area == 600
    assert c.bbox == (0.0, 100.0, 10.0, 20.0)  # clipped: detectors and YOLO want boxes inside the image


@pytest.mark.parametrize("box", ["visible", "amodal"])
def test_rendered_visibility_is_visible_over_whole_mask_area(box):
    comp = compositor(min_visible=0.3, truncation=0.4, rotation=25.0, box=box)
    seen_partial = 0
    for index in range(10):
        for ann in comp.render(seed=1, index=index, keep_masks=True).annotations:
            ys, xs = np.nonzero(ann.mask)
            assert ann.visible_bbox == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
            ax, ay, aw, ah = ann.amodal_bbox
            vx, vy, vw, vh = ann.visible_bbox
            assert ax <= vx and ay <= vy and vx + vw <= ax + aw and vy + vh <= ay + ah
            assert 0.3 - 1e-6 <= ann.visible_fraction <= 1.0
            if box == "amodal":
                assert ann.bbox == (max(ax, 0), max(ay, 0), min(ax + aw, 256) - max(ax, 0), min(ay + ah, 224) - max(ay, 0))
            seen_partial += ann.visible_fraction < 1
    assert seen_partial > 3


def test_visibility_in_coco_wds_and_the_yolo_sidecar(tmp_path, objects_dir, backgrounds_dir):
    spec = spec_for(objects_dir, backgrounds_dir, CompositeConfig(
        width=96, height=80, objects_per_image=(3, 5), scale=(0.3, 0.6), min_visible=0.3), visibility=True)
    for fmt in ("coco", "wds", "yolo"):
        run_paste(spec, RunOptions(out=tmp_path / fmt, format=fmt, n=6, progress=False))
    coco = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    anns = coco["annotations"]
    assert all(a["iscrowd"] == 0 and a["bbox"] == a["visible_bbox"] and 0.3 - 1e-6 <= a["visibility"] <= 1 for a in anns)
    assert any(a["visibility"] < 1 and a["amodal_bbox"] != a["bbox"] for a in anns)
    import tarfile

    with tarfile.open(tmp_path / "wds" / "shard-000000.tar") as tar:
        first = json.loads(tar.extractfile("0000000000.json").read())
    mine = [a for a in anns if a["image_id"] == 1]
    assert first["visibility"] == [a["visibility"] for a in mine]
    assert first["amodal_boxes"] == [[x, y, x + w, y + h] for x, y, w, h in (a["amodal_bbox"] for a in mine)]
    labels = (tmp_path / "yolo" / "labels" / "train" / "0000000000.txt").read_text().splitlines()
    sidecar = (tmp_path / "yolo" / "visibility" / "train" / "0000000000.txt").read_text().splitlines()
    assert len(sidecar) == len(labels) == len(mine)
    for line, label, ann in zip(sidecar, labels, mine):
        values = line.split()
        assert values[0] == label.split()[0] and float(values[1]) == pytest.approx(ann["visibility"], abs=1e-6)
        assert values[2:6] == label.split()[1:]  # the visible box is the label's box


# -- 2. paste into labelled images --------------------------------------------------------------


def disk(size: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    cv2.circle(mask, (size // 2, size // 2), size // 2 - 1, 1, -1)
    return mask.astype(bool)


def test_kept_object_is_updated_from_its_mask_under_occlusion():
    comp = compositor(min_visible=0.2, protect=1.0)
    person = disk(40)  # 40x40 disk at (20, 20)
    kept, pasted = hand_made(comp, [(0, 40, 0, solid(40, 100))], kept=[(2, 20, 20, person)])
    # The pasted box covers columns 40..79: the disk keeps its left half, columns 20..39.
    expected = person.copy()
    expected[:, 20:] = False
    ys, xs = np.nonzero(expected)
    assert kept.category_id == 3 and kept.area == expected.sum()
    assert kept.bbox == (20.0 + xs.min(), 20.0 + ys.min(), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1))
    assert kept.amodal_bbox == (20.0, 20.0, 40.0, 40.0)
    assert kept.visible_fraction == pytest.approx(expected.sum() / person.sum())
    assert pasted.bbox == (40.0, 0.0, 40.0, 100.0)


def test_kept_boxes_without_masks_are_covered_as_boxes_and_never_hide_each_other():
    comp = compositor(min_visible=0.5, protect=1.0)
    box = np.ones((20, 40), bool)
    # Two kept boxes overlapping each other (a crowd): both stay whole; a paste covers 3/4 of the third.
    a, b, c, pasted = hand_made(comp, [(0, 110, 0, solid(30, 60))], kept=[(2, 0, 0, box), (2, 20, 10, box), (2, 100, 0, box)])
    assert a.bbox == (0.0, 0.0, 40.0, 20.0) and b.bbox == (20.0, 10.0, 40.0, 20.0)
    assert a.visible_fraction == b.visible_fraction == 1.0
    assert c is None  # 10 of 40 columns left: below min_visible, dropped by the pasted objects' rule
    comp = compositor(min_visible=0.2, protect=1.0)
    *_, c, pasted = hand_made(comp, [(0, 110, 0, solid(30, 60))], kept=[(2, 0, 0, box), (2, 20, 10, box), (2, 100, 0, box)])
    assert c.bbox == (100.0, 0.0, 10.0, 20.0) and c.amodal_bbox == (100.0, 0.0, 40.0, 20.0)
    assert c.visible_fraction == pytest.approx(0.25) and pasted.bbox == (110.0, 0.0, 30.0, 60.0)


class LabelledBackgrounds:
    """Backgrounds that each hold one kept disk of class "person" at a known place."""

    extra_classes = ["person"]

    def __init__(self, masks: list[np.ndarray], origins: list[tuple[int, int]]) -> None:
        self._objects = [[KeptObject(2, o, ObjectPatch(None, m, (0, 0, m.shape[1], m.shape[0]), int(m.sum())))] for m, o in zip(masks, origins)]

    def objects(self, background: int):
        return self._objects[background]


@pytest.mark.parametrize("protect", [0.0, 0.3, 0.7])
def test_pasted_objects_cover_at_most_protect_of_kept_ones(protect):
    masks, origins = [disk(90), disk(120), disk(70)], [(40, 30), (100, 60), (150, 100)]
    config = CompositeConfig(width=256, height=224, objects_per_image=(4, 8), scale=(0.2, 0.5), min_visible=0.25, protect=protect)
    backgrounds = FakeBackgrounds(224, 256)  # the output size: no crop offset
    comp = Compositor(config, FakeObjects(), backgrounds, labels=LabelledBackgrounds(masks, origins))
    assert comp.categories == ["disk", "bar", "person"]
    covered_some = 0
    for index in range(12):
        sample = comp.render(seed=4, index=index, keep_masks=True)
        background = int(np.random.Generator(np.random.Philox(key=[4, index])).random() * 3)
        mask, (x, y) = masks[background], origins[background]
        whole = np.zeros((224, 256), bool)
        whole[y : y + mask.shape[0], x : x + mask.shape[1]] = mask
        pasted = np.zeros_like(whole)
        for ann in sample.annotations:
            if ann.category_id != 3:
                pasted |= ann.mask
        kept = [a for a in sample.annotations if a.category_id == 3]
        covered = (whole & pasted).sum() / whole.sum()
        assert covered <= protect + 1e-9
        assert len(kept) == 1 and np.array_equal(kept[0].mask, whole & ~pasted)  # (protect <= 1 - min_visible here)
        covered_some += covered > 0
    assert protect == 0 or covered_some > 3


def coco_file(tmp_path: Path) -> Path:
    """Two 200x100 photos: one with a box-only annotation, a polygon and a crowd region; one
    with an RLE person."""
    from pycocotools import mask as mask_utils

    folder = tmp_path / "real"
    folder.mkdir()
    for k in range(2):
        cv2.imwrite(str(folder / f"p{k}.jpg"), np.full((100, 200, 3), 60 + 80 * k, np.uint8))
    rle_mask = np.zeros((100, 200), np.uint8)
    rle_mask[20:60, 100:140] = 1
    rle = mask_utils.encode(np.asfortranarray(rle_mask))
    data = {
        "images": [{"id": 7, "file_name": "p0.jpg", "width": 200, "height": 100},
                   {"id": 9, "file_name": "p1.jpg", "width": 200, "height": 100}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "bbox": [20, 10, 40, 30], "area": 1200, "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 2, "bbox": [100, 40, 60, 40], "area": 1200, "iscrowd": 0,
             "segmentation": [[100, 40, 160, 40, 160, 80, 100, 80]]},
            {"id": 3, "image_id": 7, "category_id": 1, "bbox": [0, 80, 10, 10], "area": 100, "iscrowd": 1},
            {"id": 4, "image_id": 9, "category_id": 1, "bbox": [100, 20, 40, 40], "area": 1600, "iscrowd": 0,
             "segmentation": {"size": [100, 200], "counts": rle["counts"].decode()}},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "cat"}],
    }
    path = folder / "train.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_backgrounds_keep_their_objects_scaled_to_the_output(tmp_path, objects_dir):
    path = coco_file(tmp_path)
    composite = CompositeConfig(width=100, height=50, background_fit="stretch", objects_per_image=(0, 0))
    spec = PasteSpec(objects=str(objects_dir), backgrounds=f"coco:{path}", keep_annotations=True, composite=composite)
    run_paste(spec, RunOptions(out=tmp_path / "out", n=8, progress=False))
    coco = json.loads((tmp_path / "out" / "annotations.json").read_text())
    # Objects' classes first (cat, dog: "cat" is shared), then the file's other class (person).
    assert [c["name"] for c in coco["categories"]] == ["cat", "dog", "person"]
    boxes = {}
    for ann in coco["annotations"]:
        image = next(i for i in coco["images"] if i["id"] == ann["image_id"])
        boxes.setdefault(image["id"], []).append((ann["category_id"], ann["bbox"], ann["iscrowd"]))
    seen = {tuple(sorted((c, tuple(b), crowd) for c, b, crowd in v)) for v in boxes.values()}
    # Half size: the box [20, 10, 40, 30] -> [10, 5, 20, 15]; the polygon and the RLE square
    # rasterised at half size; the crowd region [0, 80, 10, 10] kept as one, iscrowd 1.
    assert seen == {((1, (50.0, 20.0, 30.0, 20.0), 0), (3, (0.0, 40.0, 5.0, 5.0), 1), (3, (10.0, 5.0, 20.0, 15.0), 0)),
                    ((3, (50.0, 10.0, 20.0, 20.0), 0),)}


def test_crowd_regions_are_kept_as_crowd_regions_free_to_cover():
    comp = compositor(min_visible=0.5, protect=0.0)
    crowd = np.ones((20, 40), bool)
    # Nothing may cover the person; the crowd region beside it may be covered, here 3/4 of it.
    person, region, pasted = hand_made(comp, [(0, 110, 0, solid(30, 60))], kept=[(2, 0, 0, disk(20)), (2, 100, 0, crowd, True)])
    assert not person.iscrowd and not pasted.iscrowd
    assert region.iscrowd and region.bbox == (100.0, 0.0, 10.0, 20.0) and region.visible_fraction == pytest.approx(0.25)
    # Below min_visible an object would be dropped; a crowd region is kept while any of it shows...
    gone, _ = hand_made(comp, [(0, 100, 0, solid(40, 20))], kept=[(2, 100, 0, crowd, True)])
    assert gone is None  # ...and dropped once nothing does
    # A placement that covers the crowd region is not rejected by --protect 0 (the person's is).
    placed, owners = [], _Owners(224, 256, [])
    owners._placed = placed
    comp._keep_labels([KeptObject(2, (100, 0), ObjectPatch(None, crowd, (0, 0, 40, 20), 800), True)], (0, 0), placed)
    assert comp._place(solid(30, 30), owners, placed, [0.45, 0.0]) is not None
    comp._keep_labels([KeptObject(2, (100, 0), ObjectPatch(None, crowd, (0, 0, 40, 20), 800), False)], (0, 0), placed := [])
    assert comp._place(solid(30, 30), owners, placed, [0.45, 0.0]) is None


def test_kept_crowd_regions_in_every_format_and_verify(tmp_path, objects_dir):
    """COCO: iscrowd 1; WebDataset: an ``iscrowd`` list beside the boxes; YOLO: left out (no
    way to mark an ignore region). Never counted as objects; readers and verify accept them."""
    from synthgen.readers import iter_annotations
    from synthgen.verify import verify_output

    path = coco_file(tmp_path)
    composite = CompositeConfig(width=100, height=50, background_fit="stretch", objects_per_image=(0, 0))
    spec = PasteSpec(objects=str(objects_dir), backgrounds=f"coco:{path}", keep_annotations=True, composite=composite, visibility=True)
    summaries = {fmt: run_paste(spec, RunOptions(out=tmp_path / fmt, format=fmt, n=6, progress=False)) for fmt in ("coco", "wds", "yolo")}
    coco = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    crowd = [a for a in coco["annotations"] if a["iscrowd"]]
    with_crowd = {a["image_id"] for a in crowd}
    assert crowd and all(a["bbox"] == [0.0, 40.0, 5.0, 5.0] and a["category_id"] == 3 and a["visibility"] == 1.0 for a in crowd)
    for fmt, summary in summaries.items():
        assert summary.objects == len(coco["annotations"]) - len(crowd), fmt  # crowd regions are not objects
        assert summary.per_class["person"] == sum(a["category_id"] == 3 and not a["iscrowd"] for a in coco["annotations"])
        report = verify_output(tmp_path / fmt, expected=6)
        assert report.ok, (fmt, report.problems)
        assert sum(len(s.labels) for s in iter_annotations(tmp_path / fmt)) == summary.objects, fmt
    import tarfile

    with tarfile.open(tmp_path / "wds" / "shard-000000.tar") as tar:
        metas = [json.loads(tar.extractfile(f"{i:010d}.json").read()) for i in range(6)]
    for i, meta in enumerate(metas):
        flags = meta.get("iscrowd", [0] * len(meta["boxes"]))
        assert sum(flags) == (i + 1 in with_crowd) and len(flags) == len(meta["boxes"])
    # Training on the shards: crowd regions are no targets (every image shows one person object).
    from synthgen.training.data import open_source

    items = [item for _, item in zip(range(8), open_source(str(tmp_path / "wds"), real=False).stream(seed=0, part=0, parts=1))]
    assert all(list(item.labels).count(3) == 1 for item in items)
    yolo_lines = sum(len(p.read_text().splitlines()) for p in (tmp_path / "yolo" / "labels" / "train").glob("*.txt"))
    assert yolo_lines == summaries["yolo"].objects
    # verify names a flag that is not 0 or 1
    coco["annotations"][0]["iscrowd"] = 2
    (tmp_path / "coco" / "annotations.json").write_text(json.dumps(coco))
    assert any("iscrowd 2, not 0 or 1" in p for p in verify_output(tmp_path / "coco", expected=6).problems)


def test_kept_annotations_find_their_images_under_another_path_to_them(tmp_path):
    """A cached background pool keeps the paths it was first built from: the labels of the same
    files read through a symlinked folder still reach them (they were silently lost)."""
    real = tmp_path / "real"
    real.mkdir()
    (real / "a.jpg").write_bytes(b"")
    (tmp_path / "link").symlink_to(real)

    class Pool:
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return np.zeros((50, 100, 3), np.uint8)

        def source_path(self, i):
            return real / "a.jpg"

    labels = SourceLabels(("person",), {str(tmp_path / "link" / "a.jpg"): (SourceObject("person", (0.1, 0.2, 0.3, 0.4)),)})
    kept = BackgroundLabels(labels, Pool(), ["cat"])
    assert kept.count == 1 and [(k.class_id, k.origin) for k in kept.objects(0)] == [(1, (10, 10))]


def test_yolo_backgrounds_keep_their_boxes_and_polygons(tmp_path, objects_dir):
    root = tmp_path / "yolo_set"
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    cv2.imwrite(str(root / "images" / "train" / "a.jpg"), np.full((100, 200, 3), 90, np.uint8))
    (root / "labels" / "train" / "a.txt").write_text("0 0.2 0.25 0.2 0.3\n1 0.5 0.4 0.7 0.4 0.7 0.6 0.5 0.6\n")
    (root / "data.yaml").write_text("train: images/train\nval: images/train\nnames:\n  0: person\n  1: dog\n")
    composite = CompositeConfig(width=100, height=50, background_fit="stretch", objects_per_image=(0, 0))
    spec = PasteSpec(objects=str(objects_dir), backgrounds=f"yolo:{root}", keep_annotations=True, composite=composite)
    sample = next(iter_samples(spec))
    assert [(a.category_id, a.bbox) for a in sample.annotations] == [(3, (10.0, 5.0, 20.0, 15.0)), (2, (50.0, 20.0, 20.0, 10.0))]


def test_keep_annotations_needs_labelled_backgrounds(tmp_path, objects_dir, backgrounds_dir):
    spec = spec_for(objects_dir, backgrounds_dir, CompositeConfig(width=96, height=80), keep_annotations=True)
    with pytest.raises(InputError, match="coco:FILE.json or yolo:DIR"):
        run_paste(spec, RunOptions(out=tmp_path / "o", n=2, progress=False))


def test_a_yolo_folder_without_data_yaml_is_named_not_a_traceback(tmp_path, objects_dir):
    spec = PasteSpec(objects=str(objects_dir), backgrounds=f"yolo:{tmp_path}", keep_annotations=True, composite=CompositeConfig(width=64, height=64))
    with pytest.raises(InputError, match="is not a YOLO dataset: it has no data.yaml"):
        run_paste(spec, RunOptions(out=tmp_path / "o", n=2, progress=False))


def test_augment_paste_streams_real_images_with_pasted_objects(tmp_path, objects_dir):
    from synthgen.training.coco import load_coco
    from synthgen.training.data import CocoSource, augment_paste_source

    path = coco_file(tmp_path)
    real = CocoSource(load_coco(path), [7], augment=True)
    composite = CompositeConfig(width=100, height=50, background_fit="stretch", objects_per_image=(1, 2), scale=(0.2, 0.3), min_visible=0.9)
    spec = PasteSpec(objects=str(objects_dir / "cat"), composite=composite)
    mixed = augment_paste_source(real, spec, 0.5)
    items = [item for _, item in zip(range(12), mixed.stream(seed=0, part=0, parts=1))]
    pasted = [i for i in items if i.origin == "synthetic"]
    assert pasted and len(pasted) < len(items)
    names = [c["name"] for c in real.categories]  # person, cat
    for item in pasted:
        assert item.image.shape == (50, 100, 3)
        labels = [names[k - 1] for k in item.labels]
        assert labels.count("person") == 1 and 2 <= labels.count("cat") <= 3  # one kept cat + 1..2 pasted


# -- 3. class balance ---------------------------------------------------------------------------


class SkewedObjects(FakeObjects):
    """One "disk" cut-out and five "bar" cut-outs."""

    def __init__(self) -> None:
        super().__init__()
        self.items = [FakeCutout(item.rgba, 0 if k == 0 else 1) for k, item in enumerate(self.items)]


@pytest.mark.parametrize(("balance", "disk_share"), [("source", 1 / 6), ("uniform", 0.5), ((1.0, 3.0), 0.25), ((1.0, 0.0), 1.0)])
def test_class_balance_sets_how_often_each_class_is_drawn(balance, disk_share):
    objects = SkewedObjects()
    pick = class_picker(balance, objects)
    draws = np.random.default_rng(0).random(20000)
    chosen = [int(u * len(objects)) if pick is None else pick(u) for u in draws]
    share = np.mean([objects[i].class_id == 0 for i in chosen])
    assert share == pytest.approx(disk_share, abs=0.015)
    if balance == "uniform":  # every cut-out of a class alike
        bars = np.bincount([i for i in chosen if i > 0], minlength=6)[1:]
        assert bars.min() > 0.8 * bars.mean()


def test_class_balance_in_rendered_samples_and_the_run_summary(tmp_path):
    comp = Compositor(CompositeConfig(width=256, height=224, objects_per_image=(4, 4), scale=(0.1, 0.2), min_visible=0.0, class_balance="uniform"),
                      SkewedObjects(), FakeBackgrounds())
    labels = [a.category_id for i in range(100) for a in comp.render(0, i).annotations]
    assert np.mean(np.array(labels) == 1) == pytest.approx(0.5, abs=0.06)
    with pytest.raises(InputError, match="one weight per class"):
        Compositor(comp.config.replace(class_balance=(1.0, 2.0, 3.0)), SkewedObjects(), FakeBackgrounds())


def test_run_summary_counts_boxes_per_class(tmp_path, objects_dir, backgrounds_dir):
    spec = spec_for(objects_dir, backgrounds_dir, CompositeConfig(width=96, height=80, objects_per_image=(2, 4), class_balance=(1.0, 0.0)))
    summary = run_paste(spec, RunOptions(out=tmp_path / "o", format="wds", n=10, progress=False))
    assert summary.per_class == {"cat": summary.objects, "dog": 0} and summary.objects > 10


# -- 4. distractors -----------------------------------------------------------------------------


class GreenDistractors:
    classes = ["thing"]

    def __init__(self) -> None:
        rgba = np.zeros((40, 40, 4), np.uint8)
        rgba[...] = (0, 255, 0, 255)
        self.items = [FakeCutout(rgba, 0)]

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> FakeCutout:
        return self.items[i]


def test_distractors_are_pasted_and_never_labelled():
    config = CompositeConfig(width=256, height=224, objects_per_image=(2, 4), scale=(0.15, 0.4), min_visible=0.3,
                             distractors_per_image=(2, 3), distractor_scale=(0.2, 0.3), flip=0.0, brightness=(1.0, 1.0),
                             contrast=(1.0, 1.0), saturation=(1.0, 1.0))
    black = FakeBackgrounds()
    black.images = [np.zeros_like(image) for image in black.images]
    plain = Compositor(config, FakeObjects(), black)
    comp = Compositor(config, FakeObjects(), black, distractors=GreenDistractors())
    covered = 0
    for index in range(10):
        sample = comp.render(seed=2, index=index, keep_masks=True)
        green = np.all(sample.image == (0, 255, 0), axis=-1)
        assert green.sum() >= 2 * 0.2 * 0.2 * 224 * 224 * 0.3  # at least two distractors, mostly visible
        for ann in sample.annotations:
            assert not (ann.mask & green).any()  # no label covers a distractor pixel
        # Same objects as without distractors (their draws come first), now partly covered by them.
        before = plain.render(seed=2, index=index, keep_masks=True)
        assert [a.category_id for a in sample.annotations] == [a.category_id for a in before.annotations]
        for a, b in zip(sample.annotations, before.annotations):
            assert not (a.mask & ~b.mask).any()
            covered += a.area < b.area
    assert covered > 0


# -- guarantees: same bytes for any worker count; resume without duplicate or gap -----------------


def test_all_features_keep_bytes_identical_across_workers_and_resume(tmp_path, objects_dir, backgrounds_dir):
    path = coco_file(tmp_path)
    composite = CompositeConfig(width=96, height=80, objects_per_image=(1, 3), scale=(0.2, 0.5), min_visible=0.4,
                                class_balance="uniform", box="amodal", distractors_per_image=(1, 2), protect=0.3)
    spec = PasteSpec(objects=str(objects_dir), backgrounds=f"coco:{path}", keep_annotations=True, distractors=str(objects_dir / "dog"),
                     composite=composite, visibility=True, masks=True, seed=3)
    one = run_paste(spec, RunOptions(out=tmp_path / "one", format="wds", n=24, shard_size=5, progress=False))
    two = run_paste(spec, RunOptions(out=tmp_path / "two", format="wds", n=24, shard_size=5, workers=2, progress=False))
    assert tree_digest(tmp_path / "one") == tree_digest(tmp_path / "two") and one.per_class == two.per_class
    # A run stopped after 11 samples and resumed (COCO journals every sample) equals a straight run.
    run_paste(spec, RunOptions(out=tmp_path / "straight", format="coco", n=24, workers=2, progress=False))
    run_paste(spec, RunOptions(out=tmp_path / "resumed", format="coco", n=11, progress=False))
    run_paste(spec, RunOptions(out=tmp_path / "resumed", format="coco", n=24, workers=2, resume=True, progress=False))
    assert tree_digest(tmp_path / "resumed") == tree_digest(tmp_path / "straight")


def test_runs_made_before_these_settings_existed_still_resume(tmp_path, objects_dir, backgrounds_dir):
    spec = spec_for(objects_dir, backgrounds_dir, CompositeConfig(width=64, height=64))
    out = tmp_path / "o"
    run_paste(spec, RunOptions(out=out, n=4, progress=False))
    settings = json.loads((out / ".synthgen" / "run.json").read_text())
    for key in ("keep_annotations", "background_images", "distractors", "visibility"):
        del settings["spec"][key]
    for key in ("box", "class_balance", "distractors_per_image", "distractor_scale", "protect"):
        del settings["spec"]["composite"][key]
    (out / ".synthgen" / "run.json").write_text(json.dumps(settings))
    assert run_paste(spec, RunOptions(out=out, n=8, resume=True, progress=False)).total == 8
    with pytest.raises(InputError, match="visibility"):
        run_paste(spec_for(objects_dir, backgrounds_dir, CompositeConfig(width=64, height=64), visibility=True),
                  RunOptions(out=out, n=8, resume=True, progress=False))
