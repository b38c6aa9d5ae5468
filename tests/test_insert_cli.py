"""`synthgen insert` and `synthgen train detectorgan` on the command line: help, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from typer.testing import CliRunner

from synthgen.cli import app
from synthgen.cli.insert import METHOD_NAMES

runner = CliRunner()


def _run(*args: str):
    result = runner.invoke(app, list(args))
    return result.exit_code, " ".join(result.output.split())


def test_method_names_match_the_registry():
    from synthgen.insert.methods import METHODS

    assert tuple(METHODS.names()) == METHOD_NAMES


def test_insert_without_a_checkpoint_says_how_to_train_one():
    code, text = _run("insert", "--backgrounds", "scenes")
    assert code == 2
    assert "synthgen train detectorgan" in text and "--checkpoint RUN" in text


def test_insert_refuses_a_checkpoint_of_another_kind(tmp_path):
    from synthgen.detectors import build_detector, save_checkpoint

    detector = tmp_path / "det.pt"
    save_checkpoint(detector, build_detector("ssd-mobilenet", 1, 64, pretrained_backbone=False), detector="ssd-mobilenet",
                    categories=[{"id": 1, "name": "person"}], image_size=64, pretrained_backbone=False)
    code, text = _run("insert", "--checkpoint", str(detector), "--backgrounds", str(tmp_path), "--out", str(tmp_path / "o"))
    assert code == 2 and "not an inserter checkpoint" in text and "synthgen-detector" in text
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    code, text = _run("insert", "--checkpoint", str(junk), "--backgrounds", str(tmp_path), "--out", str(tmp_path / "o"))
    assert code == 2 and "not an inserter checkpoint" in text
    code, text = _run("insert", "--checkpoint", str(tmp_path / "nothing"), "--backgrounds", str(tmp_path))
    assert code == 2 and "Train one first" in text


def _labelled(tmp_path: Path, with_boxes: bool) -> Path:
    (tmp_path / "lab").mkdir()
    cv2.imwrite(str(tmp_path / "lab" / "a.jpg"), np.full((80, 60, 3), 128, np.uint8))
    coco = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 60, "height": 80}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 40], "iscrowd": 0}] if with_boxes else [],
        "categories": [{"id": 1, "name": "person"}],
    }
    path = tmp_path / "lab" / "annotations.json"
    path.write_text(json.dumps(coco))
    return path


def test_training_refuses_bad_inputs_with_clear_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    labelled = _labelled(tmp_path, with_boxes=True)
    base = ["train", "detectorgan", "--labeled", str(labelled), "--out", str(tmp_path / "run"), "--size", "64", "--device", "cpu", "--no-progress"]
    code, text = _run(*base, "--clean", str(empty))
    assert code == 2 and "no images in background folder" in text

    (tmp_path / "nb").mkdir()
    no_boxes = _labelled(tmp_path / "nb", with_boxes=False)
    code, text = _run("train", "detectorgan", "--clean", str(empty), "--labeled", str(no_boxes), "--out", str(tmp_path / "r2"), "--device", "cpu")
    assert code == 2 and "has no boxes of 'person'" in text

    code, text = _run(*base, "--clean", str(empty), "--method", "fasterrcnn")
    assert code == 2 and "unknown insertion method" in text
    code, text = _run(*base, "--clean", str(empty), "--detector", "fasterrcnn-mbv3")
    assert code == 2 and "cannot be unrolled" in text and "roi_align" in text
    code, text = _run(*base, "--clean", str(empty), "--size", "66")
    assert code == 2 and "multiple of 4" in text


def test_insert_refuses_a_checkpoint_of_another_method(tmp_path):
    from synthgen.insert import checkpoint as ckpt

    ckpt.save(tmp_path / "run" / "last.pt", {"method": "cyclegan", "nets": {}, "architecture": {}, "boxes": {}})
    (tmp_path / "bg").mkdir()
    code, text = _run("insert", "--method", "detectorgan", "--checkpoint", str(tmp_path / "run"), "--backgrounds", str(tmp_path / "bg"))
    assert code == 2 and "holds a 'cyclegan' inserter" in text and "--method cyclegan" in text
