"""Pascal VOC as a background source, optionally without images that show given classes.

The paper's recipe pastes objects onto VOC scenes that contain none of the target classes, so
that no unlabelled instance of a class sits in the background.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Sequence

from synthgen.backgrounds.folder import BackgroundSource, class_key
from synthgen.download import DATASETS, dataset_path
from synthgen.errors import InputError, NotAvailableError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip

# The image lists read per year. A year without one of them (VOC2012 has no public test set)
# just contributes the other.
IMAGE_SETS = ("trainval", "test")


def voc_source(root: Path | None, exclude_classes: Sequence[str] = ()) -> BackgroundSource:
    """The images of a Pascal VOC devkit, minus those showing any of ``exclude_classes``.

    ``root`` is a ``VOCdevkit`` folder (holding ``VOC2007/`` and/or ``VOC2012/``), its parent, or
    one ``VOCxxxx`` folder; ``None`` means the copy that ``synthgen download voc`` made. Images
    are the ids in each year's ``ImageSets/Main/{trainval,test}.txt`` whose JPEG exists, each
    once, in year then list order. With ``exclude_classes``, an image is dropped when its
    ``Annotations/<id>.xml`` has an object of one of those classes, or cannot be read (it could
    not be shown to be free of them).
    """
    excluded = _voc_class_keys(exclude_classes)
    default = root is None
    if root is None:
        root = dataset_path("voc")
        if not root.exists():
            raise NotAvailableError(_missing_default_message(root))
    root = root.expanduser()
    if not root.exists():
        raise InputError(f"Pascal VOC folder {root} does not exist")
    years = find_voc_years(root)
    if not years:
        if default:
            raise NotAvailableError(_missing_default_message(root))
        raise InputError(
            f"no Pascal VOC year folder in {root}: expected VOCdevkit/VOC2007/ or VOC2012/ holding "
            "ImageSets/Main/ and JPEGImages/"
        )

    paths: list[Path] = []
    listed = duplicates = missing = dropped = unreadable = 0
    lists_found = 0
    for year in years:
        ids: dict[str, None] = {}  # ordered set: the authors' lists named some images twice
        for name in IMAGE_SETS:
            image_set = year / "ImageSets" / "Main" / f"{name}.txt"
            if not image_set.is_file():
                continue
            lists_found += 1
            for line in image_set.read_text().split():
                listed += 1
                if line in ids:
                    duplicates += 1
                ids[line] = None
        for image_id in ids:
            image = year / "JPEGImages" / f"{image_id}.jpg"
            if not image.is_file():
                missing += 1
                continue
            if excluded:
                names = _object_classes(year / "Annotations" / f"{image_id}.xml")
                if names is None:
                    unreadable += 1
                    continue
                if names & excluded:
                    dropped += 1
                    continue
            paths.append(image)

    where = f"Pascal VOC {'+'.join(y.name for y in years)} at {root}"
    if lists_found == 0:
        raise InputError(f"{where}: no ImageSets/Main/{{{','.join(IMAGE_SETS)}}}.txt image lists found")
    counts = f"{listed} listed ({duplicates} duplicates), {missing} without a JPEG"
    if excluded:
        counts += (
            f", {dropped} showing {', '.join(sorted(excluded))}, "
            f"{unreadable} without a readable annotation"
        )
    if not paths:
        raise InputError(f"{where}: no background images left ({counts})")
    return BackgroundSource(tuple(paths), f"{where}: {len(paths)} images ({counts})")


def find_voc_years(root: Path) -> list[Path]:
    """The ``VOCxxxx`` folders in ``root`` (or in ``root/VOCdevkit``), or ``[root]`` when
    ``root`` is itself one."""
    for folder in (root, root / "VOCdevkit"):
        if not folder.is_dir():
            continue
        years = sorted(p for p in folder.iterdir() if re.fullmatch(r"VOC\d{4}", p.name) and _is_year(p))
        if years:
            return years
    return [root] if _is_year(root) else []


def _is_year(folder: Path) -> bool:
    return (folder / "ImageSets" / "Main").is_dir() and (folder / "JPEGImages").is_dir()


def _voc_class_keys(names: Sequence[str]) -> frozenset[str]:
    keys = {class_key(n): n for n in names if n.strip()}
    unknown = [name for key, name in keys.items() if key not in VOC_CLASSES]
    if unknown:
        raise InputError(
            f"unknown Pascal VOC class(es): {', '.join(unknown)}; the VOC classes are: {', '.join(VOC_CLASSES)}"
        )
    return frozenset(keys)


def _object_classes(annotation: Path) -> set[str] | None:
    """The classes of the objects in a VOC annotation file, or ``None`` if it is unreadable."""
    try:
        tree = ET.parse(annotation)
    except (OSError, ET.ParseError):
        return None
    return {class_key(el.text or "") for el in tree.getroot().iterfind("object/name")}


def _missing_default_message(root: Path) -> str:
    return (
        f"Pascal VOC is not on this machine (looked in {root}). Either:\n"
        f"  - run `synthgen download voc` (needs internet; {DATASETS.help('voc')}), or\n"
        f"  - download the VOC tars elsewhere and extract them so that {root / 'VOC2007'} and/or "
        f"{root / 'VOC2012'} exist, or\n"
        "  - pass an existing copy with --backgrounds voc:/path/to/VOCdevkit"
    )
