"""ReDO: the loader against the official code's outputs, refused files, the foreground channel,
and ``synthgen train redo`` (loss, checkpoint, resume)."""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from synthgen.cli import app  # noqa: E402
from synthgen.errors import InputError, NotAvailableError, OutputExistsError  # noqa: E402
from synthgen.segmenters import RedoSegmenter, make_segmenter  # noqa: E402
from synthgen.segmenters.redo import load_redo, read_checkpoint  # noqa: E402
from synthgen.segmenters.redo_train import RedoTrainConfig, train_redo  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "redo"
CHECKPOINT = FIXTURES / "netM_state.pth"  # official layout: legacy serialization, tensors on cuda:0


# --- the loader -------------------------------------------------------------------------------

def test_loader_equals_the_official_net_on_the_same_file() -> None:
    reference = torch.load(FIXTURES / "reference.pt")
    net = load_redo(CHECKPOINT)
    assert net.size == 48 and net.net.temperature == 1.5 and not net.net.training
    with torch.no_grad():
        masks = net(reference["x"])
    assert masks.shape == (3, 2, 48, 48)
    assert float(reference["masks"][:, 0].std()) > 0.05  # the reference is not a flat mask
    assert float((masks - reference["masks"]).abs().max()) <= 1e-5


def test_zip_serialization_and_bare_state_dicts_load(tmp_path: Path) -> None:
    payload = read_checkpoint(CHECKPOINT)
    assert isinstance(payload["options"], argparse.Namespace) and payload["netEncM"]["cnn.0.mods.1.weight"].device.type == "cpu"
    torch.save(payload, tmp_path / "zip.pth")
    x = torch.rand(1, 3, 48, 48) * 2 - 1
    with torch.no_grad():
        assert torch.equal(load_redo(tmp_path / "zip.pth")(x), load_redo(CHECKPOINT)(x))
    # No options: the architecture comes from the key shapes, the size is the released 128.
    torch.save(payload["netEncM"], tmp_path / "bare.pth")
    bare = load_redo(tmp_path / "bare.pth")
    assert bare.size == 128 and len(bare.net.cnn) == 3 and bare.net.cnn[0].mods[7].out_channels == 16


def test_a_code_payload_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('x')",))

    path = tmp_path / "evil.pth"
    torch.save({"netEncM": {}, "options": Payload()}, path)
    with pytest.raises(InputError) as err:
        load_redo(path)
    assert "refused" in str(err.value) and "never runs code" in str(err.value)
    assert "weights_only=False" not in str(err.value)
    assert not marker.exists()
    path.write_bytes(pickle.dumps({"x": Payload()}, protocol=2))  # a plain pickle, not torch.save
    with pytest.raises(InputError):
        load_redo(path)
    assert not marker.exists()


def test_other_kinds_of_files_are_refused_with_a_clear_message(tmp_path: Path) -> None:
    torch.save({"g_ema": {"style.1.weight": torch.zeros(2)}, "latent_avg": torch.zeros(2)}, tmp_path / "sg2.pt")
    with pytest.raises(InputError, match="not a ReDO checkpoint: it holds g_ema, latent_avg.*netEncM"):
        load_redo(tmp_path / "sg2.pt")
    cv2.imwrite(str(tmp_path / "image.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(InputError, match="not a torch checkpoint"):
        load_redo(tmp_path / "image.png")
    with pytest.raises(InputError, match="no such file"):
        load_redo(tmp_path / "missing.pth")
    payload = read_checkpoint(CHECKPOINT)
    payload["options"].nResM = 3  # settings that do not fit the weights
    torch.save(payload, tmp_path / "mismatch.pth")
    with pytest.raises(InputError, match="do not fit its settings"):
        load_redo(tmp_path / "mismatch.pth")
    with pytest.raises(InputError, match="fg_channel"):
        make_segmenter("redo", {"checkpoint": str(CHECKPOINT), "fg_channel": "left"})


def test_model_names_need_the_registry_or_resolve_through_it() -> None:
    try:
        import synthgen.generators.registry  # noqa: F401
    except ImportError:
        with pytest.raises(NotAvailableError, match="redo:PATH.pth"):
            make_segmenter("redo-lfw")
    else:
        with pytest.raises((NotAvailableError, InputError)):  # no file pulled in a private cache
            make_segmenter("redo-lfw")


# --- the foreground channel ----------------------------------------------------------------------

def _blob_net(x: "torch.Tensor") -> "torch.Tensor":
    """Channel 1 is the bright pixels (a centred object), channel 0 its complement."""
    bright = (x.mean(1, keepdim=True) > 0).float()
    return torch.cat([1 - bright, bright], 1)


def _centred(size: int, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    disk = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= (radius * size) ** 2
    return np.where(disk[..., None], 230, 20).astype(np.uint8).repeat(3, axis=2)


def test_auto_takes_the_channel_with_less_border_mass_once_per_model(capsys: pytest.CaptureFixture) -> None:
    segmenter = RedoSegmenter(_blob_net, size=32)
    masks = segmenter.segment_batch([_centred(40, 0.3), _centred(50, 0.25)], [None, None])
    assert segmenter.chosen == 1 and segmenter.settings()["fg_channel_chosen"] == 1
    assert segmenter.settings()["border_mass"] == [1.0, 0.0]
    assert "foreground is mask channel 1" in capsys.readouterr().err
    assert masks[0].shape == (40, 40) and masks[0][20, 20] == 1.0 and masks[0][0, 0] == 0.0
    # Decided once: a later batch whose bright part is the frame keeps channel 1.
    inverted = 250 - _centred(40, 0.3)
    assert segmenter.segment_batch([inverted], [None])[0][20, 20] == 0.0
    assert "foreground" not in capsys.readouterr().err
    fixed = RedoSegmenter(_blob_net, size=32, fg_channel=0)
    assert fixed.segment(_centred(40, 0.3), None)[0, 0] == 1.0


def test_the_redo_colon_path_segmenter_runs_in_a_pool(tmp_path: Path) -> None:
    from synthgen.pool import pool_fingerprint
    from synthgen.segmenters import MaskQuality
    from synthgen.sources import FolderSource

    segmenter = make_segmenter(f"redo:{CHECKPOINT}", {"threshold": "0.4", "batch_size": "2"})
    assert isinstance(segmenter, RedoSegmenter) and segmenter.threshold == 0.4 and segmenter.batch_size == 2
    masks = segmenter.segment_batch([_centred(60, 0.3)] * 3, [None] * 3)
    assert len(masks) == 3 and masks[0].shape == (60, 60) and masks[0].dtype == np.float32
    folder = tmp_path / "objects"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), _centred(40, 0.3))
    copy = tmp_path / "net.pth"
    copy.write_bytes(CHECKPOINT.read_bytes())
    source, quality = FolderSource(folder), MaskQuality()
    before = pool_fingerprint(source, f"redo:{copy}", {}, quality)
    copy.write_bytes(CHECKPOINT.read_bytes() + b"\0")  # the checkpoint file is part of the cache key
    assert pool_fingerprint(source, f"redo:{copy}", {}, quality) != before


# --- training ---------------------------------------------------------------------------------

def _write_images(folder: Path, count: int = 12, size: int = 40) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = np.full((size, size, 3), rng.integers(0, 256, 3), np.uint8)
        centre = tuple(int(v) for v in rng.integers(size // 3, 2 * size // 3, 2))
        cv2.circle(image, centre, int(rng.integers(size // 6, size // 4)), tuple(int(v) for v in rng.integers(0, 256, 3)), -1)
        cv2.imwrite(str(folder / f"{i:02d}.png"), image)
    return folder


def _config(images: Path, out: Path, **changes) -> RedoTrainConfig:
    settings = dict(images=images, out=out, size=64, steps=4, batch_size=4, nf=4, nz=4, every=2, progress=False)
    settings.update(changes)
    return RedoTrainConfig(**settings)


def test_train_redo_lowers_the_loss_and_writes_a_checkpoint_that_segments(tmp_path: Path) -> None:
    images = _write_images(tmp_path / "images")
    masks = tmp_path / "masks"
    masks.mkdir()
    cv2.imwrite(str(masks / "00.png"), _centred(40, 0.2)[..., 0])
    run = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train", "redo", "--images", str(images), "--out", str(run), "--size", "64", "--steps", "12", "--every", "4",
        "--nf", "4", "--batch-size", "4", "--val-masks", str(masks), "--quiet",
    ])
    assert result.exit_code == 0, result.output
    assert "step 12: loss G" in result.output and "val IoU" in result.output and "redo:" in result.output
    log = [__import__("json").loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [4, 8, 12]
    assert log[-1]["loss_d"] < log[0]["loss_d"] and log[-1]["loss_z"] < log[0]["loss_z"]
    assert sorted(p.name for p in (run / "sheets").iterdir()) == ["step_000004.png", "step_000008.png", "step_000012.png"]
    payload = read_checkpoint(run / "last.pth")
    assert {"netEncM", "netGenX", "netDX", "netRecZ", "optimizerEncM", "optimizerGenX", "optimizerDX", "optimizerRecZ"} <= set(payload)
    assert payload["options"].sizex == 64 and payload["options"].iteration == 12 and payload["options"].nfM == 4
    assert (run / "best.pth").is_file() and payload["options"].fgChannel in (0, 1)
    segmenter = make_segmenter(f"redo:{run / 'last.pth'}")
    assert segmenter.fg_channel == payload["options"].fgChannel  # recorded by the validation masks
    soft = segmenter.segment(cv2.imread(str(images / "01.png")), None)
    assert soft.shape == (40, 40) and 0.0 <= soft.min() <= soft.max() <= 1.0


def test_train_redo_resumes_at_the_same_step_with_the_same_result(tmp_path: Path) -> None:
    images = _write_images(tmp_path / "images", count=8)
    train_redo(_config(images, tmp_path / "straight", steps=4))
    train_redo(_config(images, tmp_path / "resumed", steps=2))
    with pytest.raises(OutputExistsError, match="--resume"):
        train_redo(_config(images, tmp_path / "resumed", steps=4))
    result = train_redo(_config(images, tmp_path / "resumed", steps=4, resume=True))
    assert result["step"] == 4
    straight, resumed = read_checkpoint(tmp_path / "straight" / "last.pth"), read_checkpoint(tmp_path / "resumed" / "last.pth")
    for key in ("netEncM", "netGenX", "netDX", "netRecZ"):
        for name, value in straight[key].items():
            assert torch.equal(value, resumed[key][name]), (key, name)
    assert [r["step"] for r in resumed["synthgen"]["history"]] == [2, 4]
    with pytest.raises(InputError, match="cannot resume"):
        train_redo(_config(images, tmp_path / "nothing", resume=True))


def test_a_collapsed_run_restarts_with_new_weights(tmp_path: Path) -> None:
    images = _write_images(tmp_path / "images", count=8)
    seen: list[dict] = []
    # Two complementary masks never both exceed half the image: every check "collapses".
    result = train_redo(_config(images, tmp_path / "run", auto_restart=0.4999, max_restarts=2), on_check=seen.append)
    assert [(r["step"], r["restarts"], bool(r.get("collapsed"))) for r in seen] == [
        (2, 0, True), (2, 1, True), (2, 2, False), (4, 2, False)]
    assert result["restarts"] == 2 and read_checkpoint(tmp_path / "run" / "last.pth")["synthgen"]["restarts"] == 2
