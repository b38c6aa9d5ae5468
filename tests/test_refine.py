"""SOD-MTGAN (synthgen.refine): the networks, training (losses fall, resume is bit-exact),
refinement (keeps count and classes, reloads to the same detections), the commands, and clear
errors for the wrong inputs."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from synthgen.cli import app
from synthgen.detectors import build_detector, save_checkpoint
from synthgen.errors import InputError
from synthgen.refine import checkpoint as ckpt
from synthgen.refine.apply import Refiner, refine_coco_detections, refine_folder
from synthgen.refine.networks import TRUNKS, MultiTaskDiscriminator, SuperResolver
from synthgen.refine.regions import RegionSet, low_resolution
from synthgen.refine.train import MtganTrainConfig, _reg, train_mtgan
from synthgen.training.coco import load_coco

CATEGORIES = [{"id": 1, "name": "face"}]


def write_coco(root: Path, side: int = 14, n: int = 3) -> Path:
    """``n`` 96x96 noise images, each with two bright ``side``-pixel squares boxed as faces."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(n):
        image = cv2.GaussianBlur(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8), (0, 0), 2)
        for k, (x, y) in enumerate(((10 + 7 * i, 20), (60, 50 - 5 * i))):
            image[y : y + side, x : x + side] = (230, 180, 150)
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": 1, "bbox": [x, y, side, side]})
        cv2.imwrite(str(root / "images" / f"{i}.png"), image)
        images.append({"id": i + 1, "file_name": f"images/{i}.png", "width": 96, "height": 96})
    path = root / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return path


def write_detector(path: Path) -> Path:
    torch.manual_seed(0)
    model = build_detector("ssdlite-mbv3", 1, 96, pretrained_backbone=False)
    save_checkpoint(path, model, detector="ssdlite-mbv3", categories=CATEGORIES, image_size=96, pretrained_backbone=False)
    return path


def tiny_regions(n: int = 24, side: int = 32) -> RegionSet:
    """Object regions (a bright square) and background regions (noise), ``side`` pixels."""
    generator = torch.Generator().manual_seed(0)
    hr = (torch.rand((n, 3, side, side), generator=generator) * 120).to(torch.uint8)
    labels = torch.tensor([1 if k % 2 == 0 else 0 for k in range(n)])
    hr[labels == 1, :, 8:24, 8:24] = 220
    deltas = torch.where((labels == 1)[:, None], torch.rand((n, 4), generator=generator) - 0.5, torch.zeros(n, 4))
    return RegionSet(hr, labels, deltas, torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool))


def config(tmp_path: Path, detector: Path, data: Path, **overrides) -> MtganTrainConfig:
    settings = dict(
        out=tmp_path / "run", detector=detector, data=data, hr_size=32, channels=8, blocks=1, refine_blocks=1,
        pretrained_trunk=False, pretrain_steps=2, steps=2, batch_size=8, log_every=1, sample_every=100,
        checkpoint_every=2, device="cpu", progress=False,
    )
    settings.update(overrides)
    return MtganTrainConfig(**settings)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("refine")
    return {"data": write_coco(root / "small"), "large": write_coco(root / "large", side=40), "detector": write_detector(root / "det.pt")}


def test_generator_output_is_4x_its_input_and_starts_as_bicubic():
    g = SuperResolver(channels=8, blocks=1, refine_blocks=1)
    x = torch.rand(2, 3, 8, 12)
    y = g(x)
    assert y.shape == (2, 3, 32, 48)
    assert torch.allclose(y, F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False))


def test_classification_and_regression_losses_send_gradient_into_the_generator():
    torch.manual_seed(0)
    g = SuperResolver(channels=8, blocks=1, refine_blocks=1)
    d = MultiTaskDiscriminator(2, "mobilenet_v2", pretrained=False).eval().requires_grad_(False)
    lr = torch.rand(4, 3, 8, 8)
    labels, targets = torch.tensor([1, 2, 0, 1]), torch.rand(4, 4)
    for name in ("classification", "regression"):
        g.zero_grad()
        _, cls, reg = d(g(lr))
        loss = F.cross_entropy(cls, labels) if name == "classification" else _reg(reg, labels, targets)
        loss.backward()
        grads = [p.grad for p in g.parameters()]
        assert all(grad is not None for grad in grads), name
        assert sum(float(grad.abs().sum()) for grad in grads) > 0, name


def test_a_few_training_steps_lower_the_losses(tmp_path, files):
    result = train_mtgan(
        config(tmp_path, files["detector"], files["data"], pretrain_steps=20, steps=20, lr_g=1e-3, lr_d=1e-2),
        regions=tiny_regions(),
    )
    rows = result.history
    mse = [float(r["mse"]) for r in rows[:20]]
    d_cls = [float(r["d_cls"]) for r in rows[20:]]
    assert np.mean(mse[-5:]) < np.mean(mse[:5])
    assert np.mean(d_cls[-5:]) < np.mean(d_cls[:5])
    assert (tmp_path / "run" / "samples" / "step-000040.png").is_file()


def test_resume_continues_bit_exact(tmp_path, files):
    regions = tiny_regions()
    straight = train_mtgan(config(tmp_path / "a", files["detector"], files["data"], steps=3), regions=regions)
    train_mtgan(config(tmp_path / "b", files["detector"], files["data"], steps=1), regions=regions)
    train_mtgan(config(tmp_path / "b", files["detector"], files["data"], steps=3, resume=True), regions=regions)
    a, b = ckpt.load(straight.checkpoint), ckpt.load(tmp_path / "b" / "run")
    assert a["step"] == b["step"] == 5
    for net in ("generator", "discriminator"):
        for key, value in a[net].items():
            assert torch.equal(value, b[net][key]), (net, key)


def test_training_mines_regions_and_refinement_keeps_count_and_classes(tmp_path, files):
    result = train_mtgan(config(tmp_path, files["detector"], files["data"]))
    saved = ckpt.load(result.out / ckpt.REGIONS_FILE, ckpt.REGIONS_FORMAT)["regions"]
    assert int((saved["labels"] > 0).sum()) >= 6  # every true box is a region
    assert saved["hr"].shape[1:] == (3, 32, 32)

    # A perfect detector: the ground truth itself, score 1.
    coco = load_coco(files["data"])
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in coco.coco.dataset["annotations"]]
    refiner = Refiner.load(result.out)
    refined = refine_coco_detections(refiner, coco, perfect, {1: 1})
    assert len(refined) == len(perfect)
    key = lambda d: (d["image_id"], d["category_id"])  # noqa: E731
    assert sorted(map(key, refined)) == sorted(map(key, perfect))
    assert all(0 <= d["score"] <= 1 and d["bbox"][2] > 0 and d["bbox"][3] > 0 for d in refined)

    # The run reloads to the same refiner: same detections, also through a new process's path.
    again = refine_coco_detections(Refiner.load(result.out / "last.pt"), coco, perfect, {1: 1})
    assert again == refined
    first = refine_folder(files["detector"], result.out, files["data"].parent / "images", tmp_path / "a.json", device="cpu")
    second = refine_folder(files["detector"], result.out, files["data"].parent / "images", tmp_path / "b.json", device="cpu")
    assert first and first == second
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert {d["file_name"] for d in first} <= {"0.png", "1.png", "2.png"}


def test_commands_train_evaluate_and_refine(tmp_path, files):
    runner = CliRunner()
    run, det = tmp_path / "run", str(files["detector"])
    common = ["--hr-size", "32", "--channels", "8", "--blocks", "1", "--refine-blocks", "1", "--no-pretrained-trunk",
              "--batch-size", "4", "--device", "cpu", "--no-progress", "--checkpoint-every", "1"]
    result = runner.invoke(app, ["train", "mtgan", "--detector", det, "--data", str(files["data"]), "--out", str(run),
                                 "--pretrain-steps", "1", "--steps", "1", *common])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["train", "mtgan", "--detector", det, "--data", str(files["data"]), "--out", str(run),
                                 "--pretrain-steps", "1", "--steps", "2", "--resume", *common])
    assert result.exit_code == 0, result.output
    assert ckpt.load(run)["step"] == 3

    out = tmp_path / "eval"
    result = runner.invoke(app, ["evaluate", "--checkpoint", det, "--refine", str(run), "--data", str(files["data"]),
                                 "--out", str(out), "--device", "cpu", "--refine-top", "5"])
    assert result.exit_code == 0, result.output
    assert "ap_small" in result.output and "refined" in result.output
    rows = {r["metric"]: r for r in json.loads((out / "comparison.json").read_text())["rows"]}
    assert {"ap", "ap50", "ap_small", "ap_medium", "ap_large"} <= set(rows)
    refined = json.loads((out / "detections.json").read_text())
    baseline = json.loads((out / "baseline" / "detections.json").read_text())
    per_image = {}
    for d in baseline:
        per_image[d["image_id"]] = per_image.get(d["image_id"], 0) + 1
    assert len(refined) == sum(min(5, n) for n in per_image.values())

    result = runner.invoke(app, ["refine", str(files["data"].parent / "images"), "--checkpoint", det, "--refine", str(run),
                                 "--out", str(tmp_path / "dets.json"), "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "dets.json").read_text())


def test_wrong_inputs_are_clear_errors(tmp_path, files):
    runner = CliRunner()
    run = train_mtgan(config(tmp_path, files["detector"], files["data"]), regions=tiny_regions()).out
    data, det = str(files["data"]), str(files["detector"])

    # A run where a detector belongs, and a detector where a run belongs.
    result = runner.invoke(app, ["train", "mtgan", "--detector", str(run / "last.pt"), "--data", data, "--out", str(tmp_path / "x")])
    message = " ".join(result.output.split())
    assert result.exit_code == 2 and "is a SOD-MTGAN run" in message and "Traceback" not in message
    result = runner.invoke(app, ["evaluate", "--checkpoint", det, "--refine", det, "--data", data, "--out", str(tmp_path / "e")])
    message = " ".join(result.output.split())
    assert result.exit_code == 2 and "a detector checkpoint: pass it as --checkpoint" in message and "synthgen-mtgan" in message

    # Data without small objects.
    with pytest.raises(InputError, match="no small objects"):
        train_mtgan(config(tmp_path / "large", files["detector"], files["large"]))

    # A detector of other classes than the run's.
    other = tmp_path / "other.pt"
    model = build_detector("ssdlite-mbv3", 2, 96, pretrained_backbone=False)
    save_checkpoint(other, model, detector="ssdlite-mbv3", categories=[{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
                    image_size=96, pretrained_backbone=False)
    with pytest.raises(InputError, match="classes"):
        refine_folder(other, run, files["data"].parent / "images", tmp_path / "d.json", device="cpu")

    # An existing run without --resume.
    with pytest.raises(Exception, match="--resume"):
        train_mtgan(config(tmp_path, files["detector"], files["data"]), regions=tiny_regions())


def test_cli_names_match_the_library():
    from synthgen.cli.refine import SCORE_NAMES, TRUNK_NAMES
    from synthgen.refine.apply import SCORES

    assert TRUNK_NAMES == TRUNKS and SCORE_NAMES == SCORES
    assert low_resolution(torch.rand(1, 3, 32, 32)).shape == (1, 3, 8, 8)
