"""`synthgen evaluate --baseline CKPT`: two detectors' scores side by side with the difference."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from synthgen.detectors import build_detector, save_checkpoint
from synthgen.evaluation import compare_metrics
from tests.test_training import make_coco


def test_compare_metrics_lines_up_scores_and_subtracts_the_baseline():
    a = {"ap": 0.5, "voc_ap50": 0.75, "voc_ap50_per_class": {"red": 0.5, "blue": 1.0}, "num_images": 4, "ar1": None}
    b = {"ap": 0.25, "voc_ap50": 0.5, "voc_ap50_per_class": {"red": 0.75, "blue": 0.25}, "num_images": 4, "ar1": 0.1}
    rows = {r["metric"]: r for r in compare_metrics(a, b)}
    assert rows["ap"] == {"metric": "ap", "value": 0.5, "baseline": 0.25, "difference": 0.25}
    assert rows["voc_ap50: red"]["difference"] == pytest.approx(-0.25)
    assert rows["voc_ap50: blue"]["difference"] == pytest.approx(0.75)
    assert rows["num_images"]["difference"] == 0
    assert rows["ar1"]["difference"] is None  # a score one side lacks has no difference
    assert list(rows) == ["ap", "voc_ap50", "num_images", "ar1", "voc_ap50: red", "voc_ap50: blue"]


def test_evaluate_command_with_a_baseline(tmp_path):
    from synthgen.cli import app

    data = make_coco(tmp_path / "data", 2)
    categories = [{"id": 1, "name": "red"}, {"id": 2, "name": "blue"}]
    for name, seed in (("new", 0), ("old", 1)):
        torch.manual_seed(seed)
        model = build_detector("ssd-mobilenet", 2, 128, pretrained_backbone=False)
        with torch.no_grad():  # the builder's initialisation is the same every time: make the two differ
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        save_checkpoint(tmp_path / name / "best.pt", model, detector="ssd-mobilenet", categories=categories, image_size=128, pretrained_backbone=False)
    out = tmp_path / "eval"
    args = ["evaluate", "--checkpoint", str(tmp_path / "new" / "best.pt"), "--baseline", str(tmp_path / "old" / "best.pt"),
            "--data", str(data), "--out", str(out), "--device", "cpu"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "baseline" in result.output and "difference" in result.output
    new = json.loads((out / "metrics.json").read_text())["metrics"]
    old = json.loads((out / "baseline" / "metrics.json").read_text())["metrics"]
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["baseline"] == str(tmp_path / "old" / "best.pt")
    rows = {r["metric"]: r for r in comparison["rows"]}
    # two different detectors were scored
    assert (out / "detections.json").read_text() != (out / "baseline" / "detections.json").read_text()
    for name in ("ap", "ap50", "voc_ap50", "voc_ap50: red"):
        key = ("voc_ap50_per_class", "red") if name.startswith("voc_ap50:") else (name,)
        value = new[key[0]][key[1]] if len(key) == 2 else new[name]
        base = old[key[0]][key[1]] if len(key) == 2 else old[name]
        assert rows[name]["value"] == value and rows[name]["baseline"] == base
        assert rows[name]["difference"] == pytest.approx(value - base)
