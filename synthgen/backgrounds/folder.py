"""What every background source resolves to (:class:`BackgroundSource`), and the simplest
source: all images in a folder."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from synthgen.errors import InputError
from synthgen.imageio import IMAGE_SUFFIXES, is_image_path

if TYPE_CHECKING:
    from synthgen.backgrounds.labels import SourceLabels


@dataclass(frozen=True)
class BackgroundSource:
    """An ordered list of background image files and a one-line description of where they
    came from. The order is deterministic (it only depends on the files on disk), so that
    background ``i`` is the same file on every run."""

    paths: tuple[Path, ...]
    description: str
    #: The images' own annotations, when asked to keep them (coco and yolo sources).
    labels: "SourceLabels | None" = None

    def __len__(self) -> int:
        return len(self.paths)


def class_key(name: str) -> str:
    """The form in which class names are compared: lower case, letters and digits only, so
    that ``"tv/monitor"``, ``"TV monitor"`` and ``"tvmonitor"`` all name the same class."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def folder_source(path: Path | None, exclude_classes: Sequence[str] = ()) -> BackgroundSource:
    """All images under ``path`` (recursively, sorted by relative path; hidden files and
    folders skipped), or ``path`` itself when it is one image file.

    A plain folder carries no class annotations, so ``exclude_classes`` is an error here."""
    if path is None:
        raise InputError("folder: needs a path, e.g. --backgrounds folder:/photos or just --backgrounds /photos")
    if exclude_classes:
        raise InputError(
            f"cannot exclude classes ({', '.join(exclude_classes)}) from {path}: a plain folder has no "
            "class annotations. Use annotated backgrounds (voc, voc:PATH or coco:PATH.json), or drop "
            "the class exclusion"
        )
    path = path.expanduser()
    if path.is_file():
        if not is_image_path(path):
            raise InputError(f"background {path} is not an image file ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return BackgroundSource((path,), f"1 image: {path}")
    if not path.is_dir():
        raise InputError(f"background folder {path} does not exist")
    paths = tuple(
        sorted(
            (p for p in path.rglob("*") if _visible(p.relative_to(path)) and is_image_path(p) and p.is_file()),
            key=lambda p: p.relative_to(path).as_posix(),
        )
    )
    if not paths:
        raise InputError(
            f"no images in background folder {path} (looked recursively for "
            f"{', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return BackgroundSource(paths, f"folder {path}: {len(paths)} images")


def _visible(rel: Path) -> bool:
    # Skip hidden files and folders (.git, .ipynb_checkpoints, synthgen's own .synthgen).
    return not any(part.startswith(".") for part in rel.parts)
