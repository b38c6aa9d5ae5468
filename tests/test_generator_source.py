"""Pasting objects from a trained generator: blocks of generated objects, refreshed every K
samples, the same bytes for any worker count, resume without duplicates, shards."""

from __future__ import annotations

import hashlib
import importlib
import sys
import tarfile
import types
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from synthgen.compositor import CompositeConfig  # noqa: E402
from synthgen.engine import PasteSpec, RunOptions, iter_samples, run_paste  # noqa: E402
from synthgen.errors import InputError  # noqa: E402
from synthgen.sources.generators import GeneratorSettings, generated_objects  # noqa: E402
from synthgen.segmenters import MaskQuality  # noqa: E402


class BlobGenerator(torch.nn.Module):
    """A stand-in with the contract of ``synthgen.generators.load_generator``'s result: a bright
    disk on a dark frame, colour, size and place set by the latent."""

    z_dim, c_dim, resolution, classes, family = 8, 0, (40, 40), ["blob"], "test"

    def sample(self, z, c=None, truncation_psi=1.0, noise_mode="const"):
        z = torch.as_tensor(z, dtype=torch.float32)
        yy, xx = torch.meshgrid(torch.arange(40.0), torch.arange(40.0), indexing="ij")
        cy, cx = 20 + 4 * torch.tanh(z[:, 4]), 20 + 4 * torch.tanh(z[:, 5])
        radius = 9 + 3 * torch.tanh(z[:, 3])
        inside = ((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2) < radius[:, None, None] ** 2
        colour = 0.2 + 0.7 * torch.sigmoid(z[:, :3])  # bright, in (0.2, 0.9)
        texture = 0.05 * torch.sin(xx * z[:, 6:7, None] + yy * z[:, 7:8, None])
        image = torch.where(inside[:, None], colour[:, :, None, None] + texture[:, None], torch.tensor(-0.8))
        return image * truncation_psi


def _latents(seed, indices, z_dim):
    return np.stack([np.random.Generator(np.random.Philox(key=[seed, int(i)])).standard_normal(z_dim).astype(np.float32) for i in indices])


@pytest.fixture(autouse=True)
def blob_generator(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """``load_generator`` returns a BlobGenerator for any file; the file is a named .pkl in the
    models folder (so the name resolves through the registry like a real one)."""
    try:
        importlib.import_module("synthgen.generators.latents")
    except ImportError:  # before the generators package lands: its latents contract, stood in
        latents = types.ModuleType("synthgen.generators.latents")
        latents.latents_for = _latents
        latents.labels_for = lambda seed, indices, n: np.array([int(i) % n for i in indices])
        monkeypatch.setitem(sys.modules, "synthgen.generators.latents", latents)
    import synthgen.generators as generators

    monkeypatch.setattr(generators, "load_generator", lambda spec, device="cpu": BlobGenerator(), raising=False)
    path = tmp_path / "blobs.pkl"
    path.write_bytes(b"a generator file")
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


def test_the_same_bytes_for_one_and_two_workers(tmp_path, blob_generator, backgrounds_dir):
    s = spec(blob_generator, backgrounds=str(backgrounds_dir), seed=3)
    one = run_paste(s, RunOptions(out=tmp_path / "one", format="wds", n=35, workers=1, shard_size=8, progress=False))
    two = run_paste(s, RunOptions(out=tmp_path / "two", format="wds", n=35, workers=2, shard_size=8, progress=False))
    assert one.written == two.written == 35 and one.objects > 35
    assert shards(tmp_path / "one") == shards(tmp_path / "two")
    batch = run_paste(s, RunOptions(out=tmp_path / "batch", format="wds", n=35, generator_batch=4, shard_size=8, progress=False))
    assert batch.written == 35 and shards(tmp_path / "batch") == shards(tmp_path / "one")
    other = run_paste(spec(blob_generator, backgrounds=str(backgrounds_dir), seed=4),
                      RunOptions(out=tmp_path / "other", format="wds", n=35, shard_size=8, progress=False))
    assert other.written == 35 and shards(tmp_path / "other") != shards(tmp_path / "one")
    # Spent blocks are deleted as the run goes: only the last block (and the one built ahead) stay.
    (blocks,) = (tmp_path / "two" / ".synthgen" / "objects").iterdir()
    assert {p.name for p in blocks.iterdir()} <= {"block-00000003", "block-00000004"}


@pytest.mark.parametrize("workers", [1, 2])
def test_resume_continues_without_duplicates(tmp_path, blob_generator, backgrounds_dir, monkeypatch, workers):
    s = spec(blob_generator, backgrounds=str(backgrounds_dir))
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


def test_a_shard_makes_the_same_samples_as_the_whole_run(tmp_path, blob_generator, backgrounds_dir):
    s = spec(blob_generator, backgrounds=str(backgrounds_dir))
    whole = {x.index: x.image.tobytes() for x, _ in zip(iter_samples(s), range(24))}
    odd = {x.index: x.image.tobytes() for x, _ in zip(iter_samples(s, start=1, step=2, workers=2), range(12))}
    assert odd == {i: whole[i] for i in range(1, 24, 2)}


def test_objects_never_repeat_across_refresh_blocks(tmp_path, blob_generator):
    settings = GeneratorSettings(refresh=10, pool_size=6)
    objects = generated_objects(str(blob_generator), 0, settings, "grabcut", {}, MaskQuality())
    objects.attach(tmp_path / "run")
    seen_sources, seen_pixels = set(), set()
    for block in range(4):
        pool = objects.pool_for(block * 10)
        assert objects.pool_for(block * 10 + 9) is pool  # one block for K samples
        assert len(pool) > 0 and pool.classes == ["blob"]
        sources = {pool[k].source for k in range(len(pool))}
        assert sources <= {f"blobs.pkl#{i}" for i in range(block * 6, block * 6 + 6)}  # latent indices
        pixels = {hashlib.sha256(pool[k].rgba.tobytes()).hexdigest() for k in range(len(pool))}
        assert not sources & seen_sources and not pixels & seen_pixels
        seen_sources |= sources
        seen_pixels |= pixels
    assert len(seen_pixels) >= 20  # grabcut kept most of the 24 discs
    objects.close()


def test_generator_names_and_files_are_checked_before_anything_is_written(tmp_path, backgrounds_dir, monkeypatch):
    monkeypatch.setenv("SYNTHGEN_MODELS", str(tmp_path / "models"))
    from synthgen.errors import NotAvailableError

    s = PasteSpec(objects="stylegan-cars", backgrounds=str(backgrounds_dir), generator=GeneratorSettings())
    with pytest.raises(NotAvailableError, match="karras2019stylegan-cars-512x384.pkl"):
        run_paste(s, RunOptions(out=tmp_path / "out", format="wds", n=3, progress=False))
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match="segmenter"):
        (tmp_path / "models").mkdir()
        (tmp_path / "models" / "lfw_netM_state.pth").write_bytes(b"x")
        run_paste(PasteSpec(objects="redo-lfw", backgrounds=str(backgrounds_dir), generator=GeneratorSettings()),
                  RunOptions(out=tmp_path / "out", format="wds", n=3, progress=False))
    with pytest.raises(InputError, match="--refresh"):
        GeneratorSettings(refresh=0).validate()


def test_models_sample_writes_pngs_and_a_sheet(tmp_path, blob_generator):
    from PIL import Image

    from tests.test_cli import run

    code, text = run("models", "sample", blob_generator, "--seeds", "0-4,9", "--batch-size", "4", "--out", tmp_path / "look")
    assert code == 0, text
    names = sorted(p.name for p in (tmp_path / "look").iterdir())
    assert names == ["seed0000.png", "seed0001.png", "seed0002.png", "seed0003.png", "seed0004.png", "seed0009.png", "sheet.png"]
    first = np.asarray(Image.open(tmp_path / "look" / "seed0000.png"))
    z = np.random.RandomState(0).randn(1, 8).astype(np.float32)  # NVIDIA's generate.py latent of seed 0
    expected = (BlobGenerator().sample(torch.from_numpy(z)) * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
    assert first.shape == (40, 40, 3) and np.array_equal(first, expected)
    np.save(tmp_path / "z.npy", z.repeat(3, axis=0))
    code, text = run("models", "sample", blob_generator, "--z", tmp_path / "z.npy", "--out", tmp_path / "z")
    assert code == 0 and np.array_equal(np.asarray(Image.open(tmp_path / "z" / "z0002.png")), expected)
    code, text = run("models", "sample", blob_generator, "--class", "cat", "--out", tmp_path / "bad")
    assert code == 2 and "unconditional" in text
    code, text = run("models", "sample", blob_generator, "--seeds", "5-1", "--out", tmp_path / "bad")
    assert code == 2 and "--seeds" in text


def test_paste_from_a_generator_file_on_the_command_line(tmp_path, blob_generator, backgrounds_dir):
    from tests.test_cli import run

    code, text = run("paste", "--objects", blob_generator, "--backgrounds", backgrounds_dir, "--segmenter", "grabcut",
                     "--refresh", "5", "--pool-size", "4", "--size", "96x80", "--format", "wds", "--n", "12",
                     "--workers", "2", "--quiet", "--out", tmp_path / "out")
    assert code == 0, text
    assert "generated by" in text and "4 per block" in text and "12 samples" in text
    code, text = run("paste", "--backgrounds", backgrounds_dir, "--refresh", "5", "--quiet", "--out", tmp_path / "x")
    assert code == 2 and "apply to generator objects" in text


def test_generated_objects_are_shrunk_to_the_object_size(tmp_path, blob_generator):
    objects = generated_objects(str(blob_generator), 0, GeneratorSettings(pool_size=3, object_size=20), "none", {}, MaskQuality())
    objects.attach(None)
    pool = objects.pool_for(0)
    assert [pool[k].rgba.shape for k in range(3)] == [(20, 20, 4)] * 3
    folder = objects.folder
    objects.close()
    assert not folder.exists()  # a stream's temporary blocks go with it
    with pytest.raises(InputError, match="--object-size"):
        GeneratorSettings(object_size=8).validate()
