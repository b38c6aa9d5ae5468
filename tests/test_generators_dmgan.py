"""DM-GAN birds: generator, text encoder and vocabulary read safely, equal to the official code.

Fixtures (``tests/fixtures/generators/dmgan_*``, made by ``make_dmgan.py`` with MinfengZhu/DM-GAN's
own ``model.py``): a small random-weight ``G_NET`` and ``RNN_ENCODER`` as plain state_dicts in the
official key layout (legacy ``torch.save`` format), a small ``captions.pickle``, two user captions,
and the official outputs for fixed z, CA eps and captions (``dmgan_reference.npz``).
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from synthgen.errors import InputError  # noqa: E402
from synthgen.generators.dmgan import DMGANGenerator, load_dmgan, read_captions_file, tokenize  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "generators"
G_FILE = FIXTURES / "dmgan_tiny_G.pth"
TEXT_FILE = FIXTURES / "dmgan_tiny_text_encoder.pth"
CAPTIONS = FIXTURES / "dmgan_tiny_captions.pickle"
USER_CAPTIONS = FIXTURES / "dmgan_tiny_captions.txt"


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(FIXTURES / "dmgan_reference.npz"))


@pytest.fixture(scope="module")
def model() -> DMGANGenerator:
    return load_dmgan(G_FILE, TEXT_FILE, CAPTIONS)


def test_outputs_equal_the_official_code(model, reference):
    captions = read_captions_file(USER_CAPTIONS)
    z = np.concatenate([reference["c0_z"], reference["c1_z"]])
    eps = np.concatenate([reference["c0_eps"], reference["c1_eps"]])
    # both captions (9 and 20 words) in one batch; the official outputs were made one at a time
    stages = model.sample(torch.from_numpy(z), captions, eps=torch.from_numpy(eps), all_stages=True)
    assert [tuple(s.shape) for s in stages] == [(2, 3, 64, 64), (2, 3, 128, 128), (2, 3, 256, 256)]
    assert torch.equal(model.sample(torch.from_numpy(z), captions, eps=torch.from_numpy(eps)), stages[2])
    for i in range(2):
        assert np.abs(stages[0][i].numpy() - reference[f"c{i}_img64"][0]).max() <= 1e-4
        assert np.abs(stages[1][i, :, ::2, ::2].numpy() - reference[f"c{i}_img128_s2"][0]).max() <= 1e-4
        assert np.abs(stages[2][i, :, ::4, ::4].numpy() - reference[f"c{i}_img256_s4"][0]).max() <= 1e-4


def test_text_encoder_and_tokenizer_equal_the_official_code(model, reference):
    ids = model.vocabulary.encode(read_captions_file(USER_CAPTIONS))
    assert ids == [reference["c0_ids"].tolist(), reference["c1_ids"].tolist()]
    words, sentence, mask = model.encode_text(ids)
    for i, caption in enumerate(ids):
        n = len(caption)
        assert np.abs(words[i, :, :n].numpy() - reference[f"c{i}_words_emb"][0]).max() <= 1e-5
        assert np.abs(sentence[i].numpy() - reference[f"c{i}_sent_emb"][0]).max() <= 1e-5
        assert mask[i, :n].logical_not().all() and mask[i, n:].all()
    assert tokenize("A RED-crowned bird, bluée!") == ["a", "red", "crowned", "bird", "blue"]


def test_architecture_read_from_the_files(model):
    assert (model.family, model.z_dim, model.c_dim, model.resolution, model.classes) == ("dmgan", 8, 0, (256, 256), ["bird"])
    assert model.G.stages == 3 and len(model.G.h_net2.residual) == 2 and model.ncf == 6
    assert model.text_encoder.rnn.bidirectional and model.text_encoder.rnn.hidden_size == 8
    assert not model.training and len(model.vocabulary) == 28
    assert model.captions == [c for c in model.vocabulary.test]  # the dataset's test captions by default


def test_out_of_vocabulary_words_are_listed(model):
    with pytest.raises(InputError) as err:
        model.vocabulary.encode(["a red bird", "a purple bird with an orange tail", "purple wings"])
    message = str(err.value)
    for word in ("'purple' (caption 2, 3)", "'orange' (caption 2)", "'tail'", "'an'"):
        assert word in message
    assert "28 words" in message
    with pytest.raises(InputError, match="no words"):
        model.vocabulary.encode(["!!!"])


def test_caption_file_is_the_pool(tmp_path):
    m = load_dmgan(G_FILE, TEXT_FILE, CAPTIONS, caption_file=USER_CAPTIONS)
    assert m.captions == m.vocabulary.encode(read_captions_file(USER_CAPTIONS))
    bad = tmp_path / "bad.txt"
    bad.write_text("a bird\n\na zebra bird\n", encoding="utf-8")
    with pytest.raises(InputError, match="'zebra'"):
        load_dmgan(G_FILE, TEXT_FILE, CAPTIONS, caption_file=bad)


def test_an_image_depends_on_its_latent_only(model):
    five = model.generate(np.random.default_rng(3), 5)
    three = model.generate(np.random.default_rng(3), 3)
    assert five[0].shape == (256, 256, 3) and five[0].dtype == np.uint8
    assert all(np.array_equal(a, b) for a, b in zip(three, five))
    z = torch.from_numpy(np.random.default_rng(4).standard_normal((4, 8)).astype(np.float32))
    alone = model.sample(z[2:3])
    together = model.sample(z)
    assert torch.allclose(alone[0], together[2], atol=1e-6)
    assert not torch.allclose(together[0], together[1])
    assert not torch.equal(model.sample(z, noise_mode="none"), together)
    with pytest.raises(InputError, match="no truncation"):
        model.sample(z, truncation_psi=0.7)


# -- refusals ----------------------------------------------------------------------------------


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_captions_pickle_with_code_is_refused(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "captions.pickle"
    path.write_bytes(pickle.dumps([[], [], {0: "<end>"}, _Payload(marker)], protocol=2))
    with pytest.raises(InputError, match="refused"):
        load_dmgan(G_FILE, TEXT_FILE, path)
    assert not marker.exists()


def test_generator_with_code_is_refused(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "bird_DMGAN.pth"
    torch.save({"ca_net.fc.weight": torch.zeros(4, 4), "x": _Payload(marker)}, path)
    with pytest.raises(InputError, match="refused"):
        load_dmgan(path, TEXT_FILE, CAPTIONS)
    assert not marker.exists()


def test_wrong_and_truncated_files(tmp_path):
    with pytest.raises(InputError, match="DM-GAN generator"):
        load_dmgan(TEXT_FILE, TEXT_FILE, CAPTIONS)  # the text encoder given as the generator
    with pytest.raises(InputError, match="text encoder"):
        load_dmgan(G_FILE, G_FILE, CAPTIONS)
    with pytest.raises(InputError, match="not DM-GAN caption metadata"):
        load_dmgan(G_FILE, TEXT_FILE, FIXTURES / "sg1_cond16.pkl")
    cut = tmp_path / "cut.pth"
    data = G_FILE.read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match="truncated|damaged"):
        load_dmgan(cut, TEXT_FILE, CAPTIONS)


def test_load_generator_by_card_name(tmp_path, monkeypatch):
    pytest.importorskip("synthgen.generators.registry")
    from synthgen.generators import load_generator
    from synthgen.generators.registry import get_card

    card = get_card("dmgan-birds")
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(G_FILE, folder / card.file("model").file)
    monkeypatch.setenv("SYNTHGEN_MODELS", str(folder))
    from synthgen.errors import NotAvailableError

    with pytest.raises(NotAvailableError, match=card.file("text_encoder").file):
        load_generator("dmgan-birds")
    shutil.copy(TEXT_FILE, folder / card.file("text_encoder").file)
    shutil.copy(CAPTIONS, folder / card.file("captions").file)
    G = load_generator("dmgan-birds")
    assert G.family == "dmgan" and G.classes == ["bird"] and G.resolution == (256, 256)
    # a generator file given by path finds its companions beside it, under any name (sniffed by its keys)
    assert load_generator(folder / card.file("model").file).z_dim == 8
    shutil.copy(G_FILE, folder / "my_birds.pth")
    assert load_generator(folder / "my_birds.pth").family == "dmgan"
