"""`synthgen evaluate --baseline CKPT`: two detectors' scores side by side with the difference."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from synthgen.detectors import build_detector, save_checkpoint
from synthgen.evaluation import compare_metric_sets, compare_metrics
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
    # what was compared, on one unbroken line however long the paths (a log is grepped for it)
    assert f"{tmp_path / 'new' / 'best.pt'} against {tmp_path / 'old' / 'best.pt'} on {data}" in result.output.splitlines()
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


def test_compare_metric_sets_pairs_runs_in_order_and_reports_the_spread():
    a = [{"ap": 0.5, "voc_ap50_per_class": {"red": 0.6}}, {"ap": 0.7, "voc_ap50_per_class": {"red": 0.8}}]
    b = [{"ap": 0.4, "voc_ap50_per_class": {"red": 0.5}}, {"ap": 0.4, "voc_ap50_per_class": {"red": 0.9}}]
    rows = {r["metric"]: r for r in compare_metric_sets(a, b)}
    ap = rows["ap"]
    assert (ap["n"], ap["n_baseline"], ap["paired"]) == (2, 2, True)
    assert ap["value_mean"] == pytest.approx(0.6) and ap["value_sd"] == pytest.approx(0.1414, abs=1e-4)
    assert ap["baseline_mean"] == pytest.approx(0.4) and ap["baseline_sd"] == pytest.approx(0.0)
    assert ap["differences"] == pytest.approx([0.1, 0.3])
    assert ap["difference_mean"] == pytest.approx(0.2) and ap["difference_sd"] == pytest.approx(0.1414, abs=1e-4)
    assert rows["voc_ap50: red"]["differences"] == pytest.approx([0.1, -0.1])
    # unpaired (3 against 2): the difference of the means, with its standard error
    rows = {r["metric"]: r for r in compare_metric_sets([*a, {"ap": 0.6}], b)}
    ap = rows["ap"]
    assert ap["paired"] is False and "differences" not in ap
    assert ap["difference_mean"] == pytest.approx(0.2)
    assert ap["difference_sd"] == pytest.approx((0.1**2 / 3 + 0.0**2 / 2) ** 0.5)
    assert rows["voc_ap50: red"]["n"] == 2  # the third run has no per-class score
    # one run a side: no spread
    one = {r["metric"]: r for r in compare_metric_sets(a[:1], b[:1])}["ap"]
    assert one["value_sd"] is None and one["difference_sd"] is None and one["difference_mean"] == pytest.approx(0.1)


def _checkpoints(tmp_path, names_seeds):
    categories = [{"id": 1, "name": "red"}, {"id": 2, "name": "blue"}]
    paths = []
    for name, seed in names_seeds:
        torch.manual_seed(seed)
        model = build_detector("ssd-mobilenet", 2, 128, pretrained_backbone=False)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        path = tmp_path / name / "best.pt"
        save_checkpoint(path, model, detector="ssd-mobilenet", categories=categories, image_size=128, pretrained_backbone=False)
        paths.append(path)
    return paths


def test_evaluate_several_checkpoints_against_several_baselines(tmp_path):
    from synthgen.cli import app

    data = make_coco(tmp_path / "data", 2)
    _checkpoints(tmp_path, [("new-s0", 0), ("new-s1", 1), ("old-s0", 2), ("old-s1", 3)])
    out = tmp_path / "eval"
    args = ["evaluate", "--checkpoint", str(tmp_path / "new-s*" / "best.pt"), "--baseline", str(tmp_path / "old-s0" / "best.pt"),
            "--baseline", str(tmp_path / "old-s1" / "best.pt"), "--data", str(data), "--out", str(out), "--device", "cpu"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "difference" in result.output and "paired" in result.output
    assert f"2 checkpoint(s) against 2 baseline(s) on {data}" in result.output.splitlines()
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["checkpoints"] == [str(tmp_path / "new-s0" / "best.pt"), str(tmp_path / "new-s1" / "best.pt")]  # glob, sorted
    runs = {side: [json.loads((out / f"{side}-{i}" / "metrics.json").read_text())["metrics"] for i in (1, 2)]
            for side in ("checkpoint", "baseline")}  # fmt: skip
    assert runs["checkpoint"][0] != runs["checkpoint"][1]  # different detectors were scored
    ap50 = {r["metric"]: r for r in comparison["rows"]}["ap50"]
    new, old = [m["ap50"] for m in runs["checkpoint"]], [m["ap50"] for m in runs["baseline"]]
    assert ap50["value_mean"] == pytest.approx(sum(new) / 2) and ap50["baseline_mean"] == pytest.approx(sum(old) / 2)
    assert ap50["differences"] == pytest.approx([new[0] - old[0], new[1] - old[1]])
    bad = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(tmp_path / "nothing-*.pt"), "--data", str(data)])
    message = " ".join(bad.output.split())  # the console wraps long lines
    assert bad.exit_code != 0 and "no file matches this pattern" in message and "Traceback" not in message


def test_several_checkpoints_from_the_config_file(tmp_path):
    from synthgen.cli import app

    data = make_coco(tmp_path / "data", 2)
    paths = _checkpoints(tmp_path, [("a", 0), ("b", 1)])
    config = tmp_path / "synthgen.toml"
    config.write_text(f"[evaluate]\ncheckpoint = {json.dumps([str(p) for p in paths])}\ndata = {json.dumps(str(data))}\n")
    result = CliRunner().invoke(app, ["--config", str(config), "evaluate", "--out", str(tmp_path / "eval"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "eval" / "comparison.json").read_text())["checkpoints"] == [str(p) for p in paths]
