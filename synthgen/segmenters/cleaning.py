"""Turning a segmenter's raw soft mask into one clean object, and judging whether it is usable.

Every segmenter's output goes through :func:`clean_soft_mask` before it becomes a cut-out:
binarise, keep the largest connected component (segmenters leave specks and fragments), fill its
holes (a face's eyes or a car's windows are part of the object, not background). Then
:class:`MaskQuality` rejects masks that are empty, tiny, nearly the whole frame, or glued to the
frame border (the object is cut off, or the segmenter took the background).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from synthgen.errors import InputError


def clean_mask(soft: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Binarise ``soft`` (``(H, W)`` floats in [0, 1]) at ``soft >= threshold``, keep the largest
    8-connected component and fill its holes. Returns a ``bool`` ``(H, W)`` mask (all ``False``
    when nothing reaches the threshold). Ties between equally large components go to the one
    found first in row-major order, so the result is deterministic."""
    binary = (np.asarray(soft) >= threshold).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count <= 1:  # label 0 is the background
        return np.zeros(binary.shape, dtype=bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return _fill_holes(labels == largest)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Mark as foreground every background pixel that cannot reach the frame border.

    The inverted mask is padded with one ring of background so that a single flood fill from a
    corner reaches all background connected to the border, even when the object splits the
    border background into several pieces. Flood fill is 4-connected, the dual of the
    8-connected foreground, so a diagonal gap in the object's outline does not leak."""
    h, w = mask.shape
    background = np.ones((h + 2, w + 2), dtype=np.uint8)
    background[1:-1, 1:-1] = ~mask
    flood_mask = np.zeros((h + 4, w + 4), dtype=np.uint8)  # floodFill wants 2 px larger
    cv2.floodFill(background, flood_mask, (0, 0), 2, flags=4)
    return background[1:-1, 1:-1] != 2


def clean_soft_mask(soft: np.ndarray, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """The soft variant of :func:`clean_mask`, used for the cut-out's alpha.

    Returns ``(alpha, keep)``: ``keep`` is ``clean_mask(soft, threshold)``; ``alpha`` is
    ``float32`` ``(H, W)``: the original soft value inside the kept component (so antialiased
    alpha and soft network masks keep their edges), 1 in filled holes, 0 everywhere else."""
    soft = np.clip(np.asarray(soft, dtype=np.float32), 0.0, 1.0)
    keep = clean_mask(soft, threshold)
    alpha = np.where(keep, soft, np.float32(0.0))
    alpha[keep & (soft < threshold)] = 1.0  # filled holes are solid object
    return alpha, keep


def border_mass(mask: np.ndarray) -> float:
    """Fraction of the 1-pixel frame border of ``mask`` that is foreground."""
    frame = np.zeros(mask.shape, dtype=bool)
    frame[0, :] = frame[-1, :] = frame[:, 0] = frame[:, -1] = True
    return float(np.count_nonzero(mask[frame])) / float(np.count_nonzero(frame))


@dataclass(frozen=True)
class MaskQuality:
    """Bounds a cleaned object mask must meet to enter the object pool.

    ``min_area`` / ``max_area`` bound the mask's area as a fraction of the whole image;
    ``max_border`` bounds :func:`border_mass`. Defaults follow X-Paste's pool filter (area
    0.05-0.95) plus a border test that catches masks that took the background.
    """

    min_area: float = 0.05
    max_area: float = 0.95
    max_border: float = 0.5

    def __post_init__(self) -> None:
        for field_name in ("min_area", "max_area", "max_border"):
            value = getattr(self, field_name)
            if not 0.0 <= value <= 1.0:
                raise InputError(f"mask quality {field_name} must be a fraction in [0, 1], got {value}")
        if self.min_area > self.max_area:
            raise InputError(
                f"mask quality min_area ({self.min_area}) is larger than max_area ({self.max_area}); "
                "every mask would be rejected"
            )

    def check(self, mask: np.ndarray) -> str | None:
        """The reason to reject the ``bool`` mask ("empty", "too small", "too large",
        "touches border"), or ``None`` when it is acceptable."""
        area = float(np.count_nonzero(mask)) / float(mask.size)
        if area == 0.0:
            return "empty"
        if area < self.min_area:
            return "too small"
        if area > self.max_area:
            return "too large"
        if border_mass(mask) > self.max_border:
            return "touches border"
        return None
