"""synthgen.insert: the exact unrolled gradient, training, checkpoints and inserting."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from synthgen.detectors import build_detector
from synthgen.errors import InputError
from synthgen.insert.boxes import LabelledBoxes, LearnedBoxes, MatchedBoxes, read_box_file, thumbnail
from synthgen.insert.data import InsertionData, LabelledSet, load_clean, to_tensor
from synthgen.insert.networks import BoxGenerator, insertion_weight
from synthgen.insert.train import InsertTrainConfig, freeze_batch_norm, train_inserter
from synthgen.insert.unroll import check_unrollable, twice_differentiable, unrolled_real_loss

SIZE = 64


class _TinyBackbone(torch.nn.Module):
    """Two feature maps (strides 4 and 8) from three small convolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, 2, 1), torch.nn.ReLU())
        self.down = torch.nn.Sequential(torch.nn.Conv2d(16, 16, 3, 2, 1), torch.nn.ReLU())

    def forward(self, x):
        a = self.stem(x)
        return {"0": a, "1": self.down(a)}


def _tiny_ssd() -> torch.nn.Module:
    """torchvision's SSD (its anchor matching, hard-negative mining and losses) on a tiny backbone."""
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.ssd import SSD, SSDHead

    anchors = DefaultBoxGenerator([[2], [2]], min_ratio=0.3, max_ratio=0.9)
    head = SSDHead([16, 16], anchors.num_anchors_per_location(), 2)
    return SSD(_TinyBackbone(), anchors, (SIZE, SIZE), 2, head=head)


def _tiny_unroll_setup(dtype=torch.float64, detector="tiny"):
    torch.manual_seed(0)
    gen = BoxGenerator(SIZE, ngf=4, n_blocks=1).to(dtype)
    det = _tiny_ssd() if detector == "tiny" else build_detector(detector, 1, SIZE, pretrained_backbone=False)
    det = twice_differentiable(det).to(dtype)
    freeze_batch_norm(det)
    x = torch.rand(1, 3, SIZE, SIZE, dtype=dtype) * 2 - 1
    real = torch.rand(1, 3, SIZE, SIZE, dtype=dtype)
    box = [torch.tensor([[12.0, 8.0, 40.0, 56.0]], dtype=dtype)]
    real_targets = [{"boxes": torch.tensor([[20.0, 10.0, 44.0, 60.0]], dtype=dtype), "labels": torch.tensor([1])}]
    synthetic_targets = [{"boxes": box[0], "labels": torch.tensor([1])}]

    def real_loss(unroll: bool = True) -> torch.Tensor:
        synthetic = (gen(x, box) + 1) / 2
        return unrolled_real_loss(det, real, real_targets, synthetic, synthetic_targets, step_size=0.05, unroll=unroll)

    return gen, det, real_loss


def test_unrolled_gradient_matches_finite_differences_in_float64():
    gen, det, real_loss = _tiny_unroll_setup()
    params = list(gen.parameters())
    grads = torch.autograd.grad(real_loss(), params)
    # Directional derivative along a random direction of G's weights: exact vs central differences.
    rng = torch.Generator().manual_seed(1)
    direction = [torch.randn(p.shape, generator=rng, dtype=p.dtype) for p in params]
    exact = sum((g * v).sum() for g, v in zip(grads, direction)).item()
    eps = 1e-7  # small: SSD's hard-negative selection makes the loss piecewise smooth
    values = []
    for sign in (1, -1):
        with torch.no_grad():
            for p, v in zip(params, direction):
                p.add_(sign * eps * v)
        values.append(real_loss().item())
        with torch.no_grad():
            for p, v in zip(params, direction):
                p.sub_(sign * eps * v)
    estimate = (values[0] - values[1]) / (2 * eps)
    assert abs(exact) > 1e-6  # the real-image loss does depend on G through the unrolled step
    assert estimate == pytest.approx(exact, rel=1e-4)


def test_without_unrolling_the_real_image_loss_sends_no_gradient_to_the_generator():
    gen, det, real_loss = _tiny_unroll_setup(torch.float32, "ssd-mobilenet")
    assert all(g is None for g in torch.autograd.grad(real_loss(unroll=False), list(gen.parameters()), allow_unused=True))
    unrolled = torch.autograd.grad(real_loss(unroll=True), list(gen.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in unrolled)


def test_mobilenet_v3_detector_unrolls_after_the_hardsigmoid_swap():
    gen, det, real_loss = _tiny_unroll_setup(torch.float32, "ssdlite-mbv3")
    assert not any(isinstance(m, torch.nn.Hardsigmoid) for m in det.modules())
    grads = torch.autograd.grad(real_loss(), list(gen.parameters()))
    assert all(torch.isfinite(g).all() for g in grads)


def test_faster_rcnn_cannot_be_unrolled_and_says_why():
    with pytest.raises(InputError, match="roi_align"):
        check_unrollable("fasterrcnn-mbv3")


def _scene(rng: np.random.Generator) -> np.ndarray:
    """A smooth random scene."""
    small = rng.integers(40, 220, (4, 4, 3)).astype(np.uint8)
    return cv2.resize(small, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)


def _tiny_data() -> tuple[InsertionData, LabelledSet]:
    """Clean scenes, and labelled scenes with a dark upright 'person' block in each box."""
    rng = np.random.default_rng(0)
    clean = np.stack([_scene(rng) for _ in range(6)])
    images, boxes = [], []
    for _ in range(4):
        image = _scene(rng)
        x0, y0 = rng.uniform(0.05, 0.5), rng.uniform(0.05, 0.3)
        box = np.array([[x0, y0, x0 + 0.3, y0 + 0.6]])
        px = (box[0] * SIZE).astype(int)
        image[px[1] : px[3], px[0] : px[2]] = (30, 60, 200)
        images.append(image)
        boxes.append(box)
    labelled = LabelledSet(np.stack(images), boxes, "person")
    return InsertionData(clean, labelled), labelled


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> tuple[Path, list[dict]]:
    data, labelled = _tiny_data()
    out = tmp_path_factory.mktemp("run") / "dgan"
    config = InsertTrainConfig(
        out=out, clean=("unused",), labeled=Path("unused.json"), method="detectorgan", size=SIZE, steps=2,
        pretrain_gan=10, pretrain_detector=6, batch_size=2, ngf=8, ndf=8, n_blocks=2, pretrained_backbone=False,
        log_every=1, sample_every=100, checkpoint_every=100, device="cpu", progress=False, detector_lr=1e-3, lr=1e-3,
    )
    result = train_inserter(config, data, labelled)
    return out, result.history


def _mean(rows: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def test_a_few_training_steps_lower_the_losses(trained_run):
    out, history = trained_run
    gan = [r for r in history if r["step"] <= 10]
    det = [r for r in history if 10 < r["step"] <= 16]
    joint = [r for r in history if r["step"] > 16]
    for key in ("cycle", "box_l1"):
        assert _mean(gan[-3:], key) < _mean(gan[:3], key)
    assert _mean(det[-3:], "det_step") < _mean(det[:3], "det_step")
    assert len(joint) == 2 and all(np.isfinite(r["det_real"]) and np.isfinite(r["det_synthetic"]) for r in joint)
    assert (out / "last.pt").is_file() and (out / "detector.pt").is_file()
    assert (out / "samples" / "step-000018.jpg").is_file() and (out / "training_curves.png").is_file()
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"cycle", "box_l1", "g_local", "det_real", "det_synthetic", "d_local", "det_step", "steps_per_s"} <= set(header)


def test_resume_continues_from_the_checkpoint_with_the_same_batches(trained_run, tmp_path):
    data, labelled = _tiny_data()
    base = dict(
        clean=("unused",), labeled=Path("unused.json"), method="cyclegan", size=SIZE, steps=4, batch_size=1, ngf=4,
        ndf=4, n_blocks=1, log_every=1, sample_every=100, checkpoint_every=2, device="cpu", progress=False,
    )
    straight = train_inserter(InsertTrainConfig(out=tmp_path / "a", **base), data, labelled)
    train_inserter(InsertTrainConfig(out=tmp_path / "b", **{**base, "steps": 2}), data, labelled)
    resumed = train_inserter(InsertTrainConfig(out=tmp_path / "b", resume=True, **base), data, labelled)
    # (rows logged before the resume are read back from metrics.csv)
    assert [float(r["cycle"]) for r in resumed.history] == pytest.approx([r["cycle"] for r in straight.history], rel=1e-5)
    with pytest.raises(InputError, match="other settings"):
        train_inserter(InsertTrainConfig(out=tmp_path / "b", resume=True, **{**base, "steps": 6, "ngf": 8}), data, labelled)


def _write_backgrounds(folder: Path, n: int = 5) -> Path:
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True)
    for k in range(n):
        cv2.imwrite(str(folder / f"bg{k}.png"), cv2.resize(_scene(rng), (96, 80)))
    return folder


def _insert(run: Path, backgrounds: Path, out: Path, *, seed=0, workers=1, n=6, resume=False, boxes="match"):
    from synthgen.engine import RunOptions
    from synthgen.insert.render import InsertSpec, run_insert

    spec = InsertSpec(str(run), str(backgrounds), boxes=boxes, seed=seed)
    return run_insert(spec, RunOptions(out=out, n=n, workers=workers, resume=resume, progress=False), method="detectorgan")


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and ".synthgen" not in p.parts}


def test_a_checkpoint_reloads_and_inserts_the_same_bytes_per_seed(trained_run, tmp_path):
    run, _ = trained_run
    backgrounds = _write_backgrounds(tmp_path / "bg")
    _insert(run, backgrounds, tmp_path / "one")
    _insert(run, backgrounds, tmp_path / "two", workers=2)
    _insert(run, backgrounds, tmp_path / "other", seed=1)
    _insert(run, backgrounds, tmp_path / "part", n=3)
    summary = _insert(run, backgrounds, tmp_path / "part", n=6, resume=True)
    one = _tree(tmp_path / "one")
    assert one == _tree(tmp_path / "two") == _tree(tmp_path / "part")
    assert summary.written == 3
    assert one != _tree(tmp_path / "other")
    coco = json.loads(one["annotations.json"])
    assert len(coco["images"]) == 6 and len(coco["annotations"]) == 6
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        assert w >= 1 and h >= 1 and 0 <= x and x + w <= SIZE and 0 <= y and y + h <= SIZE


def test_inserted_images_differ_from_the_input_only_near_the_box(trained_run, tmp_path):
    from synthgen.compositor import sample_rng
    from synthgen.insert.render import InsertSpec, prepare_insert

    run, _ = trained_run
    renderer, _, _ = prepare_insert(InsertSpec(str(run), str(_write_backgrounds(tmp_path / "bg"))), progress=False)
    margin = renderer.architecture["margin"]
    for index in range(4):
        sample = renderer.render(0, index)
        rng = sample_rng(0, index)
        background = np.asarray(renderer.backgrounds[int(rng.integers(len(renderer.backgrounds)))])
        x, y, w, h = sample.annotations[0].bbox
        near = insertion_weight([torch.tensor([[x, y, x + w, y + h]])], SIZE, margin)[0, 0].numpy() > 0
        changed = (sample.image != background).any(axis=2)
        assert not changed[~near].any()  # outside the box's neighbourhood: the clean image, exactly
        inside = np.zeros_like(near)
        inside[int(y) : int(y + h), int(x) : int(x + w)] = True
        assert changed[inside].mean() > 0.5  # and the generator did draw in the box


def test_box_sources_follow_the_labelled_boxes(tmp_path):
    rng = np.random.default_rng(0)
    images = [np.full((SIZE, SIZE, 3), v, np.uint8) for v in (20, 120, 230)]
    boxes = [np.array([[0.1, 0.1, 0.3, 0.5]]), np.array([[0.5, 0.2, 0.9, 0.9]]), np.array([[0.0, 0.6, 0.2, 1.0]])]
    labelled = LabelledBoxes(np.stack([thumbnail(im) for im in images]), boxes)
    matched = MatchedBoxes(labelled).draw(rng, np.full((SIZE, SIZE, 3), 125, np.uint8))
    assert np.abs(matched - boxes[1][0]).max() < 0.1  # the grey-120 image's box, jittered
    learned = np.stack([LearnedBoxes(labelled).draw(rng, images[0]) for _ in range(200)])
    assert (learned >= 0).all() and (learned <= 1).all() and (learned[:, 2:] > learned[:, :2]).all()
    csv = tmp_path / "boxes.csv"
    csv.write_text("# x,y,w,h\n0.1,0.2,0.3,0.4\n")
    assert read_box_file(csv) == pytest.approx(np.array([[0.1, 0.2, 0.4, 0.6]]))
    csv.write_text("x,y,w,h\n0.1,0.2,0.3,0.4\n")  # a header row is skipped
    assert read_box_file(csv) == pytest.approx(np.array([[0.1, 0.2, 0.4, 0.6]]))
    csv.write_text("0.8,0.2,0.3,0.4\n")
    with pytest.raises(InputError, match="not inside the image"):
        read_box_file(csv)
    csv.write_text("0.1,0.2,0.3,0.4\n0.1,0.2,0.3\n")
    with pytest.raises(InputError, match=r"4 numbers x, y, w, h; found \[0.1, 0.2, 0.3\]"):
        read_box_file(csv)
    csv.write_text("0.1,0.2,0.3,0.4\nx,y,w,h\n")  # text after the first row is an error, not a header
    with pytest.raises(InputError, match="could not be read"):
        read_box_file(csv)
    with pytest.raises(InputError, match="no boxes"):
        LabelledBoxes(np.zeros((0, 16, 16, 3), np.uint8), [])


def test_excluded_classes_leave_plain_clean_folders_whole(tmp_path):
    coco_dir, folder = tmp_path / "coco", tmp_path / "scenes"
    coco_dir.mkdir()
    folder.mkdir()
    for name, grey in (("a.png", 10), ("b.png", 200)):
        cv2.imwrite(str(coco_dir / name), np.full((40, 40, 3), grey, np.uint8))
    cv2.imwrite(str(folder / "c.png"), np.full((40, 40, 3), 90, np.uint8))
    (coco_dir / "annotations.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 40}, {"id": 2, "file_name": "b.png", "width": 40, "height": 40}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 10, 20], "area": 200, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "person"}],
    }))
    clean = load_clean([f"coco:{coco_dir / 'annotations.json'}", str(folder)], 32, ["person"], progress=False)
    assert sorted(int(im.mean()) for im in clean) == [90, 200]  # a.png shows a person; the folder stays whole
    with pytest.raises(InputError, match="plain folder has no class annotations"):
        load_clean([str(folder)], 32, ["person"], progress=False)


def test_to_tensor_round_trips_uint8_images():
    from synthgen.insert.data import to_uint8

    image = np.random.default_rng(0).integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)
    assert (to_uint8(to_tensor(image)) == image).all()


def test_methods_start_jointly_from_one_shared_pretraining(tmp_path):
    data, labelled = _tiny_data()
    base = dict(
        clean=("unused",), labeled=Path("unused.json"), size=SIZE, batch_size=1, ngf=4, ndf=4, n_blocks=1,
        pretrain_gan=2, pretrain_detector=1, pretrained_backbone=False, log_every=1, sample_every=100,
        checkpoint_every=100, device="cpu", progress=False,
    )
    train_inserter(InsertTrainConfig(out=tmp_path / "pre", method="detectorgan", steps=0, **base), data, labelled)
    cyclegan = train_inserter(InsertTrainConfig(out=tmp_path / "cyc", method="cyclegan", steps=1, init=tmp_path / "pre", **base), data, labelled)
    assert [r["step"] for r in cyclegan.history] == [3] and cyclegan.history[0]["det_step"] is None
    joint = train_inserter(InsertTrainConfig(out=tmp_path / "dg", method="no-unroll", steps=1, init=tmp_path / "pre", **base), data, labelled)
    assert [r["step"] for r in joint.history] == [4] and joint.history[0]["det_synthetic"] is not None
    with pytest.raises(InputError, match="other settings"):
        train_inserter(InsertTrainConfig(out=tmp_path / "x", method="cyclegan", steps=1, init=tmp_path / "pre", **{**base, "ngf": 8}), data, labelled)
