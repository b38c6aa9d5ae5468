"""COCO detection files as the training and evaluation code reads them.

A COCO file's ``file_name`` is relative to ``images_root``, which defaults to the folder of the
JSON file (synthgen's COCO writer and the shared data sets lay files out that way). Missing
``area``/``iscrowd`` fields get COCO's defaults (box area, not crowd), so that pycocotools'
evaluator accepts files written by other tools.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from synthgen.errors import InputError
from synthgen.imageio import read_image


@dataclass(frozen=True)
class ImageTargets:
    """The boxes of one image: ``xyxy`` float32 ``(N, 4)`` pixels, COCO ``category_ids`` and
    ``iscrowd`` flags (crowd boxes are ignore regions, never training targets)."""

    xyxy: np.ndarray
    category_ids: np.ndarray
    iscrowd: np.ndarray


class CocoSet:
    """A COCO detection file with its images: ``coco`` (pycocotools), sorted ``image_ids`` and
    ``categories`` (``[{"id", "name"}]`` sorted by id)."""

    def __init__(self, coco: COCO, images_root: Path, source: str) -> None:
        self.coco = coco
        self.images_root = images_root
        self.source = source
        self.image_ids: list[int] = sorted(int(i) for i in coco.imgs)
        categories = sorted(coco.dataset["categories"], key=lambda c: c["id"])
        self.categories: list[dict[str, Any]] = [{"id": int(c["id"]), "name": str(c["name"])} for c in categories]

    def image_path(self, image_id: int) -> Path:
        return self.images_root / self.coco.imgs[image_id]["file_name"]

    def read_image(self, image_id: int) -> np.ndarray:
        """The image as RGB ``uint8``; InputError if the file is missing or undecodable."""
        path = self.image_path(image_id)
        image = read_image(path)
        if image is None:
            from synthgen.imageio import unreadable_reason

            raise InputError(f"image {path} of {self.source} does not decode ({unreadable_reason(path)})")
        return image

    def targets(self, image_id: int) -> ImageTargets:
        anns = self.coco.imgToAnns.get(image_id, [])
        boxes = np.array([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        return ImageTargets(
            xyxy=boxes,
            category_ids=np.array([a["category_id"] for a in anns], dtype=np.int64),
            iscrowd=np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool),
        )


def coco_from_dict(dataset: dict[str, Any]) -> COCO:
    """A pycocotools index over ``dataset`` (not copied), without pycocotools' printing, with
    COCO's defaults for missing ``area``/``iscrowd`` and annotation ids."""
    annotations = dataset.setdefault("annotations", [])
    if any("id" not in ann for ann in annotations):  # pycocotools indexes annotations by id
        for number, ann in enumerate(annotations, start=1):
            ann["id"] = number
    for ann in annotations:
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_coco(path: str | Path, images_root: str | Path | None = None, *, check_images: bool = True) -> CocoSet:
    """Read a COCO detection JSON; InputError when it is missing, not COCO, has no images or no
    categories, or (``check_images``) names image files that do not exist."""
    path = Path(path)
    if path.is_dir() and (path / "annotations.json").is_file():
        path = path / "annotations.json"
    if not path.is_file():
        raise InputError(f"COCO file {path} does not exist")
    try:
        dataset = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path} is not a JSON file ({err})") from None
    if not isinstance(dataset, dict) or not isinstance(dataset.get("images"), list):
        raise InputError(f"{path} is not a COCO detection file: it has no 'images' list")
    if not dataset["images"]:
        raise InputError(f"COCO file {path} has no images")
    if not dataset.get("categories"):
        raise InputError(f"COCO file {path} has no categories")
    dataset.setdefault("annotations", [])
    for key, items, fields in (
        ("images", dataset["images"], ("id", "file_name")),
        ("annotations", dataset["annotations"], ("image_id", "category_id", "bbox")),
        ("categories", dataset["categories"], ("id", "name")),
    ):
        for item in items:
            missing = [f for f in fields if f not in item]
            if missing:
                raise InputError(f"COCO file {path}: an entry of '{key}' lacks {missing}: {str(item)[:200]}")
    root = Path(images_root) if images_root is not None else path.parent
    coco_set = CocoSet(coco_from_dict(dataset), root, str(path))
    if check_images:
        missing = [str(coco_set.image_path(i)) for i in coco_set.image_ids if not coco_set.image_path(i).is_file()]
        if missing:
            raise InputError(
                f"{len(missing)} image file(s) named in {path} do not exist under {root}, e.g. {missing[0]}; "
                "pass the folder the file names are relative to as the images root"
            )
    return coco_set
