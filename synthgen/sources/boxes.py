"""Object images cut from the boxes of a labelled detection set: ``--objects coco:REAL.json``.

A user with a few real images already holds the object source closest to their domain: the
objects inside their own boxes. Each box becomes one object image, the box grown by ``pad`` of
its width and height on each side (clipped to the image) so that the segmenter sees background
around the object, in a subfolder named after its category (the FolderSource class layout).
Crowd boxes (``iscrowd`` 1) and boxes narrower or lower than ``min_side`` px are left out.

The crops are written once per annotation file (its identity and its images', see
:func:`synthgen.cache.fingerprint_files`) into the cache, ``box-crops/FINGERPRINT/CLASS/``, as
JPEG at quality 95 named by annotation id, and read from there like any folder of object images.
"""

from __future__ import annotations

from pathlib import Path

from synthgen.errors import InputError

#: Share of the box's width (height) added on the left and the right (top and bottom).
PAD = 0.1
#: Boxes narrower or lower than this (in pixels) are left out: too small to cut out.
MIN_SIDE = 8
JPEG_QUALITY = 95
#: Bump when the crops written for the same file change.
_VERSION = 1


def box_crop_bounds(bbox: list[float], width: int, height: int, pad: float = PAD) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)``, the pixel bounds of COCO box ``[x, y, w, h]`` grown by ``pad`` of its
    size on each side, rounded to whole pixels and clipped to a ``width`` x ``height`` image."""
    x, y, w, h = (float(v) for v in bbox)
    x0, y0 = max(0, round(x - pad * w)), max(0, round(y - pad * h))
    x1, y1 = min(width, round(x + w + pad * w)), min(height, round(y + h + pad * h))
    return x0, y0, x1, y1


def box_crops(coco_file: str | Path, pad: float = PAD, min_side: int = MIN_SIDE) -> Path:
    """The folder of object images cut from ``coco_file``'s boxes (see the module docstring),
    written now unless the cache has it. InputError when the file is not a COCO detection file,
    names missing images, has a category name that cannot be a folder name, or has no box to cut."""
    from synthgen.cache import atomic_directory, cache_root, fingerprint_files
    from synthgen.imageio import encode_jpeg
    from synthgen.training.coco import load_coco

    coco_file = Path(coco_file).expanduser()
    coco = load_coco(coco_file)
    names = {c["id"]: c["name"] for c in coco.categories}
    unknown = sorted({a["category_id"] for a in coco.coco.dataset["annotations"]} - set(names), key=str)
    if unknown:
        raise InputError(f"{coco_file}: boxes of category ids {unknown[:5]} that 'categories' does not list "
                         f"(it lists {sorted(names)[:10]}): add them or drop those boxes")
    for name in names.values():
        if not name.strip() or name.startswith(".") or "/" in name or "\\" in name or name == "masks":
            raise InputError(f"{coco_file}: category name {name!r} cannot name a class folder of object "
                             "images (empty, hidden, 'masks' or with a slash): rename it in the file")
    anns = [a for a in coco.coco.dataset["annotations"]
            if not a.get("iscrowd") and min(float(a["bbox"][2]), float(a["bbox"][3])) >= min_side]
    if not anns:
        raise InputError(f"{coco_file} has no box to cut out: every box is a crowd region or under {min_side} px "
                         f"on a side ({len(coco.coco.dataset['annotations'])} boxes in all)")
    images = sorted({int(a["image_id"]) for a in anns})
    key = fingerprint_files([coco_file, *(coco.image_path(i) for i in images)],
                            {"pad": pad, "min_side": min_side, "version": _VERSION})
    final = cache_root() / "box-crops" / key
    if final.is_dir():
        return final
    by_image: dict[int, list[dict]] = {}
    for ann in anns:
        by_image.setdefault(int(ann["image_id"]), []).append(ann)
    written = 0
    with atomic_directory(final) as staging:
        for image_id in images:
            image = coco.read_image(image_id)
            height, width = image.shape[:2]
            for ann in by_image[image_id]:
                x0, y0, x1, y1 = box_crop_bounds(ann["bbox"], width, height, pad)
                if x1 - x0 < min_side or y1 - y0 < min_side:  # a box reaching outside its image
                    continue
                folder = staging / names[int(ann["category_id"])]
                folder.mkdir(exist_ok=True)
                (folder / f"{int(ann['id']):08d}.jpg").write_bytes(encode_jpeg(image[y0:y1, x0:x1], JPEG_QUALITY))
                written += 1
        if not written:
            raise InputError(f"{coco_file}: every box lies (almost) outside its image; no object to cut out")
    return final
