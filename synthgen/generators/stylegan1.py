"""StyleGAN (v1): NVIDIA's TensorFlow generator pickles, read as data, run by our own network.

The paper sampled faces and cars from ``karras2019stylegan-ffhq-1024x1024.pkl`` and
``karras2019stylegan-cars-512x384.pkl``: pickles of ``(G, D, Gs)``, each a
``dnnlib.tflib.network.Network`` whose state (network version 3) holds its variables as numpy
arrays by TensorFlow name and its sub-networks as ``components``. ``Gs`` (the moving average)
is the one to sample. :func:`load_stylegan1` takes the state of ``Gs`` as the restricted
unpickler reads it (never running the ``build_module_src`` it carries) and builds
:class:`StyleGAN1Generator`, a clean-room PyTorch version of the paper's network:

* mapping: PixelNorm on z (after concatenating an embedded label, if any), ``mapping_layers``
  dense layers with equalized learning rate and a learning-rate multiplier of 0.01, leaky ReLU
  0.2; truncation ``w_avg + psi * (w - w_avg)`` on the first ``truncation_cutoff`` (8) layers;
* synthesis: a learned 4x4 constant, then per resolution an upsampling 3x3 conv (a transposed
  conv with the 4x4 summed kernel from 128 px on, ``fused_scale='auto'``; nearest-neighbour
  doubling below), a [1,2,1] blur, and a 3x3 conv; after every conv the epilogue
  noise -> bias -> leaky ReLU -> instance norm -> style modulation (AdaIN, ``x*(s+1)+b``); the
  image is the final resolution's 1x1 ``ToRGB_lod0`` (progressive-growing outputs are unused at
  ``lod`` 0).

Weights are kept as the file stores them (transposed to PyTorch's layout) and scaled at run time
exactly as the original multiplies ``variable * runtime_coef``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from synthgen.errors import InputError
from synthgen.generators import GeneratorBase

#: Architecture defaults of NVlabs' ``G_style`` / ``G_mapping`` / ``G_synthesis`` (the released
#: files rely on them: their ``static_kwargs`` only name channels, resolution and labels).
MAPPING_LRMUL = 0.01
TRUNCATION_CUTOFF = 8
FUSED_SCALE_MIN_RES = 128
LRELU_SLOPE = 0.2
EPS = 1e-8

# Synthesis settings this network implements; a file asking for others is refused by name.
_SUPPORTED_SYNTHESIS = {
    "use_styles": True, "const_input_layer": True, "use_noise": True, "nonlinearity": "lrelu",
    "use_wscale": True, "use_pixel_norm": False, "use_instance_norm": True, "fmap_decay": 1.0,
}
_SUPPORTED_MAPPING = {
    "mapping_nonlinearity": "lrelu", "use_wscale": True, "normalize_latents": True,
}


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, LRELU_SLOPE)


class _Dense(nn.Module):
    """Dense layer with equalized learning rate: ``x @ (W * gain/sqrt(fan_in) * lrmul) + b * lrmul``.
    ``weight`` is ``[out, in]`` (TF stores ``[in, out]``)."""

    def __init__(self, fan_in: int, fan_out: int, gain: float, lrmul: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(fan_out, fan_in))
        self.bias = nn.Parameter(torch.zeros(fan_out))
        self.weight_coef = gain / math.sqrt(fan_in) * lrmul
        self.bias_coef = lrmul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias * self.bias_coef if self.bias_coef != 1 else self.bias
        return F.linear(x, self.weight * self.weight_coef, bias)


class _Layer(nn.Module):
    """One synthesis layer: (conv) then the epilogue noise -> bias -> lrelu -> IN -> StyleMod.

    ``kind`` is ``"const"`` (the 4x4 learned constant), ``"conv"`` (3x3), ``"up"`` (nearest x2,
    3x3, blur) or ``"up_fused"`` (transposed conv with the summed 4x4 kernel, blur)."""

    def __init__(self, kind: str, in_channels: int, out_channels: int, resolution: int,
                 w_dim: int, blur: torch.Tensor | None):
        super().__init__()
        self.kind = kind
        if kind == "const":
            self.const = nn.Parameter(torch.zeros(1, out_channels, 4, 4))
        else:
            self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, 3, 3))
            self.weight_coef = math.sqrt(2) / math.sqrt(in_channels * 9)
        if kind in ("up", "up_fused") and blur is not None:
            self.register_buffer("blur", blur.expand(out_channels, 1, 3, 3).contiguous(), persistent=False)
        else:
            self.blur = None
        self.noise_strength = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("noise_const", torch.zeros(1, 1, resolution, resolution))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.style = _Dense(w_dim, 2 * out_channels, gain=1.0)
        self.resolution = resolution

    def forward(self, x: torch.Tensor | None, w: torch.Tensor, noise_mode: str) -> torch.Tensor:
        if self.kind == "const":
            x = self.const.expand(w.shape[0], -1, -1, -1)
        else:
            weight = self.weight * self.weight_coef
            if self.kind == "up_fused":
                # NVlabs' fused upscale: pad the 3x3 kernel to 4x4 and sum its four shifts, then a
                # stride-2 transposed conv ('SAME' = padding 1 on each side).
                weight = F.pad(weight, (1, 1, 1, 1))
                weight = weight[:, :, 1:, 1:] + weight[:, :, :-1, 1:] + weight[:, :, 1:, :-1] + weight[:, :, :-1, :-1]
                x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2, padding=1)
            else:
                if self.kind == "up":
                    x = F.interpolate(x, scale_factor=2, mode="nearest")
                x = F.conv2d(x, weight, padding=1)
            if self.blur is not None:
                x = F.conv2d(x, self.blur, padding=1, groups=x.shape[1])
        if noise_mode == "const":
            noise = self.noise_const
        elif noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        else:  # "none"
            noise = None
        # The epilogue in as few passes over the activations as the ops allow (fused multiply-adds,
        # in-place activation, one instance-norm kernel): the same arithmetic as NVlabs' ops.
        if noise is not None:
            x = torch.addcmul(x, noise, self.noise_strength.view(1, -1, 1, 1))
        x = F.leaky_relu_(x + self.bias.view(1, -1, 1, 1), LRELU_SLOPE)
        x = F.instance_norm(x, eps=EPS)
        style = self.style(w).view(w.shape[0], 2, -1, 1, 1)
        return torch.addcmul(style[:, 1], x, style[:, 0] + 1)


class StyleGAN1Generator(GeneratorBase, nn.Module):
    """The StyleGAN (v1) generator ``G_style`` = mapping + truncation + synthesis (see the module
    docstring). Follows the generator contract of :mod:`synthgen.generators`: ``sample(z, c,
    truncation_psi, noise_mode)`` returns ``N x 3 x H x W`` floats as the original returns them
    (no tanh, roughly [-1, 1]); ``generate(rng, n)`` (:class:`GeneratorBase`) uint8 RGB images,
    cropped to ``crop``."""

    family = "stylegan1"

    def __init__(self, *, resolution: int, z_dim: int = 512, c_dim: int = 0, w_dim: int = 512,
                 mapping_layers: int = 8, mapping_fmaps: int = 512, mapping_lrmul: float = MAPPING_LRMUL,
                 img_channels: int = 3, fmap_base: int = 8192, fmap_max: int = 512,
                 fused_scale: bool | str = "auto", blur_filter: Sequence[float] | None = (1, 2, 1),
                 truncation_cutoff: int = TRUNCATION_CUTOFF, classes: Sequence[str] | None = None,
                 crop: tuple[int, int, int, int] | None = None):
        nn.Module.__init__(self)
        log2 = int(round(math.log2(resolution)))
        if resolution != 2 ** log2 or resolution < 4:
            raise InputError(f"StyleGAN resolution {resolution} is not a power of two >= 4")
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_channels = img_channels
        self.num_ws = 2 * log2 - 2
        self.truncation_cutoff = truncation_cutoff
        self.resolution = (resolution, resolution)
        self.setup_pool_output(classes, crop)

        # Mapping network (``G_mapping``).
        if c_dim:
            self.label_embed = nn.Parameter(torch.zeros(c_dim, z_dim))
        self.mapping = nn.ModuleList(
            _Dense(z_dim * (2 if c_dim else 1) if i == 0 else mapping_fmaps,
                   w_dim if i == mapping_layers - 1 else mapping_fmaps, gain=math.sqrt(2), lrmul=mapping_lrmul)
            for i in range(mapping_layers)
        )
        self.register_buffer("w_avg", torch.zeros(w_dim))

        # Synthesis network (``G_synthesis``): two layers per resolution 4 .. 2**log2.
        def nf(stage: int) -> int:
            return min(int(fmap_base / 2.0 ** stage), fmap_max)

        if blur_filter:
            f = torch.tensor(blur_filter, dtype=torch.float32)
            blur = torch.outer(f, f)
            blur = (blur / blur.sum()).view(1, 1, *blur.shape)
            if blur.shape[-1] != 3:
                raise InputError(f"StyleGAN blur_filter {list(blur_filter)}: only 3-tap filters are supported")
        else:
            blur = None
        layers = [_Layer("const", 0, nf(1), 4, w_dim, None), _Layer("conv", nf(1), nf(1), 4, w_dim, None)]
        for res_log2 in range(3, log2 + 1):
            res = 2 ** res_log2
            fused = res >= FUSED_SCALE_MIN_RES if fused_scale == "auto" else bool(fused_scale)
            layers.append(_Layer("up_fused" if fused else "up", nf(res_log2 - 2), nf(res_log2 - 1), res, w_dim, blur))
            layers.append(_Layer("conv", nf(res_log2 - 1), nf(res_log2 - 1), res, w_dim, None))
        self.layers = nn.ModuleList(layers)
        self.to_rgb_weight = nn.Parameter(torch.zeros(img_channels, nf(log2 - 1), 1, 1))
        self.to_rgb_bias = nn.Parameter(torch.zeros(img_channels))
        self.to_rgb_coef = 1.0 / math.sqrt(nf(log2 - 1))

    @property
    def device(self) -> torch.device:
        return self.w_avg.device

    def map(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
            truncation_cutoff: int | None = None) -> torch.Tensor:
        """z (and one-hot labels c) -> per-layer latents ``[N, num_ws, w_dim]``, truncated."""
        x = z
        if self.c_dim:
            if c is None:
                raise InputError(f"this StyleGAN is conditional on {self.c_dim} classes: give c (one-hot labels)")
            x = torch.cat([x, c.to(x.dtype) @ self.label_embed], dim=1)
        x = x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + EPS)
        for layer in self.mapping:
            x = _lrelu(layer(x))
        ws = x.unsqueeze(1).expand(-1, self.num_ws, -1)
        cutoff = self.truncation_cutoff if truncation_cutoff is None else truncation_cutoff
        if truncation_psi != 1 and cutoff > 0:
            coefs = torch.ones(1, self.num_ws, 1, dtype=x.dtype, device=x.device)
            coefs[:, :cutoff] = truncation_psi
            ws = self.w_avg + (ws - self.w_avg) * coefs  # tflib.lerp(dlatent_avg, dlatents, coefs)
        return ws

    def synthesis(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        if noise_mode not in ("const", "random", "none"):
            raise InputError(f"noise_mode {noise_mode!r}: expected const, random or none")
        x = None
        for i, layer in enumerate(self.layers):
            x = layer(x, ws[:, i], noise_mode)
        return F.conv2d(x, self.to_rgb_weight * self.to_rgb_coef) + self.to_rgb_bias.view(1, -1, 1, 1)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                noise_mode: str = "const", truncation_cutoff: int | None = None) -> torch.Tensor:
        return self.synthesis(self.map(z, c, truncation_psi, truncation_cutoff), noise_mode)

    @torch.no_grad()
    def sample(self, z, c=None, truncation_psi: float = 1.0, noise_mode: str = "const",
               truncation_cutoff: int | None = None) -> torch.Tensor:
        """Images ``N x C x H x W`` for latents ``z`` ``[N, z_dim]`` as NVlabs' ``Gs.run(z, c,
        truncation_psi=psi, truncation_cutoff=8, randomize_noise=noise_mode == 'random')`` returns
        them (float32, before any crop)."""
        z = torch.as_tensor(z, dtype=torch.float32, device=self.device)
        if c is not None:
            c = torch.as_tensor(c, dtype=torch.float32, device=self.device)
        return self(z, c, truncation_psi, noise_mode, truncation_cutoff)


# --------------------------------------------------------------------------------------------
# Reading the TF state.


def _network_state(obj, what: str) -> Mapping:
    """The state mapping of a stub-read ``Network`` (a mapping with ``variables``)."""
    state = obj if isinstance(obj, Mapping) else getattr(obj, "__dict__", None)
    if not isinstance(state, Mapping) or "variables" not in state:
        raise InputError(
            f"the StyleGAN pickle's {what} is a {type(obj).__name__}, not a dnnlib.tflib Network state "
            "with 'variables'; expected NVlabs' (G, D, Gs) pickle from github.com/NVlabs/stylegan")
    return state


def _variables(state: Mapping, what: str) -> dict[str, np.ndarray]:
    try:
        return {str(name): np.asarray(value, dtype=np.float32) for name, value in state["variables"]}
    except (TypeError, ValueError) as err:
        raise InputError(f"the StyleGAN pickle's {what} variables are not (name, array) pairs ({err})") from None


def _check_kwargs(kwargs: Mapping, supported: Mapping, what: str) -> None:
    wrong = {k: kwargs[k] for k, v in supported.items() if k in kwargs and kwargs[k] != v}
    if wrong:
        raise InputError(
            f"this StyleGAN {what} network uses settings synthgen's StyleGAN (v1) does not implement: "
            f"{wrong} (supported: {dict(supported)}). Use the official NVlabs/stylegan code for it.")


def load_stylegan1(tf_state, *, classes: Sequence[str] | None = None,
                   crop: tuple[int, int, int, int] | None = None) -> StyleGAN1Generator:
    """Build a :class:`StyleGAN1Generator` from NVlabs' ``Gs`` network (``version`` 3,
    ``components`` ``mapping`` and ``synthesis``, ``variables`` as ``(name, ndarray)``), as the
    restricted unpickler reads it (:class:`synthgen.generators.formats.TFNetwork`, or its state
    as a mapping). The architecture comes from the variables' names and shapes,
    with the ``static_kwargs`` the file records; anything else raises InputError."""
    top = _network_state(tf_state, "Gs")
    components = top.get("components") or {}
    if "mapping" not in components or "synthesis" not in components:
        raise InputError(
            f"this TF network ({top.get('name', '?')}) has components {sorted(components)}, not the "
            "'mapping' and 'synthesis' of a StyleGAN generator Gs")
    mapping_state = _network_state(components["mapping"], "mapping network")
    synthesis_state = _network_state(components["synthesis"], "synthesis network")
    top_vars = _variables(top, "Gs")
    mvars = _variables(mapping_state, "mapping")
    svars = _variables(synthesis_state, "synthesis")
    top_kwargs = dict(top.get("static_kwargs") or {})
    mkwargs = {**top_kwargs, **dict(mapping_state.get("static_kwargs") or {})}
    skwargs = {**top_kwargs, **dict(synthesis_state.get("static_kwargs") or {})}
    _check_kwargs(mkwargs, _SUPPORTED_MAPPING, "mapping")
    _check_kwargs(skwargs, _SUPPORTED_SYNTHESIS, "synthesis")

    def need(vars_: dict, name: str, what: str) -> np.ndarray:
        if name not in vars_:
            raise InputError(
                f"the StyleGAN pickle's {what} network has no variable {name!r} (it has "
                f"{len(vars_)} variables, e.g. {sorted(vars_)[:4]}); not a StyleGAN (v1) generator")
        return vars_[name]

    if "dlatent_avg" not in top_vars:
        raise InputError("the TF network Gs has no 'dlatent_avg': not a StyleGAN (v1) generator")
    lod = float(np.asarray(svars.get("lod", 0.0)))
    if lod != 0:
        raise InputError(
            f"this StyleGAN snapshot is mid progressive growing (lod {lod}, not 0); synthgen samples "
            "fully grown generators only")
    mapping_layers = sum(1 for k in mvars if k.startswith("Dense") and k.endswith("/weight"))
    dense0 = need(mvars, "Dense0/weight", "mapping")
    w_dim = int(top_vars["dlatent_avg"].shape[0])
    c_dim = int(mvars["LabelConcat/weight"].shape[0]) if "LabelConcat/weight" in mvars else 0
    z_dim = int(dense0.shape[0]) // (2 if c_dim else 1)
    mapping_fmaps = int(dense0.shape[1]) if mapping_layers > 1 else w_dim
    sizes = [int(k.split("x")[0]) for k in svars if re.fullmatch(r"\d+x\d+", k.split("/")[0])]
    if not sizes:
        raise InputError("the StyleGAN pickle's synthesis network has no '<R>x<R>/' layers; not a StyleGAN (v1) generator")
    res_log2 = int(math.log2(max(sizes)))
    resolution = 2 ** res_log2
    const = need(svars, "4x4/Const/const", "synthesis")
    fmap_max = int(const.shape[1])
    rgb = need(svars, "ToRGB_lod0/weight", "synthesis")
    blur_filter = skwargs.get("blur_filter", (1, 2, 1))
    # fmap_base from the last layer's width (the released files leave it at its default).
    last_channels = int(rgb.shape[2])
    fmap_base = last_channels * 2 ** (res_log2 - 1) if last_channels < fmap_max else int(skwargs.get("fmap_base", 8192))
    G = StyleGAN1Generator(
        resolution=resolution, z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, mapping_layers=mapping_layers,
        mapping_fmaps=mapping_fmaps, mapping_lrmul=float(mkwargs.get("mapping_lrmul", MAPPING_LRMUL)),
        img_channels=int(rgb.shape[3]), fmap_base=fmap_base, fmap_max=fmap_max,
        fused_scale=skwargs.get("fused_scale", "auto"), blur_filter=blur_filter,
        truncation_cutoff=int(top_kwargs.get("truncation_cutoff", TRUNCATION_CUTOFF) or 0),
        classes=classes, crop=crop,
    )

    params: dict[str, np.ndarray] = {"w_avg": top_vars["dlatent_avg"]}
    if c_dim:
        params["label_embed"] = mvars["LabelConcat/weight"]
    for i in range(mapping_layers):
        params[f"mapping.{i}.weight"] = need(mvars, f"Dense{i}/weight", "mapping").T
        params[f"mapping.{i}.bias"] = need(mvars, f"Dense{i}/bias", "mapping")
    scopes = ["4x4/Const", "4x4/Conv"]
    for r in range(3, res_log2 + 1):
        scopes += [f"{2 ** r}x{2 ** r}/Conv0_up", f"{2 ** r}x{2 ** r}/Conv1"]
    for i, scope in enumerate(scopes):
        prefix = f"layers.{i}."
        if i == 0:
            params[prefix + "const"] = const
        else:
            params[prefix + "weight"] = need(svars, f"{scope}/weight", "synthesis").transpose(3, 2, 0, 1)
        params[prefix + "noise_strength"] = need(svars, f"{scope}/Noise/weight", "synthesis")
        params[prefix + "noise_const"] = need(svars, f"noise{i}", "synthesis")
        params[prefix + "bias"] = need(svars, f"{scope}/bias", "synthesis")
        params[prefix + "style.weight"] = need(svars, f"{scope}/StyleMod/weight", "synthesis").T
        params[prefix + "style.bias"] = need(svars, f"{scope}/StyleMod/bias", "synthesis")
    params["to_rgb_weight"] = rgb.transpose(3, 2, 0, 1)
    params["to_rgb_bias"] = need(svars, "ToRGB_lod0/bias", "synthesis")

    own = G.state_dict()
    for key, value in params.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise InputError(
                f"StyleGAN variable for {key} has shape {tuple(value.shape)}, expected {tuple(own[key].shape)} "
                f"for a {resolution}px generator with fmap_base {fmap_base}, fmap_max {fmap_max}; the file is "
                "inconsistent or not a StyleGAN (v1) generator")
    G.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in params.items()})
    return G.eval().requires_grad_(False)

