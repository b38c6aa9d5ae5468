"""An Ultralytics YOLO folder (``data.yaml`` with its ``train`` images and ``labels/``) as a
background source, optionally without images that show given classes, optionally keeping its
boxes and polygons."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from synthgen.backgrounds.folder import BackgroundSource, class_key
from synthgen.backgrounds.labels import SourceLabels, SourceObject
from synthgen.errors import InputError


def yolo_source(path: Path | None, exclude_classes: Sequence[str] = (), keep_annotations: bool = False) -> BackgroundSource:
    """The ``train`` images of a YOLO dataset (``path``: its folder holding ``data.yaml``, or the
    yaml file), sorted, read through :mod:`synthgen.readers` (Ultralytics' label-path rule:
    the last ``images`` folder becomes ``labels``). A label line is ``cls cx cy w h`` or a
    segmentation polygon ``cls x y x y ...``, normalised."""
    from synthgen.readers import _Yolo

    if path is None:
        raise InputError("yolo: needs the dataset folder (holding data.yaml), e.g. --backgrounds yolo:/data/my_set")
    path = path.expanduser()
    if not path.exists():
        raise InputError(f"YOLO dataset {path} does not exist")
    dataset = _Yolo(path)
    names = dataset.categories
    by_key = {class_key(n): n for n in names}
    unknown = [n for n in exclude_classes if class_key(n) not in by_key]
    if unknown:
        raise InputError(f"unknown class(es) {', '.join(unknown)} for {path}; its classes are: {', '.join(names)}")
    excluded = {by_key[class_key(n)] for n in exclude_classes}
    paths: list[Path] = []
    objects: dict[str, tuple[SourceObject, ...]] = {}
    dropped = 0
    for image in dataset.images:
        found = _read_labels(dataset, image) if (keep_annotations or excluded) else ()
        if excluded and any(o.category in excluded for o in found):
            dropped += 1
            continue
        paths.append(image)
        objects[str(image)] = found
    counts = f"{len(dataset.images)} images" + (f", {dropped} showing {', '.join(exclude_classes)}" if excluded else "")
    if not paths:
        raise InputError(f"YOLO dataset {path}: no background images left ({counts})")
    labels = SourceLabels(tuple(names), objects) if keep_annotations else None
    return BackgroundSource(tuple(paths), f"YOLO {path}: {len(paths)} images ({counts})", labels)


def _read_labels(dataset, image: Path) -> tuple[SourceObject, ...]:
    label_path = dataset._label_path(image)
    if not label_path.exists():
        return ()  # an image without objects
    found = []
    for n, line in enumerate(label_path.read_text().splitlines(), 1):
        values = line.split()
        if not values:
            continue
        try:
            name = dataset.categories[dataset.label_of[int(values[0])] - 1]
            coords = [float(v) for v in values[1:]]
        except (ValueError, KeyError):
            raise InputError(f"{label_path}:{n}: expected 'class cx cy w h' with a class of data.yaml, got {line!r}") from None
        if len(coords) == 4:
            cx, cy, w, h = coords
            found.append(SourceObject(name, (cx - w / 2, cy - h / 2, w, h)))
        elif len(coords) >= 6 and len(coords) % 2 == 0:
            xs, ys = coords[0::2], coords[1::2]
            box = (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))
            found.append(SourceObject(name, box, (tuple(coords),)))
        else:
            raise InputError(f"{label_path}:{n}: expected 'class cx cy w h' or a polygon, got {line!r}")
    return tuple(found)
