"""Object sources: where the objects to paste come from.

A folder of object-centric images (:class:`FolderSource`), the boxes of a labelled COCO file
cut out as object images (``coco:PATH.json``, :mod:`.boxes`), an already built object pool, or a
trained generator (a model card's name or a generator file; see :mod:`.generators`), whose
objects the engine makes in blocks as the samples need them.
"""

from __future__ import annotations

from pathlib import Path

from synthgen.errors import InputError
from synthgen.pool import is_pool_dir
from synthgen.sources.folder import LAYOUTS, FolderSource, ObjectItem, find_mask, is_mask_file
from synthgen.sources.generators import GeneratedObjects, GeneratorSettings, GeneratorSource, is_generator_spec

__all__ = [
    "FolderSource",
    "GeneratedObjects",
    "GeneratorSettings",
    "GeneratorSource",
    "ObjectItem",
    "find_mask",
    "is_generator_spec",
    "is_mask_file",
    "resolve_objects",
]


def resolve_objects(spec: str, class_name: str | None = None) -> FolderSource | Path:
    """What ``--objects SPEC`` names when it is not a generator: the path of a built object pool,
    or a :class:`FolderSource` for a folder of object images or for ``coco:PATH.json``'s box crops
    (:func:`.boxes.box_crops`; ``class_name`` forces one class). A generator (see
    :func:`is_generator_spec`) is an InputError here, saying how it is used; anything else is an
    InputError that says what is accepted."""
    if spec.startswith("coco:"):
        from synthgen.sources.boxes import box_crops

        if not spec[len("coco:"):]:
            raise InputError("--objects coco: needs the annotation file, e.g. --objects coco:real/annotations.json")
        return FolderSource(box_crops(spec[len("coco:"):]), class_name)
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve() if is_pool_dir(path) else FolderSource(path, class_name)
    if is_generator_spec(spec):
        raise InputError(
            f"{spec} is a generator, not a folder of object images: paste its objects directly with "
            f"`synthgen paste --objects {spec}`, or write images with `synthgen models sample {spec} --out DIR`"
        )
    if path.exists():
        raise InputError(f"--objects {spec} is an image file; it takes a folder of object images. {LAYOUTS}")
    from synthgen.generators.registry import all_cards

    generators = [name for name, card in all_cards().items() if card.kind == "generator"]
    raise InputError(
        f"--objects {spec}: no such folder, file or generator name ({', '.join(generators)}). "
        f"It takes a folder of object images, coco:FILE.json (its boxes cut out), an object pool, a generator "
        f"name or a generator file; {LAYOUTS}"
    )
