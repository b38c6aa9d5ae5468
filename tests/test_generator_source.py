"""Pasting objects from a trained generator: blocks of generated objects, refreshed every K
samples, the same bytes for any worker count, resume without duplicates, shards."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from synthgen.compositor import CompositeConfig  # noqa: E402
from synthgen.engine import PasteSpec, RunOptions, iter_samples, run_paste  # noqa: E402
from synthgen.errors import InputError  # noqa: E402
from synthgen.sources.generators import GeneratorSettings, generated_objects  # noqa: E402
from synthgen.segmenters import MaskQuality  # noqa: E402


FIXTURES = Path(__file__).parent / "fixtures" / "generators"


def random_stylegan2():
    """A tiny StyleGAN2 (synthgen's own network, 32 px) with random weights and a mapping of
    learning-rate multiplier 1, so that, unlike the published fixtures' random networks, each
    latent gives a clearly different image."""
    from synthgen.generators.stylegan2 import StyleGAN2Config, StyleGAN2Generator, channels_from_base

    config = StyleGAN2Config(z_dim=16, c_dim=0, w_dim=16, img_resolution=32, mapping_layers=2,
                             mapping_lr_multiplier=1.0, channels=channels_from_base(32, 256, 32))
    G = StyleGAN2Generator(config)
    draw = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in G.parameters():
            p.copy_(torch.randn(p.shape, generator=draw))
    G.setup_pool_output(["thing"], None)
    return G.eval()


@pytest.fixture
def tiny_generator(tmp_path: Path) -> Path:
    """A genuine generator file: a tiny random-weight StyleGAN2 in rosinality's .pt layout."""
    path = tmp_path / "tiny-sg2.pt"
    shutil.copy(FIXTURES / "rosinality-sg2-32.pt", path)
    return path


@pytest.fixture
def random_generator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A generator file whose loading gives :func:`random_stylegan2` (distinct objects)."""
    import synthgen.generators

    monkeypatch.setattr(synthgen.generators, "load_generator", lambda spec, device="cpu": random_stylegan2().to(device))
    path = tmp_path / "random-sg2.pt"
    path.write_bytes(b"loaded as random_stylegan2()")
    return path


def spec(generator: Path, **changes) -> PasteSpec:
    settings = changes.pop("generator", GeneratorSettings(refresh=10, pool_size=6))
    composite = CompositeConfig(width=96, height=80, objects_per_image=(1, 3), scale=(0.2, 0.5))
    return PasteSpec(objects=str(generator), backgrounds=changes.pop("backgrounds"), segmenter="none",
                     composite=composite, generator=settings, **changes)


def shards(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.glob("shard-*.tar"))}


def members(root: Path) -> list[tuple[str, bytes]]:
    """(name, bytes) of every sample file in the shards, in shard order."""
    found = []
    for path in sorted(root.glob("shard-*.tar")):
        with tarfile.open(path) as tar:
            found += [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    return found


def test_the_same_bytes_for_one_and_two_workers(tmp_path, random_generator, backgrounds_dir):
    s = spec(random_generator, backgrounds=str(backgrounds_dir), seed=3)
    one = run_paste(s, RunOptions(out=tmp_path / "one", format="wds", n=35, workers=1, shard_size=8, progress=False))
    two = run_paste(s, RunOptions(out=tmp_path / "two", format="wds", n=35, workers=2, shard_size=8, progress=False))
    assert one.written == two.written == 35 and one.objects > 35
    assert shards(tmp_path / "one") == shards(tmp_path / "two")
    batch = run_paste(s, RunOptions(out=tmp_path / "batch", format="wds", n=35, generator_batch=4, shard_size=8, progress=False))
    assert batch.written == 35 and shards(tmp_path / "batch") == shards(tmp_path / "one")
    other = run_paste(spec(random_generator, backgrounds=str(backgrounds_dir), seed=4),
                      RunOptions(out=tmp_path / "other", format="wds", n=35, shard_size=8, progress=False))
    assert other.written == 35 and shards(tmp_path / "other") != shards(tmp_path / "one")
    # Spent blocks are deleted as the run goes: only the last block (and the one built ahead) stay.
    (blocks,) = (tmp_path / "two" / ".synthgen" / "objects").iterdir()
    assert {p.name for p in blocks.iterdir()} <= {"block-00000003", "block-00000004"}


@pytest.mark.parametrize("workers", [1, 2])
def test_resume_continues_without_duplicates(tmp_path, random_generator, backgrounds_dir, monkeypatch, workers):
    s = spec(random_generator, backgrounds=str(backgrounds_dir))
    run_paste(s, RunOptions(out=tmp_path / "full", format="wds", n=40, shard_size=7, progress=False))
    import synthgen.engine as engine

    real_produce = engine._produce

    def produce_then_stop(compositor, spec_, indices, workers_, stop, stage):
        for k, sample in enumerate(real_produce(compositor, spec_, indices, workers_, stop, stage)):
            yield sample
            if k == 16:
                stop.requested = True

    monkeypatch.setattr(engine, "_produce", produce_then_stop)
    first = run_paste(s, RunOptions(out=tmp_path / "part", format="wds", n=40, shard_size=7, workers=workers, progress=False))
    assert first.interrupted and first.written == 17
    monkeypatch.setattr(engine, "_produce", real_produce)
    second = run_paste(s, RunOptions(out=tmp_path / "part", format="wds", n=40, shard_size=7, workers=workers, resume=True, progress=False))
    assert second.written == 23
    resumed = members(tmp_path / "part")
    assert len({name for name, _ in resumed}) == len(resumed) == 80
    assert resumed == members(tmp_path / "full")  # a resumed run starts a new shard; the samples are the same


def test_a_shard_makes_the_same_samples_as_the_whole_run(tmp_path, random_generator, backgrounds_dir):
    s = spec(random_generator, backgrounds=str(backgrounds_dir))
    whole = {x.index: x.image.tobytes() for x, _ in zip(iter_samples(s), range(24))}
    odd = {x.index: x.image.tobytes() for x, _ in zip(iter_samples(s, start=1, step=2, workers=2), range(12))}
    assert odd == {i: whole[i] for i in range(1, 24, 2)}


def test_objects_never_repeat_across_refresh_blocks(tmp_path, random_generator):
    from synthgen.generators.latents import latents_for

    settings = GeneratorSettings(refresh=10, pool_size=6)
    objects = generated_objects(str(random_generator), 0, settings, "none", {}, MaskQuality())
    objects.attach(tmp_path / "run")
    seen = set()
    for block in range(4):
        pool = objects.pool_for(block * 10)
        assert objects.pool_for(block * 10 + 9) is pool  # one block for K samples
        assert len(pool) == 6 and pool.classes == ["thing"]
        assert [pool[k].source for k in range(6)] == [f"random-sg2.pt#{i}" for i in range(block * 6, block * 6 + 6)]
        pixels = {hashlib.sha256(pool[k].rgba.tobytes()).hexdigest() for k in range(6)}
        assert len(pixels) == 6 and not pixels & seen
        seen |= pixels
    # Object k is the generator's image of latents_for(seed, [k]) (alpha 255 with the none segmenter).
    G = random_stylegan2()
    (expected,) = G.images_from_latents(latents_for(0, [20], G.z_dim))
    assert np.array_equal(objects.pool_for(30)[2].rgba[..., :3], expected)
    objects.close()


def test_a_conditional_generator_gives_each_object_its_drawn_class(tmp_path):
    from synthgen.generators.latents import labels_for

    objects = generated_objects(str(FIXTURES / "nvlabs-sg2-cond-resnet-16.pkl"), 3, GeneratorSettings(pool_size=12), "none", {}, MaskQuality())
    objects.attach(tmp_path / "run")
    pool = objects.pool_for(0)
    assert pool.classes == ["class0", "class1", "class2", "class3"]
    assert [pool[k].class_id for k in range(12)] == labels_for(3, range(12), 4).tolist()
    objects.close()


def test_generator_names_and_files_are_checked_before_anything_is_written(tmp_path, backgrounds_dir, monkeypatch):
    monkeypatch.setenv("SYNTHGEN_MODELS", str(tmp_path / "models"))
    from synthgen.errors import NotAvailableError

    s = PasteSpec(objects="stylegan-cars", backgrounds=str(backgrounds_dir), generator=GeneratorSettings())
    with pytest.raises(NotAvailableError, match="karras2019stylegan-cars-512x384.pkl"):
        run_paste(s, RunOptions(out=tmp_path / "out", format="wds", n=3, progress=False))
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match="--segmenter redo --segmenter-options checkpoint=redo-lfw"):
        run_paste(PasteSpec(objects="redo-lfw", backgrounds=str(backgrounds_dir), generator=GeneratorSettings()),
                  RunOptions(out=tmp_path / "out", format="wds", n=3, progress=False))
    with pytest.raises(InputError, match="--refresh"):
        GeneratorSettings(refresh=0).validate()


def test_models_sample_writes_pngs_and_a_sheet(tmp_path, tiny_generator):
    from PIL import Image

    from tests.test_cli import run

    code, text = run("models", "sample", tiny_generator, "--seeds", "0-4,9", "--batch-size", "4", "--out", tmp_path / "look")
    assert code == 0, text
    names = sorted(p.name for p in (tmp_path / "look").iterdir())
    assert names == ["seed0000.png", "seed0001.png", "seed0002.png", "seed0003.png", "seed0004.png", "seed0009.png", "sheet.png"]
    from synthgen.generators import load_generator, to_uint8

    first = np.asarray(Image.open(tmp_path / "look" / "seed0000.png"))
    G = load_generator(tiny_generator)
    z = np.random.RandomState(0).randn(1, G.z_dim).astype(np.float32)  # NVIDIA's generate.py latent of seed 0
    (expected,) = to_uint8(G.sample(torch.from_numpy(z)))
    assert first.shape == (32, 32, 3) and np.array_equal(first, expected)
    np.save(tmp_path / "z.npy", z.repeat(3, axis=0))
    code, text = run("models", "sample", tiny_generator, "--z", tmp_path / "z.npy", "--out", tmp_path / "z")
    assert code == 0 and np.array_equal(np.asarray(Image.open(tmp_path / "z" / "z0002.png")), expected)
    code, text = run("models", "sample", tiny_generator, "--class", "cat", "--out", tmp_path / "bad")
    assert code == 2 and "unconditional" in text
    code, text = run("models", "sample", tiny_generator, "--seeds", "5-1", "--out", tmp_path / "bad")
    assert code == 2 and "--seeds" in text


def test_paste_from_a_generator_name_on_the_command_line(tmp_path, tiny_generator, backgrounds_dir, monkeypatch):
    from tests.test_cli import run

    monkeypatch.setenv("SYNTHGEN_MODELS", str(tmp_path / "models"))
    (tmp_path / "models").mkdir()
    shutil.copy(tiny_generator, tmp_path / "models" / "ffhq.pkl")  # the file is read by its content, not its name
    code, text = run("paste", "--objects", "stylegan2-ada-ffhq", "--backgrounds", backgrounds_dir, "--segmenter", "none",
                     "--refresh", "5", "--pool-size", "4", "--size", "96x80", "--format", "wds", "--n", "12",
                     "--quiet", "--out", tmp_path / "out")
    assert code == 0, text
    assert "generated by stylegan2-ada-ffhq" in text and "4 per block" in text and "12 samples" in text
    code, text = run("paste", "--backgrounds", backgrounds_dir, "--refresh", "5", "--quiet", "--out", tmp_path / "x")
    assert code == 2 and "apply to generator objects" in text


def test_generated_objects_are_shrunk_to_the_object_size(tmp_path, random_generator):
    objects = generated_objects(str(random_generator), 0, GeneratorSettings(pool_size=3, object_size=20), "none", {}, MaskQuality())
    objects.attach(None)
    pool = objects.pool_for(0)
    assert [pool[k].rgba.shape for k in range(3)] == [(20, 20, 4)] * 3
    folder = objects.folder
    objects.close()
    assert not folder.exists()  # a stream's temporary blocks go with it
    with pytest.raises(InputError, match="--object-size"):
        GeneratorSettings(object_size=8).validate()


def blob_redo(device: str = "cpu"):
    """A ReDO segmenter whose network marks the bright pixels (hard masks, so cut-outs have
    transparent pixels to bleed), running on torch like the real one."""
    from synthgen.segmenters.redo import RedoSegmenter

    def net(x):
        bright = (x.mean(1, keepdim=True) > 0).float()
        return torch.cat([1 - bright, bright], 1)

    return RedoSegmenter(net, size=32, fg_channel=1, device=device)


@pytest.mark.parametrize("segmenter,device", [
    ("none", "cpu"), ("redo", "cpu"),
    pytest.param("redo", "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")),
])
def test_generator_objects_flow_to_the_torch_compositor_on_the_device(tmp_path, random_generator, backgrounds_dir, monkeypatch,
                                                                       segmenter, device):
    """Blocks of generated objects drawn by the torch compositor from the cut-outs the generator
    source made on the device (nothing uploaded from the host pools): the numpy path's labels,
    boxes within 1 px, pixels close, whatever the batch (here batches across two block boundaries)."""
    import json
    from dataclasses import replace

    import synthgen.segmenters
    from synthgen.compositor import torch_render
    from synthgen.imageio import decode_jpeg
    from tests.test_torch_compositor import assert_same_labels

    if segmenter == "redo":
        monkeypatch.setattr(synthgen.segmenters, "make_segmenter", lambda name, options: blob_redo(options.get("device", "cpu")))
    # A block every 4 samples: batches of 7 span up to three blocks.
    s = replace(spec(random_generator, backgrounds=str(backgrounds_dir), seed=2),
                segmenter=segmenter, generator=GeneratorSettings(refresh=4, pool_size=6))
    numpy_run = run_paste(s, RunOptions(out=tmp_path / "numpy", format="wds", n=25, shard_size=100, device=device, progress=False))

    def no_upload(*args):
        raise AssertionError("a block of generated objects was uploaded from the host")

    upload = torch_render.DeviceImages.from_object_pool
    monkeypatch.setattr(torch_render.DeviceImages, "from_object_pool", no_upload)
    torch_options = RunOptions(out=tmp_path / "torch", format="wds", n=25, shard_size=100, batch_size=7, workers=2, device=device,
                               progress=False)
    torch_run = run_paste(replace(s, compositor="torch"), torch_options)
    assert numpy_run.written == torch_run.written == 25
    if segmenter == "none":  # resumed: the block left on disk is put on the device from there
        monkeypatch.setattr(torch_render.DeviceImages, "from_object_pool", upload)
        more = RunOptions(out=tmp_path / "numpy", format="wds", n=30, shard_size=100, resume=True, progress=False)
        assert run_paste(s, more).written == 5
        assert run_paste(replace(s, compositor="torch"), replace(torch_options, n=30, resume=True)).written == 5
    reference, made = dict(members(tmp_path / "numpy")), dict(members(tmp_path / "torch"))
    assert made.keys() == reference.keys() and len(made) == 2 * (30 if segmenter == "none" else 25)
    differences = []
    for name in made:
        if name.endswith(".json"):
            assert_same_labels(json.loads(made[name]), json.loads(reference[name]))
        else:
            differences.append(np.abs(decode_jpeg(made[name]).astype(int) - decode_jpeg(reference[name]).astype(int)).mean())
    assert np.mean(differences) < 1.0


def test_cut_outs_made_on_the_device_are_the_host_cut_outs():
    """The same alpha and object colours as the host's cut-out; colours under transparent
    pixels bled from the object's, close to the host's nearest-pixel bleed."""
    from synthgen.pool import cutout_alpha, cutout_pixels
    from synthgen.sources.generators import device_cutouts

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 40, 48, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:40, :48]
    softs = [np.clip(1.2 - np.hypot(yy - 20, xx - 22) / 12, 0, 1).astype(np.float32),
             np.clip(1.5 - np.hypot(yy - 15, xx - 30) / 8, 0, 1).astype(np.float32)]
    cuts = [(j, *cutout_alpha(soft, 0.5, MaskQuality(max_border=1.0))) for j, soft in enumerate(softs)]
    for (j, alpha, box), made in zip(cuts, device_cutouts(torch.from_numpy(images), cuts)):
        host = cutout_pixels(images[j], alpha, box)
        made = made.numpy()
        assert made.shape == host.shape and np.array_equal(made[..., 3], host[..., 3])
        solid = host[..., 3] >= 128
        assert np.array_equal(made[solid], host[solid]) and (~solid).any()
        # The bled colours: those of the object's edge, like the host's (a random image's
        # neighbouring pixels differ by ~85 grey levels on average).
        assert np.abs(made[~solid, :3].astype(int) - host[~solid, :3]).mean() < 40


def test_the_device_training_stream_takes_generator_objects(random_generator, backgrounds_dir):
    """`pretrain --data paste` with generator objects on the device stream: the host stream's objects."""
    from dataclasses import replace

    from synthgen.training.data import live_paste_source, make_loader

    s = replace(spec(random_generator, backgrounds=str(backgrounds_dir), seed=1), compositor="torch")
    images, targets = next(make_loader(live_paste_source(s, device="cpu"), image_size=96, batch_size=3, seed=0))
    host = [sample for sample, _ in zip(iter_samples(replace(s, compositor="numpy")), range(3))]
    assert len(images) == 3
    for target, sample in zip(targets, host):
        boxes = np.array([a.xyxy for a in sample.annotations]).reshape(-1, 4) * np.array([1.0, 96 / 80] * 2)
        wide = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
        assert target["labels"].tolist() == [a.category_id for a, w in zip(sample.annotations, wide) if w]
        assert np.abs(target["boxes"].numpy() - boxes[wide]).max(initial=0) <= 1.5


def test_generator_objects_and_distractors_on_the_torch_compositor(tmp_path, random_generator, backgrounds_dir, objects_dir):
    """Distractors beside blocks of generated objects on the device: drawn from their own device
    pool after the blocks (batches across block boundaries), never labelled: the numpy path's labels."""
    import json
    from dataclasses import replace

    from synthgen.imageio import decode_jpeg
    from tests.test_torch_compositor import assert_same_labels

    s = replace(spec(random_generator, backgrounds=str(backgrounds_dir), seed=4, distractors=str(objects_dir / "dog")),
                generator=GeneratorSettings(refresh=4, pool_size=6))
    s = replace(s, composite=replace(s.composite, distractors_per_image=(1, 2), distractor_scale=(0.3, 0.5)))
    numpy_run = run_paste(s, RunOptions(out=tmp_path / "numpy", format="wds", n=10, shard_size=100, progress=False))
    torch_run = run_paste(replace(s, compositor="torch"), RunOptions(out=tmp_path / "torch", format="wds", n=10, shard_size=100,
                                                                      batch_size=7, progress=False))
    assert numpy_run.written == torch_run.written == 10
    reference, made = dict(members(tmp_path / "numpy")), dict(members(tmp_path / "torch"))
    assert made.keys() == reference.keys()
    for name in made:
        if name.endswith(".json"):
            assert_same_labels(json.loads(made[name]), json.loads(reference[name]))
        else:
            assert np.abs(decode_jpeg(made[name]).astype(int) - decode_jpeg(reference[name]).astype(int)).mean() < 1.0
