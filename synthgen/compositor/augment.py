"""Per-object augmentation: geometry (scale, aspect, flip, rotation) and photometry (colour,
blur, noise).

Objects travel as straight-alpha uint8 RGBA, and every step is one OpenCV call on a small
array: this is the hot path of ``synthgen paste``. Resampling straight colour is safe because
object pools store, under every non-solid pixel, the colour of the nearest solid one
(:func:`synthgen.pool.bleed_colours`), so no source background can bleed into an edge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from synthgen.compositor.config import CompositeConfig

#: Alpha at or above this (of 255) is the object, for masks, boxes and the occlusion rule.
MASK_THRESHOLD = 128

_GREY_LIST = [0.299, 0.587, 0.114]


@dataclass
class ObjectPatch:
    """An augmented object ready to paste.

    ``rgba`` is (h, w, 4) uint8, straight alpha. ``mask`` is
    ``alpha >= MASK_THRESHOLD`` taken right after the geometric transform, before blur,
    feathering or motion blur: it is the object's extent and defines its box. ``extent`` is the
    mask's bounding box in patch pixels ``(x0, y0, x1, y1)``, end-exclusive; ``area`` its pixels.
    """

    rgba: np.ndarray
    mask: np.ndarray
    extent: tuple[int, int, int, int]
    area: int

    @property
    def height(self) -> int:
        return int(self.rgba.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgba.shape[1])


def rotated_extent(width: float, height: float, degrees: float) -> tuple[float, float]:
    """Width and height of the axis-aligned box around a ``width x height`` rectangle rotated by
    ``degrees``."""
    rad = math.radians(degrees)
    c, s = abs(math.cos(rad)), abs(math.sin(rad))
    return width * c + height * s, width * s + height * c


def _with_mask(rgba: np.ndarray) -> ObjectPatch | None:
    ones = cv2.threshold(cv2.extractChannel(rgba, 3), MASK_THRESHOLD - 1, 1, cv2.THRESH_BINARY)[1]  # 0/1 uint8
    x, y, w, h = cv2.boundingRect(ones)
    if w == 0:
        return None
    return ObjectPatch(rgba=rgba, mask=ones.view(bool), extent=(x, y, x + w, y + h), area=cv2.countNonZero(ones))


def transform_geometry(rgba: np.ndarray, box_w: float, box_h: float, flip: bool, degrees: float) -> ObjectPatch | None:
    """Resize a cut-out to ``box_w x box_h`` (before rotation), flip it, rotate it about its
    centre (the canvas grows to hold it, then is trimmed to the pixels with any alpha).

    Returns None when nothing of the object survives (it became smaller than a pixel).
    """
    out_w, out_h = max(1, int(round(box_w))), max(1, int(round(box_h)))
    shrinking = out_w <= rgba.shape[1] and out_h <= rgba.shape[0]
    patch = cv2.resize(rgba, (out_w, out_h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    if patch.ndim == 2:  # OpenCV drops the channel axis of 1-pixel results
        patch = patch.reshape(out_h, out_w, 4)
    if flip:
        patch = cv2.flip(patch, 1)
    if degrees:
        # A transparent one-pixel frame in the edge colours, replicated outward by the warp, so
        # that the corners the rotation uncovers are transparent and carry no foreign colour.
        framed = cv2.copyMakeBorder(patch, 1, 1, 1, 1, cv2.BORDER_REPLICATE)
        framed[0, :, 3] = framed[-1, :, 3] = 0
        framed[:, 0, 3] = framed[:, -1, 3] = 0
        new_w, new_h = rotated_extent(out_w + 2, out_h + 2, degrees)
        new_w, new_h = int(math.ceil(new_w)), int(math.ceil(new_h))
        matrix = cv2.getRotationMatrix2D(((out_w + 2) / 2.0, (out_h + 2) / 2.0), degrees, 1.0)
        matrix[0, 2] += (new_w - out_w - 2) / 2.0
        matrix[1, 2] += (new_h - out_h - 2) / 2.0
        patch = cv2.warpAffine(framed, matrix, (new_w, new_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        alpha = patch[..., 3]
        rows = np.flatnonzero(alpha.any(axis=1))
        if rows.size == 0:
            return None
        cols = np.flatnonzero(alpha.any(axis=0))
        patch = np.ascontiguousarray(patch[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
    return _with_mask(patch)


@dataclass(frozen=True)
class Photometry:
    """The photometric draws for one object (from :func:`draw_photometry`)."""

    brightness: float
    contrast: float
    saturation: float
    blur_sigma: float  # 0: no blur
    noise_std: float  # 0: no noise

    @property
    def recolours(self) -> bool:
        return self.brightness != 1.0 or self.contrast != 1.0 or self.saturation != 1.0


def draw_photometry(uniforms: Sequence[float], config: CompositeConfig) -> Photometry:
    """One object's photometric draws from seven uniform numbers in [0, 1)."""
    u_bright, u_contrast, u_sat, u_blur, u_sigma, u_noise, u_std = uniforms
    sigma = lerp(config.blur_sigma, u_sigma) if u_blur < config.blur else 0.0
    return Photometry(
        brightness=lerp(config.brightness, u_bright),
        contrast=lerp(config.contrast, u_contrast),
        saturation=lerp(config.saturation, u_sat),
        blur_sigma=sigma if sigma > 0.05 else 0.0,
        noise_std=lerp(config.noise_std, u_std) if u_noise < config.noise else 0.0,
    )


def mean_grey(rgba: np.ndarray) -> float:
    """The mean grey level of an object's pixels (alpha >= MASK_THRESHOLD), 0 if there are none."""
    mask = (rgba[..., 3] >= MASK_THRESHOLD).view(np.uint8)
    red, green, blue, _ = cv2.mean(rgba, mask=mask)
    return _GREY_LIST[0] * red + _GREY_LIST[1] * green + _GREY_LIST[2] * blue


def recolour(rgba: np.ndarray, photometry: Photometry, grey: float, out: np.ndarray | None = None) -> np.ndarray:
    """Brightness, contrast (around the object's mean grey level ``grey``, see
    :func:`mean_grey`) and saturation as one colour matrix, applied by a single saturating
    ``cv2.transform`` (alpha passes through).

    The map is affine per pixel, so it commutes with resampling: the compositor applies it at
    whichever of the cut-out's and the pasted size is smaller.
    """
    return cv2.transform(rgba, colour_matrix(photometry, grey), dst=out)


def colour_matrix(photometry: Photometry, grey: float) -> np.ndarray:
    """The (4, 5) matrix of :func:`recolour`: RGBA in, ``matrix[:, :4] @ rgba + matrix[:, 4]`` out."""
    b, c, sat = photometry.brightness, photometry.contrast, photometry.saturation
    gain, offset = b * c, b * (1.0 - c) * grey
    # Row i: gain * (sat * e_i + (1 - sat) * grey weights), then the offset; alpha row = identity.
    # Written out: the per-object cost of building it matters on this path.
    mix = gain * (1.0 - sat)
    r, g, bl = mix * _GREY_LIST[0], mix * _GREY_LIST[1], mix * _GREY_LIST[2]
    d = gain * sat
    return np.array(((r + d, g, bl, 0.0, offset), (r, g + d, bl, 0.0, offset), (r, g, bl + d, 0.0, offset), (0.0, 0.0, 0.0, 1.0, 0.0)))


def add_texture(patch: ObjectPatch, photometry: Photometry, rng: np.random.Generator) -> None:
    """Noise, then defocus blur (of colour and alpha), in place, at the pasted size."""
    rgba = patch.rgba
    if photometry.noise_std > 0:
        noise = rng.standard_normal(rgba.shape[:2] + (3,), dtype=np.float32)
        noise *= photometry.noise_std
        noise += rgba[..., :3]
        rgba[..., :3] = np.clip(noise + 0.5, 0, 255).astype(np.uint8)
    if photometry.blur_sigma > 0:
        cv2.GaussianBlur(rgba, (0, 0), photometry.blur_sigma, dst=rgba)


def lerp(low_high: tuple[float, float], u: float) -> float:
    """The point ``u`` (in [0, 1)) of the way from low to high."""
    return low_high[0] + (low_high[1] - low_high[0]) * u
