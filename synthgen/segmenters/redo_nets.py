"""ReDO's four networks (Chen, Artières, Denoyer, NeurIPS 2019), written for synthgen.

The modules are laid out so that their ``state_dict`` keys and shapes are those of the official
code (mickaelChen/ReDO ``models.py``): a checkpoint written by either side loads in the other.
That fixes the nesting (``cnn.0.mods.1.weight``, ``psp.2.1.bias``, ``net.0.convA.3.1.weight_orig``
...) and the use of ``torch.nn.utils.spectral_norm`` (keys ``weight_orig``, ``weight_u``,
``weight_v``) in the generator, discriminator and latent encoder.

- :class:`MaskNet` (``netEncM``): image in [-1, 1] -> ``n_masks`` soft masks that sum to 1.
- :class:`RegionGenerator` (``netGenX``): one masked generator per region, redraws the region
  from a latent code, conditioned on the mask at every scale.
- :class:`Discriminator` (``netDX``): residual, spectrally normalised, hinge loss.
- :class:`LatentEncoder` (``netRecZ``): recovers the latent codes from the redrawn regions (the
  paper's information-conservation term, which stops the generator ignoring its code).

The generator and discriminator are built for ``size`` 128 exactly as the official code; at 64
the generator has one up-sampling block fewer (the official code has no 64 generator).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

SIZES = (64, 128)


def _conv(n_in: int, n_out: int, kernel: int, stride: int = 1, padding: int = 0, bias: bool = True, sn: bool = False) -> nn.Conv2d:
    conv = nn.Conv2d(n_in, n_out, kernel, stride, padding, bias=bias)
    return spectral_norm(conv) if sn else conv


# --- mask network -------------------------------------------------------------------------------

class _Down(nn.Module):
    """7x7 stem then two stride-2 convolutions: ``size`` -> ``size / 4`` with ``nf`` channels."""

    def __init__(self, n_in: int, nf: int) -> None:
        super().__init__()
        q, h = nf // 4, nf // 2
        self.mods = nn.Sequential(
            nn.ReflectionPad2d(3), _conv(n_in, q, 7, bias=False), nn.InstanceNorm2d(q, affine=True), nn.ReLU(),
            _conv(q, h, 3, 2, 1, bias=False), nn.InstanceNorm2d(h, affine=True), nn.ReLU(),
            _conv(h, nf, 3, 2, 1, bias=False), nn.InstanceNorm2d(nf, affine=True), nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mods(x)


class _Residual(nn.Module):
    """``relu(norm(x + conv(relu(norm(conv(x))))))``."""

    def __init__(self, nf: int) -> None:
        super().__init__()
        self.blocs = nn.Sequential(
            _conv(nf, nf, 3, 1, 1, bias=False), nn.InstanceNorm2d(nf, affine=True), nn.ReLU(),
            _conv(nf, nf, 3, 1, 1, bias=True),
        )
        self.activationF = nn.Sequential(nn.InstanceNorm2d(nf, affine=True), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activationF(self.blocs(x) + x)


def upsample_conv3x3(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``conv3x3(nearest_upsample_x2(x), weight, padding=1)`` without building the up-sampled map.

    Each output phase ``(a, b)`` (row and column parity) sees only a 2x2 neighbourhood of ``x``,
    whose taps are sums of the 3x3 taps that fall on the same source pixel: one 2x2 convolution
    with ``4 * C_out`` channels over ``x`` padded by 1, each phase read at its offset. That is
    16 instead of 36 multiply-adds per output pixel and channel pair, with the same result up to
    float rounding (the weight sums)."""
    # Rows: phase 0 reads source rows (i-1, i) with taps (w0, w1+w2); phase 1 reads (i, i+1)
    # with (w0+w1, w2). The same for columns.
    fold = weight.new_tensor([[[1, 0, 0], [0, 1, 1]], [[1, 1, 0], [0, 0, 1]]])  # [phase, tap, k]
    kernels = torch.einsum("apk,bqm,oikm->oabipq", fold, fold, weight)
    n_out, n_in = weight.shape[:2]
    out = F.conv2d(F.pad(x, (1, 1, 1, 1)), kernels.reshape(n_out * 4, n_in, 2, 2))
    n, _, h1, w1 = out.shape
    h, w = h1 - 1, w1 - 1
    out = out.view(n, n_out, 2, 2, h1, w1)
    y = x.new_empty((n, n_out, 2 * h, 2 * w))
    for a in (0, 1):
        for b in (0, 1):
            y[:, :, a::2, b::2] = out[:, :, a, b, a:a + h, b:b + w]
    return y


class _Up(nn.Module):
    """Two nearest x2 up-samplings with convolutions, then a 7x7 convolution to ``n_out`` logits.
    The up-sampling and the convolution after it run fused (:func:`upsample_conv3x3`)."""

    def __init__(self, n_out: int, nf: int) -> None:
        super().__init__()
        h, q = nf // 2, nf // 4
        self.mods = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"), _conv(nf, h, 3, 1, 1, bias=False),
            nn.InstanceNorm2d(h, affine=True), nn.ReLU(),
            nn.Upsample(scale_factor=2, mode="nearest"), _conv(h, q, 3, 1, 1, bias=False),
            nn.InstanceNorm2d(q, affine=True), nn.ReLU(),
            nn.ReflectionPad2d(3), _conv(q, n_out, 7, bias=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.mods
        x = m[3](m[2](upsample_conv3x3(x, m[1].weight)))
        x = m[7](m[6](upsample_conv3x3(x, m[5].weight)))
        return m[9](m[8](x))


class _Pyramid(nn.Module):
    """One pyramid-pooling branch: average over ``bins`` x ``bins`` cells (cells of
    ``side // bins`` pixels, as ReDO's integer kernel sizes give), 1x1 conv to one channel,
    bilinear back to ``side``. Registered as a Sequential-like module so the conv is ``1``."""

    def __init__(self, nf: int, side: int, bins: int) -> None:
        super().__init__()
        self.kernel = side // bins
        self.side = side
        self.add_module("1", nn.Conv2d(nf, 1, 1))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(f, self.kernel, self.kernel)
        return F.interpolate(getattr(self, "1")(pooled), size=(self.side, self.side), mode="bilinear", align_corners=False)


class MaskNet(nn.Module):
    """ReDO's ``netEncM``: ``forward(x)`` for ``x`` ``(N, n_in, size, size)`` in [-1, 1] gives
    ``(N, n_masks, size, size)`` masks summing to 1 (for two masks, ``sigmoid(m / T)`` and its
    complement, in that order)."""

    def __init__(self, size: int = 128, n_in: int = 3, n_masks: int = 2, n_res: int = 3, nf: int = 64, temperature: float = 1.0) -> None:
        super().__init__()
        if size % 4 or size < 24:
            raise ValueError(f"ReDO's mask network needs a size divisible by 4 and at least 24, got {size}")
        self.size, self.n_masks, self.temperature = size, n_masks, float(temperature)
        side = size // 4
        self.cnn = nn.Sequential(_Down(n_in, nf), *[_Residual(nf) for _ in range(n_res)])
        self.psp = nn.ModuleList([_Pyramid(nf, side, bins) for bins in (1, 2, 3, 6)])
        self.out = _Up(1 if n_masks == 2 else n_masks, nf + 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.cnn(x)
        logits = self.out(torch.cat([f, *(branch(f) for branch in self.psp)], 1)) / self.temperature
        if self.n_masks == 2:
            fg = torch.sigmoid(logits)
            return torch.cat((fg, 1 - fg), 1)
        return torch.softmax(logits, dim=1)


# --- region generator ---------------------------------------------------------------------------

class _MaskedGenerator(nn.Module):
    """Redraws one region: a dense 4x4 seed, up-sampling residual blocks whose instance norms are
    modulated by the code (``gamma``/``beta`` 1x1 convs) and which see the mask, pooled to their
    scale, as an extra input channel; the output is ``tanh(.) * mask``."""

    def __init__(self, size: int, nf: int, n_out: int, nz: int) -> None:
        super().__init__()
        blocks = {64: 4, 128: 5}[size]
        self.selfAtt = nn.Sequential()  # ReDO's optional self-attention (off by default): no keys
        self.dense = nn.Linear(nz, 4 * 4 * nf * 2 ** (blocks - 1))
        names = ("convA", "convB", "normA", "normB", "gammaA", "gammaB", "betaA", "betaB", "sc")
        lists: dict[str, list[nn.Module]] = {name: [] for name in names}
        n_prev = nf * 2 ** (blocks - 1)
        for _ in range(blocks):
            n_next = n_prev if not lists["convA"] else n_prev // 2
            lists["convA"].append(nn.Sequential(nn.Upsample(scale_factor=2), _conv(n_prev + 1, n_next, 3, 1, 1, bias=False, sn=True)))
            lists["convB"].append(_conv(n_next, n_next, 3, 1, 1, bias=True, sn=True))
            lists["normA"].append(nn.InstanceNorm2d(n_prev, affine=False))
            lists["normB"].append(nn.InstanceNorm2d(n_next, affine=False))
            lists["gammaA"].append(nn.Conv2d(nz, n_prev, 1))
            lists["gammaB"].append(nn.Conv2d(nz, n_next, 1))
            lists["betaA"].append(nn.Conv2d(nz, n_prev, 1))
            lists["betaB"].append(nn.Conv2d(nz, n_next, 1))
            lists["sc"].append(nn.Sequential(nn.Upsample(scale_factor=2), _conv(n_prev, n_next, 1, sn=True)))
            n_prev = n_next
        for name in names:
            setattr(self, name, nn.ModuleList(lists[name]))
        self.normOut = nn.InstanceNorm2d(nf, affine=False)
        self.gammaOut = nn.Conv2d(nz, nf, 1)
        self.betaOut = nn.Conv2d(nz, nf, 1)
        self.convOut = _conv(nf + 1, n_out, 3, 1, 1, sn=True)

    def forward(self, mask: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``mask`` ``(N, 1, S, S)``, ``z`` ``(N, nz, 1, 1)`` -> ``(N, n_out, S, S)``."""
        x = self.dense(z.flatten(1)).view(z.size(0), -1, 4, 4)
        for k in range(len(self.convA)):
            if k == len(self.convA) - 1:
                x = self.selfAtt(x)
            pooled = F.avg_pool2d(mask, kernel_size=mask.size(-1) // x.size(-1))
            modulated = F.relu(self.normA[k](x) * self.gammaA[k](z) + self.betaA[k](z))
            h = self.convA[k](torch.cat((modulated, pooled), 1))
            h = self.convB[k](F.relu(self.normB[k](h) * self.gammaB[k](z) + self.betaB[k](z)))
            x = h + self.sc[k](x)
        out = self.convOut(torch.cat((F.relu(self.normOut(x) * self.gammaOut(z) + self.betaOut(z)), mask), 1))
        return torch.tanh(out) * mask


class RegionGenerator(nn.Module):
    """ReDO's ``netGenX``: ``forward(masks (N, K, S, S), z (N, K, nz, 1, 1))`` -> redrawn regions
    ``(N, K, n_out, S, S)``, each zero outside its mask."""

    def __init__(self, size: int = 128, n_out: int = 3, nz: int = 32, nf: int = 64, n_masks: int = 2) -> None:
        super().__init__()
        self.net = nn.ModuleList([_MaskedGenerator(size, nf, n_out, nz) for _ in range(n_masks)])

    def forward(self, masks: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return torch.stack([net(masks[:, k:k + 1], z[:, k]) for k, net in enumerate(self.net)], 1)


# --- discriminator and latent encoder --------------------------------------------------------------

def _residual_down(n_prev: int, n_next: int, pool: bool) -> tuple[nn.Sequential, nn.Sequential]:
    layers: list[nn.Module] = [nn.ReLU(), _conv(n_prev, n_next, 3, 1, 1, sn=True), nn.ReLU(), _conv(n_next, n_next, 3, 1, 1, sn=True)]
    if pool:
        layers.append(nn.AvgPool2d(2))
    shortcut = nn.Sequential(nn.AvgPool2d(2), _conv(n_prev, n_next, 1, sn=True)) if pool else nn.Sequential()
    return nn.Sequential(*layers), shortcut


class _ResidualEncoder(nn.Module):
    """Residual down-sampling trunk (first block without a leading ReLU), sum-pooled, then a
    linear layer. ``stem_apart`` lays the first block out as ReDO's discriminator does
    (``bloc0``/``sc0`` beside the lists) or as its encoder (first entries of the lists)."""

    def __init__(self, n_in: int, nf: int, n_out: int, stem_apart: bool) -> None:
        super().__init__()
        stem = nn.Sequential(_conv(n_in, nf, 3, 1, 1, sn=True), nn.ReLU(), _conv(nf, nf, 3, 1, 1, sn=True), nn.AvgPool2d(2))
        stem_sc = nn.Sequential(nn.AvgPool2d(2), _conv(n_in, nf, 1, sn=True))
        blocs, shortcuts = ([], []) if stem_apart else ([stem], [stem_sc])
        if stem_apart:
            self.bloc0, self.sc0 = stem, stem_sc
            self.selfAtt = nn.Sequential()  # optional self-attention, off: no keys
        for k in range(5):
            n_prev, nf = nf, nf * 2 if k < 4 else nf
            bloc, shortcut = _residual_down(n_prev, nf, pool=k < 4)
            blocs.append(bloc)
            shortcuts.append(shortcut)
        # Registration order (dense before the lists) is the official one, so that optimizer
        # states, which are indexed by parameter order, carry over too.
        self.dense = nn.Linear(nf, n_out)
        self.blocs = nn.ModuleList(blocs)
        self.sc = nn.ModuleList(shortcuts)
        self.stem_apart = stem_apart

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stem_apart:
            x = self.selfAtt(self.bloc0(x) + self.sc0(x))
        for bloc, shortcut in zip(self.blocs, self.sc):
            x = bloc(x) + shortcut(x)
        return self.dense(x.sum(3).sum(2))


class Discriminator(_ResidualEncoder):
    """ReDO's ``netDX`` (``_resDiscriminator128``): image -> one realness score."""

    def __init__(self, n_in: int = 3, nf: int = 64) -> None:
        super().__init__(n_in, nf, 1, stem_apart=True)


class LatentEncoder(nn.Module):
    """ReDO's ``netRecZ``: a whole redrawn image -> the ``(N, K, nz, 1, 1)`` codes of its regions."""

    def __init__(self, n_in: int = 3, nz: int = 32, nf: int = 64, n_masks: int = 2) -> None:
        super().__init__()
        self.net = _ResidualEncoder(n_in, nf, nz * n_masks, stem_apart=False)
        self.nz, self.n_masks = nz, n_masks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(x.size(0), self.n_masks, self.nz, 1, 1)


def init_orthogonal(module: nn.Module, gain: float = 0.8) -> None:
    """ReDO's initialisation: every conv and linear weight orthogonal with ``gain`` (the raw
    weight behind a spectral norm, as the official ``apply(weights_init_ortho)`` ends up doing)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            weight = m.weight_orig if hasattr(m, "weight_orig") else m.weight
            with torch.no_grad():
                nn.init.orthogonal_(weight, gain)
