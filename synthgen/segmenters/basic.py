"""The segmenter contract, and the segmenters that need no model: ``none``, ``alpha``, ``mask``.

A segmenter turns one object-centric image into a soft object mask. It runs once per object
when the object pool is built (see :mod:`synthgen.pool`), never while compositing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Protocol, Sequence, runtime_checkable

import numpy as np

from synthgen.errors import InputError


class Unsegmentable(InputError):
    """This segmenter cannot segment this image at all (no alpha channel, no paired mask, ...).

    ``reason`` is a short phrase the object pool counts rejections by; ``str(err)`` says the same
    for a person calling a segmenter directly."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@runtime_checkable
class Segmenter(Protocol):
    """Cuts the object out of an object-centric image.

    ``image`` is ``uint8`` RGB ``(H, W, 3)`` or RGBA ``(H, W, 4)``; ``given_mask`` is the paired
    mask file's content (``float32`` ``(H', W')`` in [0, 1]) or ``None``. The result is a
    ``float32`` ``(H, W)`` soft mask in [0, 1]. The pool binarises it at ``threshold``, keeps
    the largest component and fills holes (:mod:`synthgen.segmenters.cleaning`), so a segmenter
    need not clean up after itself. An image the segmenter cannot handle raises
    :class:`Unsegmentable`.
    """

    name: str
    threshold: float

    def settings(self) -> dict[str, Any]:
        """The options that shape this segmenter's masks, JSON-able (recorded in the pool)."""
        ...

    def segment(self, image: np.ndarray, given_mask: np.ndarray | None) -> np.ndarray: ...

    def segment_batch(
        self, images: Sequence[np.ndarray], given_masks: Sequence[np.ndarray | None]
    ) -> list[np.ndarray]:
        """One mask per image. Raises :class:`Unsegmentable` if any image cannot be segmented;
        the caller then segments that batch one image at a time to find which."""
        ...


class LoopBatch:
    """``segment_batch`` for segmenters with no batched implementation: one image at a time."""

    segment: Callable[[np.ndarray, np.ndarray | None], np.ndarray]  # defined by the subclass

    def segment_batch(
        self, images: Sequence[np.ndarray], given_masks: Sequence[np.ndarray | None]
    ) -> list[np.ndarray]:
        return [self.segment(image, mask) for image, mask in zip(images, given_masks, strict=True)]


def has_alpha(image: np.ndarray) -> bool:
    """True when ``image`` is RGBA and its alpha is not fully opaque everywhere (a fully opaque
    alpha carries no shape: it is what a PNG exporter writes for an ordinary photo)."""
    return image.ndim == 3 and image.shape[2] == 4 and bool((image[..., 3] < 255).any())


@dataclass(frozen=True)
class NoneSegmenter(LoopBatch):
    """Naive pasting, the paper's ablation: the whole frame is the object (a mask of ones).
    The pool skips its quality checks, since the mask is the frame by definition."""

    name: ClassVar[str] = "none"
    threshold: ClassVar[float] = 0.5

    def settings(self) -> dict[str, Any]:
        return {}

    def segment(self, image: np.ndarray, given_mask: np.ndarray | None) -> np.ndarray:
        return np.ones(image.shape[:2], dtype=np.float32)


@dataclass(frozen=True)
class AlphaSegmenter(LoopBatch):
    """The image's own alpha channel is the mask (cut-outs exported as RGBA PNG)."""

    name: ClassVar[str] = "alpha"
    threshold: ClassVar[float] = 0.5

    def settings(self) -> dict[str, Any]:
        return {}

    def segment(self, image: np.ndarray, given_mask: np.ndarray | None) -> np.ndarray:
        if image.ndim != 3 or image.shape[2] != 4:
            raise Unsegmentable("no alpha channel")
        return image[..., 3].astype(np.float32) / 255.0


@dataclass(frozen=True)
class MaskSegmenter(LoopBatch):
    """The paired mask file is the mask (``masks/<stem>.png`` or ``<stem>_mask.png``)."""

    name: ClassVar[str] = "mask"
    threshold: ClassVar[float] = 0.5

    def settings(self) -> dict[str, Any]:
        return {}

    def segment(self, image: np.ndarray, given_mask: np.ndarray | None) -> np.ndarray:
        if given_mask is None:
            raise Unsegmentable("no mask file")
        if given_mask.shape != image.shape[:2]:
            # Resizing could silently misalign a mask made for another crop of the image.
            raise Unsegmentable("mask size differs from image")
        return np.clip(given_mask.astype(np.float32, copy=False), 0.0, 1.0)
