"""Per-object augmentation: geometry (scale, aspect, flip, rotation) and photometry (colour,
blur, noise).

Objects travel as *premultiplied* float32 colour plus alpha. Resizing, rotating and blurring
premultiplied colour keeps the colour of fully transparent pixels (whatever surrounded the object
in its source photo) from bleeding into the object's edge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from synthgen.compositor.config import CompositeConfig

#: Alpha at or above this is the object, for masks, boxes and the occlusion rule.
MASK_THRESHOLD = 0.5

_GREY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass
class ObjectPatch:
    """An augmented object ready to paste, trimmed to its visible extent.

    ``premul`` is (h, w, 3) float32 colour premultiplied by ``alpha`` (h, w) in [0, 1];
    ``mask`` is ``alpha >= MASK_THRESHOLD`` taken after the geometric transform, i.e. before
    feathering or motion blur: it is the object's extent and defines its box.
    """

    premul: np.ndarray
    alpha: np.ndarray
    mask: np.ndarray

    @property
    def height(self) -> int:
        return int(self.alpha.shape[0])

    @property
    def width(self) -> int:
        return int(self.alpha.shape[1])


def rotated_extent(width: float, height: float, degrees: float) -> tuple[float, float]:
    """Width and height of the axis-aligned box around a ``width x height`` rectangle rotated by
    ``degrees``."""
    rad = math.radians(degrees)
    c, s = abs(math.cos(rad)), abs(math.sin(rad))
    return width * c + height * s, width * s + height * c


def transform_geometry(rgba: np.ndarray, box_w: float, box_h: float, flip: bool, degrees: float) -> ObjectPatch | None:
    """Resize a cut-out to ``box_w x box_h`` (before rotation), flip it, rotate it about its
    centre (the canvas grows to hold it), and trim to the pixels with any alpha.

    Returns None when nothing of the object survives (it became smaller than a pixel).
    """
    alpha = rgba[..., 3].astype(np.float32) * (1.0 / 255.0)
    stack = np.empty(rgba.shape, dtype=np.float32)
    np.multiply(rgba[..., :3], alpha[..., None], out=stack[..., :3], casting="unsafe")
    stack[..., 3] = alpha
    out_w, out_h = max(1, int(round(box_w))), max(1, int(round(box_h)))
    shrinking = out_w <= rgba.shape[1] and out_h <= rgba.shape[0]
    stack = cv2.resize(stack, (out_w, out_h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    if stack.ndim == 2:  # cv2 drops the channel axis of 1-pixel-wide results
        stack = stack.reshape(out_h, out_w, 4)
    if flip:
        stack = stack[:, ::-1]
    if degrees:
        new_w, new_h = rotated_extent(out_w, out_h, degrees)
        new_w, new_h = int(math.ceil(new_w)), int(math.ceil(new_h))
        matrix = cv2.getRotationMatrix2D((out_w / 2.0, out_h / 2.0), degrees, 1.0)
        matrix[0, 2] += (new_w - out_w) / 2.0
        matrix[1, 2] += (new_h - out_h) / 2.0
        stack = cv2.warpAffine(
            np.ascontiguousarray(stack), matrix, (new_w, new_h), flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0),
        )
    alpha = stack[..., 3]
    rows = np.flatnonzero(alpha.max(axis=1) > 1e-3)
    cols = np.flatnonzero(alpha.max(axis=0) > 1e-3)
    if rows.size == 0:
        return None
    sl = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    alpha = np.ascontiguousarray(alpha[sl])
    mask = alpha >= MASK_THRESHOLD
    if not mask.any():
        return None
    premul = np.ascontiguousarray(stack[sl][..., :3])
    return ObjectPatch(premul=premul, alpha=alpha, mask=mask)


def jitter_photometry(patch: ObjectPatch, rng: np.random.Generator, config: CompositeConfig) -> None:
    """Colour jitter, blur and noise, in place. Every draw is made whether or not it is used, so
    that one setting never shifts the random stream of the others."""
    brightness = rng.uniform(*config.brightness)
    contrast = rng.uniform(*config.contrast)
    saturation = rng.uniform(*config.saturation)
    do_blur = rng.random() < config.blur
    sigma = rng.uniform(*config.blur_sigma)
    do_noise = rng.random() < config.noise
    noise_std = rng.uniform(*config.noise_std)
    noise_seed = int(rng.integers(2**63))

    premul, alpha = patch.premul, patch.alpha
    if saturation != 1.0 or contrast != 1.0:
        grey = premul @ _GREY_WEIGHTS  # premultiplied grey
        if saturation != 1.0:
            premul *= saturation
            premul += (1.0 - saturation) * grey[..., None]
        if contrast != 1.0:
            mean_grey = float(grey.sum() / max(alpha.sum(), 1e-6))
            premul *= contrast
            premul += ((1.0 - contrast) * mean_grey) * alpha[..., None]
    if brightness != 1.0:
        premul *= brightness
    if do_noise and noise_std > 0:
        noise = np.random.default_rng(noise_seed).standard_normal(premul.shape, dtype=np.float32)
        noise *= noise_std
        noise *= alpha[..., None]
        premul += noise
    # Premultiplied colour lives in [0, 255 * alpha].
    np.clip(premul, 0.0, None, out=premul)
    np.minimum(premul, 255.0 * alpha[..., None], out=premul)
    if do_blur and sigma > 0.05:
        cv2.GaussianBlur(premul, (0, 0), sigma, dst=premul)
        cv2.GaussianBlur(alpha, (0, 0), sigma, dst=alpha)
