"""GrabCut, the model-free segmenter for plain object-centric photos, and ``auto``, which picks
the best mask an image offers (its alpha, its paired mask file, else GrabCut)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import cv2
import numpy as np

from synthgen.errors import InputError
from synthgen.segmenters.basic import AlphaSegmenter, LoopBatch, MaskSegmenter, Unsegmentable, has_alpha
from synthgen.segmenters.cleaning import clean_mask


def _option(value: Any, name: str, kind: type, low: float, high: float) -> Any:
    """``value`` converted to ``kind`` (options may arrive as CLI strings) and checked to lie in
    ``[low, high]``; an InputError naming the option otherwise."""
    try:
        converted = kind(value)
    except (TypeError, ValueError):
        raise InputError(f"grabcut option {name} must be a {kind.__name__}, got {value!r}") from None
    if kind is int and converted != float(value):
        raise InputError(f"grabcut option {name} must be a whole number, got {value!r}")
    if not low <= converted <= high:
        raise InputError(f"grabcut option {name} must be between {low} and {high}, got {value!r}")
    return converted


def _grabcut(work: np.ndarray, labels: np.ndarray, iterations: int) -> np.ndarray:
    """Run GrabCut from the initial ``labels`` (GC_* values); the ``bool`` foreground."""
    bgd_model = np.zeros((1, 65), dtype=np.float64)
    fgd_model = np.zeros((1, 65), dtype=np.float64)
    cv2.setRNGSeed(0)  # GrabCut's k-means draws from OpenCV's global generator
    try:
        cv2.grabCut(work, labels, None, bgd_model, fgd_model, iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        raise Unsegmentable("grabcut failed") from None
    return (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)


@dataclass(frozen=True)
class GrabCutSegmenter(LoopBatch):
    """OpenCV GrabCut initialised with the image rectangle inset by ``margin`` (a fraction of
    each side): outside is background, inside probably object.

    Object-centric images have the object in the middle, so when that initialisation loses the
    centre (GrabCut collapses to nothing, or keeps a fragment off-centre: typical of tight
    crops, where the thin border ring is itself mostly object), it is run again with a centred
    ellipse of semi-axes ``core`` (fractions of the sides) marked as certainly object; ``core=0``
    turns that retry off.

    GrabCut is poor on tiny images (its colour models see too few pixels) and slow on large
    ones, so the image is resized for segmentation to have its short side at least
    ``min_side`` and its long side at most ``max_side``; the mask is resized back, which gives
    it soft edges. Deterministic: OpenCV's random generator is reseeded for every image.

    An image whose colours vary less than ``min_contrast`` (the standard deviation of its most
    varied channel, of 255) is rejected as flat: there is nothing to cut out, and the centre prior would otherwise
    turn a blank image into an ellipse-shaped "object".
    """

    margin: float = 0.05
    iterations: int = 5
    core: float = 0.25
    min_side: int = 64
    max_side: int = 256
    min_contrast: float = 4.0

    name: ClassVar[str] = "grabcut"
    threshold: ClassVar[float] = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "margin", _option(self.margin, "margin", float, 0.0, 0.45))
        object.__setattr__(self, "iterations", _option(self.iterations, "iterations", int, 1, 100))
        object.__setattr__(self, "core", _option(self.core, "core", float, 0.0, 0.45))
        object.__setattr__(self, "min_side", _option(self.min_side, "min_side", int, 8, 4096))
        object.__setattr__(self, "max_side", _option(self.max_side, "max_side", int, self.min_side, 8192))
        object.__setattr__(self, "min_contrast", _option(self.min_contrast, "min_contrast", float, 0.0, 128.0))

    def settings(self) -> dict[str, Any]:
        return {"margin": self.margin, "iterations": self.iterations, "core": self.core,
                "min_side": self.min_side, "max_side": self.max_side, "min_contrast": self.min_contrast}

    def _work_scale(self, h: int, w: int) -> float:
        if max(h, w) > self.max_side:
            return self.max_side / max(h, w)
        if min(h, w) < self.min_side:
            return min(self.min_side / min(h, w), self.max_side / max(h, w))
        return 1.0

    def segment(self, image: np.ndarray, given_mask: np.ndarray | None) -> np.ndarray:
        # GrabCut's colour models are invariant to the channel order, so RGB needs no BGR swap.
        rgb = np.ascontiguousarray(image[..., :3])
        if cv2.meanStdDev(rgb)[1].max() < self.min_contrast:
            raise Unsegmentable("flat image")
        h, w = rgb.shape[:2]
        scale = self._work_scale(h, w)
        if scale != 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            work = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        else:
            work = rgb
        wh, ww = work.shape[:2]
        # At least one pixel outside the rectangle: GrabCut needs background samples.
        dx, dy = max(1, round(ww * self.margin)), max(1, round(wh * self.margin))
        if ww - 2 * dx < 1 or wh - 2 * dy < 1:
            raise Unsegmentable("too small for grabcut")
        initial = np.full((wh, ww), cv2.GC_BGD, dtype=np.uint8)
        initial[dy:wh - dy, dx:ww - dx] = cv2.GC_PR_FGD
        foreground = _grabcut(work, initial.copy(), self.iterations)
        if self.core > 0 and not clean_mask(foreground)[wh // 2, ww // 2]:
            axes = (max(1, round(ww * self.core)), max(1, round(wh * self.core)))
            cv2.ellipse(initial, (ww // 2, wh // 2), axes, 0, 0, 360, int(cv2.GC_FGD), -1)
            foreground = _grabcut(work, initial, self.iterations)
        mask = foreground.astype(np.float32)
        if (wh, ww) != (h, w):
            mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_AREA if scale > 1 else cv2.INTER_LINEAR)
        return np.clip(mask, 0.0, 1.0)


@dataclass(frozen=True)
class AutoSegmenter(LoopBatch):
    """Per image, the best mask it offers: its alpha channel if that is not fully opaque, else
    its paired mask file if there is one, else GrabCut (options as for ``grabcut``)."""

    margin: float = 0.05
    iterations: int = 5
    core: float = 0.25
    min_side: int = 64
    max_side: int = 256
    min_contrast: float = 4.0
    grabcut: GrabCutSegmenter = field(init=False, repr=False, compare=False)

    name: ClassVar[str] = "auto"
    threshold: ClassVar[float] = 0.5

    def __post_init__(self) -> None:
        grabcut = GrabCutSegmenter(self.margin, self.iterations, self.core, self.min_side, self.max_side, self.min_contrast)
        object.__setattr__(self, "grabcut", grabcut)

    def settings(self) -> dict[str, Any]:
        return self.grabcut.settings()

    def segment(self, image: np.ndarray, given_mask: np.ndarray | None) -> np.ndarray:
        if has_alpha(image):
            return AlphaSegmenter().segment(image, given_mask)
        if given_mask is not None:
            return MaskSegmenter().segment(image, given_mask)
        return self.grabcut.segment(image, None)
