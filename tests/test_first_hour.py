"""A new user's first hour (issue 19): one test (or a few) per item, as a user meets it."""

from __future__ import annotations

import json
import os
import pickle
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from synthgen.cli import app
from synthgen.errors import InputError
from tests.conftest import write_backgrounds, write_rgba_objects

runner = CliRunner()


def run(*args, cwd: Path | None = None, monkeypatch=None):
    if cwd is not None:
        monkeypatch.chdir(cwd)
    result = runner.invoke(app, [str(a) for a in args])
    text = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert "Traceback" not in text
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, " ".join(text.split())


def small(objects_dir: Path, backgrounds_dir: Path, out: Path, *extra) -> list:
    return ["paste", "--objects", objects_dir, "--backgrounds", backgrounds_dir, "--size", "96x80", "--quiet", "--out", out, *extra]


# -- 2. checkpoints: say what the file is, never advise an unsafe load -------------------------


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo should-never-run > /dev/null",))


@pytest.fixture
def foreign_files(tmp_path):
    import torch

    files = {}
    files["random"] = tmp_path / "random.pt"
    files["random"].write_bytes(np.random.default_rng(0).bytes(600))
    files["payload"] = tmp_path / "payload.pt"
    torch.save({"model": _Payload()}, files["payload"])
    files["plain_payload"] = tmp_path / "plain_payload.pkl"
    files["plain_payload"].write_bytes(pickle.dumps({"model": _Payload()}))
    files["plain"] = tmp_path / "plain.pkl"
    files["plain"].write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))
    files["state_dict"] = tmp_path / "state_dict.pt"
    torch.save({"conv.weight": torch.zeros(2, 2)}, files["state_dict"])
    files["folder"] = tmp_path / "run"
    files["folder"].mkdir()
    return files


@pytest.mark.parametrize(
    "name,expected",
    [
        ("random", "not a PyTorch file"),
        ("payload", "wants to import `posix.system`" if os.name == "posix" else "wants to import"),
        ("plain_payload", "wants to import `posix.system`" if os.name == "posix" else "wants to import"),
        ("plain", "plain Python pickle"),
        ("state_dict", "bare state_dict"),
        ("folder", "is a folder"),
    ],
)
def test_checkpoint_errors_say_what_the_file_is(foreign_files, name, expected, capfd):
    from synthgen.detectors import read_checkpoint

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no torch UserWarning may leak
        with pytest.raises(InputError) as err:
            read_checkpoint(foreign_files[name])
    message = str(err.value)
    assert expected in message
    assert "weights_only" not in message and "arbitrary code" not in message
    assert "should-never-run" not in capfd.readouterr().out


def test_evaluate_command_refuses_a_payload_without_unsafe_advice(foreign_files, tmp_path):
    (tmp_path / "gt.json").write_text("{}")
    for name in ("random", "payload", "folder"):
        code, text = run("evaluate", "--checkpoint", foreign_files[name], "--data", tmp_path / "gt.json", "--device", "cpu")
        assert code == 2, text
        assert "weights_only" not in text and "will likely succeed" not in text
    assert "is a folder" in run("evaluate", "--checkpoint", foreign_files["folder"], "--data", tmp_path / "gt.json")[1]


def test_the_shared_loader_reads_a_genuine_checkpoint_and_allows_named_globals(tmp_path):
    import collections

    import torch

    from synthgen.checkpoints import load_checkpoint, pickle_globals

    torch.save({"w": torch.arange(3)}, tmp_path / "ok.pt")
    assert torch.equal(load_checkpoint(tmp_path / "ok.pt")["w"], torch.arange(3))
    torch.save({"w": torch.ones(1)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert float(load_checkpoint(tmp_path / "legacy.pt")["w"]) == 1.0
    point = collections.namedtuple("Point", "x y")
    globals()["Point"] = point
    point.__module__, point.__qualname__ = __name__, "Point"
    torch.save({"p": point(1, 2)}, tmp_path / "named.pt")
    assert f"{__name__}.Point" in pickle_globals(tmp_path / "named.pt")
    with pytest.raises(InputError, match="wants to import"):
        load_checkpoint(tmp_path / "named.pt")
    assert load_checkpoint(tmp_path / "named.pt", allowed_globals=[point])["p"] == (1, 2)


# -- 14. truncated JPEGs decode; evaluation never drops a ground-truth image silently ----------


def _truncated_jpeg(path: Path, seed: int = 0, size=(120, 160)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.integers(0, 255, (*size, 3), dtype=np.uint8), (0, 0), 2)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    path.write_bytes(buf.tobytes()[:-20])
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def test_a_truncated_jpeg_decodes_with_a_warning_naming_it(tmp_path, caplog):
    from synthgen.imageio import read_image

    original = _truncated_jpeg(tmp_path / "cut.jpg")
    assert cv2.imdecode(np.fromfile(str(tmp_path / "cut.jpg"), np.uint8), cv2.IMREAD_COLOR) is None  # the old reader
    with caplog.at_level("WARNING"):
        image = read_image(tmp_path / "cut.jpg")
    assert image is not None and image.shape == original.shape
    assert np.abs(image.astype(int) - original.astype(int)).mean() < 8  # the same photo, not a grey frame
    assert "cut.jpg" in caplog.text and "truncated" in caplog.text
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8 nothing")
    assert read_image(tmp_path / "junk.jpg") is None


def _gt(tmp_path: Path, files: list[str]) -> Path:
    gt = {
        "images": [{"id": i + 1, "file_name": f, "width": 160, "height": 120} for i, f in enumerate(files)],
        "annotations": [
            {"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [10, 10, 50, 50], "area": 2500, "iscrowd": 0}
            for i in range(len(files))
        ],
        "categories": [{"id": 1, "name": "face"}],
    }
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    return tmp_path / "gt.json"


class _Fixed:
    """A detector that finds the one ground-truth box in every image."""

    def __new__(cls):
        import torch
        from torch import nn

        class Model(nn.Module):
            def __init__(self):
                super().__init__()
                self.p = nn.Parameter(torch.zeros(1))

            def forward(self, images):
                return [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 60.0]]), "scores": torch.tensor([0.9]),
                         "labels": torch.tensor([1])} for _ in images]

        return Model()


def test_evaluation_scores_a_truncated_image_and_refuses_or_skips_an_undecodable_one(tmp_path):
    from synthgen.evaluation import evaluate

    _truncated_jpeg(tmp_path / "cut.jpg")
    cv2.imwrite(str(tmp_path / "fine.jpg"), np.zeros((120, 160, 3), np.uint8))
    cats = [{"id": 1, "name": "face"}]
    metrics = evaluate(_Fixed(), _gt(tmp_path, ["cut.jpg", "fine.jpg"]), categories=cats, device="cpu")
    assert metrics.num_images == 2 and metrics.voc_ap50 == pytest.approx(1.0)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not an image at all")
    gt = _gt(tmp_path, ["cut.jpg", "fine.jpg", "broken.jpg"])
    with pytest.raises(InputError, match="broken.jpg.*--skip-unreadable"):
        evaluate(_Fixed(), gt, categories=cats, device="cpu")
    metrics = evaluate(_Fixed(), gt, categories=cats, device="cpu", skip_unreadable=True, out_dir=tmp_path / "eval")
    assert metrics.num_images == 2 and metrics.voc_ap50 == pytest.approx(1.0)  # its box is not a miss
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["skipped_unreadable"] == [str(tmp_path / "broken.jpg")]


# -- 1. --n inf means WebDataset; every problem of a command is reported at once --------------


def test_n_inf_without_format_writes_webdataset_and_says_so(tmp_path, objects_dir, backgrounds_dir):
    from synthgen.cli.paste import _paste_only, paste_settings  # noqa: F401

    import typer.main

    command = typer.main.get_command(_paste_only)
    values = {param.name: param.default for param in command.params}
    values.update(objects=str(objects_dir), backgrounds=str(backgrounds_dir), n="inf", out=str(tmp_path / "o"))
    spec, options = paste_settings(**values)
    assert options.format == "wds" and options.n is None
    values.update(n="10")
    assert paste_settings(**values)[1].format == "coco"
    values.update(n="inf", format="yolo")
    with pytest.raises(InputError, match="only --format wds"):
        paste_settings(**values)


def test_an_endless_run_without_format_starts_and_stops_cleanly(tmp_path, objects_dir, backgrounds_dir, spawn):
    import subprocess
    import signal
    import sys
    import time

    out = tmp_path / "endless"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = spawn(
        [sys.executable, "-m", "synthgen", "paste", "--objects", str(objects_dir), "--backgrounds", str(backgrounds_dir),
         "--size", "64x64", "--n", "inf", "--shard-size", "5", "--quiet", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not list(out.glob("shard-*.tar")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err  # an endless run stopped by the user ended normally
    assert "--n inf without --format: writing WebDataset shards" in " ".join(err.split())
    assert list(out.glob("shard-*.tar"))


def test_all_problems_of_a_command_are_reported_at_once_most_fundamental_first(tmp_path, backgrounds_dir):
    code, text = run("paste", "--objects", "stylegan-nonesuch", "--backgrounds", backgrounds_dir, "--scale", "0.9,0.1",
                     "--n", "0", "--quiet", "--out", tmp_path / "o")
    assert code == 2
    assert "3 problems" in text
    first, second, third = (text.index(s) for s in ("stylegan-nonesuch", "MIN 0.9 is above MAX 0.1", "--n 0"))
    assert first < second < third


# -- 3. a command with nothing configured says where defaults come from -----------------------


@pytest.mark.parametrize("command,missing", [("pretrain", "--data and --out"), ("finetune", "--data and --out"),
                                             ("evaluate", "--checkpoint and --data"), ("segment", "--objects and --out")])
def test_nothing_configured_explains_synthgen_toml(tmp_path, monkeypatch, command, missing):
    code, text = run(command, cwd=tmp_path, monkeypatch=monkeypatch)
    assert code == 2
    assert f"needs {missing}" in text and "no synthgen.toml was found" in text
    assert "examples/" in text and f"synthgen {command} --help" in text
    assert "Missing option" not in text
    (tmp_path / "synthgen.toml").write_text("[pretrain]\nsteps = 5\n")
    if command == "pretrain":
        assert "table of" in run(command, cwd=tmp_path, monkeypatch=monkeypatch)[1] and "has no `data`" in run(command)[1]
    else:
        assert f"has no [{command}] table" in run(command, cwd=tmp_path, monkeypatch=monkeypatch)[1]


# -- 7. help pages read right for a newcomer ----------------------------------------------------


def _help(*command):
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200", "TERM": "dumb"})
    assert result.exit_code == 0
    return " ".join(result.output.replace("│", " ").split())


def test_help_pages_show_brackets_defaults_and_no_bool_values():
    pretrain = _help("pretrain")
    assert "[paste] table" in pretrain and "<bool>" not in pretrain
    assert "--init" not in pretrain  # pretrain has no --init
    paste = _help("paste")
    for option, default in (("--blend", "alpha"), ("--bg-fit", "crop"), ("--aspect ", "keep"), ("--scale", "0.1,0.5")):
        chunk = paste[paste.index(option):][:250]
        assert f"[default: {default}]" in chunk, chunk
    assert "<bool>" not in paste and "-o " not in paste.replace("--o", "")
    assert "MIN,MAX" in paste
    for command in (("finetune",), ("evaluate",), ("segment",), ("preview",), ("stats",)):
        assert "<bool>" not in _help(*command)


def test_no_help_text_of_any_command_holds_brackets_that_rich_would_eat():
    """Rich reads ``[word]`` (lowercase first letter) in help text as markup and drops it: such
    text must be written ``\\[word]``. Every command and argument of the whole CLI is checked."""
    import re

    import typer

    tag = re.compile(r"(?<!\\)\[[a-z#/@][^\[]*?\]")

    def commands(command, path):
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from commands(sub, f"{path} {name}")

    eaten = [(path, match.group(0)) for path, command in commands(typer.main.get_command(app), "synthgen")
             for text in [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
             for match in tag.finditer(text)]
    assert eaten == []
    assert "clipped to the image) [default: visible]" in _help("paste")


# -- 8. settings that would silently train badly are named ------------------------------------


def test_a_warmup_longer_than_the_run_is_scaled_with_a_warning(tmp_path):
    from synthgen.training.loop import TrainConfig, checked_settings

    config, notes = checked_settings(TrainConfig(out=tmp_path, steps=20, warmup_steps=50, eval_every=250), [{"id": 1, "name": "face"}], None)
    assert config.warmup_steps == 4
    assert any("--warmup 50" in n for n in notes) and any("--eval-every 250" in n for n in notes)
    config, notes = checked_settings(TrainConfig(out=tmp_path, steps=1000, warmup_steps=50, eval_every=250), [{"id": 1, "name": "face"}], None)
    assert config.warmup_steps == 50 and notes == []


def test_a_validation_set_without_boxes_of_the_trained_classes_is_named(tmp_path):
    from synthgen.training.coco import load_coco
    from synthgen.training.loop import TrainConfig, checked_settings

    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((32, 32, 3), np.uint8))
    (tmp_path / "val.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": 32, "height": 32}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [1, 1, 5, 5]}],
        "categories": [{"id": 1, "name": "face"}, {"id": 2, "name": "car"}],
    }))
    _, notes = checked_settings(TrainConfig(out=tmp_path), [{"id": 1, "name": "face"}], load_coco(tmp_path / "val.json"))
    assert any("no boxes of the trained classes" in n for n in notes)


# -- 9. Ctrl-C: a finite run exits 130 saying what was written and how to resume -------------


def test_ctrl_c_of_a_finite_run_exits_130_with_how_to_resume(tmp_path, objects_dir, backgrounds_dir, spawn):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "finite"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = spawn(
        [sys.executable, "-m", "synthgen", "paste", "--objects", str(objects_dir), "--backgrounds", str(backgrounds_dir),
         "--size", "64x64", "--n", "1000000", "--format", "wds", "--shard-size", "5", "--quiet", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not list(out.glob("shard-*.tar")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    err = " ".join(err.split())
    assert proc.returncode == 130, err
    assert "of 1,000,000 samples are complete" in err and "--resume" in err


class _CtrlCSource:
    """A training source whose reader is interrupted (as by Ctrl-C) at item number ``after``."""

    def __init__(self, source, after: int) -> None:
        self.source, self.after, self.categories = source, after, source.categories

    def stream(self, seed, part, parts, resume_from=0):
        for number, item in enumerate(self.source.stream(seed, part, parts, resume_from)):
            if number == self.after:
                raise KeyboardInterrupt
            yield item


def test_ctrl_c_of_training_says_what_last_pt_holds_and_resume_works(tmp_path):
    from synthgen.errors import Interrupted
    from synthgen.training.data import open_source
    from synthgen.training.loop import train
    from tests.test_training import config, make_coco

    source = open_source(str(make_coco(tmp_path / "data", 6)), real=True)
    with pytest.raises(Interrupted, match=r"at step 4 of 6.*last.pt holds step 3.*--resume") as err:
        train(config(tmp_path / "run", steps=6, detector="ssdlite-mbv3", image_size=96), _CtrlCSource(source, after=8))
    assert err.value.exit_code == 130
    result = train(config(tmp_path / "run", steps=6, detector="ssdlite-mbv3", image_size=96, resume=True), source)
    assert result.steps == 6


# -- 11. a run followed from a log prints plain lines ------------------------------------------


def test_progress_in_a_log_is_plain_lines_with_rate_and_eta():
    import io

    from rich.console import Console

    from synthgen.progress import LineProgress, progress_bar

    log = io.StringIO()
    bar = progress_bar("steps", console=Console(file=log, force_terminal=False), every=10)
    assert isinstance(bar, LineProgress)
    with bar:
        task = bar.add_task("train", total=50, loss="-", val="")
        for step in range(50):
            bar.update(task, loss=f"{1 / (step + 1):.3f}")
            bar.advance(task)
    lines = log.getvalue().splitlines()
    assert len(lines) == 5
    assert lines[0].startswith("train: 10/50 steps,") and "steps/s" in lines[0] and "eta" in lines[0] and "loss 0.100" in lines[0]
    assert lines[-1].startswith("train: 50/50 steps")
    assert not isinstance(progress_bar("steps", console=Console(file=io.StringIO(), force_terminal=True)), LineProgress)


# -- 4. segmentation in worker processes: the same pool for any number ------------------------


def test_grabcut_pool_is_identical_with_one_or_two_workers(tmp_path):
    from synthgen.pool import CHUNK, build_pool
    from synthgen.segmenters import MaskQuality, make_segmenter
    from synthgen.sources import FolderSource

    rng = np.random.default_rng(3)
    folder = tmp_path / "faces"
    folder.mkdir()
    for k in range(CHUNK + 9):  # two chunks
        image = np.full((40, 40, 3), 200, np.uint8) + rng.integers(0, 20, (40, 40, 3), dtype=np.uint8)
        cv2.circle(image, (20, 20), 11, [int(v) for v in rng.integers(0, 90, 3)], -1)
        cv2.imwrite(str(folder / f"{k:03d}.png"), image)
    pools = [build_pool(FolderSource(folder), make_segmenter("grabcut"), tmp_path / f"pool{w}", MaskQuality(), progress=False, workers=w)
             for w in (1, 2)]
    assert (pools[0].path / "pixels.bin").read_bytes() == (pools[1].path / "pixels.bin").read_bytes()
    one, two = (json.loads((p.path / "index.json").read_text()) for p in pools)
    assert one["objects"] == two["objects"] and len(one["objects"]["offset"]) > CHUNK
    assert one["rejected_examples"] == two["rejected_examples"]  # the same rejected objects kept as thumbnails


# -- 5. unreadable files are named, with a reason, and listed in the run's folder -------------


def test_unreadable_files_are_named_with_reasons_and_listed(tmp_path, backgrounds_dir):
    objects = write_rgba_objects(tmp_path / "objects", classes=("cat",))
    (objects / "cat" / "broken.png").write_bytes(b"\x89PNG not really")
    (objects / "cat" / "empty.jpg").write_bytes(b"")
    out = tmp_path / "out"
    code, text = run(*small(objects, backgrounds_dir, out, "--n", "2"))
    assert code == 0, text
    assert "cat/broken.png (damaged PNG" in text and "cat/empty.jpg (empty file)" in text
    listing = (out / ".synthgen" / "unreadable.txt").read_text()
    assert "objects: cat/broken.png" in listing and "objects: cat/empty.jpg (empty file)" in listing


def test_a_folder_of_only_unreadable_files_gets_advice_that_fits(tmp_path, backgrounds_dir):
    (tmp_path / "bad").mkdir()
    for k in range(3):
        (tmp_path / "bad" / f"{k}.jpg").write_text("these are notes, not photos")
    code, text = run(*small(tmp_path / "bad", backgrounds_dir, tmp_path / "out", "--n", "2"))
    assert code == 2
    assert "none of the 3 files" in text and "(not an image)" in text
    assert "another segmenter would not help" in text and "Try another segmenter" not in text


# -- 6. files synthgen writes follow the umask --------------------------------------------------


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_labels_are_as_readable_as_images(tmp_path, objects_dir, backgrounds_dir, umask):
    previous = os.umask(umask)
    try:
        for fmt in ("coco", "wds", "yolo"):
            out = tmp_path / fmt
            code, text = run(*small(objects_dir, backgrounds_dir, out, "--n", "3", "--format", fmt))
            assert code == 0, text
            files = [p for p in out.rglob("*") if p.is_file()]
            assert any(p.name in ("annotations.json", "categories.json", "data.yaml") for p in files)
            modes = {p.relative_to(out).as_posix(): p.stat().st_mode & 0o777 for p in files}
            assert set(modes.values()) == {0o666 & ~umask}, modes
    finally:
        os.umask(previous)


def test_the_users_own_command_names_every_missing_input_at_once(tmp_path, monkeypatch):
    """`paste --objects stylegan-ffhq --backgrounds voc --n inf` on a machine with neither file:
    both are named in one message, the generator first, each saying where to put what."""
    monkeypatch.setenv("SYNTHGEN_MODELS", str(tmp_path / "models"))
    result = runner.invoke(
        app, ["paste", "--objects", "stylegan-ffhq", "--backgrounds", "voc", "--n", "inf", "--out", str(tmp_path / "out")],
        env={"COLUMNS": "400"},
    )
    assert result.exit_code != 0
    text = " ".join(result.output.split())
    assert "2 problems" in text
    assert text.index("karras2019stylegan-ffhq-1024x1024.pkl") < text.index("Pascal VOC is not on this machine")
    assert "synthgen models pull stylegan-ffhq" in text and "synthgen download voc" in text
    assert not (tmp_path / "out").exists()


# -- 13. pretrain warns when the synthetic and the validation box sizes barely overlap ---------


def _coco_with_boxes(folder: Path, side: int, box: int) -> Path:
    """A COCO set of four side x side images, each with one box box x box px (relative size box/side)."""
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for k in range(4):
        cv2.imwrite(str(folder / f"{k}.jpg"), np.zeros((side, side, 3), np.uint8))
        images.append({"id": k + 1, "file_name": f"{k}.jpg", "width": side, "height": side})
        annotations.append({"id": k + 1, "image_id": k + 1, "category_id": 1, "bbox": [2, 2, box, box], "area": box * box, "iscrowd": 0})
    path = folder / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "face"}]}))
    return path


def test_box_sizes_that_barely_overlap_are_warned_about_with_both_ranges(tmp_path):
    from synthgen.stats import box_size_overlap_note

    val = _coco_with_boxes(tmp_path / "val", 100, 80)  # close-ups: 0.8 of the side
    note = box_size_overlap_note((0.1, 0.5), val)  # the default paste scale
    assert "0.1-0.5 (the paste settings' --scale)" in note and "0.80-0.80" in note and "only 0% of them" in note
    assert f"--scale-from {val}" in note
    assert box_size_overlap_note((0.3, 1.0), val) is None  # the real sizes: no warning
    small = _coco_with_boxes(tmp_path / "synthetic", 100, 10)  # a synthetic COCO folder of 0.1 boxes
    assert "0.10-0.10 (5th-95th percentile of" in box_size_overlap_note(small, val)
    assert box_size_overlap_note(small.parent, small) is None


def test_pretrain_prints_the_box_size_warning_before_training(tmp_path, monkeypatch):
    import synthgen.training.loop as loop

    def stop(*args, **kwargs):
        raise InputError("stopped before training")

    monkeypatch.setattr(loop, "pretrain", stop)
    synthetic = _coco_with_boxes(tmp_path / "synthetic", 100, 10).parent
    val = _coco_with_boxes(tmp_path / "val", 100, 80)
    code, text = run("pretrain", "--data", synthetic, "--val", val, "--out", tmp_path / "run", "--device", "cpu")
    assert code != 0 and "stopped before training" in text
    assert "warning: the synthetic and the validation box sizes barely overlap" in text and "--scale-from" in text
    code, text = run("pretrain", "--data", synthetic, "--val", synthetic / "annotations.json", "--out", tmp_path / "run", "--device", "cpu")
    assert "barely overlap" not in text


# -- 12. threads of training ------------------------------------------------------------------


def test_training_threads_set_torchs_cpu_threads(tmp_path, monkeypatch):
    import synthgen.training.loop as loop
    from synthgen.training.data import open_source
    from tests.test_training import config, make_coco

    class Applied(Exception):
        pass

    asked = []

    def set_num_threads(n):
        asked.append(n)
        raise Applied  # the run's threads are set: nothing more to train here

    monkeypatch.setattr(loop.torch, "set_num_threads", set_num_threads)
    data = make_coco(tmp_path / "data", 2)
    with pytest.raises(Applied):
        loop.train(config(tmp_path / "run", threads=3), open_source(str(data), real=True))
    assert asked == [3]
    code, text = run("pretrain", "--data", data, "--out", tmp_path / "run0", "--threads", "0")
    assert code != 0 and "--threads 0: give at least 1" in text


# -- 1 (siblings). training commands also report every problem at once, inputs first ----------


def test_training_commands_report_every_problem_at_once_inputs_first(tmp_path):
    (tmp_path / "folder.pt").mkdir()
    code, text = run("pretrain", "--data", tmp_path / "shards", "--val", tmp_path / "val.json", "--n-real", "3",
                     "--steps", "0", "--out", tmp_path / "run")
    assert code != 0 and "4 problems with this command" in text
    assert text.index("shards does not exist; expected a COCO .json") < text.index("--n-real selects") \
        < text.index("val.json does not exist") < text.index("must be at least 1")
    code, text = run("finetune", "--data", tmp_path / "train.json", "--init", tmp_path / "folder.pt", "--warmup", "-1",
                     "--out", tmp_path / "run")
    assert "3 problems" in text and "train.json does not exist" in text and "folder.pt is a folder" in text \
        and "cannot be negative" in text
    code, text = run("evaluate", "--checkpoint", tmp_path / "none.pt", "--baseline", tmp_path / "folder.pt",
                     "--data", tmp_path / "test.json", "--preview-columns", "0")
    assert "4 problems" in text and text.index("none.pt does not exist") < text.index("folder.pt is a folder") \
        < text.index("test.json does not exist") < text.index("--preview-columns must be")
