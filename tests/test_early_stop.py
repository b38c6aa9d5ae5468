"""Early stopping (--early-stop PATIENCE) on a scripted validation curve: the loop's validation is
replaced by a fixed sequence of scores, so the stopping step is known exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from synthgen.detectors import read_checkpoint
from synthgen.errors import InputError
from synthgen.training import loop
from synthgen.training.coco import load_coco
from synthgen.training.data import open_source
from synthgen.training.loop import train
from tests.test_training import config, make_coco, read_log

# validation VOC AP@0.5 at steps 1, 2, 3, ... (one validation a step): best 0.3 at step 2, then
# 0.2 (1 without a new best), 0.3 (a tie is no improvement: 2), 0.25 (3), 0.4 (new best), ...
CURVE = [0.1, 0.3, 0.2, 0.3, 0.25, 0.4, 0.1, 0.1, 0.1, 0.1]


@pytest.fixture
def scripted(monkeypatch):
    """Replace the loop's validation by CURVE, one score per call; the calls are counted."""
    calls: list[int] = []

    def validate(model, val, categories, device, batch_size):
        score = CURVE[len(calls)]
        calls.append(1)
        return {"ap": score / 2, "ap50": score, "voc_ap50": score}

    monkeypatch.setattr(loop, "_validate", validate)
    return calls


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_coco(tmp_path_factory.mktemp("data"), 4)


def test_early_stop_stops_after_patience_validations_without_a_new_best(tmp_path, scripted, data):
    out = tmp_path / "run"
    result = train(config(out, steps=10, eval_every=1, early_stop=3), open_source(str(data), real=True), load_coco(data))
    assert result.steps == 5 and len(scripted) == 5  # steps 3, 4, 5 did not beat step 2's 0.3
    assert result.best_metric == pytest.approx(0.3)
    assert read_checkpoint(out / "best.pt")["step"] == 2
    assert result.early_stop.startswith("stopped early at step 5 of 10") and "3 evaluations" in result.early_stop
    rows = read_log(out)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5]
    assert [r["val_evals_since_best"] for r in rows] == ["0", "0", "1", "2", "3"]
    assert [bool(r["early_stop"]) for r in rows] == [False] * 4 + [True]
    last = read_checkpoint(out / "last.pt")
    assert last["step"] == 5 and last["evals_since_best"] == 3 and last["early_stop"] == result.early_stop
    # resuming a run that stopped early with the same patience would stop again at once: refused
    with pytest.raises(InputError, match="stopped early at step 5"):
        train(config(out, steps=10, eval_every=1, early_stop=3, resume=True), open_source(str(data), real=True), load_coco(data))


def test_without_the_flag_the_run_takes_all_its_steps(tmp_path, scripted, data):
    out = tmp_path / "run"
    result = train(config(out, steps=10, eval_every=1), open_source(str(data), real=True), load_coco(data))
    assert result.steps == 10 and len(scripted) == 10 and result.early_stop is None
    assert result.best_metric == pytest.approx(0.4)
    assert "early_stop" not in read_log(out)[0]


def test_a_resumed_run_keeps_the_patience_count(tmp_path, scripted, data):
    out = tmp_path / "run"
    source, val = open_source(str(data), real=True), load_coco(data)
    first = train(config(out, steps=4, eval_every=1, early_stop=3), source, val)
    assert first.steps == 4 and first.early_stop is None  # two validations without a new best so far
    result = train(config(out, steps=10, eval_every=1, early_stop=3, resume=True), source, val)
    assert result.steps == 5  # the third comes at step 5, counted across the resume
    assert [r["val_evals_since_best"] for r in read_log(out)] == ["0", "0", "1", "2", "3"]


def test_early_stop_needs_validation_and_a_positive_patience(tmp_path, data):
    with pytest.raises(InputError, match="--val"):
        train(config(tmp_path / "a", early_stop=2), open_source(str(data), real=True))
    with pytest.raises(InputError, match="at least 1"):
        train(config(tmp_path / "b", early_stop=0), open_source(str(data), real=True), load_coco(data))


def test_finetune_command_prints_why_it_stopped(tmp_path, scripted, data):
    from synthgen.cli import app

    out = tmp_path / "run"
    args = [
        "finetune", "--data", str(data), "--val", str(data), "--out", str(out), "--steps", "10", "--batch-size", "2",
        "--image-size", "128", "--eval-every", "2", "--early-stop", "2", "--num-workers", "0", "--device", "cpu",
        "--no-pretrained-backbone", "--no-progress",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    # validations at steps 2, 4, 6: 0.1, 0.3 (best), 0.2, then 0.3 at step 8 is the second without a new best
    assert "stopped early at step 8 of 10" in " ".join(result.output.split())
    assert read_checkpoint(out / "best.pt")["step"] == 4
