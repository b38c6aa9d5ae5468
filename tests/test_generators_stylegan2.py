"""StyleGAN2 generators: the three published layouts load safely and equal the official code.

The fixtures in tests/fixtures/generators/ are small random-weight networks built with the official
code (NVlabs stylegan2-ada-pytorch, rosinality stylegan2-pytorch), written in the genuine containers,
with the official code's outputs on them (``reference.npz``); ``make_fixtures.py`` made them.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from synthgen.errors import InputError, NotAvailableError
from synthgen.generators import ObjectGenerator, load_generator, to_uint8
from synthgen.generators import formats
from synthgen.generators.latents import labels_for, latents_for
from synthgen.generators.stylegan2 import StyleGAN2Generator, nvlabs_kwargs

FIXTURES = Path(__file__).parent / "fixtures" / "generators"
sys.path.insert(0, str(FIXTURES))
import writers  # noqa: E402

FILES = {
    "nvlabs-sg2-32": ("nvlabs-sg2-32.pkl", formats.NVLABS_PICKLE),
    "nvlabs-sg2-cond-resnet-16": ("nvlabs-sg2-cond-resnet-16.pkl", formats.NVLABS_PICKLE),
    "tf-sg2-32": ("tf-sg2-32.pkl", formats.TF_PICKLE),
    "rosinality-sg2-32": ("rosinality-sg2-32.pt", formats.TORCH_CHECKPOINT),
}


@pytest.fixture(scope="module")
def refs():
    return dict(np.load(FIXTURES / "reference.npz"))


@pytest.fixture(scope="module")
def generators():
    return {name: load_generator(FIXTURES / file) for name, (file, _) in FILES.items()}


@pytest.mark.parametrize("name", FILES)
def test_sniff_names_the_format_from_content(name, tmp_path):
    file, kind = FILES[name]
    renamed = tmp_path / "model.bin"  # the suffix plays no part
    renamed.write_bytes((FIXTURES / file).read_bytes())
    assert formats.sniff(renamed).kind == kind


@pytest.mark.parametrize("psi", [1.0, 0.7])
@pytest.mark.parametrize("name", FILES)
def test_sample_equals_official_output(name, psi, refs, generators):
    G = generators[name]
    z = refs[f"{name}/z"]
    c = refs.get(f"{name}/c")
    ref = refs[f"{name}/psi{psi}"]
    for fused in (None, True, False):  # batch (shared weight) and per-sample (grouped) forms
        G.fused_modconv = fused
        out = G.sample(torch.from_numpy(z), None if c is None else torch.from_numpy(c), truncation_psi=psi,
                       noise_mode="const")
        assert out.dtype == torch.float32 and out.shape == ref.shape
        assert np.abs(out.numpy() - ref).max() < 2e-5, (name, psi, fused)
        # one sample at a time (the fused single-sample path) gives the same images
    G.fused_modconv = None
    one = torch.cat([G.sample(torch.from_numpy(z[i:i + 1]), None if c is None else torch.from_numpy(c[i:i + 1]),
                              truncation_psi=psi) for i in range(len(z))])
    assert np.abs(one.numpy() - ref).max() < 2e-5


def test_interface(generators, refs):
    G = generators["nvlabs-sg2-32"]
    assert isinstance(G, ObjectGenerator) and isinstance(G, torch.nn.Module) and not G.training
    assert (G.z_dim, G.c_dim, G.resolution, G.classes, G.family) == (32, 0, (32, 32), ["object"], "stylegan2")
    cond = generators["nvlabs-sg2-cond-resnet-16"]
    assert (cond.z_dim, cond.c_dim, cond.resolution) == (16, 4, (16, 16))
    assert cond.classes == ["class0", "class1", "class2", "class3"]
    with pytest.raises(InputError, match="conditional"):
        cond.sample(torch.zeros(2, 16))
    with pytest.raises(InputError, match="N x 32"):
        G.sample(torch.zeros(2, 31))
    with pytest.raises(InputError, match="noise_mode"):
        G.sample(torch.zeros(1, 32), noise_mode="fixed")
    z = torch.from_numpy(refs["nvlabs-sg2-32/z"])
    assert torch.equal(G.sample(z, noise_mode="none"), G.sample(z, noise_mode="none"))
    torch.manual_seed(0)
    random = G.sample(z, noise_mode="random")
    assert random.shape == (2, 3, 32, 32) and not torch.equal(random, G.sample(z))


def test_generate_uint8_and_crop(generators):
    G = generators["rosinality-sg2-32"]
    images = G.generate(np.random.default_rng(0), 3)
    assert len(images) == 3 and all(im.shape == (32, 32, 3) and im.dtype == np.uint8 for im in images)
    z = np.random.default_rng(0).standard_normal((3, 32)).astype(np.float32)
    expected = (G.sample(torch.from_numpy(z)) * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    assert np.array_equal(np.stack(images), expected.numpy())
    G.crop = (2, 8, 30, 24)
    try:
        cropped = G.generate(np.random.default_rng(0), 3)
    finally:
        G.crop = None
    assert np.array_equal(np.stack(cropped), np.stack(images)[:, 8:24, 2:30])
    assert to_uint8(torch.tensor([[[[-2.0]], [[0.0]], [[2.0]]]]))[0].tolist() == [[[0, 128, 255]]]


def test_generate_is_deterministic_across_batch_sizes(generators):
    G = generators["nvlabs-sg2-32"]
    z = latents_for(5, range(11), G.z_dim)
    assert np.array_equal(latents_for(5, [3, 9], G.z_dim), z[[3, 9]])
    assert not np.array_equal(latents_for(6, [3], G.z_dim), z[[3]])
    whole = G.images_from_latents(z)
    for pieces in ([3, 8], [1] * 11, [9, 2]):
        parts, start = [], 0
        for size in pieces:
            parts += G.images_from_latents(z[start:start + size])
            start += size
        assert all(np.array_equal(a, b) for a, b in zip(whole, parts))
    rng = np.random.default_rng(1)
    split = G.generate(rng, 2) + G.generate(rng, 3)
    assert all(np.array_equal(a, b) for a, b in zip(G.generate(np.random.default_rng(1), 5), split))
    cond = generators["nvlabs-sg2-cond-resnet-16"]
    labels = labels_for(5, range(6), cond.c_dim)
    assert np.array_equal(labels_for(5, [4], cond.c_dim), labels[[4]])
    zc = latents_for(5, range(6), cond.z_dim)
    a = cond.images_from_latents(zc, labels)
    b = cond.images_from_latents(zc[:4], labels[:4]) + cond.images_from_latents(zc[4:], labels[4:])
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


# ------------------------------------------------------------------------------------------------
# Refused and bad files


class _Payload:
    """Unpickling this runs ``os.system`` (a shell command that creates ``marker``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _assert_refused_without_running(path: Path, marker: Path):
    with pytest.raises(InputError) as err:
        load_generator(path)
    message = str(err.value)
    assert str(path) in message and "weights_only=False" not in message and "trust" not in message.lower()
    assert not marker.exists()
    return message


def test_code_payload_in_a_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    # the payload is the whole file: refused at sniffing
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"G_ema": _Payload(marker)}))
    assert "system" in _assert_refused_without_running(plain, marker)
    # after a genuine network record: the restricted unpickler refuses the global
    G = load_generator(FIXTURES / "nvlabs-sg2-32.pkl")
    record = writers.module_record(G, class_name="Generator", extra={"_init_kwargs": {}})
    hidden = tmp_path / "hidden.pkl"
    writers.write_nvlabs_pickle(hidden, record, extra={"training_set_kwargs": _Payload(marker)})
    assert formats.sniff(hidden).kind == formats.NVLABS_PICKLE
    message = _assert_refused_without_running(hidden, marker)
    assert "refused" in message and "system" in message
    # inside a TensorFlow pickle's variables
    tf = tmp_path / "tf.pkl"
    net = writers.tf_network("Gs", {}, {})
    net.state["variables"] = [("x", _Payload(marker))]
    writers.write_tf_pickle(tf, net, net, net)
    _assert_refused_without_running(tf, marker)
    # inside a torch.save checkpoint
    pt = tmp_path / "model.pt"
    torch.save({"g_ema": {}, "args": _Payload(marker)}, pt)
    _assert_refused_without_running(pt, marker)


def _with_module_src(record: formats.PersistentRecord, module_src: str):
    """``record`` (as read) back into a writable persistence record carrying ``module_src``."""
    state = dict(record.state)
    state["_modules"] = {name: _with_module_src(child, module_src) for name, child in state["_modules"].items()}
    return writers._Record(dict(type="class", version=writers.PERSISTENCE_VERSION, module_src=module_src,
                                class_name=record.class_name, state=state))


def test_nvlabs_module_source_is_never_executed(tmp_path, refs):
    marker = tmp_path / "ran"
    record = formats.read_nvlabs_pickle(FIXTURES / "nvlabs-sg2-32.pkl")
    # NVlabs' loader would exec this text; ours keeps it as a string.
    evil_src = f"import os\nos.system('touch {marker}')\n"
    path = tmp_path / "evil-src.pkl"
    writers.write_nvlabs_pickle(path, _with_module_src(record, evil_src))
    assert evil_src.encode() in path.read_bytes()
    G = load_generator(path)
    out = G.sample(torch.from_numpy(refs["nvlabs-sg2-32/z"]))
    assert np.abs(out.numpy() - refs["nvlabs-sg2-32/psi1.0"]).max() < 2e-5
    assert not marker.exists()


@pytest.mark.parametrize("content, found", [
    (b"\x89PNG\r\n\x1a\n" + bytes(100), "PNG image"),
    (b"just some notes\n", "text file"),
    (bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)), "unrecognised binary data"),
    (b"", "empty file"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 351343876\n", "Git LFS pointer"),
    (pickle.dumps([1, 2, 3]), "no network in it"),
    (pickle.dumps(argparse.Namespace(a=1)), "first class is argparse.Namespace"),
])
def test_wrong_kind_of_file_says_what_was_found(tmp_path, content, found):
    path = tmp_path / "model.pkl"
    path.write_bytes(content)
    with pytest.raises(InputError) as err:
        load_generator(path)
    assert found in str(err.value) and "expected a generator checkpoint" in str(err.value)


def test_zip_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(InputError, match="not a PyTorch checkpoint"):
        load_generator(path)


@pytest.mark.parametrize("name", FILES)
def test_truncated_file_is_refused(tmp_path, name):
    file = FILES[name][0]
    data = (FIXTURES / file).read_bytes()
    path = tmp_path / file
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(InputError) as err:
        load_generator(path)
    assert str(path) in str(err.value)
    assert any(word in str(err.value) for word in ("truncated", "damaged", "ends early"))


def test_missing_path_and_unknown_name(tmp_path):
    with pytest.raises((InputError, NotAvailableError)):
        load_generator(tmp_path / "nothing.pkl")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_without_a_device_says_so():
    with pytest.raises(InputError, match="no CUDA device"):
        load_generator(FIXTURES / "nvlabs-sg2-32.pkl", device="cuda")


def test_importing_the_package_does_not_import_torch():
    import subprocess

    code = "import sys, synthgen.generators, synthgen.generators.latents; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}).returncode == 0


def test_stylegan3_pickle_is_declined(tmp_path):
    synthesis = torch.nn.Module()
    synthesis.input = torch.nn.Linear(2, 2)
    synthesis.L0_36_512 = torch.nn.Linear(2, 2)
    G = torch.nn.Module()
    G.synthesis = synthesis
    path = tmp_path / "stylegan3-t-ffhq-1024x1024.pkl"
    writers.write_nvlabs_pickle(path, writers.module_record(G, class_name="Generator", extra={"_init_kwargs": {}}))
    with pytest.raises(NotAvailableError, match="StyleGAN3"):
        load_generator(path)


def test_unknown_architecture_settings_are_named(tmp_path):
    G = load_generator(FIXTURES / "nvlabs-sg2-32.pkl")
    kwargs = dict(z_dim=32, c_dim=0, w_dim=32, img_resolution=32, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=16,
                                                                           magic_layers=3))
    path = tmp_path / "odd.pkl"
    writers.write_nvlabs_pickle(path, writers.module_record(G, class_name="Generator",
                                                            extra={"_init_kwargs": kwargs}))
    with pytest.raises(InputError, match="magic_layers"):
        load_generator(path)


def test_stylegan3_repository_defaults():
    flat = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, mapping_kwargs={}, channel_base=64)
    assert nvlabs_kwargs(flat, stylegan3_repo=True)["synthesis_kwargs"] == \
        dict(channel_base=64, conv_clamp=256, num_fp16_res=4)
    nested = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, synthesis_kwargs=dict(channel_base=64))
    assert nvlabs_kwargs(nested, stylegan3_repo=False)["synthesis_kwargs"] == dict(channel_base=64)


def test_rosinality_training_checkpoint_with_args_and_no_latent_avg(tmp_path, refs):
    converted = torch.load(FIXTURES / "rosinality-sg2-32.pt", weights_only=True)
    trained = {"g": converted["g_ema"], "g_ema": converted["g_ema"], "d": {},
               "args": argparse.Namespace(size=32, lr_mlp=0.01, n_mlp=3), "ada_aug_p": 0.0}
    path = tmp_path / "050000.pt"
    torch.save(trained, path)
    G = load_generator(path)
    z = torch.from_numpy(refs["rosinality-sg2-32/z"])
    assert np.abs(G.sample(z).numpy() - refs["rosinality-sg2-32/psi1.0"]).max() < 2e-5
    # the truncation centre is estimated (fixed seed) when the file has none
    assert torch.isfinite(G.mapping.w_avg).all() and G.mapping.w_avg.abs().sum() > 0
    assert torch.equal(load_generator(path).mapping.w_avg, G.mapping.w_avg)


def test_restricted_unpickler_reads_the_genuine_globals_only():
    allowed = formats._allowed_globals()
    assert ("torch_utils.persistence", "_reconstruct_persistent_obj") in allowed
    assert not any(module in ("os", "posix", "builtins", "subprocess", "importlib") for module, _ in allowed)
    assert allowed[("torch_utils.persistence", "_reconstruct_persistent_obj")] is not None


def test_float16_blocks_follow_the_official_float16_path(generators, refs):
    """The float16 blocks (CUDA's default; run here on CPU, as the official reference was) stay
    within float16 rounding of NVlabs' float16 output; float32 gives the float32 reference."""
    G = generators["nvlabs-sg2-32"]
    ws = G.mapping(torch.from_numpy(refs["nvlabs-sg2-32/z"]), None)
    official_fp16, official_fp32 = refs["nvlabs-sg2-32/fp16"], refs["nvlabs-sg2-32/psi1.0"]
    rounding = np.abs(official_fp16 - official_fp32).max()
    assert 1e-4 < rounding < 0.05  # the float16 path really differs from float32
    for fused in (None, True):
        half = G.synthesis(ws, "const", True, fused).numpy()
        assert np.abs(half - official_fp16).max() < 2 * rounding


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_float32_equals_official_and_float16_is_close(refs, monkeypatch):
    # PyTorch lets cuDNN use TF32 for float32 convolutions by default; the comparison needs IEEE float32.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    G = load_generator(FIXTURES / "nvlabs-sg2-32.pkl", device="cuda")
    z = torch.from_numpy(refs["nvlabs-sg2-32/z"]).cuda()
    half = G.sample(z).cpu().numpy()
    G.fp32 = True
    full = G.sample(z).cpu().numpy()
    assert np.abs(full - refs["nvlabs-sg2-32/psi1.0"]).max() < 1e-4
    assert np.abs(half - refs["nvlabs-sg2-32/fp16"]).max() < 0.05
