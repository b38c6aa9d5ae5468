"""Trained generators as object sources: the published models the paper used, and the interface
their loaders will implement.

The paper sampled faces and cars from StyleGAN (v1, NVlabs' TensorFlow pickles) and birds from
DM-GAN. The loaders (safe unpickling without NVlabs' code, clean-room PyTorch generators) are
not in this version: resolving a generator name or a checkpoint file raises NotAvailableError
that names the file the user would need and points to ``--objects DIR`` meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from synthgen.errors import NotAvailableError
from synthgen.registry import Registry

CHECKPOINT_SUFFIXES = frozenset({".pkl", ".pt", ".pth"})


class ObjectGenerator(Protocol):
    """A trained generator of object-centric images.

    ``generate(rng, n)`` returns ``n`` ``uint8`` RGB images ``(H, W, 3)``, the object centred
    (cars already cropped from StyleGAN's 512x512 canvas to the 512x384 content). Latents come
    from ``rng`` only, so the same generator state gives the same images. ``classes`` are the
    class names the images belong to (one for unconditional models).
    """

    classes: list[str]

    def generate(self, rng: np.random.Generator, n: int) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class GeneratorSpec:
    """Where a published generator comes from and what its checkpoint file holds."""

    title: str
    classes: tuple[str, ...]
    checkpoint: str  # the official file name
    published: str  # where to get it
    format: str  # what is inside, for the loader
    resolution: str


GENERATORS: Registry[GeneratorSpec] = Registry("generator")


def _register(name: str, spec: GeneratorSpec) -> None:
    GENERATORS.register(name, help=spec.title)(spec)


_register("stylegan-ffhq", GeneratorSpec(
    title="StyleGAN (v1) FFHQ faces, the paper's face generator",
    classes=("face",),
    checkpoint="karras2019stylegan-ffhq-1024x1024.pkl",
    published="NVlabs/stylegan README, Google Drive file id 1MEGjdvVpUsu1jB4zrXZN7Y4kBBOzizDQ",
    format="TensorFlow 1 pickle (G, D, Gs) of dnnlib.tflib Network objects; use Gs",
    resolution="1024x1024",
))
_register("stylegan-cars", GeneratorSpec(
    title="StyleGAN (v1) LSUN cars, the paper's car generator",
    classes=("car",),
    checkpoint="karras2019stylegan-cars-512x384.pkl",
    published="NVlabs/stylegan README, Google Drive file id 1MJ6iCfNtMIRicihwRorsM3b7mmtmK9c3",
    format="TensorFlow 1 pickle (G, D, Gs) of dnnlib.tflib Network objects; use Gs",
    resolution="512x512 canvas, content in rows 64:448 (512x384)",
))
_register("stylegan2-ffhq", GeneratorSpec(
    title="StyleGAN2 config-f FFHQ faces",
    classes=("face",),
    checkpoint="stylegan2-ffhq-config-f.pkl",
    published="https://nvlabs-fi-cdn.nvidia.com/stylegan2/networks/stylegan2-ffhq-config-f.pkl",
    format="TensorFlow pickle (G, D, Gs), network version 4; use Gs",
    resolution="1024x1024",
))
_register("stylegan2-car", GeneratorSpec(
    title="StyleGAN2 config-f LSUN cars",
    classes=("car",),
    checkpoint="stylegan2-car-config-f.pkl",
    published="https://nvlabs-fi-cdn.nvidia.com/stylegan2/networks/stylegan2-car-config-f.pkl",
    format="TensorFlow pickle (G, D, Gs), network version 4; use Gs",
    resolution="512x512 canvas, content in rows 64:448 (512x384)",
))
_register("dmgan-birds", GeneratorSpec(
    title="DM-GAN CUB birds (text-to-image), the paper's bird generator",
    classes=("bird",),
    checkpoint="bird_DMGAN.pth",
    published=(
        "MinfengZhu/DM-GAN README (Google Drive), together with the text encoder "
        "DAMSMencoders/bird/text_encoder200.pth and the CUB bird metadata (captions.pickle)"
    ),
    format="PyTorch state_dict of DM-GAN's G_NET (3 stages, 256x256 output), captions drive it",
    resolution="256x256",
))


def is_checkpoint_path(spec: str | Path) -> bool:
    return Path(spec).suffix.lower() in CHECKPOINT_SUFFIXES


def generator_not_available(spec: str | Path) -> NotAvailableError:
    """The error for a generator name or checkpoint file: what is missing, what file the user
    would need, and what to do meanwhile."""
    meanwhile = (
        "Meanwhile, pass --objects DIR with a folder of object images (for example images you "
        "sampled from the generator yourself)."
    )
    name = str(spec)
    if name in GENERATORS:
        entry = GENERATORS.get(name)
        return NotAvailableError(
            f"generator {name!r} ({entry.title}, {entry.resolution}) cannot be used yet: the "
            f"generator loaders are not in this version of synthgen. It needs the checkpoint "
            f"{entry.checkpoint} ({entry.format}), published at {entry.published}. {meanwhile}"
        )
    known = ", ".join(f"{n} ({GENERATORS.get(n).checkpoint})" for n in GENERATORS.names())
    return NotAvailableError(
        f"{name} looks like a generator checkpoint, but the generator loaders are not in this "
        f"version of synthgen, so it cannot be sampled yet. Generators that will be supported: "
        f"{known}. {meanwhile}"
    )
