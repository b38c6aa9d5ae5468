"""A COCO annotation file as a background source, optionally without images that show given
categories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from synthgen.backgrounds.folder import BackgroundSource, class_key
from synthgen.backgrounds.labels import SourceLabels, SourceObject
from synthgen.errors import InputError

# How many of the first images are probed to find the folder that file names are relative to.
_PROBE = 10


def coco_source(
    json_path: Path | None,
    exclude_classes: Sequence[str] = (),
    keep_annotations: bool = False,
    image_ids: Sequence[int] = (),
) -> BackgroundSource:
    """The images listed in a COCO annotation file, in file order, minus those with any
    annotation of a category named in ``exclude_classes``; only ``image_ids`` when given (a
    few-shot subset). ``keep_annotations`` attaches every image's objects, crowd regions
    (``iscrowd`` 1) marked as such, as :class:`SourceLabels`.

    ``file_name`` is taken relative to the first folder that holds the first images among: the
    JSON's folder, its ``images/`` subfolder, a folder named like the JSON's stem (``train2017``
    for ``train2017.json`` or ``instances_train2017.json``) beside it or in ``images/``, and the
    same places one level up (for the official ``annotations/instances_*.json`` layout).
    """
    if json_path is None:
        raise InputError("coco: needs the annotation file, e.g. --backgrounds coco:/data/coco/train2017.json")
    json_path = json_path.expanduser()
    data = _load(json_path)
    images = data["images"]
    categories = data.get("categories") or []
    excluded_ids = _excluded_category_ids(json_path, categories, exclude_classes)
    excluded_images = {
        ann.get("image_id") for ann in data.get("annotations") or [] if ann.get("category_id") in excluded_ids
    }

    if image_ids:
        wanted = {int(i) for i in image_ids}
        images = [entry for entry in images if isinstance(entry, dict) and entry.get("id") in wanted]
        if len(images) != len(wanted):
            raise InputError(f"{json_path}: {len(wanted) - len(images)} of the {len(wanted)} chosen image ids are not in the file")
    names = [_file_name(json_path, entry, i) for i, entry in enumerate(images)]
    root = _image_root(json_path, names)
    paths: list[Path] = []
    kept: list[dict] = []
    dropped = missing = 0
    for entry, name in zip(images, names):
        if entry.get("id") in excluded_images:
            dropped += 1
            continue
        path = root / name
        if not path.is_file():
            missing += 1
            continue
        paths.append(path)
        kept.append(entry)

    counts = f"{len(images)} listed, {missing} missing"
    if exclude_classes:
        counts += f", {dropped} showing {', '.join(exclude_classes)}"
    where = f"COCO {json_path} (images in {root})"
    if not paths:
        raise InputError(f"{where}: no background images left ({counts})")
    labels = _labels(json_path, data, kept, paths) if keep_annotations else None
    return BackgroundSource(tuple(paths), f"{where}: {len(paths)} images ({counts})", labels)


def _labels(json_path: Path, data: dict[str, Any], images: list[dict], paths: list[Path]) -> SourceLabels:
    """The annotations of ``images`` (found at ``paths``), normalised to each image."""
    categories = [c for c in data.get("categories") or [] if isinstance(c, dict)]
    name_of = {c.get("id"): str(c.get("name", c.get("id"))) for c in categories}
    by_image: dict[Any, list[dict]] = {}
    for ann in data.get("annotations") or []:
        if isinstance(ann, dict):
            by_image.setdefault(ann.get("image_id"), []).append(ann)
    objects: dict[str, tuple[SourceObject, ...]] = {}
    for entry, path in zip(images, paths):
        width, height = entry.get("width"), entry.get("height")
        anns = by_image.get(entry.get("id"), [])
        if anns and not (isinstance(width, (int, float)) and isinstance(height, (int, float)) and width > 0 and height > 0):
            raise InputError(f"{json_path}: image {entry.get('id')} has no width and height, which kept annotations need")
        found = []
        for ann in anns:
            try:
                x, y, w, h = (float(v) for v in ann["bbox"])
                category = name_of[ann["category_id"]]
            except (KeyError, TypeError, ValueError):
                raise InputError(
                    f"{json_path}: annotation {ann.get('id')} needs a bbox [x, y, w, h] and a category_id listed in categories"
                ) from None
            segmentation = ann.get("segmentation")
            polygons: tuple[tuple[float, ...], ...] = ()
            rle = None
            if isinstance(segmentation, list):
                polygons = tuple(
                    tuple(float(v) / (width if k % 2 == 0 else height) for k, v in enumerate(p))
                    for p in segmentation if isinstance(p, list) and len(p) >= 6
                )
            elif isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
                rle = segmentation
            found.append(SourceObject(category, (x / width, y / height, w / width, h / height), polygons, rle, bool(ann.get("iscrowd"))))
        objects[str(path)] = tuple(found)
    return SourceLabels(tuple(name_of.values()), objects)


def _load(json_path: Path) -> dict[str, Any]:
    if not json_path.is_file():
        raise InputError(f"COCO annotation file {json_path} does not exist")
    try:
        data = json.loads(json_path.read_bytes())
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read COCO annotation file {json_path}: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InputError(f"{json_path} is not a COCO annotation file (no 'images' list)")
    if not data["images"]:
        raise InputError(f"{json_path} lists no images")
    return data


def _file_name(json_path: Path, entry: Any, i: int) -> str:
    name = entry.get("file_name") if isinstance(entry, dict) else None
    if not isinstance(name, str) or not name:
        raise InputError(f"{json_path}: images[{i}] has no file_name")
    return name


def _excluded_category_ids(json_path: Path, categories: list[dict], exclude_classes: Sequence[str]) -> set[int]:
    by_key: dict[str, list[int]] = {}
    for cat in categories:
        by_key.setdefault(class_key(str(cat.get("name", ""))), []).append(cat.get("id"))
    unknown = [name for name in exclude_classes if class_key(name) not in by_key]
    if unknown:
        valid = sorted(str(cat.get("name")) for cat in categories)
        raise InputError(
            f"unknown class(es) {', '.join(unknown)} for {json_path}; its categories are: "
            + (", ".join(valid) or "(none)")
        )
    return {cat_id for name in exclude_classes for cat_id in by_key[class_key(name)]}


def _image_root(json_path: Path, names: list[str]) -> Path:
    here = json_path.parent
    stems = dict.fromkeys([json_path.stem, json_path.stem.removeprefix("instances_")])
    candidates: dict[Path, None] = {}
    for base in (here, here.parent):
        candidates[base] = None
        candidates[base / "images"] = None
        for stem in stems:
            candidates[base / stem] = None
            candidates[base / "images" / stem] = None
    probe = names[:_PROBE]
    for folder in candidates:
        if any((folder / name).is_file() for name in probe):
            return folder
    raise InputError(
        f"cannot find the images of {json_path}: {probe[0]!r} is in none of "
        + ", ".join(str(c) for c in candidates)
    )
