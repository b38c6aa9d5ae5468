"""StyleGAN2 generator: one clean-room, pure-PyTorch module fed from three published file layouts.

The architecture is Karras et al.'s StyleGAN2 (mapping network, modulated convolutions with weight
demodulation, FIR up-sampling, skip / resnet / orig output heads) written from the paper and the
file layouts, with no custom CUDA ops: the stride-2 up-sampling convolution runs as four ordinary
convolutions (one per output phase), FIR filtering as shifted scaled adds (zero insertion first for
the image path), the activation is ``leaky_relu * sqrt(2)``. Parameter names equal NVlabs'
stylegan2-ada-pytorch ``G_ema.state_dict()`` keys, so their pickles load without renaming; the other
two layouts are converted to those names on load:

* NVlabs stylegan2-ada-pytorch / stylegan3-repo StyleGAN2 pickles (:func:`from_nvlabs`):
  architecture from the pickled ``_init_kwargs``.
* rosinality/stylegan2-pytorch ``.pt`` checkpoints (:func:`from_rosinality`): architecture inferred
  from the keys and shapes of ``g_ema``.
* NVlabs StyleGAN2 TensorFlow pickles, network version >= 4 (:func:`from_tf`): architecture from
  ``static_kwargs``, weights transposed / flipped into PyTorch layout.

Precision: on CUDA the ``num_fp16_res`` highest resolutions run in float16 and every convolution
output is clamped to ``conv_clamp`` as in training; on CPU everything runs in float32 (the clamp
still applies: it is part of the network). Modulated convolutions of a batch run as one shared-weight
convolution with the styles and demodulation applied to the activations (the "non-fused" form; one
grouped convolution with per-sample weights is used for a single sample): both equal the fused
form up to float rounding.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from synthgen.errors import InputError
from synthgen.generators import GeneratorBase

FAMILY = "stylegan2"

_ACTIVATION_GAIN = {"linear": 1.0, "lrelu": math.sqrt(2.0), "relu": math.sqrt(2.0)}
_SQRT_HALF = math.sqrt(0.5)


def _activate(x: torch.Tensor, activation: str, inplace: bool = False) -> torch.Tensor:
    if activation == "lrelu":
        return F.leaky_relu(x, 0.2, inplace=inplace)
    if activation == "relu":
        return F.relu(x, inplace=inplace)
    return x


def _bias_act(x: torch.Tensor, bias: torch.Tensor | None, activation: str, gain: float,
              clamp: float | None) -> torch.Tensor:
    """Add a per-channel bias, apply the activation, scale by ``gain``, clamp to +-``clamp``."""
    if bias is not None:
        x = x + bias.to(x.dtype).reshape(1, -1, *([1] * (x.ndim - 2)))
    x = _activate(x, activation)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


# ------------------------------------------------------------------------------------------------
# Architecture settings


@dataclass(frozen=True)
class StyleGAN2Config:
    """Everything that fixes the shapes and the forward pass; NVlabs' ``init_kwargs`` vocabulary."""

    z_dim: int
    c_dim: int
    w_dim: int
    img_resolution: int
    img_channels: int = 3
    # mapping network
    mapping_layers: int = 8
    embed_features: int | None = None
    layer_features: int | None = None
    mapping_activation: str = "lrelu"
    mapping_lr_multiplier: float = 0.01
    has_w_avg: bool = True
    # synthesis network
    channels: dict[int, int] = field(default_factory=dict)  # resolution -> channels
    num_fp16_res: int = 0
    conv_clamp: float | None = None
    architecture: str = "skip"
    resample_filter: tuple = (1, 3, 3, 1)
    use_noise: bool = True
    activation: str = "lrelu"
    kernel_size: int = 3

    @property
    def block_resolutions(self) -> list[int]:
        return [2 ** i for i in range(2, int(math.log2(self.img_resolution)) + 1)]

    def validate(self) -> None:
        r = self.img_resolution
        problems = []
        if r < 4 or r & (r - 1):
            problems.append(f"img_resolution {r} (expected a power of two >= 4)")
        if self.architecture not in ("orig", "skip", "resnet"):
            problems.append(f"architecture {self.architecture!r} (expected orig, skip or resnet)")
        for name in (self.mapping_activation, self.activation):
            if name not in _ACTIVATION_GAIN:
                problems.append(f"activation {name!r} (supported: {', '.join(_ACTIVATION_GAIN)})")
        if self.z_dim <= 0 and self.c_dim <= 0:
            problems.append("z_dim 0 and c_dim 0 (a generator needs a latent or a label)")
        if problems:
            raise InputError("this StyleGAN2 network has settings synthgen does not support: "
                             + "; ".join(problems) + ".")


def channels_from_base(resolution: int, channel_base: int, channel_max: int) -> dict[int, int]:
    """NVlabs' channel rule: ``min(channel_base // res, channel_max)`` per block resolution."""
    log2 = int(math.log2(resolution))
    return {2 ** i: min(channel_base // 2 ** i, channel_max) for i in range(2, log2 + 1)}


_KNOWN_SYNTHESIS_KWARGS = {"channel_base", "channel_max", "num_fp16_res", "conv_clamp", "architecture",
                           "resample_filter", "use_noise", "activation", "kernel_size",
                           "fp16_channels_last", "channels_last", "fused_modconv_default"}
_GENERATOR_KWARGS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs",
                     "synthesis_kwargs")


def nvlabs_kwargs(init_kwargs: Mapping, stylegan3_repo: bool) -> dict:
    """Init kwargs in stylegan2-ada-pytorch's form with the writing repository's defaults made
    explicit: NVlabs/stylegan3's StyleGAN2 ``Generator`` takes the synthesis settings flat and
    defaults to ``conv_clamp=256, num_fp16_res=4``; stylegan2-ada-pytorch nests them in
    ``synthesis_kwargs`` and defaults to ``None, 0``."""
    kwargs = {k: v for k, v in init_kwargs.items() if k in _GENERATOR_KWARGS}
    synthesis = dict(init_kwargs.get("synthesis_kwargs") or {})
    synthesis.update({k: v for k, v in init_kwargs.items() if k not in _GENERATOR_KWARGS})
    if stylegan3_repo:
        synthesis.setdefault("conv_clamp", 256)
        synthesis.setdefault("num_fp16_res", 4)
    kwargs["synthesis_kwargs"] = synthesis
    return kwargs
_KNOWN_MAPPING_KWARGS = {"num_layers", "embed_features", "layer_features", "activation",
                         "lr_multiplier", "w_avg_beta"}


def config_from_init_kwargs(kwargs: Mapping) -> StyleGAN2Config:
    """The architecture of an NVlabs ``training.networks.Generator`` from its pickled init kwargs."""
    mapping = dict(kwargs.get("mapping_kwargs") or {})
    synthesis = dict(kwargs.get("synthesis_kwargs") or {})
    unknown = sorted((set(mapping) - _KNOWN_MAPPING_KWARGS) | (set(synthesis) - _KNOWN_SYNTHESIS_KWARGS))
    if unknown:
        raise InputError(f"this StyleGAN2 pickle's generator has settings synthgen does not know: "
                         f"{', '.join(unknown)}; expected those of NVlabs stylegan2-ada-pytorch's "
                         "training.networks.Generator.")
    resolution = int(kwargs["img_resolution"])
    config = StyleGAN2Config(
        z_dim=int(kwargs["z_dim"]), c_dim=int(kwargs["c_dim"]), w_dim=int(kwargs["w_dim"]),
        img_resolution=resolution, img_channels=int(kwargs.get("img_channels", 3)),
        mapping_layers=int(mapping.get("num_layers", 8)),
        embed_features=mapping.get("embed_features"),
        layer_features=mapping.get("layer_features"),
        mapping_activation=mapping.get("activation", "lrelu"),
        mapping_lr_multiplier=float(mapping.get("lr_multiplier", 0.01)),
        has_w_avg=mapping.get("w_avg_beta", 0.995) is not None,
        channels=channels_from_base(resolution, int(synthesis.get("channel_base", 32768)),
                                    int(synthesis.get("channel_max", 512))),
        num_fp16_res=int(synthesis.get("num_fp16_res", 0)),
        conv_clamp=synthesis.get("conv_clamp"),
        architecture=synthesis.get("architecture", "skip"),
        resample_filter=tuple(np.asarray(synthesis.get("resample_filter", [1, 3, 3, 1])).tolist()),
        use_noise=bool(synthesis.get("use_noise", True)),
        activation=synthesis.get("activation", "lrelu"),
        kernel_size=int(synthesis.get("kernel_size", 3)),
    )
    config.validate()
    return config


# ------------------------------------------------------------------------------------------------
# FIR filtering (upfirdn2d written as zero insertion + padding + depthwise convolution)


def _filter_2d(taps) -> torch.Tensor:
    """NVlabs' ``setup_filter``: a 1-D list becomes its normalised outer product (rank-1)."""
    f = torch.as_tensor(np.asarray(taps, dtype=np.float32))
    if f.ndim == 1:
        f = torch.outer(f, f)
    return f / f.sum()


def _fir_axis(x: torch.Tensor, taps: list[float], pad: tuple[int, int], dim: int) -> torch.Tensor:
    """Correlate ``x`` along ``dim`` with ``taps``, zero-padded ``pad`` (before, after): one
    scaled add per tap over shifted views, no padded copy of ``x``."""
    length, k = x.shape[dim], len(taps)
    out_len = length + pad[0] + pad[1] - k + 1
    # A tap that sees x at every output position starts the sum (no zero fill); others add where
    # their input index exists: y[n] += t * x[n + i - pad0].
    full = [i for i in range(k) if pad[0] <= i <= k - 1 - pad[1]]
    if full:
        y = x.narrow(dim, full[0] - pad[0], out_len) * taps[full[0]]
    else:
        shape = list(x.shape)
        shape[dim] = out_len
        y = x.new_zeros(shape)
    for i, t in enumerate(taps):
        if full and i == full[0]:
            continue
        lo, hi = max(0, pad[0] - i), min(out_len, length + pad[0] - i)
        if hi > lo:
            y.narrow(dim, lo, hi - lo).add_(x.narrow(dim, lo + i - pad[0], hi - lo), alpha=t)
    return y


class _FIR:
    """NVlabs' ``upfirdn2d`` for up-sampling factors 1 and 2: zero insertion, zero padding and a
    true convolution with the (normalised) filter; separable 1-D passes when the filter is given as
    1-D taps (always, in the published networks)."""

    def __init__(self, taps) -> None:
        taps = np.asarray(taps, dtype=np.float64)
        self.size = taps.shape[0]
        flipped = (taps / taps.sum())[::-1].copy() if taps.ndim == 1 else (taps / taps.sum())[::-1, ::-1].copy()
        self.taps_1d = flipped.tolist() if taps.ndim == 1 else None
        self.taps_2d = None if taps.ndim == 1 else torch.as_tensor(flipped, dtype=torch.float32)

    def __call__(self, x: torch.Tensor, up: int, pad: tuple[int, int], gain: float) -> torch.Tensor:
        """Insert ``up - 1`` zeros between pixels, pad ``pad`` (before, after) on both axes, and
        convolve with the filter times ``gain``."""
        n, c, h, w = x.shape
        if up > 1:
            x = x.reshape(n, c, h, 1, w, 1)
            x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
            x = x.reshape(n, c, h * up, w * up)
        if self.taps_1d is not None:
            taps = [t * math.sqrt(gain) for t in self.taps_1d]
            return _fir_axis(_fir_axis(x, taps, pad, 3), taps, pad, 2)
        x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
        k = (self.taps_2d * gain).to(device=x.device, dtype=x.dtype)
        return F.conv2d(x, k[None, None].expand(c, 1, self.size, self.size), groups=c)


def _conv_transpose_up2(x: torch.Tensor, w: torch.Tensor, groups: int) -> torch.Tensor:
    """``conv_transpose2d(x, w', stride=2, groups)`` for a 3x3 kernel, ``w`` given in conv layout
    ``[G*O, I, 3, 3]`` (``w'`` its per-group transpose), as four ordinary convolutions, one per
    output phase: even outputs take kernel taps 2 and 0 of neighbouring inputs, odd ones tap 1.
    Same products as the transposed convolution; ordinary convolutions run faster on CPU."""
    n, _, h, wd = x.shape
    flipped = w.flip([2, 3])  # taps 2, 1, 0: even phases take [0::2] (2 and 0), odd ones [1:2] (1)
    out = x.new_empty(n, w.shape[0], 2 * h + 1, 2 * wd + 1)
    out[:, :, 0::2, 0::2] = F.conv2d(x, flipped[:, :, 0::2, 0::2], padding=(1, 1), groups=groups)
    out[:, :, 0::2, 1::2] = F.conv2d(x, flipped[:, :, 0::2, 1:2], padding=(1, 0), groups=groups)
    out[:, :, 1::2, 0::2] = F.conv2d(x, flipped[:, :, 1:2, 0::2], padding=(0, 1), groups=groups)
    out[:, :, 1::2, 1::2] = _conv1x1(x, flipped[:, :, 1:2, 1:2], groups)
    return out


def _conv1x1(x: torch.Tensor, w: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """A 1x1 convolution; one matrix product when ungrouped (PyTorch's CPU conv2d takes a slow
    path for 1x1 kernels)."""
    if groups != 1:
        return F.conv2d(x, w, groups=groups)
    n, cin, h, wd = x.shape
    w = w.reshape(w.shape[0], cin)
    return torch.bmm(w.expand(n, *w.shape), x.reshape(n, cin, h * wd)).reshape(n, -1, h, wd)


# ------------------------------------------------------------------------------------------------
# Layers (parameter names as NVlabs')


class FullyConnected(nn.Module):
    """Equalised-learning-rate dense layer: ``act(x @ (W * lr / sqrt(in)).T + b * lr) * gain``."""

    def __init__(self, in_features: int, out_features: int, activation: str = "linear",
                 lr_multiplier: float = 1.0) -> None:
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.zeros(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype)
        if self.bias_gain != 1:
            b = b * self.bias_gain
        if self.activation == "linear":
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return _bias_act(x.matmul(w.t()), b, self.activation, _ACTIVATION_GAIN[self.activation], None)


def _normalize_2nd_moment(x: torch.Tensor) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()


class Mapping(nn.Module):
    """z (and a label embedding) -> w, broadcast to ``num_ws`` copies, truncated toward ``w_avg``."""

    def __init__(self, config: StyleGAN2Config, num_ws: int) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.num_ws = config.z_dim, config.c_dim, num_ws
        embed = config.embed_features if config.embed_features is not None else config.w_dim
        embed = embed if config.c_dim > 0 else 0
        hidden = config.layer_features if config.layer_features is not None else config.w_dim
        features = [config.z_dim + embed] + [hidden] * (config.mapping_layers - 1) + [config.w_dim]
        if config.c_dim > 0:
            self.embed = FullyConnected(config.c_dim, embed)
        self.num_layers = config.mapping_layers
        for i in range(config.mapping_layers):
            setattr(self, f"fc{i}", FullyConnected(features[i], features[i + 1], config.mapping_activation,
                                                   config.mapping_lr_multiplier))
        if config.has_w_avg:
            self.register_buffer("w_avg", torch.zeros(config.w_dim))

    def forward(self, z, c, truncation_psi: float = 1.0, truncation_cutoff: int | None = None):
        x = None
        if self.z_dim > 0:
            x = _normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            y = _normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            if not hasattr(self, "w_avg"):
                raise InputError("this generator has no average w (it was trained without tracking one), "
                                 "so it cannot be truncated; use truncation_psi=1.")
            cut = self.num_ws if truncation_cutoff is None else truncation_cutoff
            x[:, :cut] = self.w_avg.lerp(x[:, :cut], truncation_psi)
        return x


class _ModulatedConv(nn.Module):
    """Shared machinery of a style-modulated convolution: affine style, weight, (de)modulation."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int) -> None:
        super().__init__()
        self.affine = FullyConnected(w_dim, in_channels)
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def modulated(self, x: torch.Tensor, styles: torch.Tensor, demodulate: bool, up: bool,
                  fir: _FIR | None, fused: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The modulated convolution (up-sampling included) and the demodulation coefficients
        ``[N, O]`` still to multiply (None when none, or when folded into fused weights)."""
        n, cin = x.shape[:2]
        weight = self.weight
        cout, _, kh, kw = weight.shape
        if x.dtype == torch.float16 and demodulate:
            # Rescale before the product so that float16 cannot overflow (demodulation undoes it).
            weight = weight * (1 / math.sqrt(cin * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
            styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
        dcoefs = None
        if demodulate:
            # sum over (i, kh, kw) of (W[o,i] * s[i])^2 == s^2 @ sum_k W[o,i,k]^2
            dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()  # [N, O]
        if fused:
            w = weight.unsqueeze(0) * styles.reshape(n, 1, cin, 1, 1)
            if dcoefs is not None:
                w = w * dcoefs.reshape(n, cout, 1, 1, 1)
                dcoefs = None
            w = w.to(x.dtype).reshape(n * cout, cin, kh, kw)
            x = x.reshape(1, n * cin, *x.shape[2:])
            groups = n
        else:
            x = x * styles.to(x.dtype).reshape(n, cin, 1, 1)
            w = weight.to(x.dtype)
            groups = 1
        if up:
            if kh == 3 and kw == 3:
                x = _conv_transpose_up2(x, w, groups)
            else:
                w = w.reshape(groups, cout, cin, kh, kw).transpose(1, 2).reshape(groups * cin, cout, kh, kw)
                x = F.conv_transpose2d(x, w, stride=2, groups=groups)
            # The stride-2 transposed conv gives 2R + kh - 2 pixels; the FIR, padded, brings it to 2R.
            x = fir(x, up=1, pad=_up_conv_pad(fir.size, kh), gain=4.0)
        elif kh == 1 and kw == 1:
            x = _conv1x1(x, w, groups)
        else:
            x = F.conv2d(x, w, padding=kh // 2, groups=groups)
        return x.reshape(n, cout, *x.shape[2:]), dcoefs


class SynthesisLayer(_ModulatedConv):
    """3x3 modulated conv (optionally up-sampling by 2), noise, bias, activation, clamp."""

    def __init__(self, in_channels: int, out_channels: int, config: StyleGAN2Config, resolution: int,
                 up: bool, fir_taps) -> None:
        super().__init__(in_channels, out_channels, config.w_dim, config.kernel_size)
        self.resolution, self.up = resolution, up
        self.activation = config.activation
        self.conv_clamp = config.conv_clamp
        self.use_noise = config.use_noise
        self.register_buffer("resample_filter", _filter_2d(fir_taps))
        self.fir = _FIR(fir_taps)
        if config.use_noise:
            self.register_buffer("noise_const", torch.zeros(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros([]))

    def forward(self, x, w, noise_mode: str, fused: bool, gain: float = 1.0):
        styles = self.affine(w)
        x, dcoefs = self.modulated(x, styles, demodulate=True, up=self.up, fir=self.fir, fused=fused)
        # act(x * d + noise + b) * g == act(x * (d g) + (noise + b) g) for g > 0: one fused pass
        # for demodulation, noise and bias, one for the activation, one for the clamp.
        g = _ACTIVATION_GAIN[self.activation] * gain
        offset = self.bias.to(x.dtype).reshape(1, -1, 1, 1)
        if self.use_noise and noise_mode != "none":
            if noise_mode == "const":
                noise = self.noise_const * self.noise_strength
            else:
                noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device) \
                    * self.noise_strength
            offset = noise.to(x.dtype) + offset
        # x is this layer's own fresh tensor: scale and shift it in place.
        x = x.mul_((dcoefs * g).to(x.dtype).reshape(*dcoefs.shape, 1, 1) if dcoefs is not None else g)
        x = x.add_(offset * g)
        x = _activate(x, self.activation, inplace=True)
        if self.conv_clamp is not None:
            x = x.clamp_(-self.conv_clamp * gain, self.conv_clamp * gain)
        return x


class ToRGB(_ModulatedConv):
    """1x1 modulated conv without demodulation to image channels, bias, clamp."""

    def __init__(self, in_channels: int, config: StyleGAN2Config) -> None:
        super().__init__(in_channels, config.img_channels, config.w_dim, 1)
        self.weight_gain = 1 / math.sqrt(in_channels)
        self.conv_clamp = config.conv_clamp

    def forward(self, x, w, fused: bool):
        styles = self.affine(w) * self.weight_gain
        x, _ = self.modulated(x, styles, demodulate=False, up=False, fir=None, fused=fused)
        return _bias_act(x, self.bias, "linear", 1.0, self.conv_clamp)


class SkipUp(nn.Module):
    """The resnet block's shortcut: 1x1 conv (no bias), then FIR up-sampling by 2."""

    def __init__(self, in_channels: int, out_channels: int, fir_taps) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, 1, 1))
        self.register_buffer("resample_filter", _filter_2d(fir_taps))
        self.fir = _FIR(fir_taps)
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x, gain: float):
        x = _conv1x1(x, (self.weight * self.weight_gain).to(x.dtype))
        x = self.fir(x, up=2, pad=_up_pad(self.fir.size), gain=4.0)
        return x * gain if gain != 1 else x


def _up_conv_pad(filter_size: int, kernel_size: int) -> tuple[int, int]:
    """FIR padding (before, after) after a stride-2 transposed conv of a ``kernel_size`` kernel
    (NVlabs' ``conv2d_resample`` for ``padding = kernel_size // 2``)."""
    before = kernel_size // 2 + (filter_size + 1) // 2 - (kernel_size - 1)
    after = kernel_size // 2 + (filter_size - 2) // 2 - (kernel_size - 2)
    if before < 0 or after < 0:
        raise InputError(f"a {filter_size}-tap resampling filter with {kernel_size}x{kernel_size} convolutions "
                         "is not supported (expected the usual 4 taps and 3x3 kernels).")
    return before, after


def _up_pad(filter_size: int) -> tuple[int, int]:
    """Padding (before, after) that makes zero insertion + FIR map R pixels to exactly 2R."""
    return (filter_size + 1) // 2, (filter_size - 2) // 2


class SynthesisBlock(nn.Module):
    """One resolution: const or up-sampling conv, conv, and the image head of the architecture."""

    def __init__(self, in_channels: int, out_channels: int, config: StyleGAN2Config, resolution: int,
                 is_last: bool, use_fp16: bool) -> None:
        super().__init__()
        taps = config.resample_filter
        self.in_channels, self.resolution, self.is_last = in_channels, resolution, is_last
        self.architecture, self.use_fp16 = config.architecture, use_fp16
        self.register_buffer("resample_filter", _filter_2d(taps))
        self.fir = _FIR(taps)
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1 if (is_last or config.architecture == "skip") else 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.zeros(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, config, resolution, up=True, fir_taps=taps)
        self.conv1 = SynthesisLayer(out_channels, out_channels, config, resolution, up=False, fir_taps=taps)
        if self.num_torgb:
            self.torgb = ToRGB(out_channels, config)
        if in_channels != 0 and config.architecture == "resnet":
            self.skip = SkipUp(in_channels, out_channels, taps)

    def forward(self, x, img, ws, noise_mode: str, fp16: bool, fused: bool | None):
        dtype = torch.float16 if (self.use_fp16 and fp16) else torch.float32
        n = ws.shape[0]
        if fused is None:
            fused = n == 1
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat(n, 1, 1, 1)
            x = self.conv1(x, ws[:, 0], noise_mode, fused)
        else:
            x = x.to(dtype)
            if self.architecture == "resnet":
                y = self.skip(x, gain=_SQRT_HALF)
                x = self.conv0(x, ws[:, 0], noise_mode, fused)
                x = self.conv1(x, ws[:, 1], noise_mode, fused, gain=_SQRT_HALF)
                x = y + x
            else:
                x = self.conv0(x, ws[:, 0], noise_mode, fused)
                x = self.conv1(x, ws[:, 1], noise_mode, fused)
        if img is not None:
            img = self.fir(img, up=2, pad=_up_pad(self.fir.size), gain=4.0)
        if self.num_torgb:
            y = self.torgb(x, ws[:, self.num_conv], fused).to(torch.float32)
            img = img + y if img is not None else y
        return x, img


class Synthesis(nn.Module):
    def __init__(self, config: StyleGAN2Config) -> None:
        super().__init__()
        self.block_resolutions = config.block_resolutions
        log2 = int(math.log2(config.img_resolution))
        fp16_resolution = max(2 ** (log2 + 1 - config.num_fp16_res), 8)
        self.num_ws = 0
        self.w_offsets = []
        for res in self.block_resolutions:
            in_channels = config.channels[res // 2] if res > 4 else 0
            block = SynthesisBlock(in_channels, config.channels[res], config, res,
                                   is_last=res == config.img_resolution, use_fp16=res >= fp16_resolution)
            self.w_offsets.append(self.num_ws)
            self.num_ws += block.num_conv + (block.num_torgb if block.is_last else 0)
            setattr(self, f"b{res}", block)

    def forward(self, ws, noise_mode: str, fp16: bool, fused: bool | None):
        ws = ws.to(torch.float32)
        x = img = None
        for res, offset in zip(self.block_resolutions, self.w_offsets):
            block = getattr(self, f"b{res}")
            x, img = block(x, img, ws[:, offset: offset + block.num_conv + block.num_torgb], noise_mode, fp16, fused)
        return img


# ------------------------------------------------------------------------------------------------
# The generator


class StyleGAN2Generator(GeneratorBase, nn.Module):
    """A StyleGAN2 generator with synthgen's :class:`~synthgen.generators.ObjectGenerator` interface.

    ``sample(z, c, truncation_psi, noise_mode)`` returns float32 images ``N x C x R x R`` in about
    [-1, 1], as the official implementation returns them. ``generate(rng, n)`` draws latents from
    ``rng`` and returns post-processed ``uint8`` RGB images (see
    :class:`~synthgen.generators.GeneratorBase`).
    """

    family = FAMILY

    def __init__(self, config: StyleGAN2Config) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.z_dim, self.c_dim, self.w_dim = config.z_dim, config.c_dim, config.w_dim
        self.img_resolution = config.img_resolution
        self.resolution = (config.img_resolution, config.img_resolution)
        self.setup_pool_output()
        self.synthesis = Synthesis(config)
        self.num_ws = self.synthesis.num_ws
        self.mapping = Mapping(config, self.num_ws)
        self.fp32 = False  # True: no float16 blocks even on CUDA
        self.fused_modconv: bool | None = None  # None: fused for one sample, shared-weight for a batch

    @torch.no_grad()
    def sample(self, z, c=None, truncation_psi: float = 1.0, noise_mode: str = "const",
               truncation_cutoff: int | None = None) -> torch.Tensor:
        if noise_mode not in ("const", "random", "none"):
            raise InputError(f"noise_mode {noise_mode!r}: expected const, random or none.")
        device = self.mapping.fc0.weight.device
        z = torch.as_tensor(z, device=device)
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise InputError(f"latents of shape {tuple(z.shape)}: this generator expects N x {self.z_dim}.")
        if self.c_dim > 0:
            if c is None:
                raise InputError(f"this generator is conditional ({self.c_dim} classes): give c, "
                                 f"N x {self.c_dim} (one-hot rows).")
            c = torch.as_tensor(c, device=device)
            if c.shape != (z.shape[0], self.c_dim):
                raise InputError(f"labels of shape {tuple(c.shape)}: expected {z.shape[0]} x {self.c_dim}.")
        ws = self.mapping(z, c, truncation_psi, truncation_cutoff)
        fp16 = device.type == "cuda" and not self.fp32
        return self.synthesis(ws, noise_mode, fp16, self.fused_modconv)

    def forward(self, z, c=None, truncation_psi: float = 1.0, noise_mode: str = "const"):
        return self.sample(z, c, truncation_psi, noise_mode)


# ------------------------------------------------------------------------------------------------
# Building from each file layout


def _load_weights(G: StyleGAN2Generator, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``G``: every parameter and buffer must be present with the same shape."""
    own = G.state_dict()
    missing = sorted(k for k in own if k not in state and not k.endswith("resample_filter"))
    unexpected = sorted(k for k in state if k not in own)
    wrong = sorted(f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})"
                   for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:5])}" + (" ..." if len(unexpected) > 5 else ""))
        if wrong:
            parts.append(f"wrong shape {', '.join(wrong[:5])}" + (" ..." if len(wrong) > 5 else ""))
        raise InputError(f"{source}: the weights do not fit the StyleGAN2 architecture its settings describe "
                         f"({'; '.join(parts)}). The file is damaged or not a StyleGAN2 generator.")
    with torch.no_grad():
        for k, v in own.items():
            if k in state:
                v.copy_(torch.as_tensor(state[k]).to(v.dtype))


def from_nvlabs(init_kwargs: Mapping, state: Mapping[str, torch.Tensor], source: str = "NVlabs pickle") -> StyleGAN2Generator:
    """An NVlabs stylegan2-ada-pytorch ``Generator`` from its init kwargs and flat state dict."""
    G = StyleGAN2Generator(config_from_init_kwargs(init_kwargs))
    _load_weights(G, state, source)
    return G.eval().requires_grad_(False)


def from_rosinality(checkpoint: Mapping, source: str = "rosinality checkpoint") -> StyleGAN2Generator:
    """A rosinality/stylegan2-pytorch ``g_ema`` (+ ``latent_avg``), architecture from the shapes.

    Without ``latent_avg`` (a trained, not converted, checkpoint) the truncation centre is the mean
    w of 4096 latents drawn with a fixed seed (0), as rosinality's ``generate.py`` estimates it.
    """
    g = checkpoint["g_ema"]
    styles = sorted(int(m.group(1)) for k in g if (m := re.fullmatch(r"style\.(\d+)\.weight", k)))
    convs = sorted({int(m.group(1)) for k in g if (m := re.fullmatch(r"convs\.(\d+)\.conv\.weight", k))})
    if not styles or "input.input" not in g or "conv1.conv.weight" not in g or len(convs) % 2:
        raise InputError(f"{source}: 'g_ema' does not hold rosinality StyleGAN2 generator weights "
                         "(expected style.N, input.input, conv1.*, convs.N.*, to_rgbs.N.* keys).")
    w_dim = int(g["style.1.weight"].shape[1])
    resolution = 4 * 2 ** (len(convs) // 2)
    channels = {4: int(g["input.input"].shape[1])}
    for i in range(len(convs) // 2):
        channels[8 * 2 ** i] = int(g[f"convs.{2 * i}.conv.weight"].shape[1])
    blur = g.get("convs.0.conv.blur.kernel", g.get("to_rgbs.0.upsample.kernel"))
    taps = (1, 3, 3, 1) if blur is None else _separable_taps(blur / blur.sum())
    lr_mlp = float(checkpoint.get("args").lr_mlp) if hasattr(checkpoint.get("args"), "lr_mlp") else 0.01
    config = StyleGAN2Config(z_dim=w_dim, c_dim=0, w_dim=w_dim, img_resolution=resolution,
                             mapping_layers=len(styles), mapping_lr_multiplier=lr_mlp,
                             channels=channels, resample_filter=taps)
    config.validate()
    state: dict[str, torch.Tensor] = {}
    for i in styles:
        state[f"mapping.fc{i - 1}.weight"] = g[f"style.{i}.weight"]
        state[f"mapping.fc{i - 1}.bias"] = g[f"style.{i}.bias"]
    state["synthesis.b4.const"] = g["input.input"][0]

    def layer(dst: str, src: str, noise: str) -> None:
        state[f"{dst}.weight"] = g[f"{src}.conv.weight"][0]
        state[f"{dst}.bias"] = g[f"{src}.activate.bias"]
        state[f"{dst}.affine.weight"] = g[f"{src}.conv.modulation.weight"]
        state[f"{dst}.affine.bias"] = g[f"{src}.conv.modulation.bias"]
        state[f"{dst}.noise_strength"] = g[f"{src}.noise.weight"].reshape([])
        state[f"{dst}.noise_const"] = g[f"noises.{noise}"][0, 0]

    def torgb(dst: str, src: str) -> None:
        state[f"{dst}.weight"] = g[f"{src}.conv.weight"][0]
        state[f"{dst}.bias"] = g[f"{src}.bias"].reshape(-1)
        state[f"{dst}.affine.weight"] = g[f"{src}.conv.modulation.weight"]
        state[f"{dst}.affine.bias"] = g[f"{src}.conv.modulation.bias"]

    layer("synthesis.b4.conv1", "conv1", "noise_0")
    torgb("synthesis.b4.torgb", "to_rgb1")
    for i in range(len(convs) // 2):
        r = 8 * 2 ** i
        layer(f"synthesis.b{r}.conv0", f"convs.{2 * i}", f"noise_{2 * i + 1}")
        layer(f"synthesis.b{r}.conv1", f"convs.{2 * i + 1}", f"noise_{2 * i + 2}")
        torgb(f"synthesis.b{r}.torgb", f"to_rgbs.{i}")
    G = StyleGAN2Generator(config)
    if checkpoint.get("latent_avg") is not None:
        state["mapping.w_avg"] = torch.as_tensor(checkpoint["latent_avg"]).reshape(-1)
    else:
        state["mapping.w_avg"] = torch.zeros(w_dim)
    _load_weights(G, state, source)
    if checkpoint.get("latent_avg") is None:
        with torch.no_grad():
            z = torch.from_numpy(np.random.default_rng(0).standard_normal((4096, w_dim), dtype=np.float32))
            G.mapping.w_avg.copy_(G.mapping(z, None)[:, 0].mean(0))
    return G.eval().requires_grad_(False)


def _separable_taps(kernel: torch.Tensor) -> tuple:
    """The 1-D taps whose normalised outer product is ``kernel`` (rosinality stores the 2-D one)."""
    k = kernel.double()
    row = k.sum(dim=0)
    if not torch.allclose(torch.outer(row, row) / row.sum() ** 2, k / k.sum(), atol=1e-6):
        return tuple(map(tuple, k.tolist()))
    return tuple(row.tolist())


def from_tf(static_kwargs: Mapping, variables: Mapping[str, np.ndarray], source: str = "TensorFlow pickle") -> StyleGAN2Generator:
    """An NVlabs StyleGAN2 TensorFlow ``Gs`` (network version >= 4): ``variables`` are its own and its
    components' variables by full name (``mapping/Dense0/weight``, ``synthesis/4x4/Conv/weight``,
    ``dlatent_avg``, ...). TF layouts are ``[kh, kw, in, out]`` convs and ``[in, out]`` dense
    weights; ``mod_bias`` is stored minus one; up-sampling and skip kernels are stored flipped
    (TF applies them as a transposed convolution of the other orientation)."""
    kw = dict(static_kwargs)
    # The settings NVlabs' own converters (legacy.py of stylegan2-ada-pytorch and stylegan3) know;
    # others change the network in ways they do not convert either (configs a-d, comparisons).
    known = {"latent_size", "label_size", "dlatent_size", "resolution", "num_channels", "mapping_layers",
             "label_fmaps", "mapping_fmaps", "mapping_nonlinearity", "mapping_lrmul", "w_avg_beta",
             "fmap_base", "fmap_max", "num_fp16_res", "conv_clamp", "architecture", "resample_kernel",
             "use_noise", "nonlinearity", "truncation_psi", "truncation_cutoff", "style_mixing_prob",
             "structure", "conditioning", "fused_modconv"}
    unknown = sorted(set(kw) - known)
    if unknown:
        raise InputError(f"{source}: the generator has TensorFlow settings synthgen does not know "
                         f"({', '.join(unknown)}); expected an NVlabs StyleGAN2 config-e/f network "
                         "(the configs NVlabs' own converter supports).")
    resolution = int(kw.get("resolution", 1024))
    architecture = kw.get("architecture") or "skip"
    v = dict(variables)
    for name in list(v):
        m = re.fullmatch(r"synthesis/ToRGB_lod(\d+)/(.*)", name)
        if m:
            r = resolution // 2 ** int(m.group(1))
            v[f"synthesis/{r}x{r}/ToRGB/{m.group(2)}"] = v[name]
            architecture = "orig"

    def opt(name, default):
        value = kw.get(name, default)
        return default if value is None else value

    config = StyleGAN2Config(
        z_dim=int(opt("latent_size", 512)), c_dim=int(opt("label_size", 0)),
        w_dim=int(opt("dlatent_size", 512)), img_resolution=resolution,
        img_channels=int(opt("num_channels", 3)),
        mapping_layers=int(opt("mapping_layers", 8)),
        embed_features=kw.get("label_fmaps"), layer_features=kw.get("mapping_fmaps"),
        mapping_activation=opt("mapping_nonlinearity", "lrelu"),
        mapping_lr_multiplier=float(opt("mapping_lrmul", 0.01)),
        has_w_avg=True,
        channels=channels_from_base(resolution, int(opt("fmap_base", 16384)) * 2, int(opt("fmap_max", 512))),
        num_fp16_res=int(opt("num_fp16_res", 0)), conv_clamp=kw.get("conv_clamp"),
        architecture=architecture,
        resample_filter=tuple(np.asarray(opt("resample_kernel", [1, 3, 3, 1])).tolist()),
        use_noise=bool(opt("use_noise", True)), activation=opt("nonlinearity", "lrelu"),
    )
    config.validate()

    def conv(a, flip=False):
        a = np.asarray(a)
        if flip:
            a = a[::-1, ::-1]
        return torch.from_numpy(np.ascontiguousarray(a.transpose(3, 2, 0, 1)))

    def dense(a):
        return torch.from_numpy(np.ascontiguousarray(np.asarray(a).T))

    def t(a):
        return torch.from_numpy(np.array(a, dtype=np.float32))  # (ascontiguousarray would make 0-d 1-d)

    state: dict[str, torch.Tensor] = {}
    try:
        state["mapping.w_avg"] = t(v["dlatent_avg"])
        if config.c_dim > 0:
            state["mapping.embed.weight"] = dense(v["mapping/LabelEmbed/weight"])
            state["mapping.embed.bias"] = t(v["mapping/LabelEmbed/bias"])
        for i in range(config.mapping_layers):
            state[f"mapping.fc{i}.weight"] = dense(v[f"mapping/Dense{i}/weight"])
            state[f"mapping.fc{i}.bias"] = t(v[f"mapping/Dense{i}/bias"])
        state["synthesis.b4.const"] = t(v["synthesis/4x4/Const/const"][0])

        def layer(dst: str, src: str, noise_index: int, flip: bool) -> None:
            state[f"{dst}.weight"] = conv(v[f"{src}/weight"], flip)
            state[f"{dst}.bias"] = t(v[f"{src}/bias"])
            state[f"{dst}.affine.weight"] = dense(v[f"{src}/mod_weight"])
            state[f"{dst}.affine.bias"] = t(v[f"{src}/mod_bias"] + 1)
            if config.use_noise:
                state[f"{dst}.noise_strength"] = t(v[f"{src}/noise_strength"])
                state[f"{dst}.noise_const"] = t(v[f"synthesis/noise{noise_index}"][0, 0])

        def torgb(dst: str, r: int) -> None:
            src = f"synthesis/{r}x{r}/ToRGB"
            state[f"{dst}.weight"] = conv(v[f"{src}/weight"])
            state[f"{dst}.bias"] = t(v[f"{src}/bias"])
            state[f"{dst}.affine.weight"] = dense(v[f"{src}/mod_weight"])
            state[f"{dst}.affine.bias"] = t(v[f"{src}/mod_bias"] + 1)

        for r in config.block_resolutions:
            log2 = int(math.log2(r))
            if r == 4:
                layer("synthesis.b4.conv1", "synthesis/4x4/Conv", 0, False)
            else:
                layer(f"synthesis.b{r}.conv0", f"synthesis/{r}x{r}/Conv0_up", 2 * log2 - 5, True)
                layer(f"synthesis.b{r}.conv1", f"synthesis/{r}x{r}/Conv1", 2 * log2 - 4, False)
                if architecture == "resnet":
                    state[f"synthesis.b{r}.skip.weight"] = conv(v[f"synthesis/{r}x{r}/Skip/weight"], True)
            if architecture == "skip" or r == resolution:
                torgb(f"synthesis.b{r}.torgb", r)
    except KeyError as missing:
        raise InputError(f"{source}: the TensorFlow generator lacks the variable {missing.args[0]} that a "
                         f"StyleGAN2 {architecture} network of its settings has; the file is damaged or "
                         "not a StyleGAN2 (network version >= 4) generator.") from None
    G = StyleGAN2Generator(config)
    _load_weights(G, state, source)
    return G.eval().requires_grad_(False)
