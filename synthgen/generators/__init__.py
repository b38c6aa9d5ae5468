"""Trained generators as object sources: load a published checkpoint safely, sample it.

``load_generator(name_or_path, device)`` resolves a model name through the registry (or takes a
path), names the file's format from its bytes (:func:`synthgen.generators.formats.sniff`), reads it
without running code from it, and builds synthgen's own network for its family:

=====================================================  ==============================================
file                                                    network
=====================================================  ==============================================
NVlabs stylegan2-ada-pytorch / stylegan3 StyleGAN2 pkl  :mod:`~synthgen.generators.stylegan2`
rosinality stylegan2-pytorch ``.pt`` (``g_ema``)        :mod:`~synthgen.generators.stylegan2`
NVlabs StyleGAN2 TensorFlow pkl (network version >= 4)  :mod:`~synthgen.generators.stylegan2`
NVlabs StyleGAN (v1) TensorFlow pkl (version < 4)       :mod:`~synthgen.generators.stylegan1`
DM-GAN ``G_NET`` state_dict (+ text encoder, captions)  :mod:`~synthgen.generators.dmgan`
=====================================================  ==============================================

StyleGAN3 (alias-free) pickles are recognised and declined with a clear message.

Importing this package does not import torch (the CLI stays light); loading does.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from synthgen.errors import InputError, NotAvailableError

if TYPE_CHECKING:
    import torch


@runtime_checkable
class ObjectGenerator(Protocol):
    """A trained generator of object-centric images (a torch ``nn.Module`` in eval mode).

    ``sample`` returns float images ``N x 3 x H x W`` in [-1, 1] exactly as the official
    implementation returns them (``resolution == (H, W)``); ``generate`` returns post-processed
    ``uint8`` RGB ``H' x W' x 3`` arrays (e.g. the car models' black bands cropped) for the pool,
    latents drawn from ``rng`` only.
    """

    z_dim: int
    c_dim: int
    resolution: tuple[int, int]
    classes: list[str]
    family: str

    def sample(self, z, c=None, truncation_psi: float = 1.0, noise_mode: str = "const") -> torch.Tensor: ...

    def generate(self, rng: np.random.Generator, n: int) -> list[np.ndarray]: ...


class GeneratorBase:
    """The pool-facing half of :class:`ObjectGenerator` for networks that implement ``sample``.

    Settings a caller may change after loading: ``truncation_psi`` (used by ``generate``),
    ``crop`` (``(x0, y0, x1, y1)`` of the content in ``sample``'s output, or None),
    ``classes``. Images are computed in chunks of ``compute_batch`` latents, the last chunk padded
    to full size, so each object's pixels do not depend on how many were asked for at once.
    """

    classes: list[str]
    crop: tuple[int, int, int, int] | None = None
    truncation_psi: float = 1.0
    compute_batch: int = 8

    def setup_pool_output(self, classes=None, crop=None) -> None:
        c_dim = getattr(self, "c_dim", 0)
        default = ["object"] if c_dim == 0 else [f"class{i}" for i in range(c_dim)]
        self.classes = list(classes) if classes else default
        self.crop = None if crop is None else tuple(int(v) for v in crop)

    def images_from_latents(self, z: np.ndarray, labels=None) -> list[np.ndarray]:
        """Post-processed ``uint8`` RGB images for latents ``z`` (``N x z_dim``) and, for a
        conditional model, class indices ``labels`` (``N``)."""
        if len(z) == 0:
            return []
        return [np.ascontiguousarray(image) for image in self.tensors_from_latents(z, labels).cpu().numpy()]

    def tensors_from_latents(self, z: np.ndarray, labels=None):
        """:meth:`images_from_latents` as one ``N x H x W x 3`` uint8 tensor on the generator's
        device (the same bytes; nothing copied to the host)."""
        import torch

        z = np.asarray(z, np.float32)
        n = len(z)
        c = None
        if self.c_dim > 0:
            if labels is None:
                raise InputError(f"this generator is conditional ({self.c_dim} classes): give a class per latent.")
            labels = np.asarray(labels, np.int64)
            if labels.shape != (n,) or (labels < 0).any() or (labels >= self.c_dim).any():
                raise InputError(f"class indices {labels.tolist()[:8]}: expected {n} values in 0..{self.c_dim - 1}.")
            c = np.eye(self.c_dim, dtype=np.float32)[labels]
        k = self.compute_batch
        images = []
        for start in range(0, n, k):
            chunk = np.zeros((k, self.z_dim), np.float32)
            count = min(k, n - start)
            chunk[:count] = z[start:start + count]
            c_chunk = None
            if c is not None:
                c_chunk = np.zeros((k, self.c_dim), np.float32)
                c_chunk[:, 0] = 1
                c_chunk[:count] = c[start:start + count]
            out = self.sample(torch.from_numpy(chunk), None if c_chunk is None else torch.from_numpy(c_chunk),
                              truncation_psi=self.truncation_psi, noise_mode="const")
            images.append(to_uint8_tensor(out[:count], self.crop))
        if not images:
            raise InputError("no latents given: ask for at least one image")
        return torch.cat(images)

    def generate(self, rng: np.random.Generator, n: int, labels=None) -> list[np.ndarray]:
        """``n`` post-processed images from latents drawn from ``rng`` (``standard_normal``; for a
        conditional model without ``labels``, classes uniform from ``rng`` after the latents)."""
        z = rng.standard_normal((n, self.z_dim)).astype(np.float32)
        if self.c_dim > 0 and labels is None:
            labels = rng.integers(self.c_dim, size=n)
        return self.images_from_latents(z, labels)


def to_uint8(images, crop: tuple[int, int, int, int] | None = None) -> list[np.ndarray]:
    """``N x 3 x H x W`` floats in [-1, 1] to ``uint8`` ``H x W x 3`` arrays, as NVlabs writes
    PNGs (``x * 127.5 + 128``, clamped, truncated), cropped to ``crop`` = ``(x0, y0, x1, y1)``."""
    return [np.ascontiguousarray(img) for img in to_uint8_tensor(images, crop).cpu().numpy()]


def to_uint8_tensor(images, crop: tuple[int, int, int, int] | None = None):
    """:func:`to_uint8` as one ``N x H x W x 3`` uint8 tensor, where ``images`` are."""
    import torch

    x = (images.detach().to(torch.float32) * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    x = x.permute(0, 2, 3, 1)
    if crop is not None:
        x0, y0, x1, y1 = crop
        x = x[:, y0:y1, x0:x1]
    return x


def _resolve(name_or_path: str | Path) -> tuple[Any, Path]:
    """``(card or None, path)``: an existing file as given, else a registry name."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        card = None
        try:
            from synthgen.generators.registry import card_for_file
        except ImportError:
            return None, path
        card = card_for_file(path)
        return card, path
    try:
        from synthgen.generators.registry import resolve_model_file
    except ImportError:
        raise NotAvailableError(f"{name_or_path}: no such file, and this version of synthgen has no model "
                                "registry to resolve generator names; give the path of a checkpoint.") from None
    return resolve_model_file(str(name_or_path))


def load_generator(name_or_path: str | Path, device: str = "cpu") -> ObjectGenerator:
    """A generator (``nn.Module`` in eval mode on ``device``) from a registry name or a file.

    The file's format is sniffed from its content; nothing in it is executed. A name's card adds
    the class names and post-processing (crop). Raises :class:`InputError` for files of the wrong
    kind, truncated or damaged files and refused pickles, :class:`NotAvailableError` for a known
    model whose file is not on this machine or a format this version does not support.
    """
    import torch

    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device!r}: this machine has no CUDA device PyTorch can use; use device 'cpu'.")
    card, path = _resolve(name_or_path)
    family = getattr(card, "family", None)
    if family not in (None, "stylegan", "stylegan1", "stylegan2"):
        import importlib

        try:
            module = importlib.import_module(f"synthgen.generators.{family}")
            loader = module.load_from_card
        except (ImportError, AttributeError):
            raise NotAvailableError(f"{card.name}: generators of family {family!r} are not in this version "
                                    "of synthgen.") from None
        return loader(card, path, device=device)
    G = _load_file(path, classes=getattr(card, "classes", None) or None, crop=getattr(card, "crop", None))
    return G.to(device).eval().requires_grad_(False)


def _load_file(path: Path, classes, crop):
    G = _read_network(path, classes, crop)
    if isinstance(G, GeneratorBase):
        G.setup_pool_output(classes, crop)
    return G


def _read_network(path: Path, classes, crop):
    from synthgen.generators import formats, stylegan2

    kind = formats.sniff(path)
    if kind.kind == formats.NVLABS_PICKLE:
        record = formats.read_nvlabs_pickle(path)
        children = formats.child_names(record.state["_modules"]["synthesis"]) \
            if isinstance((record.state.get("_modules") or {}).get("synthesis"), formats.PersistentRecord) else []
        if "b4" not in children:
            if "input" in children or any(name.startswith("L0_") for name in children):
                raise NotAvailableError(
                    f"{path}: a StyleGAN3 (alias-free) network pickle. synthgen supports StyleGAN2 generators "
                    "(NVlabs stylegan2-ada-pytorch / stylegan3-repo StyleGAN2 pickles, TensorFlow StyleGAN2, "
                    "rosinality) and StyleGAN (v1); StyleGAN3 networks are not supported in this version.")
            raise InputError(f"{path}: an NVIDIA network pickle whose G_ema is not a StyleGAN2 generator "
                             f"(its synthesis network has {children or 'no'} layers; expected b4, b8, ...).")
        init_kwargs = dict(record.state.get("_init_kwargs") or {})
        init_args = tuple(record.state.get("_init_args") or ())
        for name, value in zip(("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs",
                                "synthesis_kwargs"), init_args):
            init_kwargs[name] = value
        # Which repository wrote it decides the defaults of settings the kwargs leave out; its
        # source text (carried in the record, never executed) says which.
        stylegan3_repo = "fused_modconv_default" in record.module_src
        return stylegan2.from_nvlabs(stylegan2.nvlabs_kwargs(init_kwargs, stylegan3_repo),
                                     formats.module_state(record), str(path))
    if kind.kind == formats.TF_PICKLE:
        networks = formats.read_tf_pickle(path)
        gs = networks[-1]
        if gs.version >= 4:
            return stylegan2.from_tf(gs.static_kwargs, gs.all_variables(), str(path))
        try:
            from synthgen.generators.stylegan1 import load_stylegan1
        except ImportError:
            raise NotAvailableError(f"{path}: a StyleGAN (v1) TensorFlow pickle; this version of synthgen "
                                    "has no StyleGAN (v1) network.") from None
        return load_stylegan1(gs, **({"classes": classes} if classes else {}), crop=crop)
    checkpoint = formats.read_torch_checkpoint(path)
    from synthgen.generators import dmgan

    if dmgan.is_dmgan_state(checkpoint):
        return dmgan.load_dmgan_checkpoint(checkpoint, path, classes)
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("g_ema"), dict):
        return stylegan2.from_rosinality(checkpoint, str(path))
    found = sorted(map(str, checkpoint))[:12] if isinstance(checkpoint, dict) else type(checkpoint).__name__
    raise InputError(f"{path}: a PyTorch checkpoint without a generator synthgen knows (found {found}); "
                     "expected a rosinality stylegan2-pytorch checkpoint with 'g_ema'. Models with several "
                     "files (DM-GAN) load by their registry name.")
