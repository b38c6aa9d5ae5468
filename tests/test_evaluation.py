"""Evaluation: COCO and VOC-style AP on hand-checkable detections, and the model path."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from synthgen.detectors import build_detector, save_checkpoint
from synthgen.errors import InputError
from synthgen.evaluation import average_precision, evaluate, evaluate_detections, match_categories

# 101 recall thresholds, as pycocotools uses them for AP.
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)


def gt_dataset(boxes_per_image: list[list[list[float]]], crowd: dict[int, list[list[float]]] | None = None) -> dict:
    """One 'face' class (id 5, to catch id/label mix-ups); image i+1 holds boxes_per_image[i]."""
    images, anns = [], []
    for i, boxes in enumerate(boxes_per_image):
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "width": 400, "height": 300})
        for box in boxes:
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 5, "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
        for box in (crowd or {}).get(i + 1, []):
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 5, "bbox": box, "area": box[2] * box[3], "iscrowd": 1})
    return {"images": images, "annotations": anns, "categories": [{"id": 5, "name": "face"}]}


def det(image_id: int, box: list[float], score: float) -> dict:
    return {"image_id": image_id, "category_id": 5, "bbox": box, "score": score}


BOX = [50.0, 60.0, 100.0, 100.0]


def shifted(box: list[float], dx: float) -> list[float]:
    return [box[0] + dx, box[1], box[2], box[3]]


def test_predictions_equal_to_ground_truth_score_one():
    gt = gt_dataset([[BOX], [[10, 10, 40, 30], [200, 100, 80, 120]]])
    dets = [det(a["image_id"], a["bbox"], 0.9) for a in gt["annotations"]]
    m = evaluate_detections(gt, dets)
    assert m.ap == pytest.approx(1.0) and m.ap50 == pytest.approx(1.0) and m.ap75 == pytest.approx(1.0)
    assert m.voc_ap50 == pytest.approx(1.0)
    assert m.voc_ap50_per_class == {"face": pytest.approx(1.0)}
    assert m.ar100 == pytest.approx(1.0)


def test_shifted_boxes_pass_only_the_loose_thresholds():
    # A 100 px box shifted by 20 px overlaps its truth by 80*100 / (120*100) = 2/3: a hit at
    # IoU 0.5, 0.55, 0.6, 0.65 and a miss at 0.7 ... 0.95, so COCO AP = 4/10.
    gt = gt_dataset([[BOX], [BOX]])
    m = evaluate_detections(gt, [det(1, shifted(BOX, 20), 0.9), det(2, shifted(BOX, 20), 0.8)])
    assert m.ap50 == pytest.approx(1.0)
    assert m.ap75 == pytest.approx(0.0)
    assert m.ap == pytest.approx(0.4)
    assert m.voc_ap50 == pytest.approx(1.0)


def test_ranking_of_hits_and_false_positives():
    # Three faces; detections by score: hit, miss (shifted by 60 px: IoU 40/160 = 0.25), hit, hit.
    gt = gt_dataset([[BOX], [BOX], [BOX]])
    dets = [det(1, BOX, 0.9), det(2, shifted(BOX, 60), 0.8), det(2, BOX, 0.7), det(3, BOX, 0.6)]
    m = evaluate_detections(gt, dets)
    # precision after each detection: 1, 1/2, 2/3, 3/4 at recall 1/3, 1/3, 2/3, 1; its envelope
    # is 1 up to recall 1/3 and 3/4 beyond.
    assert m.voc_ap50 == pytest.approx(1 / 3 * 1.0 + 2 / 3 * 0.75)
    # COCO reads the envelope at 101 recall points: 0.00..0.33 give 1, 0.34..1.00 give 3/4.
    expected_coco = np.where(RECALL_THRESHOLDS <= 1 / 3, 1.0, 0.75).mean()
    assert m.ap50 == pytest.approx(expected_coco)
    assert m.ap50 != pytest.approx(m.voc_ap50)  # the two interpolations differ here


def test_crowd_regions_are_ignored_not_false_positives():
    gt = gt_dataset([[BOX]], crowd={1: [[250, 20, 120, 200]]})
    dets = [det(1, [260, 40, 50, 50], 0.95), det(1, BOX, 0.9)]  # the better score sits in the crowd
    m = evaluate_detections(gt, dets)
    assert m.voc_ap50 == pytest.approx(1.0)
    assert m.ap50 == pytest.approx(1.0)
    # the same detection away from any crowd region is a false positive ranked first
    m = evaluate_detections(gt_dataset([[BOX]]), dets)
    assert m.voc_ap50 == pytest.approx(0.5)


def test_duplicates_and_background_images_count_as_false_positives():
    gt = gt_dataset([[BOX], []])
    dets = [det(1, BOX, 0.9), det(1, shifted(BOX, 2), 0.8), det(2, BOX, 0.7)]
    m = evaluate_detections(gt, dets)
    assert m.voc_ap50 == pytest.approx(1.0)  # the hit ranks first: recall 1 at precision 1
    assert [round(p, 3) for p in m.classes[0].precision] == [1.0, 0.5, 0.333]
    m = evaluate_detections(gt, [det(2, BOX, 0.95), det(1, BOX, 0.9)])
    assert m.voc_ap50 == pytest.approx(0.5)


def test_no_detections_and_classes_without_ground_truth():
    gt = gt_dataset([[BOX]])
    gt["categories"].append({"id": 9, "name": "hand"})
    m = evaluate_detections(gt, [])
    assert m.ap50 == 0.0 and m.voc_ap50 == 0.0
    assert np.isnan(m.voc_ap50_per_class["hand"])  # no truth: no AP, and not in the mean
    assert m.to_dict()["voc_ap50_per_class"]["hand"] is None


def test_average_precision_is_the_area_under_the_envelope():
    assert average_precision(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 0.6667])) == pytest.approx(0.5 + 0.5 * 0.6667)
    assert average_precision(np.array([]), np.array([])) == 0.0


def test_foreign_detections_and_unmatched_classes_are_input_errors():
    gt = gt_dataset([[BOX]])
    with pytest.raises(InputError, match="ground truth does not have"):
        evaluate_detections(gt, [det(99, BOX, 0.5)])
    with pytest.raises(InputError, match="share no name"):
        match_categories([{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}], [{"id": 1, "name": "face"}, {"id": 2, "name": "hand"}])
    # one class against one class is scored whatever the names
    assert match_categories([{"id": 1, "name": "faces"}], [{"id": 5, "name": "face"}]) == {1: 5}


def write_images(root: Path, sizes: list[tuple[int, int]]) -> list[str]:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    names = []
    for i, (h, w) in enumerate(sizes):
        name = f"images/{i}.png"
        cv2.imwrite(str(root / name), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        names.append(name)
    return names


class Oracle(nn.Module):
    """Returns the ground truth of each image, recognised by its size, as label-space output."""

    def __init__(self, answers: dict[tuple[int, int], tuple[list[list[float]], list[int]]]) -> None:
        super().__init__()
        self.answers = answers
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, images):
        out = []
        for image in images:
            boxes, labels = self.answers[tuple(image.shape[1:])]
            out.append({
                "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                "scores": torch.linspace(0.9, 0.5, len(labels)),
                "labels": torch.tensor(labels, dtype=torch.int64),
            })
        return out


def test_evaluate_maps_labels_to_category_ids_and_writes_reports(tmp_path):
    sizes = [(120, 160), (140, 100)]
    names = write_images(tmp_path, sizes)
    gt = {
        "images": [{"id": 10 + i, "file_name": n, "width": w, "height": h} for i, (n, (h, w)) in enumerate(zip(names, sizes))],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 7, "bbox": [10, 20, 30, 40], "area": 1200, "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 3, "bbox": [80, 10, 50, 50], "area": 2500, "iscrowd": 0},
            {"id": 3, "image_id": 11, "category_id": 7, "bbox": [5, 5, 60, 90], "area": 5400, "iscrowd": 0},
        ],
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
    }
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    # the detector's label order differs from the file's category ids: label 1 = dog, 2 = cat
    model_categories = [{"id": 1, "name": "dog"}, {"id": 2, "name": "cat"}]
    oracle = Oracle({
        (120, 160): ([[10, 20, 40, 60], [80, 10, 130, 60]], [1, 2]),
        (140, 100): ([[5, 5, 65, 95]], [1]),
    })
    out = tmp_path / "eval"
    m = evaluate(oracle, tmp_path / "gt.json", out_dir=out, categories=model_categories, device="cpu", preview=2)
    assert m.ap == pytest.approx(1.0) and m.voc_ap50 == pytest.approx(1.0)
    assert m.num_images == 2 and m.num_detections == 3
    detections = json.loads((out / "detections.json").read_text())
    assert {(d["image_id"], d["category_id"]) for d in detections} == {(10, 7), (10, 3), (11, 7)}
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["metrics"]["voc_ap50_per_class"] == {"cat": 1.0, "dog": 1.0}
    assert (out / "pr_curve.png").stat().st_size > 0 and (out / "preview.png").stat().st_size > 0


def test_evaluate_command_on_a_checkpoint(tmp_path):
    from synthgen.cli import app as train_app

    names = write_images(tmp_path, [(100, 120)])
    gt = {
        "images": [{"id": 1, "file_name": names[0], "width": 120, "height": 100}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "area": 2500, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "face"}],
    }
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    torch.manual_seed(0)
    model = build_detector("ssdlite-mbv3", 1, 96, pretrained_backbone=False)
    save_checkpoint(tmp_path / "run" / "best.pt", model, detector="ssdlite-mbv3", categories=gt["categories"], image_size=96, pretrained_backbone=False)
    result = CliRunner().invoke(
        train_app, ["evaluate", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--data", str(tmp_path / "gt.json"), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    assert "voc_ap50" in result.output
    assert f"{tmp_path / 'run' / 'best.pt'} on {tmp_path / 'gt.json'}" in result.output.splitlines()  # unbroken
    summary = json.loads((tmp_path / "run" / "eval-gt" / "metrics.json").read_text())
    assert 0.0 <= summary["metrics"]["ap50"] <= 1.0 and summary["metrics"]["num_images"] == 1
    assert summary["image_size"] is None  # the checkpoint's own
    args = ["evaluate", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--data", str(tmp_path / "gt.json"), "--device", "cpu"]
    result = CliRunner().invoke(train_app, [*args, "--image-size", "160", "--out", str(tmp_path / "e160")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "e160" / "metrics.json").read_text())["image_size"] == 160
    result = CliRunner().invoke(train_app, [*args, "--image-size", "40", "--out", str(tmp_path / "e40")])
    assert result.exit_code == 2 and "--image-size 40 is too small" in result.output and "Traceback" not in result.output


def test_ground_truth_without_images_is_refused(tmp_path):
    (tmp_path / "empty.json").write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "x"}]}))
    with pytest.raises(InputError, match="has no images"):
        evaluate(nn.Identity(), tmp_path / "empty.json", categories=[{"id": 1, "name": "x"}], device="cpu")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(InputError, match="not a JSON file"):
        evaluate(nn.Identity(), tmp_path / "broken.json", categories=[{"id": 1, "name": "x"}], device="cpu")
    with pytest.raises(InputError, match="does not exist"):
        evaluate(tmp_path / "missing.pt", tmp_path / "broken.json")
