"""The batched torch compositor: the same samples as the CPU renderer (boxes, labels; pixels
within a few grey levels), whatever the batch, the workers or the device; JPEG encoding on the
device decodes back; the engine writes the same annotations with either compositor."""

from __future__ import annotations

import dataclasses
import json
import tarfile
from dataclasses import dataclass

import cv2
import numpy as np
import pytest
import torch

from synthgen.compositor import CompositeConfig, Compositor
from synthgen.compositor.torch_render import DeviceImages, TorchCompositor, check_supported, encode_images
from synthgen.engine import PasteSpec, RunOptions, device_parts, run_paste
from synthgen.errors import InputError
from synthgen.imageio import decode_jpeg, encode_jpeg
from tests.test_compositor import FakeBackgrounds, FakeObjects

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def textured_objects() -> FakeObjects:
    """The compositor tests' ellipses with noisy colour, so that resampling differences show."""
    objects = FakeObjects()
    rng = np.random.default_rng(5)
    for item in objects.items:
        noise = rng.integers(-60, 60, item.rgba[..., :3].shape)
        item.rgba[..., :3] = np.clip(item.rgba[..., :3].astype(int) + noise, 0, 255)
    return objects


OBJECTS, BACKGROUNDS = textured_objects(), FakeBackgrounds()

CONFIGS = {
    "default": {},
    "occlusion and truncation": dict(min_visible=0.3, truncation=0.4),
    "rotation, noise, blur": dict(rotation=45, noise=1.0, blur=0.5, min_visible=0.5, truncation=0.3),
    "gaussian blending, big and small": dict(blend=("alpha", "gaussian"), rotation=20, scale=(0.05, 1.2)),
}


def config(**changes) -> CompositeConfig:
    return CompositeConfig(width=256, height=224, objects_per_image=(4, 9), scale=(0.15, 0.6)).replace(**changes)


def assert_device_annotations(made: list, reference: list, keep_masks: bool = False) -> None:
    """Annotations made on the device from the drawn masks against the CPU path's: the same
    objects (classes, crowd flags), boxes within 1 px, areas within 2% + 2 px."""
    assert [(a.category_id, a.iscrowd) for a in made] == [(a.category_id, a.iscrowd) for a in reference]
    for box in ("bbox", "visible_bbox", "amodal_bbox"):
        boxes = np.array([getattr(a, box) for a in made])
        expected = np.array([getattr(a, box) for a in reference])
        assert boxes.shape == expected.shape and np.abs(boxes - expected).max(initial=0) <= 1.0
    for ann, ref in zip(made, reference):
        assert abs(ann.area - ref.area) <= 0.02 * ref.area + 2 and abs(ann.visible_fraction - ref.visible_fraction) < 0.01
        if keep_masks:
            assert ann.mask.shape == ref.mask.shape and np.count_nonzero(ann.mask != ref.mask) <= 0.02 * ref.area + 2


@pytest.mark.parametrize("name", list(CONFIGS))
def test_torch_and_numpy_compositors_make_the_same_samples(name):
    cfg = config(**CONFIGS[name])
    cpu = Compositor(cfg, OBJECTS, BACKGROUNDS)
    keep_masks = name == "occlusion and truncation"
    images, planned = TorchCompositor(cfg, OBJECTS, BACKGROUNDS, "cpu").render_batch(7, range(12), keep_masks=keep_masks)
    occluded = truncated = 0
    for i, sample in enumerate(planned):
        reference = cpu.render(7, i, keep_masks=keep_masks)
        assert_device_annotations(sample.annotations, reference.annotations, keep_masks)
        occluded += sum(a.visible_fraction < 1.0 for a in reference.annotations)
        truncated += sum(a.bbox[0] == 0 or a.bbox[1] == 0 for a in reference.annotations)
        difference = np.abs(images[i].numpy().astype(int) - reference.image.astype(int))
        assert difference.mean() < 0.2 and difference.max() <= 4, (i, difference.mean(), difference.max())
    if name == "occlusion and truncation":
        assert occluded > 3 and truncated > 3  # the case this configuration is here for


class KeptPeople:
    """Each background's own objects: a disk "person" and a crowd region (a box), both in the crop."""

    extra_classes = ["person"]

    def __init__(self) -> None:
        from synthgen.backgrounds.labels import KeptObject
        from synthgen.compositor.augment import ObjectPatch

        disk = np.zeros((80, 80), np.uint8)
        cv2.circle(disk, (40, 40), 39, 1, -1)
        crowd = np.ones((40, 120), bool)
        self._objects = [KeptObject(2, (60 + 20 * k, 60), ObjectPatch(None, disk.astype(bool), (0, 0, 80, 80), int(disk.sum())))
                         for k in range(3)]
        self._crowd = KeptObject(2, (200, 200), ObjectPatch(None, crowd, (0, 0, 120, 40), crowd.size), True)

    def objects(self, background: int):
        return [self._objects[background], self._crowd]


def test_torch_path_plans_amodal_boxes_class_balance_distractors_and_kept_annotations():
    """The features of issue 15 are planning decisions: the torch path makes the CPU path's labels
    (the kept annotations, crowd regions included, exactly: made on the host; the pasted objects'
    on the device, within 1 px), never labels a distractor, and draws the distractors from the
    same device tensor as the objects."""
    distractors = FakeObjects()
    for item in distractors.items:
        item.rgba[..., :3] = (0, 255, 0)  # green: a distractor left undrawn would show
    cfg = config(box="amodal", class_balance=(1.0, 3.0), distractors_per_image=(1, 3), distractor_scale=(0.2, 0.4),
                 protect=0.2, min_visible=0.3, truncation=0.3)
    labels = KeptPeople()
    cpu = Compositor(cfg, OBJECTS, BACKGROUNDS, distractors=distractors, labels=labels)
    drawer = TorchCompositor.from_compositor(cpu, "cpu")
    assert drawer.categories == cpu.categories == ["disk", "bar", "person"]
    images, planned = drawer.render_batch(5, range(10), keep_masks=True)
    crowds = amodal = 0
    for i, sample in enumerate(planned):
        reference = cpu.render(5, i, keep_masks=True)
        assert_device_annotations(sample.annotations, reference.annotations, keep_masks=True)
        kept = len(sample.plan.kept)
        keys = ("bbox", "category_id", "area", "visible_fraction", "visible_bbox", "amodal_bbox", "iscrowd")
        assert [[getattr(a, k) for k in keys] for a in sample.annotations[:kept]] == [[getattr(a, k) for k in keys] for a in reference.annotations[:kept]]
        assert all(np.array_equal(a.mask, r.mask) for a, r in zip(sample.annotations[:kept], reference.annotations))
        assert not any(a.iscrowd for a in sample.annotations[kept:])  # kept ones first, as on the CPU path
        crowds += sum(a.iscrowd for a in reference.annotations)
        amodal += sum(a.bbox != a.visible_bbox for a in reference.annotations)
        difference = np.abs(images[i].numpy().astype(int) - reference.image.astype(int))
        assert difference.mean() < 0.2 and difference.max() <= 4, (i, difference.mean(), difference.max())
    assert crowds > 0 and amodal > 0  # the cases this test is here for


def test_batch_size_changes_no_sample():
    cfg = config(**CONFIGS["rotation, noise, blur"])
    drawer = TorchCompositor(cfg, OBJECTS, BACKGROUNDS, "cpu")
    whole, _ = drawer.render_batch(3, range(6))
    for size in (1, 4):
        parts = torch.cat([drawer.render_batch(3, range(s, min(s + size, 6)))[0] for s in range(0, 6, size)])
        assert torch.equal(parts, whole)
    shuffled, _ = drawer.render_batch(3, [5, 2, 4])
    assert torch.equal(shuffled, whole[[5, 2, 4]])


def test_poisson_and_motion_samples_are_rendered_by_the_cpu_path():
    cfg = config(blend=("poisson", "motion"))
    images, planned = TorchCompositor(cfg, OBJECTS, BACKGROUNDS, "cpu").render_batch(1, range(4))
    cpu = Compositor(cfg, OBJECTS, BACKGROUNDS)
    for i in range(4):
        assert np.array_equal(images[i].numpy(), cpu.render(1, i).image)


def test_settings_the_torch_path_does_not_know_are_refused():
    @dataclass(frozen=True)
    class LaterConfig(CompositeConfig):
        shadows: int = 0

    check_supported(LaterConfig())
    with pytest.raises(InputError, match="shadows.*--compositor numpy"):
        check_supported(LaterConfig(shadows=3))


def test_device_images_pack_arrays_and_device_tensors_alike():
    arrays = [np.full((2, 3, 4), k, np.uint8) for k in range(3)]
    from_numpy = DeviceImages.from_arrays(arrays, "cpu", 4)
    from_tensors = DeviceImages.from_arrays([torch.from_numpy(a) for a in arrays], "cpu", 4)
    assert torch.equal(from_numpy.pixels, from_tensors.pixels)
    assert from_numpy.starts.tolist() == [0, 6, 12] and len(from_numpy) == 3
    with pytest.raises(ValueError, match="expected"):
        DeviceImages.from_arrays([np.zeros((2, 2, 3), np.uint8)], "cpu", 4)


def test_cpu_encoding_is_the_cpu_paths_encoder():
    images, _ = TorchCompositor(config(), OBJECTS, BACKGROUNDS, "cpu").render_batch(0, range(2))
    jpegs = encode_images(images, 90)
    assert jpegs == [encode_jpeg(image.numpy(), 90) for image in images]


@needs_cuda
def test_cuda_draws_the_cpu_pixels_and_every_encoded_batch_decodes():
    cfg = config(**CONFIGS["rotation, noise, blur"])
    on_cpu, cpu_samples = TorchCompositor(cfg, OBJECTS, BACKGROUNDS, "cpu").render_batch(4, range(16))
    on_gpu, gpu_samples = TorchCompositor(cfg, OBJECTS, BACKGROUNDS, "cuda").render_batch(4, range(16))
    assert (on_gpu.cpu().int() - on_cpu.int()).abs().max() <= 1
    for made, expected in zip(gpu_samples, cpu_samples):  # annotations made on the GPU
        assert [a.category_id for a in made.annotations] == [a.category_id for a in expected.annotations]
        assert np.abs(np.array([a.bbox for a in made.annotations]) - np.array([a.bbox for a in expected.annotations])).max(initial=0) <= 1
    for image, jpeg in zip(on_gpu.cpu(), encode_images(on_gpu, 90)):
        decoded = decode_jpeg(jpeg)
        assert decoded.shape == image.shape and np.abs(decoded.astype(int) - image.numpy()).mean() < 3


# -- the engine ---------------------------------------------------------------------------------


def spec_for(objects_dir, backgrounds_dir, **changes) -> PasteSpec:
    composite = CompositeConfig(width=96, height=80, objects_per_image=(1, 4), scale=(0.2, 0.5), min_visible=0.4, truncation=0.3)
    return PasteSpec(objects=str(objects_dir), backgrounds=str(backgrounds_dir), composite=composite, seed=3, **changes)


def read_shard(path):
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def assert_same_labels(made: dict, reference: dict) -> None:
    """Two samples' WebDataset JSON: the same objects, boxes within 1 px, areas within 10% + 2 px
    (the torch path's masks are its own resampled alpha at or above 128: a grey level off here
    and there, and a hard-edged mask's resampled edge lies right at that threshold)."""
    assert made.keys() == reference.keys()
    assert {k: v for k, v in made.items() if k not in ("boxes", "areas")} == {k: v for k, v in reference.items() if k not in ("boxes", "areas")}
    assert np.abs(np.array(made["boxes"]) - np.array(reference["boxes"])).max(initial=0) <= 1.0
    areas, expected = np.array(made["areas"]), np.array(reference["areas"])
    assert (np.abs(areas - expected) <= 0.1 * expected + 2).all()


def test_paste_with_the_torch_compositor_writes_the_numpy_paths_annotations(tmp_path, objects_dir, backgrounds_dir):
    numpy_run = run_paste(spec_for(objects_dir, backgrounds_dir), RunOptions(out=tmp_path / "numpy", format="wds", n=12, progress=False))
    torch_spec = spec_for(objects_dir, backgrounds_dir, compositor="torch")
    one = run_paste(torch_spec, RunOptions(out=tmp_path / "torch", format="wds", n=12, batch_size=5, progress=False))
    two = run_paste(torch_spec, RunOptions(out=tmp_path / "torch2", format="wds", n=12, batch_size=3, workers=2, progress=False))
    assert numpy_run.written == one.written == two.written == 12
    reference = read_shard(tmp_path / "numpy" / "shard-000000.tar")
    made = read_shard(tmp_path / "torch" / "shard-000000.tar")
    assert made == read_shard(tmp_path / "torch2" / "shard-000000.tar")  # batch size and workers change no byte
    assert made.keys() == reference.keys()
    for name in made:
        if name.endswith(".json"):
            assert_same_labels(json.loads(made[name]), json.loads(reference[name]))
        else:
            difference = np.abs(decode_jpeg(made[name]).astype(int) - decode_jpeg(reference[name]).astype(int))
            assert difference.mean() < 1.0


def test_torch_runs_keep_annotations_and_paste_distractors_like_numpy_runs(tmp_path, objects_dir):
    """`--keep-annotations` and `--distractors` reach the torch path's planner (they were once
    dropped there without a word): the same annotations.json as the numpy run."""
    from tests.test_paste_features import coco_file

    composite = CompositeConfig(width=100, height=50, background_fit="stretch", objects_per_image=(1, 3), scale=(0.2, 0.4),
                                min_visible=0.3, protect=0.3, distractors_per_image=(1, 2))
    spec = PasteSpec(objects=str(objects_dir / "cat"), distractors=str(objects_dir / "dog"), backgrounds=f"coco:{coco_file(tmp_path)}",
                     keep_annotations=True, visibility=True, composite=composite, seed=2)
    for name in ("numpy", "torch"):
        # Two planning workers for torch: the planner travels to them with its labels and distractors.
        run_paste(dataclasses.replace(spec, compositor=name), RunOptions(out=tmp_path / name, n=8, batch_size=3, progress=False,
                                                                          workers=2 if name == "torch" else 1))
    made, reference = ((tmp_path / name / "annotations.json").read_text() for name in ("torch", "numpy"))
    assert made == reference
    assert {c["name"] for c in json.loads(made)["categories"]} == {"cat", "person"}
    assert any(a["iscrowd"] for a in json.loads(made)["annotations"])


def test_device_parts_share_the_samples_like_machines(tmp_path):
    options = RunOptions(out=tmp_path, format="wds", n=10, shard_index=1, num_shards=2)
    parts = device_parts(options, ["cuda:0", "cuda:1", "cuda:2"])
    assert [(p.shard_index, p.num_shards, p.out.name, p.device) for p in parts] == [
        (1, 6, "part-0", "cuda:0"), (3, 6, "part-1", "cuda:1"), (5, 6, "part-2", "cuda:2")]
    # Together they make exactly machine 1's samples (i % 2 == 1), each once.
    made = sorted(i for p in parts for i in range(100) if i % p.num_shards == p.shard_index)
    assert made == [i for i in range(100) if i % 2 == 1]


def test_device_settings_are_checked(tmp_path, objects_dir, backgrounds_dir):
    with pytest.raises(InputError, match="needs --compositor torch"):
        run_paste(spec_for(objects_dir, backgrounds_dir), RunOptions(out=tmp_path / "a", n=2, device="cuda", progress=False))
    with pytest.raises(InputError, match="compositor 'jax'"):
        spec_for(objects_dir, backgrounds_dir, compositor="jax").validate()


def test_training_batches_come_from_the_device_stream_with_the_host_streams_boxes(objects_dir, backgrounds_dir):
    from synthgen.training.data import DevicePasteSource, live_paste_source, make_loader

    spec = spec_for(objects_dir, backgrounds_dir, compositor="torch")
    source = live_paste_source(spec, device="cpu")
    assert isinstance(source, DevicePasteSource)
    batches = make_loader(source, image_size=64, batch_size=3, seed=0, resume_from=2, rank=1, world_size=2)
    images, targets = next(batches)
    assert len(images) == 3 and images[0].shape == (3, 64, 64) and images[0].dtype == torch.float32
    # Samples 3, 5, 7 (resume_from + rank, stepping by world_size), boxes scaled to 64x64.
    host = list(zip(range(3), source.stream(0, 3, 2)))
    for (_, item), target in zip(host, targets):
        expected = torch.from_numpy(item.boxes) * torch.tensor([64 / 96, 64 / 80] * 2)
        wide = ((expected[:, 2] - expected[:, 0]) >= 1) & ((expected[:, 3] - expected[:, 1]) >= 1)
        assert torch.allclose(target["boxes"], expected[wide], atol=1.0)  # device-made boxes: within 1 px
        assert target["labels"].tolist() == torch.from_numpy(item.labels)[wide].tolist()
    assert isinstance(live_paste_source(spec_for(objects_dir, backgrounds_dir), device="cpu"), type(source.stream.__self__))


def test_torchrun_ranks_are_machines_sharing_the_output(tmp_path):
    from synthgen.engine import torchrun_part

    options = RunOptions(out=tmp_path, format="wds", n=10, shard_index=1, num_shards=2, device="cuda")
    assert torchrun_part(options, {}) is options  # not under torchrun
    parts = [torchrun_part(options, {"WORLD_SIZE": "3", "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(3)]
    assert [(p.shard_index, p.num_shards, p.out, p.device, p.progress) for p in parts] == [
        (1, 6, tmp_path, "cuda:0", True), (3, 6, tmp_path, "cuda:1", False), (5, 6, tmp_path, "cuda:2", False)]
    assert torchrun_part(dataclasses.replace(options, device="cpu"), {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}).device == "cpu"
    with pytest.raises(InputError, match="pass --device cuda"):
        torchrun_part(dataclasses.replace(options, device="cuda:1"), {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"})
    with pytest.raises(InputError, match="LOCAL_RANK must"):
        torchrun_part(options, {"WORLD_SIZE": "2", "RANK": "0"})


def test_paste_started_by_torchrun_makes_one_verified_dataset(tmp_path, objects_dir, backgrounds_dir):
    """torchrun (its launcher module, two CPU processes): together one gap-free shard set."""
    import os
    import subprocess
    import sys

    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "synthgen", "paste", "--objects", str(objects_dir), "--backgrounds", str(backgrounds_dir),
               "--size", "96x80", "--format", "wds", "-n", "9", "--shard-size", "2", "--quiet", "--out", str(out)]
    done = subprocess.run(command, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in (out / ".synthgen").iterdir()) == ["part-00000-of-00002", "part-00001-of-00002"]
    verify = subprocess.run([sys.executable, "-m", "synthgen", "verify", str(out), "--n", "9"], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_training_on_the_device_stream_stops_its_planning_workers(tmp_path, objects_dir, backgrounds_dir):
    """The planning workers ignore SIGTERM: left running after training, the process could not exit."""
    import multiprocessing

    from synthgen.training.data import live_paste_source
    from synthgen.training.loop import TrainConfig, train

    source = live_paste_source(spec_for(objects_dir, backgrounds_dir, compositor="torch"), device="cpu")
    config = TrainConfig(out=tmp_path / "run", steps=2, batch_size=2, image_size=64, eval_every=2, num_workers=1,
                         device="cpu", pretrained_backbone=False, progress=False, threads=1)
    assert train(config, source).steps == 2
    assert not multiprocessing.active_children()


def test_device_training_batches_keep_annotations_without_crowd_targets(tmp_path, objects_dir):
    from synthgen.training.data import live_paste_source, make_loader
    from tests.test_paste_features import coco_file

    composite = CompositeConfig(width=100, height=50, background_fit="stretch", objects_per_image=(1, 2), scale=(0.2, 0.3), min_visible=0.9)
    spec = PasteSpec(objects=str(objects_dir / "cat"), backgrounds=f"coco:{coco_file(tmp_path)}", keep_annotations=True,
                     composite=composite, compositor="torch")
    source = live_paste_source(spec, device="cpu")
    _, targets = next(make_loader(source, image_size=64, batch_size=4, seed=0))
    host = [item for _, item in zip(range(4), source.stream(0, 0, 1))]
    for item, target in zip(host, targets):
        assert target["labels"].tolist() == item.labels.tolist()
        assert item.labels.tolist().count(2) == 1  # the person (cat 1, person 2), never the crowd region beside it
