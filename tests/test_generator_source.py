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
