"""The annotations a labelled background image already has (a COCO file, a YOLO folder), kept
when objects are pasted onto it (``--keep-annotations``): copy-paste augmentation of a real set.

A source reads them once as :class:`SourceLabels` (boxes and outlines normalised to the image,
so they follow the image through the background pool's resize); :class:`BackgroundLabels` binds
them to a built background pool and the object pool's classes, and rasterises each image's
objects at the pool's size on first use (per process), for the compositor: every object's mask
(its outline when the file has one, RLE or polygon, else its filled box) at the bottom of the
scene, updated under occlusion by what is pasted on top. COCO crowd regions (``iscrowd`` 1) are
kept as crowd regions (see synthgen.compositor.render: ``Compositor._keep_labels``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from synthgen.backgrounds.folder import class_key
from synthgen.compositor.augment import ObjectPatch


@dataclass(frozen=True)
class SourceObject:
    """One annotated object of a background image, in coordinates normalised to the image."""

    category: str  # class name
    box: tuple[float, float, float, float]  # x, y, w, h as fractions of the image's width, height
    polygons: tuple[tuple[float, ...], ...] = ()  # outline(s): x0, y0, x1, y1, ... normalised
    rle: dict | None = None  # a COCO RLE of the image's full size (compressed or not)
    #: A COCO crowd region (``iscrowd`` 1): an area of many instances, not one object.
    crowd: bool = False


@dataclass(frozen=True)
class SourceLabels:
    """Every image's annotated objects, keyed by ``str(path)`` of the image file."""

    categories: tuple[str, ...]  # the file's class names, in its category order
    objects: dict[str, tuple[SourceObject, ...]]


@dataclass(frozen=True)
class KeptObject:
    """An annotated object of a background, rasterised at the background pool's size."""

    class_id: int  # 0-based output class
    origin: tuple[int, int]  # top-left of ``patch.mask`` in the fitted background image
    patch: ObjectPatch  # mask and its area; rgba is None
    crowd: bool = False  # a COCO crowd region: an ignore region, kept as one with iscrowd 1


class BackgroundLabels:
    """:class:`SourceLabels` of a background pool's images, in the output's class space: class
    names equal to an object class (compared by :func:`class_key`) share its id; the others
    follow the object classes as ``extra_classes``."""

    def __init__(self, labels: SourceLabels, pool, object_classes: Sequence[str]) -> None:
        ids = {class_key(name): i for i, name in enumerate(object_classes)}
        self.extra_classes: list[str] = []
        self._class_of: dict[str, int] = {}
        for name in labels.categories:
            key = class_key(name)
            if key not in ids:
                ids[key] = len(object_classes) + len(self.extra_classes)
                self.extra_classes.append(name)
            self._class_of[name] = ids[key]
        # Matched by real path: a cached pool keeps the paths it was first built from, which may
        # name the same files another way (a symlinked folder, a relative path).
        by_file = {os.path.realpath(path): objects for path, objects in labels.objects.items()}
        self._objects = [by_file.get(os.path.realpath(pool.source_path(i)), ()) for i in range(len(pool))]
        self._pool = pool
        self._rasterised: dict[int, list[KeptObject]] = {}
        self.count = sum(len(objects) for objects in self._objects)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_rasterised"] = {}  # rebuilt on use in each process
        return state

    def objects(self, background: int) -> list[KeptObject]:
        """The kept objects of background ``background`` (rasterised once per process)."""
        kept = self._rasterised.get(background)
        if kept is None:
            height, width = self._pool[background].shape[:2]
            kept = [k for k in (self._rasterise(o, width, height) for o in self._objects[background]) if k is not None]
            self._rasterised[background] = kept
        return kept

    def _rasterise(self, obj: SourceObject, width: int, height: int) -> KeptObject | None:
        mask = object_mask(obj, width, height)
        if mask is None:
            x, y, w, h = obj.box
            x0, y0 = min(int(round(x * width)), width - 1), min(int(round(y * height)), height - 1)
            x1, y1 = max(int(round((x + w) * width)), x0 + 1), max(int(round((y + h) * height)), y0 + 1)
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
            crop = np.ones((y1 - y0, x1 - x0), dtype=bool)
        else:
            x0, y0, w, h = cv2.boundingRect(mask.view(np.uint8))
            if w == 0:
                return None  # smaller than a pixel at this size
            crop = np.ascontiguousarray(mask[y0 : y0 + h, x0 : x0 + w])
        patch = ObjectPatch(rgba=None, mask=crop, extent=(0, 0, crop.shape[1], crop.shape[0]), area=int(np.count_nonzero(crop)))
        return KeptObject(self._class_of[obj.category], (x0, y0), patch, obj.crowd)


def object_mask(obj: SourceObject, width: int, height: int) -> np.ndarray | None:
    """The object's outline as a ``height x width`` bool mask (pycocotools), None when the
    annotation has only a box."""
    from pycocotools import mask as mask_utils

    if obj.polygons:
        scaled = [(np.asarray(p, dtype=np.float64).reshape(-1, 2) * (width, height)).ravel().tolist() for p in obj.polygons]
        rles = mask_utils.frPyObjects(scaled, height, width)
        return mask_utils.decode(mask_utils.merge(rles)).astype(bool)
    if obj.rle is not None:
        rle = obj.rle
        h, w = (int(v) for v in rle["size"])
        if isinstance(rle["counts"], list):
            rle = mask_utils.frPyObjects(rle, h, w)
        elif isinstance(rle["counts"], str):
            rle = {"size": [h, w], "counts": rle["counts"].encode()}
        full = mask_utils.decode(rle)
        if (h, w) == (height, width):
            return full.astype(bool)
        shrinking = width <= w and height <= h
        resized = cv2.resize(full * 255, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
        return resized >= 128
    return None
