"""``--objects coco:FILE.json``: the boxes of a labelled set cut out as object images."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from synthgen.errors import InputError
from synthgen.imageio import encode_jpeg, read_image
from synthgen.sources import FolderSource, resolve_objects
from synthgen.sources.boxes import box_crop_bounds, box_crops
from tests.test_cli import run


def write_labelled_set(root: Path, annotations: list[dict] | None = None, categories: list[dict] | None = None) -> Path:
    """Two 80x120 photos of smooth noise and a COCO file of their boxes (a person, a crowd, a tiny box, a dog
    at the border)."""
    rng = np.random.default_rng(3)
    (root / "images").mkdir(parents=True)
    for name in ("a.png", "b.png"):
        noise = rng.integers(0, 255, (80, 120, 3), dtype=np.uint8)
        cv2.imwrite(str(root / "images" / name), cv2.normalize(cv2.GaussianBlur(noise, (0, 0), 2), None, 0, 255, cv2.NORM_MINMAX))
    if annotations is None:
        annotations = [
            {"id": 7, "image_id": 1, "category_id": 1, "bbox": [10, 20, 30, 40]},
            {"id": 8, "image_id": 1, "category_id": 1, "bbox": [50, 5, 40, 40], "iscrowd": 1},
            {"id": 9, "image_id": 2, "category_id": 1, "bbox": [60, 60, 5, 12]},
            {"id": 12, "image_id": 2, "category_id": 2, "bbox": [100, 50, 20, 30]},
        ]
    data = {
        "images": [{"id": 1, "file_name": "images/a.png", "width": 120, "height": 80},
                   {"id": 2, "file_name": "images/b.png", "width": 120, "height": 80}],
        "annotations": annotations,
        "categories": categories or [{"id": 1, "name": "person"}, {"id": 2, "name": "dog"}],
    }
    path = root / "real.json"
    path.write_text(json.dumps(data))
    return path


def test_box_bounds_grow_by_a_tenth_and_stay_inside_the_image():
    assert box_crop_bounds([10, 20, 30, 40], 120, 80) == (7, 16, 43, 64)
    assert box_crop_bounds([100, 50, 20, 30], 120, 80) == (98, 47, 120, 80)  # clipped at the right and bottom
    assert box_crop_bounds([0, 0, 10, 10], 120, 80, pad=0.5) == (0, 0, 15, 15)


def test_each_box_becomes_an_object_image_of_its_class(tmp_path):
    coco_file = write_labelled_set(tmp_path)
    folder = box_crops(coco_file)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.jpg"))
    assert files == ["dog/00000012.jpg", "person/00000007.jpg"]  # no crowd box, no 5-px box
    photo = read_image(tmp_path / "images" / "a.png")
    assert (folder / "person" / "00000007.jpg").read_bytes() == encode_jpeg(photo[16:64, 7:43], 95)  # that region, exactly
    assert read_image(folder / "dog" / "00000012.jpg").shape == (33, 22, 3)

    source = resolve_objects(f"coco:{coco_file}")
    assert isinstance(source, FolderSource) and source.classes == ["dog", "person"]
    assert [item.path.name for item in source.items] == ["00000012.jpg", "00000007.jpg"]
    assert resolve_objects(f"coco:{coco_file}", class_name="thing").classes == ["thing"]


def test_crops_are_written_once_and_again_when_the_file_changes(tmp_path):
    coco_file = write_labelled_set(tmp_path)
    folder = box_crops(coco_file)
    written = (folder / "person" / "00000007.jpg").stat().st_mtime_ns
    assert box_crops(coco_file) == folder and (folder / "person" / "00000007.jpg").stat().st_mtime_ns == written
    data = json.loads(coco_file.read_text())
    data["annotations"] = data["annotations"][:1]
    coco_file.write_text(json.dumps(data, indent=1))
    changed = box_crops(coco_file)
    assert changed != folder and sorted(p.name for p in changed.rglob("*.jpg")) == ["00000007.jpg"]


@pytest.mark.parametrize(
    "annotations,categories,message",
    [
        ([{"id": 1, "image_id": 1, "category_id": 5, "bbox": [1, 1, 20, 20]}], None, "category ids [5]"),
        ([{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 20, 20], "iscrowd": 1}], None, "no box to cut out"),
        ([{"id": 1, "image_id": 1, "category_id": 1, "bbox": [118, 78, 30, 30]}], None, "outside its image"),
        ([{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 20, 20]}], [{"id": 1, "name": "a/b"}], "cannot name a class folder"),
    ],
)
def test_unusable_files_are_refused_with_what_to_do(tmp_path, annotations, categories, message):
    coco_file = write_labelled_set(tmp_path, annotations, categories)
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        box_crops(coco_file)


def test_paste_from_your_own_boxes(tmp_path, backgrounds_dir, monkeypatch):
    coco_file = write_labelled_set(tmp_path)
    out = tmp_path / "out"
    code, text = run("paste", "--objects", f"coco:{coco_file}", "--backgrounds", backgrounds_dir, "--segmenter", "grabcut",
                     "--size", "96x80", "--n", "4", "--quiet", "--out", out)
    assert code == 0, text
    coco = json.loads((out / "annotations.json").read_text())
    assert len(coco["images"]) == 4 and {c["name"] for c in coco["categories"]} == {"dog", "person"}
    code, text = run("paste", "--objects", "coco:", "--backgrounds", backgrounds_dir, "--out", tmp_path / "x")
    assert code == 2 and "needs the annotation file" in text, text
    code, text = run("paste", "--objects", f"coco:{tmp_path / 'missing.json'}", "--backgrounds", backgrounds_dir, "--out", tmp_path / "y")
    assert code == 2 and "does not exist" in text, text
