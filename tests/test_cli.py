"""The command line as a user meets it: the demo run, bad input (clear message, exit code, no
traceback), synthgen.toml defaults, and the look-at-it commands."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synthgen.cli import app
from tests.conftest import write_backgrounds, write_rgba_objects

runner = CliRunner()


def run(*args: str, cwd: Path | None = None, monkeypatch=None):
    if cwd is not None:
        monkeypatch.chdir(cwd)
    result = runner.invoke(app, [str(a) for a in args])
    text = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert "Traceback" not in text
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, " ".join(text.split())  # rich wraps long lines


def small(objects_dir: Path, backgrounds_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["paste", "--objects", objects_dir, "--backgrounds", backgrounds_dir, "--size", "96x80", "--quiet", "--out", out, *extra]


def test_demo_run_needs_no_input_and_says_it_is_a_demo(tmp_path):
    code, text = run("paste", "--n", "6", "--quiet", "--out", tmp_path / "demo")
    assert code == 0, text
    assert "DEMO" in text and "6 samples" in text
    coco = json.loads((tmp_path / "demo" / "annotations.json").read_text())
    assert len(coco["images"]) == 6 and {c["name"] for c in coco["categories"]} == {"balloon", "leaf", "star"}


def test_all_three_formats_and_the_look_at_it_commands(tmp_path, objects_dir, backgrounds_dir):
    for fmt in ("coco", "wds", "yolo"):
        out = tmp_path / fmt
        code, text = run(*small(objects_dir, backgrounds_dir, out, "--format", fmt, "--n", "9", "--shard-size", "4"))
        assert code == 0, text
        code, text = run("preview", out, "--n", "4")
        assert code == 0, text
        assert (out / "preview.png").stat().st_size > 1000
        code, text = run("stats", out, "--plot", tmp_path / f"{fmt}.png")
        assert code == 0 and "images" in text and "9" in text, text
        assert (tmp_path / f"{fmt}.png").stat().st_size > 1000


def test_segment_once_then_paste_from_the_pool(tmp_path, objects_dir, backgrounds_dir):
    code, text = run("segment", "--objects", objects_dir, "--segmenter", "alpha", "--out", tmp_path / "pool", "--quiet")
    assert code == 0 and "8 accepted" in text and "look at the cut-outs and the rejected objects: synthgen preview" in text, text
    code, text = run(*small(tmp_path / "pool", backgrounds_dir, tmp_path / "out", "--n", "3"))
    assert code == 0, text


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["--objects", "/no/such/folder"], 2, "no such folder"),
        (["--objects", "{empty}"], 2, "no images found"),
        (["--backgrounds", "{empty}"], 2, "no images"),
        (["--objects", "stylegan-ffhq"], 3, "karras2019stylegan-ffhq-1024x1024.pkl"),
        (["--backgrounds", "voc"], 3, "synthgen download voc"),
        (["--scale", "0.5,0.1"], 2, "MIN 0.5 is above MAX 0.1"),
        (["--objects-per-image", "3,x"], 2, "expected MIN,MAX"),
        (["--size", "4x4"], 2, ">= 8"),
        (["--min-visible", "1.5"], 2, "min visible"),
        (["--blend", "glow"], 2, "blend"),
        (["--n", "inf", "--format", "coco"], 2, "only --format wds"),
        (["--n", "0"], 2, "at least 1"),
        (["--segmenter", "magic"], 2, "unknown segmenter"),
        (["--format", "parquet"], 2, "unknown"),
        (["--exclude-classes", "person"], 2, "exclusion"),
        (["--shard-index", "2", "--num-shards", "2"], 2, "shard-index"),
    ],
)
def test_bad_input_gets_a_clear_message_and_exit_code(tmp_path, objects_dir, backgrounds_dir, args, code, message):
    (tmp_path / "empty").mkdir()
    args = [a.replace("{empty}", str(tmp_path / "empty")) for a in args]
    base = {"--objects": str(objects_dir), "--backgrounds": str(backgrounds_dir)}
    for flag in list(base):
        if flag in args:
            del base[flag]
    argv = ["paste", *[x for kv in base.items() for x in kv], "--quiet", "--out", str(tmp_path / "out"), *args]
    got, text = run(*argv)
    assert got == code, text
    assert message in text


def test_unreadable_object_images_are_skipped_and_counted(tmp_path, backgrounds_dir):
    objects = write_rgba_objects(tmp_path / "objects", classes=("cat",))
    (objects / "cat" / "broken.png").write_bytes(b"\x89PNG not really")
    (objects / "cat" / "empty.jpg").write_bytes(b"")
    code, text = run(*small(objects, backgrounds_dir, tmp_path / "out", "--n", "2"))
    assert code == 0, text
    assert "2 unreadable" in text


def test_unreadable_background_is_skipped_and_counted(tmp_path, objects_dir):
    backgrounds = write_backgrounds(tmp_path / "bg", n=2)
    (backgrounds / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    code, text = run(*small(objects_dir, backgrounds, tmp_path / "out", "--n", "2"))
    assert code == 0, text
    assert "1 unreadable" in text


def test_non_empty_output_is_refused_unless_overwrite_or_resume(tmp_path, objects_dir, backgrounds_dir):
    out = tmp_path / "out"
    assert run(*small(objects_dir, backgrounds_dir, out, "--n", "2"))[0] == 0
    code, text = run(*small(objects_dir, backgrounds_dir, out, "--n", "2"))
    assert code == 2 and "--overwrite" in text
    assert run(*small(objects_dir, backgrounds_dir, out, "--n", "4", "--resume"))[0] == 0
    assert len(json.loads((out / "annotations.json").read_text())["images"]) == 4
    assert run(*small(objects_dir, backgrounds_dir, out, "--n", "3", "--overwrite"))[0] == 0
    assert len(json.loads((out / "annotations.json").read_text())["images"]) == 3


def test_full_disk_is_a_clear_error(tmp_path, objects_dir, backgrounds_dir, monkeypatch):
    import synthgen.writers.coco as coco_writer

    calls = {"n": 0}
    real_place = coco_writer.place_file

    def place_until_full(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_place(*args, **kwargs)

    monkeypatch.setattr(coco_writer, "place_file", place_until_full)
    code, text = run(*small(objects_dir, backgrounds_dir, tmp_path / "out", "--n", "5"))
    assert code == 4, text
    assert "disk is full" in text and "--resume" in text


def test_config_file_gives_defaults_and_flags_override(tmp_path, objects_dir, backgrounds_dir, monkeypatch):
    (tmp_path / "synthgen.toml").write_text(
        f'[paste]\nobjects = "{objects_dir}"\nbackgrounds = "{backgrounds_dir}"\nformat = "yolo"\nn = "5"\n'
        'size = "96x80"\nscale = [0.2, 0.4]\nquiet = true\n'
    )
    code, text = run("paste", "--out", "from_config", cwd=tmp_path, monkeypatch=monkeypatch)
    assert code == 0, text
    assert len(list((tmp_path / "from_config" / "labels" / "train").glob("*.txt"))) == 5
    code, text = run("paste", "--out", "flag_wins", "--n", "2", "--format", "coco", cwd=tmp_path, monkeypatch=monkeypatch)
    assert code == 0, text
    assert len(json.loads((tmp_path / "flag_wins" / "annotations.json").read_text())["images"]) == 2
    (tmp_path / "synthgen.toml").write_text("[paste]\nobjcts = 'typo'\n")
    code, text = run("paste", "--out", "x", cwd=tmp_path, monkeypatch=monkeypatch)
    assert code == 2 and "objcts" in text


def test_paste_path_does_not_import_torch():
    """`synthgen paste` must start fast and stay small: no torch in the CLI or the paste path."""
    import subprocess
    import sys

    code = (
        "import sys, synthgen.cli, synthgen.engine, synthgen.writers.wds, synthgen.writers.coco, "
        "synthgen.writers.yolo, synthgen.pool, synthgen.backgrounds; print('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_detector_names_in_the_help_match_the_registry():
    from synthgen.detectors import DETECTORS
    from synthgen.cli.train import DETECTOR_NAMES

    assert list(DETECTOR_NAMES) == DETECTORS.names()


def test_pretrain_on_a_live_paste_stream(tmp_path, objects_dir, backgrounds_dir, monkeypatch):
    """`synthgen pretrain --data paste`: the [paste] table of synthgen.toml streams straight
    into training, nothing written in between."""
    (tmp_path / "synthgen.toml").write_text(
        f'[paste]\nobjects = "{objects_dir}"\nbackgrounds = "{backgrounds_dir}"\nsize = "96x96"\nquiet = true\n'
        'objects-per-image = "1,2"\nout = "val"\nn = "2"\n'
        '[pretrain]\ndata = "paste"\nval = "val/annotations.json"\nout = "run"\nsteps = 2\nbatch-size = 2\n'
        'image-size = 96\neval-every = 2\nnum-workers = 0\ndevice = "cpu"\npretrained-backbone = false\nprogress = false\n'
    )
    code, text = run("paste", cwd=tmp_path, monkeypatch=monkeypatch)  # a small real-format val set
    assert code == 0, text
    code, text = run("pretrain", cwd=tmp_path, monkeypatch=monkeypatch)
    assert code == 0, text
    from synthgen.detectors import read_checkpoint

    checkpoint = read_checkpoint(tmp_path / "run" / "best.pt")
    assert [c["name"] for c in checkpoint["categories"]] == ["cat", "dog"]
    assert not (tmp_path / "synthgen_out").exists()
    code, text = run("pretrain", "--data", "paste:missing.toml", "--out", "run2", cwd=tmp_path, monkeypatch=monkeypatch)
    assert code == 2 and "missing.toml" in text


def test_the_faces_example_configures_every_stage(tmp_path, monkeypatch):
    """examples/faces/synthgen.toml, the measured face recipe, names only settings its commands
    have (a renamed option would break it silently otherwise), and a stale key is caught."""
    from synthgen.config import load_config

    example = Path(__file__).resolve().parents[1] / "examples" / "faces" / "synthgen.toml"
    tables, _ = load_config(example)
    assert set(tables) == {"paste", "pretrain", "finetune", "evaluate"}
    assert tables["paste"]["objects"].startswith("coco:") and tables["pretrain"]["data"] == "paste"
    for command in tables:
        code, text = run("--config", example, command, "--help", cwd=tmp_path, monkeypatch=monkeypatch)
        assert code == 0, text
    stale = tmp_path / "stale.toml"
    stale.write_text(example.read_text().replace("anchors-from =", "anchors-form ="))
    code, text = run("--config", stale, "pretrain", "--help", cwd=tmp_path, monkeypatch=monkeypatch)
    assert code == 2 and "anchors_form" in text
