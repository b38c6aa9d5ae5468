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
