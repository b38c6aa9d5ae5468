"""Background photos: where they come from (a folder, Pascal VOC, a COCO file) and the pool of
them decoded and sized for the output.

``resolve_backgrounds("voc", ["person"])`` -> :class:`BackgroundSource` (an ordered list of
files); ``cached_background_pool(source, 512, 512, "crop")`` -> :class:`BackgroundPool`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from synthgen.backgrounds.coco import coco_source
from synthgen.backgrounds.folder import BackgroundSource, folder_source
from synthgen.backgrounds.pool import (
    FITS,
    BackgroundPool,
    build_background_pool,
    cached_background_pool,
    fit_image,
    fitted_size,
)
from synthgen.backgrounds.labels import BackgroundLabels, SourceLabels
from synthgen.backgrounds.voc import VOC_CLASSES, voc_source
from synthgen.backgrounds.yolo import yolo_source
from synthgen.errors import InputError
from synthgen.registry import Registry

SourceResolver = Callable[[Path | None, Sequence[str]], BackgroundSource]

BACKGROUND_KINDS: Registry[SourceResolver] = Registry("background source")
BACKGROUND_KINDS.register("voc", help="Pascal VOC devkit: voc:PATH, or bare `voc` for `synthgen download voc`'s copy")(
    voc_source
)
BACKGROUND_KINDS.register("coco", help="images of a COCO annotation file: coco:PATH.json")(coco_source)
BACKGROUND_KINDS.register("yolo", help="train images of a YOLO folder: yolo:DIR (holding data.yaml)")(yolo_source)
BACKGROUND_KINDS.register("folder", help="all images in a folder, recursively: folder:PATH or just PATH")(
    folder_source
)

# Kinds that mean a downloadable dataset when given without a path.
_BARE_KINDS = ("voc",)
# Kinds whose annotations can be kept (--keep-annotations).
LABELLED_KINDS = ("coco", "yolo")


def background_kind(spec: str) -> tuple[str, Path | None]:
    """The kind (a :data:`BACKGROUND_KINDS` name) and path a ``--backgrounds`` value names; see
    :func:`resolve_backgrounds`. ``folder`` is the kind without class annotations."""
    spec = spec.strip()
    if not spec:
        raise InputError("--backgrounds is empty; give a folder, voc, voc:PATH or coco:PATH.json")
    kind, sep, rest = spec.partition(":")
    if sep and kind.lower() in BACKGROUND_KINDS:
        return kind.lower(), (Path(rest) if rest else None)
    if spec.lower() in _BARE_KINDS:
        return spec.lower(), None
    if spec.lower().endswith(".json"):
        return "coco", Path(spec)
    return "folder", Path(spec)


def resolve_backgrounds(
    spec: str, exclude_classes: Sequence[str] = (), keep_annotations: bool = False, image_ids: Sequence[int] = ()
) -> BackgroundSource:
    """Turn a user's ``--backgrounds`` value into a :class:`BackgroundSource`.

    ``voc`` (the downloaded Pascal VOC) | ``voc:PATH`` | ``coco:PATH.json`` or any ``*.json``
    (COCO) | ``folder:PATH`` or a plain folder / image path. ``exclude_classes`` drops images
    that show those classes, which needs annotations (voc, coco or yolo). A folder that happens
    to be called ``voc`` is written ``./voc``. ``keep_annotations`` (coco and yolo) attaches the
    images' own objects; ``image_ids`` (coco) takes only those images.
    """
    exclude = [name.strip() for name in exclude_classes if name.strip()]
    kind, target = background_kind(spec)
    if keep_annotations and kind not in LABELLED_KINDS:
        raise InputError(
            f"--keep-annotations needs labelled backgrounds (coco:FILE.json or yolo:DIR); {spec} is a {kind} source"
        )
    if image_ids and kind != "coco":
        raise InputError(f"choosing background images by id needs coco:FILE.json backgrounds, not {spec}")
    extra: dict = {"keep_annotations": True} if keep_annotations else {}
    if image_ids:
        extra["image_ids"] = tuple(image_ids)
    return BACKGROUND_KINDS.get(kind)(target, exclude, **extra)


__all__ = [
    "BACKGROUND_KINDS",
    "background_kind",
    "FITS",
    "VOC_CLASSES",
    "BackgroundLabels",
    "BackgroundPool",
    "BackgroundSource",
    "build_background_pool",
    "cached_background_pool",
    "coco_source",
    "fit_image",
    "fitted_size",
    "folder_source",
    "resolve_backgrounds",
    "SourceLabels",
    "yolo_source",
    "voc_source",
]
