"""Object sources: where the objects to paste come from.

Today a folder of object-centric images (:class:`FolderSource`) or an already built object pool;
trained generators (:data:`GENERATORS`) are named and designed for, and their loaders come later.
"""

from __future__ import annotations

from pathlib import Path

from synthgen.errors import InputError
from synthgen.pool import is_pool_dir
from synthgen.sources.folder import LAYOUTS, FolderSource, ObjectItem, find_mask, is_mask_file
from synthgen.sources.generators import (
    GENERATORS,
    GeneratorSpec,
    ObjectGenerator,
    generator_not_available,
    is_checkpoint_path,
)

__all__ = [
    "GENERATORS",
    "FolderSource",
    "GeneratorSpec",
    "ObjectGenerator",
    "ObjectItem",
    "find_mask",
    "generator_not_available",
    "is_checkpoint_path",
    "is_mask_file",
    "resolve_objects",
]


def resolve_objects(spec: str, class_name: str | None = None) -> FolderSource | Path:
    """What ``--objects SPEC`` names: the path of a built object pool, a :class:`FolderSource`
    for a folder of object images (``class_name`` forces one class), or, for a generator name
    or checkpoint file (``.pkl``/``.pt``/``.pth``), NotAvailableError until generator loaders
    exist. Anything else is an InputError that says what is accepted."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve() if is_pool_dir(path) else FolderSource(path, class_name)
    if spec in GENERATORS or is_checkpoint_path(path):
        raise generator_not_available(spec)
    if path.exists():
        raise InputError(f"--objects {spec} is a file; it takes a folder of object images. {LAYOUTS}")
    raise InputError(
        f"--objects {spec}: no such folder, and not a generator name ({', '.join(GENERATORS.names())}). "
        f"It takes a folder of object images; {LAYOUTS}"
    )
