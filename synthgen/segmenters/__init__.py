"""Segmenters: cut the object out of an object-centric image, once per object.

Choose one by name from :data:`SEGMENTERS` through :func:`make_segmenter`; the pool
(:mod:`synthgen.pool`) runs it, cleans its masks and filters them with :class:`MaskQuality`.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

from synthgen.errors import InputError
from synthgen.registry import Registry
from synthgen.segmenters.basic import (
    AlphaSegmenter,
    MaskSegmenter,
    NoneSegmenter,
    Segmenter,
    Unsegmentable,
    has_alpha,
)
from synthgen.segmenters.cleaning import MaskQuality, border_mass, clean_mask, clean_soft_mask
from synthgen.segmenters.grabcut import AutoSegmenter, GrabCutSegmenter
from synthgen.segmenters.redo import RedoSegmenter, load_redo

__all__ = [
    "SEGMENTERS",
    "AlphaSegmenter",
    "AutoSegmenter",
    "GrabCutSegmenter",
    "MaskQuality",
    "MaskSegmenter",
    "NoneSegmenter",
    "RedoSegmenter",
    "Segmenter",
    "Unsegmentable",
    "border_mass",
    "clean_mask",
    "clean_soft_mask",
    "has_alpha",
    "load_redo",
    "make_segmenter",
    "segmenter_spec",
]

SEGMENTERS: Registry[Callable[..., Segmenter]] = Registry("segmenter")
SEGMENTERS.register("none", help="naive pasting: the whole frame is the object")(NoneSegmenter)
SEGMENTERS.register("alpha", help="the image's alpha channel (RGBA cut-outs)")(AlphaSegmenter)
SEGMENTERS.register("mask", help="the paired mask file (masks/<stem>.png or <stem>_mask.png)")(MaskSegmenter)
SEGMENTERS.register("grabcut", help="OpenCV GrabCut from an inset rectangle (centred objects)")(GrabCutSegmenter)
SEGMENTERS.register("auto", help="per image: alpha if any, else the paired mask, else grabcut")(AutoSegmenter)
SEGMENTERS.register("redo", help="ReDO's learned mask network: redo-lfw (a model name) or redo:PATH.pth")(load_redo)


def segmenter_spec(name: str, options: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """The registered name and options that a command-line ``--segmenter`` value stands for:
    ``redo:PATH.pth`` and model names such as ``redo-lfw`` are ``redo`` with that checkpoint."""
    options = dict(options or {})
    if name.startswith("redo:"):
        return "redo", {**options, "checkpoint": name[len("redo:"):]}
    if name.startswith("redo-"):
        return "redo", {**options, "checkpoint": name}
    return name, options


def make_segmenter(name: str, options: Mapping[str, Any] | None = None) -> Segmenter:
    """The segmenter registered as ``name`` (or a :func:`segmenter_spec` shorthand), built with
    ``options`` (keyword arguments of its factory; values may be strings from the command line).
    Unknown names or options raise InputError listing what exists."""
    name, options = segmenter_spec(name, options)
    factory = SEGMENTERS.get(name)
    parameters = [
        p.name for p in inspect.signature(factory).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    unknown = sorted(set(options) - set(parameters))
    if unknown:
        accepted = ", ".join(parameters) if parameters else "none"
        raise InputError(f"segmenter {name!r} has no option {', '.join(map(repr, unknown))}; its options: {accepted}")
    return factory(**options)
