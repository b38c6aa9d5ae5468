"""Looking at a generator before pasting it: images for given seeds or latents, and a sheet
(``synthgen models sample``).

Seeds follow NVIDIA's ``generate.py``: seed ``s`` gives ``z = RandomState(s).randn(z_dim)``, so the
images can be compared with the official scripts' for the same seeds. (The paste pool draws its
latents differently, per object index: see :mod:`synthgen.sources.generators`.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from synthgen.errors import InputError, WriteError

SHEET_NAME = "sheet.png"
_GAP, _CAPTION = 4, 18


def parse_seeds(text: str) -> list[int]:
    """``"0-15"``, ``"0-99,200"``, ``"7"`` -> the seeds, in the order given."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        low, sep, high = part.partition("-")
        try:
            first, last = int(low), int(high) if sep else int(low)
        except ValueError:
            raise InputError(f"--seeds {text!r}: expected numbers and ranges such as 0-15,20") from None
        if first < 0 or last < first or last >= 2**32:
            raise InputError(f"--seeds {text!r}: ranges go up, from seeds in 0..2**32-1")
        seeds.extend(range(first, last + 1))
    if not seeds:
        raise InputError(f"--seeds {text!r}: no seed given")
    return seeds


def seed_latents(seeds: list[int], z_dim: int) -> np.ndarray:
    """NVIDIA's latents for ``seeds``: row k is ``RandomState(seeds[k]).randn(z_dim)``."""
    return np.stack([np.random.RandomState(seed).randn(z_dim) for seed in seeds]).astype(np.float32)


def load_latents(path: Path, z_dim: int) -> np.ndarray:
    """Latents from a ``.npy`` file of shape ``N x z_dim`` (read without pickles)."""
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise InputError(f"--z {path}: not a readable .npy array ({err})") from None
    if z.ndim == 1:
        z = z[None]
    if z.ndim != 2 or z.shape[1] != z_dim or not np.issubdtype(z.dtype, np.floating):
        raise InputError(f"--z {path}: an array of shape {z.shape} ({z.dtype}); this generator takes N x {z_dim} floats")
    return z.astype(np.float32)


def class_labels(generator, name: str | None, n: int) -> np.ndarray | None:
    """One-hot rows for ``--class NAME|INDEX`` (conditional models need one; others take none)."""
    c_dim = int(getattr(generator, "c_dim", 0))
    if c_dim == 0:
        if name is not None:
            raise InputError(f"--class {name}: this generator is unconditional (one class: {', '.join(generator.classes)})")
        return None
    classes = list(generator.classes)
    if name is None:
        raise InputError(f"this generator is conditional: give --class, one of {', '.join(classes)} (or its number 0-{c_dim - 1})")
    index = classes.index(name) if name in classes else (int(name) if name.isdigit() else -1)
    if not 0 <= index < c_dim:
        raise InputError(f"--class {name}: expected one of {', '.join(classes)} or a number 0-{c_dim - 1}")
    labels = np.zeros((n, c_dim), np.float32)
    labels[:, index] = 1.0
    return labels


def read_captions(path: Path) -> list[str]:
    """The captions of a text file, one a line (blank lines skipped)."""
    try:
        lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"--captions {path}: cannot read it as UTF-8 text ({err})") from None
    captions = [line for line in lines if line]
    if not captions:
        raise InputError(f"--captions {path}: no caption in it (one caption a line)")
    return captions


@dataclass(frozen=True)
class SampleSettings:
    truncation: float = 1.0
    noise_mode: str = "const"
    batch_size: int = 8
    crop: tuple[int, int, int, int] | None = None


def render(generator, z: np.ndarray, c, settings: SampleSettings, device: str) -> list[np.ndarray]:
    """Images for latents ``z`` and their conditions ``c`` (one-hot rows, or one caption per
    latent for a text-to-image model; None for none), ``settings.batch_size`` at a time."""
    import torch

    from synthgen.generators import to_uint8

    images: list[np.ndarray] = []
    for start in range(0, len(z), settings.batch_size):
        zb = torch.from_numpy(z[start:start + settings.batch_size]).to(device)
        cb = None if c is None else c[start:start + settings.batch_size]
        if isinstance(cb, np.ndarray):
            cb = torch.from_numpy(cb).to(device)
        with torch.no_grad():
            out = generator.sample(zb, cb, truncation_psi=settings.truncation, noise_mode=settings.noise_mode)
        images.extend(to_uint8(out, settings.crop))
    return images


def write_images(images: list[np.ndarray], names: list[str], out: Path, columns: int = 8, tile: int = 160) -> Path:
    """Each image as ``out/<name>.png``, and all of them on ``out/sheet.png`` with their names."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        for image, name in zip(images, names):
            Image.fromarray(image).save(out / f"{name}.png")
        columns = min(columns, len(images))
        rows = math.ceil(len(images) / columns)
        h, w = images[0].shape[:2]
        scale = tile / max(h, w)
        cell_w, cell_h = round(w * scale), round(h * scale)
        sheet = Image.new("RGB", (columns * (cell_w + _GAP) + _GAP, rows * (cell_h + _CAPTION + _GAP) + _GAP))
        draw = ImageDraw.Draw(sheet)
        font = ImageFont.load_default(size=_CAPTION - 5)
        for k, (image, name) in enumerate(zip(images, names)):
            x = _GAP + (k % columns) * (cell_w + _GAP)
            y = _GAP + (k // columns) * (cell_h + _CAPTION + _GAP)
            sheet.paste(Image.fromarray(image).resize((cell_w, cell_h), Image.LANCZOS), (x, y))
            draw.text((x + cell_w // 2, y + cell_h + _CAPTION // 2), name, fill=(230, 230, 230), font=font, anchor="mm")
        sheet.save(out / SHEET_NAME)
    except OSError as err:
        raise WriteError(f"could not write the samples into {out}: {err.strerror or err}") from err
    return out / SHEET_NAME
