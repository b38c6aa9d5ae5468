"""DM-GAN (Zhu et al., CVPR 2019): the paper's bird generator, text to 256x256 images.

A DM-GAN model is three files (MinfengZhu/DM-GAN's releases): the generator ``bird_DMGAN.pth``
(a plain ``G_NET`` state_dict), the DAMSM text encoder ``text_encoder200.pth`` (an
``RNN_ENCODER`` state_dict: word embedding, one bi-LSTM layer) and the CUB caption metadata
``captions.pickle`` (``[train_captions, test_captions, ixtoword, wordtoix]``, plain lists and
dicts: the vocabulary). All three are read without running code from them (state_dicts through
``torch.load(weights_only=True)``, the pickle through the restricted unpickler) into this
module's own PyTorch networks, whose parameter names are the official ones:

* ``CA_NET`` conditioning augmentation: ``GLU(fc(sentence))`` = (mu, logvar),
  ``c = eps * exp(logvar / 2) + mu``;
* stage 1 (``h_net1``): ``fc(cat(c, z))`` (Linear, BatchNorm1d, GLU) to ``16 gf x 4 x 4``, four
  upsampling blocks (nearest x2, 3x3 conv, BatchNorm, GLU) to ``gf x 64 x 64``;
* stages 2 and 3 (``h_net2``, ``h_net3``), each doubling the size: memory writing (a gate
  ``sigmoid(A(word) + B(mean image feature))`` mixes ``M_w(words)`` and ``M_r(image)``), key
  addressing and value reading (attention of every pixel over the caption's words, padding
  masked), the response gate, ``R_NUM`` residual blocks and an upsampling block;
* ``img_net{1,2,3}``: 3x3 conv to RGB and tanh; the last stage's 256 px image is the output.

Captions are tokenised as the official ``gen_example`` does (lower case, ``\\w+`` tokens, ASCII
only) and mapped with the vocabulary; an out-of-vocabulary word is an error that lists them.
Differences from the official code, on purpose: the CA noise ``eps`` is an input (the official
code draws it from torch's global generator), and each caption's padding is masked with its own
mask (the official ``Memory`` repeats a batch's masks in (query, batch) order over weights laid
out (batch, query), so at batch sizes above one a caption's pixels are masked with other
captions' masks; at batch size one, as in the reference fixtures, the two agree).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from synthgen.errors import InputError, NotAvailableError
from synthgen.generators import GeneratorBase

BASE_SIZE = 64  # stage 1's output; each further stage doubles it
WORDS_NUM = 25  # cfg.TEXT.WORDS_NUM in eval_bird.yml: dataset captions longer than this are subsampled
_TOKEN = re.compile(r"\w+")  # nltk RegexpTokenizer(r'\w+'), as the official code tokenises


def tokenize(caption: str) -> list[str]:
    """The official caption tokenisation: lower case, runs of word characters, non-ASCII
    characters dropped from each token, empty tokens dropped."""
    caption = caption.replace("\ufffd\ufffd", " ")
    tokens = (t.encode("ascii", "ignore").decode("ascii") for t in _TOKEN.findall(caption.lower()))
    return [t for t in tokens if t]


class Vocabulary:
    """The caption metadata of a DM-GAN model: ``wordtoix`` and the dataset's captions."""

    def __init__(self, wordtoix: Mapping[str, int], train: list[list[int]], test: list[list[int]], source: str):
        self.wordtoix = dict(wordtoix)
        self.train, self.test = train, test
        self.source = source

    def __len__(self) -> int:
        return len(self.wordtoix)

    def encode(self, captions: Sequence[str]) -> list[list[int]]:
        """Token ids of each caption; InputError naming every out-of-vocabulary word (and which
        captions have them) or an empty caption."""
        out, unknown, empty = [], {}, []
        for i, caption in enumerate(captions):
            tokens = tokenize(caption)
            if not tokens:
                empty.append(i + 1)
            for t in tokens:
                if t not in self.wordtoix:
                    unknown.setdefault(t, []).append(i + 1)
            out.append([self.wordtoix.get(t, 0) for t in tokens])
        if unknown:
            listed = ", ".join(f"{w!r} (caption {', '.join(map(str, sorted(set(n))))})" for w, n in unknown.items())
            raise InputError(
                f"{len(unknown)} word(s) are not in the DM-GAN vocabulary ({len(self)} words, from {self.source}): "
                f"{listed}. The model only knows words of its training captions (CUB bird descriptions); "
                "rephrase with other words.")
        if empty:
            raise InputError(f"caption(s) {', '.join(map(str, empty))} have no words; give a description "
                             "such as 'a small bird with a red head and white wings'.")
        return out


def read_vocabulary(path: str | Path) -> Vocabulary:
    """``captions.pickle`` (the AttnGAN/DM-GAN CUB metadata) through the restricted unpickler."""
    from synthgen.generators.formats import load_pickle

    data = load_pickle(path, "a DM-GAN captions.pickle")
    ok = isinstance(data, (list, tuple)) and len(data) >= 4 and isinstance(data[3], dict) \
        and isinstance(data[0], list) and isinstance(data[1], list)
    if ok:
        wordtoix = data[3]
        ok = all(isinstance(w, str) and isinstance(i, int) for w, i in wordtoix.items())
    if not ok:
        found = f"a {type(data).__name__}" + (f" of {len(data)} items" if isinstance(data, (list, tuple)) else "")
        raise InputError(
            f"{path}: {found}, not DM-GAN caption metadata; expected captions.pickle from the CUB birds "
            "metadata (a list [train_captions, test_captions, ixtoword, wordtoix]).")
    return Vocabulary(data[3], data[0], data[1], Path(path).name)


def read_captions_file(path: str | Path) -> list[str]:
    """One caption per non-empty line of a UTF-8 text file."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read captions ({err}); expected a UTF-8 text file, one caption a line.") from None
    captions = [line.strip() for line in lines if line.strip()]
    if not captions:
        raise InputError(f"{path}: no captions in it; write one description of a bird per line.")
    return captions


# --------------------------------------------------------------------------------------------
# Networks (parameter names as in the official state_dicts)


class _GLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[1] // 2
        return x[:, :half] * torch.sigmoid(x[:, half:])


def _conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, 1, 1, bias=False)


def _up_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), _conv3x3(cin, cout * 2),
                         nn.BatchNorm2d(cout * 2), _GLU())


class _ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block = nn.Sequential(_conv3x3(channels, channels * 2), nn.BatchNorm2d(channels * 2), _GLU(),
                                   _conv3x3(channels, channels), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x) + x


class _CA(nn.Module):
    """Conditioning augmentation: sentence embedding -> (mu, logvar) -> c = eps*std + mu."""

    def __init__(self, nef: int, ncf: int):
        super().__init__()
        self.fc = nn.Linear(nef, ncf * 4)
        self.glu = _GLU()
        self.ncf = ncf

    def forward(self, sent_emb: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        x = self.glu(self.fc(sent_emb))
        mu, logvar = x[:, :self.ncf], x[:, self.ncf:]
        return eps * torch.exp(logvar * 0.5) + mu


class _InitStage(nn.Module):
    def __init__(self, gf: int, in_dim: int):
        super().__init__()
        self.gf = gf
        self.fc = nn.Sequential(nn.Linear(in_dim, gf * 4 * 4 * 2, bias=False), nn.BatchNorm1d(gf * 4 * 4 * 2), _GLU())
        self.upsample1 = _up_block(gf, gf // 2)
        self.upsample2 = _up_block(gf // 2, gf // 4)
        self.upsample3 = _up_block(gf // 4, gf // 8)
        self.upsample4 = _up_block(gf // 8, gf // 16)

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = self.fc(torch.cat((c, z), 1)).view(-1, self.gf, 4, 4)
        return self.upsample4(self.upsample3(self.upsample2(self.upsample1(x))))


def _conv1x1_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(cin, cout, 1), nn.ReLU())


class _NextStage(nn.Module):
    """Dynamic-memory refinement stage (memory writing, key addressing, value reading, response)."""

    def __init__(self, ngf: int, nef: int, r_num: int):
        super().__init__()
        self.A = nn.Linear(nef, 1, bias=False)
        self.B = nn.Linear(ngf, 1, bias=False)
        self.M_r = _conv1x1_relu(ngf, ngf * 2)
        self.M_w = _conv1x1_relu(nef, ngf * 2)
        self.key = _conv1x1_relu(ngf * 2, ngf)
        self.value = _conv1x1_relu(ngf * 2, ngf)
        self.response_gate = nn.Sequential(nn.Conv2d(ngf * 2, 1, 1), nn.Sigmoid())
        self.residual = nn.Sequential(*(_ResBlock(ngf * 2) for _ in range(r_num)))
        self.upsample = _up_block(ngf * 2, ngf)

    def forward(self, h: torch.Tensor, words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Memory writing. The official AvgPool2d(kernel=stage size) is this mean at the stage's size.
        h_avg = h.mean(dim=(2, 3))  # B x ngf
        gate = torch.sigmoid(self.A(words.transpose(1, 2)).transpose(1, 2) + self.B(h_avg).unsqueeze(2))  # B x 1 x L
        memory = self.M_w(words) * gate + self.M_r(h_avg.unsqueeze(2)) * (1 - gate)
        # Key addressing and value reading: every pixel attends over the caption's words.
        key, value = self.key(memory), self.value(memory)  # B x ngf x L
        logits = torch.bmm(h.flatten(2).transpose(1, 2), key)  # B x HW x L
        logits = logits.masked_fill(mask.unsqueeze(1), float("-inf"))
        attention = torch.softmax(logits, dim=2)
        memory_out = torch.bmm(value, attention.transpose(1, 2)).view_as(h)
        # Key response.
        gate = self.response_gate(torch.cat((h, memory_out), 1))
        h = h * (1 - gate) + gate * memory_out
        return self.upsample(self.residual(torch.cat((h, h), 1)))


class _ToImage(nn.Module):
    def __init__(self, ngf: int):
        super().__init__()
        self.img = nn.Sequential(_conv3x3(ngf, 3), nn.Tanh())

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.img(h)


class GNet(nn.Module):
    """DM-GAN's ``G_NET``: ``forward(z, sent_emb, words_emb, mask, eps)`` -> the stages' images."""

    def __init__(self, *, ngf: int = 64, nef: int = 256, ncf: int = 100, z_dim: int = 100, r_num: int = 2,
                 branch_num: int = 3):
        super().__init__()
        self.ca_net = _CA(nef, ncf)
        self.h_net1 = _InitStage(ngf * 16, z_dim + ncf)
        self.img_net1 = _ToImage(ngf)
        self.stages = branch_num
        if branch_num > 1:
            self.h_net2 = _NextStage(ngf, nef, r_num)
            self.img_net2 = _ToImage(ngf)
        if branch_num > 2:
            self.h_net3 = _NextStage(ngf, nef, r_num)
            self.img_net3 = _ToImage(ngf)

    def forward(self, z, sent_emb, words_emb, mask, eps) -> list[torch.Tensor]:
        c = self.ca_net(sent_emb, eps)
        h = self.h_net1(z, c)
        images = [self.img_net1(h)]
        for k in range(2, self.stages + 1):
            h = getattr(self, f"h_net{k}")(h, words_emb, mask)
            images.append(getattr(self, f"img_net{k}")(h))
        return images


class RNNEncoder(nn.Module):
    """The DAMSM text encoder (``RNN_ENCODER``): word embedding, one bidirectional LSTM (or GRU)
    layer. ``forward(ids, lengths)`` -> (words_emb ``B x 2h x L``, sent_emb ``B x 2h``), ``L`` the
    longest caption; padding positions are zero."""

    def __init__(self, ntoken: int, ninput: int = 300, nhidden: int = 128, bidirectional: bool = True,
                 rnn_type: str = "LSTM"):
        super().__init__()
        self.encoder = nn.Embedding(ntoken, ninput)
        self.rnn = getattr(nn, rnn_type)(ninput, nhidden, 1, batch_first=True, bidirectional=bidirectional)
        self.rnn_type = rnn_type

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        packed = nn.utils.rnn.pack_padded_sequence(self.encoder(ids), lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        output, hidden = self.rnn(packed)
        output = nn.utils.rnn.pad_packed_sequence(output, batch_first=True)[0]
        last = hidden[0] if self.rnn_type == "LSTM" else hidden
        return output.transpose(1, 2), last.transpose(0, 1).reshape(ids.shape[0], -1)


# --------------------------------------------------------------------------------------------
# The generator object


def _row_stream(z_row: np.ndarray) -> np.random.Generator:
    """A random stream keyed by one latent's bytes: the caption and CA noise of a latent."""
    key = int.from_bytes(hashlib.sha256(np.ascontiguousarray(z_row, np.float32).tobytes()).digest()[:16], "little")
    return np.random.Generator(np.random.Philox(key=key))


class DMGANGenerator(GeneratorBase, nn.Module):
    """A DM-GAN text-to-image generator behind the generator contract.

    ``sample(z, c=None, truncation_psi=1.0, noise_mode="const", eps=None)``: ``c`` is one caption
    per latent (a string, or token ids); ``eps`` the CA noise ``N x condition_dim``. Left out, the
    caption (from :attr:`captions`, the dataset's test captions or the user's) and ``eps`` are
    drawn from a stream keyed by each latent's bytes (``noise_mode="random"``: ``eps`` from
    torch's generator as the official code does; ``"none"``: ``eps = 0``, the CA mean), so an
    image is a function of its latent. Returns the last stage's images, tanh range [-1, 1].
    """

    family = "dmgan"
    c_dim = 0

    def __init__(self, G: GNet, text_encoder: RNNEncoder, vocabulary: Vocabulary, *, z_dim: int, ncf: int,
                 words_num: int = WORDS_NUM, classes: Sequence[str] | None = None):
        nn.Module.__init__(self)
        self.G, self.text_encoder, self.vocabulary = G, text_encoder, vocabulary
        self.z_dim, self.ncf, self.words_num = z_dim, ncf, words_num
        size = BASE_SIZE * 2 ** (G.stages - 1)
        self.resolution = (size, size)
        self.setup_pool_output(classes or ["bird"], None)
        self.use_captions(None)

    @property
    def device(self) -> torch.device:
        return self.G.ca_net.fc.weight.device

    def use_captions(self, captions: Sequence[str] | None) -> None:
        """The captions ``sample`` draws from when none are given: ``captions`` (checked against
        the vocabulary), or None for the dataset's test captions (what the official sampling
        uses), subsampled to ``words_num`` words when longer as the official loader does."""
        if captions is None:
            pool = [list(c) for c in self.vocabulary.test if len(c)] or [list(c) for c in self.vocabulary.train if len(c)]
            if not pool:
                raise InputError(f"{self.vocabulary.source} holds no captions; give captions (a text file).")
            self.captions, self._subsample = pool, True
        else:
            self.captions, self._subsample = self.vocabulary.encode(list(captions)), False

    def _row_inputs(self, z: np.ndarray) -> tuple[list[list[int]], np.ndarray]:
        ids, eps = [], np.empty((len(z), self.ncf), np.float32)
        for row, z_row in enumerate(z):
            stream = _row_stream(z_row)
            caption = self.captions[int(stream.integers(len(self.captions)))]
            if self._subsample and len(caption) > self.words_num:  # datasets.get_caption's rule
                caption = [caption[i] for i in np.sort(stream.permutation(len(caption))[:self.words_num])]
            ids.append(caption)
            eps[row] = stream.standard_normal(self.ncf)
        return ids, eps

    def encode_text(self, ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(words_emb, sent_emb, mask) of token-id captions, padded with 0 (``<end>``)."""
        lengths = torch.tensor([len(c) for c in ids], dtype=torch.int64)
        if (lengths == 0).any():
            raise InputError("an empty caption (no words); give a description of a bird.")
        padded = torch.zeros(len(ids), int(lengths.max()), dtype=torch.int64)
        for row, caption in enumerate(ids):
            padded[row, :len(caption)] = torch.as_tensor(list(caption), dtype=torch.int64)
        if int(padded.max()) >= self.text_encoder.encoder.num_embeddings:
            raise InputError(f"token id {int(padded.max())} is outside the text encoder's vocabulary "
                             f"({self.text_encoder.encoder.num_embeddings} words)")
        padded = padded.to(self.device)
        words_emb, sent_emb = self.text_encoder(padded, lengths)
        return words_emb, sent_emb, padded == 0

    @torch.no_grad()
    def sample(self, z, c=None, truncation_psi: float = 1.0, noise_mode: str = "const", eps=None,
               all_stages: bool = False):
        """Images ``N x 3 x 256 x 256`` (all three stages with ``all_stages``) for latents ``z``."""
        if truncation_psi != 1:
            raise InputError(f"truncation {truncation_psi}: DM-GAN has no truncation; use 1.0.")
        if noise_mode not in ("const", "random", "none"):
            raise InputError(f"noise_mode {noise_mode!r}: expected const, random or none")
        z_np = np.asarray(z.detach().cpu() if isinstance(z, torch.Tensor) else z, np.float32)
        if z_np.ndim != 2 or z_np.shape[1] != self.z_dim:
            raise InputError(f"latents of shape {tuple(z_np.shape)}: expected N x {self.z_dim}")
        ids, row_eps = self._row_inputs(z_np)
        if c is not None:
            if len(c) != len(z_np):
                raise InputError(f"{len(c)} captions for {len(z_np)} latents: give one caption per latent.")
            if all(isinstance(x, str) for x in c):
                ids = self.vocabulary.encode(list(c))
            else:
                ids = [list(map(int, x)) for x in c]
        if eps is None:
            eps = {"const": torch.from_numpy(row_eps), "none": torch.zeros(len(z_np), self.ncf),
                   "random": torch.randn(len(z_np), self.ncf)}[noise_mode]
        eps = torch.as_tensor(eps, dtype=torch.float32).to(self.device)
        words_emb, sent_emb, mask = self.encode_text(ids)
        images = self.G(torch.from_numpy(z_np).to(self.device), sent_emb, words_emb, mask, eps)
        return images if all_stages else images[-1]


# --------------------------------------------------------------------------------------------
# Loading


def is_dmgan_state(state) -> bool:
    """Whether a checkpoint is a DM-GAN ``G_NET`` state_dict (by its keys)."""
    return isinstance(state, Mapping) and any(
        str(k).split("module.", 1)[-1] in ("ca_net.fc.weight", "h_net1.fc.0.weight") for k in state)


def _tensors(state, path, what: str) -> dict[str, torch.Tensor]:
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        found = f"a {type(state).__name__}" + (f" with keys {sorted(map(str, state))[:6]}" if isinstance(state, Mapping) else "")
        raise InputError(f"{path}: {found}; expected {what} (a plain state_dict of tensors).")
    return {str(k).removeprefix("module."): v.float() if v.is_floating_point() else v for k, v in state.items()}


def _load_into(module: nn.Module, state: dict, path, what: str) -> None:
    own = module.state_dict()
    state = {k: v for k, v in state.items() if k in own or not k.endswith("num_batches_tracked")}
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})"
             for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise InputError(f"{path}: not the {what} this file's shapes imply: missing {missing[:6]}, unexpected "
                         f"{unexpected[:6]}, wrong shapes {wrong[:4]}. Is it a DM-GAN file of another kind?")
    module.load_state_dict(state, strict=False)


def build_generator_net(state: Mapping[str, torch.Tensor], path) -> tuple[GNet, dict]:
    """``G_NET`` with the architecture its state_dict's shapes say, weights loaded."""
    state = _tensors(state, path, "a DM-GAN generator (G_NET)")
    try:
        ngf = state["img_net1.img.0.weight"].shape[1]
        nef = state["ca_net.fc.weight"].shape[1]
        ncf = state["ca_net.fc.weight"].shape[0] // 4
        z_dim = state["h_net1.fc.0.weight"].shape[1] - ncf
    except KeyError as err:
        raise InputError(f"{path}: a state_dict without {err}; expected a DM-GAN generator G_NET "
                         "(bird_DMGAN.pth).") from None
    r_num = sum(1 for k in state if re.fullmatch(r"h_net2\.residual\.\d+\.block\.0\.weight", k))
    branch_num = 1 + ("h_net2.A.weight" in state) + ("h_net3.A.weight" in state)
    arch = dict(ngf=int(ngf), nef=int(nef), ncf=int(ncf), z_dim=int(z_dim), r_num=r_num or 2, branch_num=branch_num)
    G = GNet(**arch)
    _load_into(G, state, path, "DM-GAN generator")
    fuse_batchnorm(G.eval())
    return G, arch


def fuse_batchnorm(G: GNet) -> GNet:
    """Fold every BatchNorm of ``G`` (in eval mode) into the conv or linear layer before it, with
    torch's own ``fuse_*_bn_eval``: the same function of the input (to float rounding) in one pass
    less over each activation. For inference only; the state_dict then no longer has the BN keys."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    for seq in [m for m in G.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            layer, norm = seq[i], seq[i + 1]
            if isinstance(layer, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                seq[i], seq[i + 1] = fuse_conv_bn_eval(layer, norm), nn.Identity()
            elif isinstance(layer, nn.Linear) and isinstance(norm, nn.BatchNorm1d):
                seq[i], seq[i + 1] = fuse_linear_bn_eval(layer, norm), nn.Identity()
    return G


def build_text_encoder(state: Mapping[str, torch.Tensor], path) -> RNNEncoder:
    state = _tensors(state, path, "a DM-GAN / AttnGAN DAMSM text encoder (RNN_ENCODER)")
    try:
        ntoken, ninput = state["encoder.weight"].shape
        nhidden = state["rnn.weight_hh_l0"].shape[1]
        gates = state["rnn.weight_ih_l0"].shape[0] // nhidden
    except KeyError as err:
        raise InputError(f"{path}: a state_dict without {err}; expected the DAMSM text encoder "
                         "(text_encoder200.pth).") from None
    if "rnn.weight_ih_l1" in state:
        raise InputError(f"{path}: a text encoder with more than one RNN layer; DM-GAN's has one.")
    rnn_type = {4: "LSTM", 3: "GRU"}.get(gates)
    if rnn_type is None:
        raise InputError(f"{path}: an RNN with {gates} gates per unit; expected an LSTM (4) or GRU (3).")
    encoder = RNNEncoder(int(ntoken), int(ninput), int(nhidden), "rnn.weight_ih_l0_reverse" in state, rnn_type)
    _load_into(encoder, state, path, "DAMSM text encoder")
    return encoder


def load_dmgan(generator_path: str | Path, text_encoder_path: str | Path, captions_path: str | Path, *,
               caption_file: str | Path | None = None, words_num: int = WORDS_NUM,
               classes: Sequence[str] | None = None, generator_state: Mapping | None = None) -> DMGANGenerator:
    """A :class:`DMGANGenerator` from the three official files (and, optionally, a text file of
    captions to draw from instead of the dataset's test captions). Raises InputError for files
    of the wrong kind, truncated or refused ones, and for captions with unknown words."""
    from synthgen.generators.formats import read_torch_checkpoint

    state = generator_state if generator_state is not None else read_torch_checkpoint(generator_path)
    G, arch = build_generator_net(state, generator_path)
    text_encoder = build_text_encoder(read_torch_checkpoint(text_encoder_path), text_encoder_path)
    vocabulary = read_vocabulary(captions_path)
    hidden = text_encoder.rnn.hidden_size * (2 if text_encoder.rnn.bidirectional else 1)
    if hidden != arch["nef"]:
        raise InputError(f"{text_encoder_path}: the text encoder makes {hidden}-d embeddings but the generator "
                         f"{generator_path} takes {arch['nef']}-d ones; use the encoder it was trained with.")
    if len(vocabulary) > text_encoder.encoder.num_embeddings:
        raise InputError(f"{captions_path}: a vocabulary of {len(vocabulary)} words, but the text encoder "
                         f"{text_encoder_path} embeds {text_encoder.encoder.num_embeddings}; they do not belong together.")
    model = DMGANGenerator(G, text_encoder, vocabulary, z_dim=arch["z_dim"], ncf=arch["ncf"], words_num=words_num,
                           classes=classes)
    if caption_file is not None:
        model.use_captions(read_captions_file(caption_file))
    return model.eval().requires_grad_(False)


def _companions(card, generator_path: Path) -> dict[str, Path]:
    """The text encoder and captions of a DM-GAN card: beside the generator file, else in the
    models folder; NotAvailableError saying what to put where."""
    from synthgen.generators.registry import find_file, missing_file_message

    found, missing = {}, []
    for role in ("text_encoder", "captions"):
        entry = card.file(role)
        beside = generator_path.parent / entry.file
        path = beside if beside.is_file() else find_file(entry)
        if path is None:
            missing.append(missing_file_message(card, entry))
        else:
            found[role] = path
    if missing:
        raise NotAvailableError("\n".join(missing))
    return found


def load_from_card(card, path: str | Path, device: str = "cpu") -> DMGANGenerator:
    """Entry point of :func:`synthgen.generators.load_generator` for cards of family ``dmgan``:
    ``path`` is the generator file, the companions come from the card."""
    path = Path(path)
    files = _companions(card, path)
    model = load_dmgan(path, files["text_encoder"], files["captions"],
                       words_num=int(card.architecture.get("words_num", WORDS_NUM)), classes=list(card.classes))
    return model.to(device)


def load_dmgan_checkpoint(state: Mapping, path: str | Path, classes=None) -> DMGANGenerator:
    """A DM-GAN generator state_dict given by path without a card: its companions are looked
    for under the ``dmgan-birds`` card's file names."""
    try:
        from synthgen.generators.registry import get_card
    except ImportError:
        raise NotAvailableError(f"{path}: a DM-GAN generator; it needs its text encoder and captions.pickle, "
                                "which this version finds through the model registry it lacks. Use "
                                "synthgen.generators.dmgan.load_dmgan(generator, text_encoder, captions).") from None
    card = get_card("dmgan-birds")
    files = _companions(card, Path(path))
    return load_dmgan(path, files["text_encoder"], files["captions"], classes=classes or list(card.classes),
                      generator_state=state)
