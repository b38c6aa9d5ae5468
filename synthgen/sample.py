"""The unit of output: one composited image and its boxes.

A worker renders a :class:`Sample`, encodes it into an :class:`EncodedSample` (JPEG bytes and
plain-Python annotations, cheap to send between processes), and the writer stores that.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def sample_key(index: int) -> str:
    """The name of sample ``index`` in every format: dot-free (WebDataset splits keys on the
    first dot), zero-padded so that names sort in index order."""
    return f"{index:010d}"


@dataclass
class Annotation:
    """One pasted object as it is visible in the final image.

    ``bbox`` is COCO ``[x, y, w, h]`` in pixels: the extent of ``mask`` (the object's visible
    pixels after occlusion by later objects and truncation at the border), so a box covers
    whole pixels: ``x = min col``, ``w = max col + 1 - min col``. ``area`` is ``mask.sum()``.
    """

    bbox: tuple[float, float, float, float]
    category_id: int  # 1-based COCO category id
    area: float
    mask: np.ndarray | None = None  # (H, W) bool visible mask; None when masks were not kept
    visible_fraction: float = 1.0  # visible pixels / pixels of the whole pasted object
    #: The extent of the visible pixels (``bbox`` unless the amodal box was chosen as main box).
    visible_bbox: tuple[float, float, float, float] | None = None
    #: The extent of the whole object's mask, hidden parts included, not clipped to the image.
    amodal_bbox: tuple[float, float, float, float] | None = None
    #: A crowd region kept from a labelled background (COCO ``iscrowd`` 1): an ignore region.
    iscrowd: bool = False

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        x, y, w, h = self.bbox
        return (x, y, x + w, y + h)


@dataclass
class Sample:
    index: int
    image: np.ndarray  # (H, W, 3) uint8 RGB
    annotations: list[Annotation] = field(default_factory=list)
    skipped_objects: int = 0  # objects drawn for this image that found no valid placement

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass
class EncodedAnnotation:
    bbox: list[float]  # COCO [x, y, w, h]
    category_id: int
    area: float
    segmentation: dict | None = None  # COCO RLE ({"size": [h, w], "counts": str}) when masks are kept
    #: With --visibility (else None): visible / whole-object pixels, and both boxes (COCO xywh).
    visibility: float | None = None
    visible_bbox: list[float] | None = None
    amodal_bbox: list[float] | None = None
    iscrowd: bool = False  # a kept crowd region (COCO iscrowd 1)


@dataclass
class EncodedSample:
    index: int
    key: str
    width: int
    height: int
    jpeg: bytes
    annotations: list[EncodedAnnotation]
    skipped_objects: int = 0
