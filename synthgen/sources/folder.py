"""A folder of object-centric images, one class or one subfolder per class, with optional
paired masks.

Layouts (``ROOT`` is the folder the user names):

- ``ROOT/*.jpg`` (images directly inside, any depth below too): one class, named after ROOT or
  the ``class_name`` given.
- ``ROOT/<class>/**/*.jpg``: one class per subfolder holding images, in sorted name order
  (these become the COCO categories, in this order).
- Paired masks, optional, PNG, same size as the image: ``<dir>/masks/<stem>.png`` beside the
  image, ``ROOT/masks/<same relative path>/<stem>.png`` mirroring it, or ``<stem>_mask.png`` /
  ``<stem>.mask.png`` beside it. Mask files are never taken as objects; a ``masks`` folder is
  never a class.

Order is deterministic (names sorted at every level), so object ``i`` is the same file on every
machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from synthgen.errors import InputError
from synthgen.imageio import is_image_path

MASKS_DIR = "masks"
MASK_SUFFIXES = ("_mask.png", ".mask.png")

LAYOUTS = (
    "accepted layouts: DIR/*.jpg (one class named after DIR), DIR/<class>/*.jpg (one class per "
    "subfolder), RGBA PNGs (alpha is the mask), and image + mask pairs as DIR/masks/<stem>.png "
    "or <stem>_mask.png beside the image"
)


@dataclass(frozen=True)
class ObjectItem:
    """One object image, its class name, and its paired mask file if it has one."""

    path: Path
    class_name: str
    mask_path: Path | None = None


def is_mask_file(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(MASK_SUFFIXES) or path.parent.name == MASKS_DIR


def _walk_images(folder: Path) -> list[Path]:
    """Image files under ``folder``, sorted at every level (files of a folder before its
    subfolders), skipping hidden entries, ``masks`` folders and mask files. Symlinked folders
    are followed once each, so a link loop cannot recurse forever."""
    found: list[Path] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != MASKS_DIR)
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if is_image_path(path) and not is_mask_file(path):
                found.append(path)
    return found


def find_mask(image: Path, root: Path) -> Path | None:
    """The paired mask of ``image`` (see the module docstring for the places looked at)."""
    stem = image.stem
    candidates = [image.parent / MASKS_DIR / f"{stem}.png"]
    relative_dir = image.parent.relative_to(root)
    candidates.append(root / MASKS_DIR / relative_dir / f"{stem}.png")
    candidates += [image.parent / f"{stem}{suffix}" for suffix in MASK_SUFFIXES]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


class FolderSource:
    """The objects in folder ``root`` (see the module docstring for the layouts).

    ``class_name`` forces a single class for the whole tree (including class subfolders, e.g.
    DM-GAN's per-caption-class output folders that are all "bird"). Raises InputError naming the
    path and the accepted layouts when ``root`` is missing, not a folder, holds no images, or
    mixes loose images with class subfolders.
    """

    def __init__(self, root: str | Path, class_name: str | None = None) -> None:
        self.root = Path(root).expanduser()
        if not self.root.exists():
            raise InputError(f"object folder {self.root} does not exist; {LAYOUTS}")
        if not self.root.is_dir():
            raise InputError(f"{self.root} is not a folder of object images; {LAYOUTS}")
        if class_name is not None and not class_name.strip():
            raise InputError("the class name must not be empty")
        groups = self._group(class_name)
        self.classes: list[str] = [name for name, _ in groups]
        self.items: list[ObjectItem] = [
            ObjectItem(path, name, find_mask(path, self.root)) for name, paths in groups for path in paths
        ]

    def _group(self, class_name: str | None) -> list[tuple[str, list[Path]]]:
        """``(class name, image paths)`` per class, in class order."""
        if class_name is not None:
            everything = _walk_images(self.root)
            if not everything:
                raise InputError(f"no images found in {self.root}; {LAYOUTS}")
            return [(class_name, everything)]
        loose = sorted(
            p for p in self.root.iterdir() if p.is_file() and is_image_path(p) and not is_mask_file(p)
        )
        subfolders = sorted(
            p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != MASKS_DIR
        )
        classes = [(p.name, images) for p in subfolders if (images := _walk_images(p))]
        if loose and classes:
            names = ", ".join(name for name, _ in classes[:5]) + (", ..." if len(classes) > 5 else "")
            raise InputError(
                f"{self.root} has images both directly inside it and in subfolders ({names}), so its "
                "classes are ambiguous: move the loose images into a class subfolder, or give one "
                f"class name for the whole tree; {LAYOUTS}"
            )
        if loose:
            return [(self.root.resolve().name, _walk_images(self.root))]
        if not classes:
            raise InputError(f"no images found in {self.root}; {LAYOUTS}")
        return classes

    def files(self) -> list[Path]:
        """Every file the objects are read from (images and masks), for cache fingerprints."""
        paths: list[Path] = []
        for item in self.items:
            paths.append(item.path)
            if item.mask_path is not None:
                paths.append(item.mask_path)
        return paths

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"FolderSource({str(self.root)!r}, {len(self.items)} objects, classes={self.classes})"
