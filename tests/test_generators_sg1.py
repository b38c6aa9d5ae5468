"""StyleGAN (v1) TF pickles: loaded without running their code, equal to an independent port.

The fixtures (``tests/fixtures/generators/sg1_*.pkl``, made by ``make_sg1.py``) are small
random-weight generators in the genuine container (``(G, D, Gs)`` of ``dnnlib.tflib`` Network
states, version 3, numpy variables under their TF names); ``sg1_reference.npz`` holds the outputs
of genforce's PyTorch port of the StyleGAN generator on them (TensorFlow 1, which the official
code needs, does not install here).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from synthgen.errors import InputError  # noqa: E402
from synthgen.generators import load_generator, to_uint8  # noqa: E402
from synthgen.generators.stylegan1 import StyleGAN1Generator  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "generators"
sys.path.insert(0, str(FIXTURES))
from writers import tf_network, write_tf_pickle  # noqa: E402


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(FIXTURES / "sg1_reference.npz"))


@pytest.mark.parametrize("name", ["sg1_128", "sg1_cond16"])
def test_outputs_equal_the_port(name, reference):
    G = load_generator(FIXTURES / f"{name}.pkl")
    z = reference[f"{name}_z"]
    c = reference.get(f"{name}_c")
    compared = 0
    for key, psi in (("psi1", 1.0), ("psi07", 0.7)):
        if f"{name}_{key}" not in reference:
            continue
        out = G.sample(torch.from_numpy(z), None if c is None else torch.from_numpy(c), truncation_psi=psi)
        expected = reference[f"{name}_{key}"]
        assert out.shape == expected.shape and out.dtype == torch.float32
        assert np.abs(out.numpy() - expected).max() <= 1e-4, (name, key)
        compared += 1
    assert compared >= 1


def test_architecture_read_from_the_file():
    G = load_generator(FIXTURES / "sg1_128.pkl")
    assert isinstance(G, StyleGAN1Generator) and G.family == "stylegan1" and not G.training
    assert (G.z_dim, G.c_dim, G.w_dim, G.resolution, G.num_ws) == (16, 0, 16, (128, 128), 12)
    assert G.classes == ["object"] and G.crop is None
    # nearest-neighbour upsampling below 128 px, NVlabs' fused transposed conv at 128 px
    assert [layer.kind for layer in G.layers] == ["const", "conv"] + ["up", "conv"] * 4 + ["up_fused", "conv"]
    assert [layer.noise_const.shape[-1] for layer in G.layers] == [4, 4, 8, 8, 16, 16, 32, 32, 64, 64, 128, 128]
    assert len(G.mapping) == 2 and tuple(G.mapping[0].weight.shape) == (16, 16)
    assert math.isclose(G.mapping[0].weight_coef, math.sqrt(2) / 4 * 0.01)  # equalized lr x lrmul 0.01
    assert G.truncation_cutoff == 8
    cond = load_generator(FIXTURES / "sg1_cond16.pkl")
    assert (cond.c_dim, cond.resolution, len(cond.mapping)) == (3, (16, 16), 3)
    with pytest.raises(InputError, match="conditional"):
        cond.sample(torch.zeros(1, 12))


def test_noise_modes_and_truncation_cutoff(reference):
    G = load_generator(FIXTURES / "sg1_cond16.pkl")
    z, c = torch.from_numpy(reference["sg1_cond16_z"]), torch.from_numpy(reference["sg1_cond16_c"])
    const = G.sample(z, c)
    assert torch.equal(const, G.sample(z, c))
    assert not torch.allclose(G.sample(z, c, noise_mode="random"), const)
    assert not torch.allclose(G.sample(z, c, noise_mode="none"), const)
    # cutoff 0 disables truncation; psi 0 with the full cutoff gives w_avg for every latent
    assert torch.equal(G.sample(z, c, truncation_psi=0.5, truncation_cutoff=0), const)
    ws = G.map(z, c, truncation_psi=0.0)
    assert torch.allclose(ws, G.w_avg.expand_as(ws))


def test_generate_depends_on_the_latents_only():
    G = load_generator(FIXTURES / "sg1_cond16.pkl")
    five = G.generate(np.random.default_rng(5), 5, labels=[0, 1, 2, 0, 1])
    three = G.generate(np.random.default_rng(5), 3, labels=[0, 1, 2])
    assert all(np.array_equal(a, b) for a, b in zip(three, five))
    assert five[0].shape == (16, 16, 3) and five[0].dtype == np.uint8


# -- a 512 px car-like generator, written from TF names (independent of the loader's map) -------


def write_sg1_pickle(path, resolution=512, z_dim=4, w_dim=4, fmap_max=2, seed=0, synthesis_kwargs=None, lod=0.0):
    """A random StyleGAN (v1) ``(G, D, Gs)`` pickle: every variable by its NVlabs name and shape."""
    rng = np.random.default_rng(seed)
    r = lambda *shape, s=1.0: (rng.standard_normal(shape) * s).astype(np.float32)  # noqa: E731
    log2 = int(math.log2(resolution))
    nf = lambda stage: min(int(8192 / 2.0 ** stage), fmap_max)  # noqa: E731
    mapping = {"Dense0/weight": r(z_dim, w_dim, s=100), "Dense0/bias": r(w_dim, s=10)}
    synthesis = {"lod": np.float32(lod)}
    layers = [("4x4/Const", nf(1), nf(1)), ("4x4/Conv", nf(1), nf(1))]
    for res in range(3, log2 + 1):
        layers += [(f"{2**res}x{2**res}/Conv0_up", nf(res - 2), nf(res - 1)), (f"{2**res}x{2**res}/Conv1", nf(res - 1), nf(res - 1))]
    for i, (scope, cin, cout) in enumerate(layers):
        size = 2 ** (i // 2 + 2)
        synthesis[f"noise{i}"] = r(1, 1, size, size)
        if i == 0:
            synthesis[f"{scope}/const"] = r(1, cout, 4, 4)
        else:
            synthesis[f"{scope}/weight"] = r(3, 3, cin, cout)
        synthesis.update({f"{scope}/Noise/weight": r(cout, s=0.3), f"{scope}/bias": r(cout, s=0.3),
                          f"{scope}/StyleMod/weight": r(w_dim, 2 * cout), f"{scope}/StyleMod/bias": r(2 * cout, s=0.3)})
    for lod_index in range(log2 - 1):
        synthesis[f"ToRGB_lod{lod_index}/weight"] = r(1, 1, nf(log2 - 1 - lod_index), 3, s=0.5)
        synthesis[f"ToRGB_lod{lod_index}/bias"] = r(3, s=0.1)
    common = {"num_channels": 3, "resolution": resolution, "label_size": 0}
    m = tf_network("G_mapping", {**common, "latent_size": z_dim, "dlatent_size": w_dim, "mapping_layers": 1},
                   mapping, version=3)
    s = tf_network("G_synthesis", {**common, **(synthesis_kwargs or {})}, synthesis, version=3)
    Gs = tf_network("Gs", common, {"dlatent_avg": r(w_dim)}, {"mapping": m, "synthesis": s}, version=3)
    D = tf_network("D", common, {}, version=3)
    write_tf_pickle(path, Gs, D, Gs, protocol=4)


def test_car_crop_keeps_rows_64_to_448(tmp_path):
    path = tmp_path / "cars.pkl"
    write_sg1_pickle(path, 512)
    G = load_generator(path)
    assert G.resolution == (512, 512)
    G.setup_pool_output(["car"], (0, 64, 512, 448))
    G.compute_batch = 2  # (the default pads every call to 8 latents of 512 px)
    rng = np.random.default_rng(1)
    images = G.generate(np.random.default_rng(1), 2)
    z = rng.standard_normal((2, G.z_dim)).astype(np.float32)
    full = to_uint8(G.sample(torch.from_numpy(z)))
    assert images[0].shape == (384, 512, 3) and full[0].shape == (512, 512, 3)
    assert all(np.array_equal(img, f[64:448]) for img, f in zip(images, full))


def test_official_car_file_name_gets_the_cards_crop(tmp_path):
    pytest.importorskip("synthgen.generators.registry")
    path = tmp_path / "karras2019stylegan-cars-512x384.pkl"
    write_sg1_pickle(path, 512, seed=1)
    G = load_generator(path)
    assert G.crop == (0, 64, 512, 448) and G.classes == ["car"]
    G.compute_batch = 1
    assert G.generate(np.random.default_rng(0), 1)[0].shape == (384, 512, 3)


# -- refusals ----------------------------------------------------------------------------------


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_code_payload_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    evil = tf_network("Gs", {}, {}, version=3)
    evil.state["variables"].append(("dlatent_avg", _Payload(marker)))
    path = tmp_path / "evil.pkl"
    write_tf_pickle(path, evil, evil, evil, protocol=4)
    with pytest.raises(InputError, match="refused") as err:
        load_generator(path)
    assert "system" in str(err.value) and "pickle.load" not in str(err.value)
    assert not marker.exists()


def test_truncated_file_says_so(tmp_path):
    data = (FIXTURES / "sg1_cond16.pkl").read_bytes()
    path = tmp_path / "cut.pkl"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated|ends early"):
        load_generator(path)


def test_wrong_kind_of_network_is_refused(tmp_path):
    D = tf_network("D", {}, {"FromRGB_lod0/weight": np.zeros((1, 1, 3, 4), np.float32)}, version=3)
    path = tmp_path / "d_only.pkl"
    write_tf_pickle(path, D, D, D, protocol=4)
    with pytest.raises(InputError, match="mapping.*synthesis"):
        load_generator(path)


@pytest.mark.parametrize("kwargs, match", [
    ({"synthesis_kwargs": {"use_pixel_norm": True}}, "use_pixel_norm"),
    ({"lod": 1.0}, "progressive growing"),
])
def test_unsupported_settings_are_named(tmp_path, kwargs, match):
    path = tmp_path / "odd.pkl"
    write_sg1_pickle(path, 8, **kwargs)
    with pytest.raises(InputError, match=match):
        load_generator(path)
