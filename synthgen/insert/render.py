"""``synthgen insert``: a trained inserter fills boxes in clean images, and the samples go
through the same writers, workers, resume and determinism as ``synthgen paste``
(:func:`synthgen.engine.write_dataset`).

Sample ``i`` depends only on ``(seed, i)``: its random stream (:func:`synthgen.compositor.sample_rng`)
picks the background and the box, and the generator is deterministic (no noise, no dropout) and
runs one sample at a time on one CPU thread, so the bytes do not depend on ``--workers``. On a
GPU the generator's float results may differ from the CPU's in the last bits, which can move a
pixel by one grey level.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from synthgen.errors import InputError
from synthgen.insert import checkpoint as ckpt
from synthgen.insert.boxes import BoxSource, LabelledBoxes, make_box_source
from synthgen.sample import Annotation, Sample


def weights_fingerprint(state: dict) -> str:
    """sha256 of a state dict's names and tensor bytes: which generator made a dataset."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class InsertSpec:
    """Everything that decides an inserted dataset's content, byte for byte."""

    checkpoint: str
    backgrounds: str
    boxes: str = "match"  # match | learned | file:PATH
    exclude_classes: tuple[str, ...] = ()
    seed: int = 0
    jpeg_quality: int = 90
    generator: str = ""  # fingerprint of the generator's weights (filled in by prepare_insert)
    masks: bool = field(default=False, init=False)  # boxes only: an inserted object has no mask

    def validate(self) -> "InsertSpec":
        if not 1 <= self.jpeg_quality <= 100:
            raise InputError(f"JPEG quality {self.jpeg_quality} must be 1..100")
        if self.seed < 0:
            raise InputError(f"seed {self.seed} must be >= 0")
        return self

    def to_dict(self) -> dict:
        return {
            "checkpoint": self.checkpoint,
            "generator": self.generator,
            "backgrounds": self.backgrounds,
            "boxes": self.boxes,
            "exclude_classes": list(self.exclude_classes),
            "seed": self.seed,
            "jpeg_quality": self.jpeg_quality,
        }


class InsertRenderer:
    """Renders sample ``i``: background ``rng``-chosen from the pool, a box from the box
    source, the generator fills it. Shaped like a Compositor for the engine's writer loop.

    The generator is built lazily in each process (worker processes get the weights, not a
    live module) and runs on ``device`` with one CPU thread."""

    def __init__(self, state: dict, architecture: dict, category: str, backgrounds, box_source: BoxSource, device: str = "cpu") -> None:
        self.state = state
        self.architecture = architecture
        self.categories = [category]
        self.backgrounds = backgrounds
        self.box_source = box_source
        self.device = device
        size = int(architecture["size"])
        self.config = SimpleNamespace(width=size, height=size)
        self._generator = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_generator": None}

    def generator(self):
        if self._generator is None:
            import torch

            from synthgen.insert.networks import BoxGenerator

            if self.device == "cpu":
                torch.set_num_threads(1)  # the same float sums in every process: same bytes
            a = self.architecture
            net = BoxGenerator(int(a["size"]), int(a["ngf"]), int(a["n_blocks"]), float(a["margin"]))
            net.load_state_dict(self.state)
            self._generator = net.to(self.device).eval()
        return self._generator

    def insert(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """``image`` (S x S x 3 uint8) with an object generated in ``box`` (xyxy pixels)."""
        import torch

        from synthgen.insert.data import to_tensor, to_uint8

        with torch.no_grad():
            x = to_tensor(image[None]).to(self.device)
            out = self.generator()(x, [torch.tensor(box[None], dtype=torch.float32, device=self.device)])
        return to_uint8(out)[0]

    def render(self, seed: int, index: int, keep_masks: bool = False, out: np.ndarray | None = None) -> Sample:
        from synthgen.compositor import sample_rng

        rng = sample_rng(seed, index)
        background = np.asarray(self.backgrounds[int(rng.integers(len(self.backgrounds)))])
        size = self.config.width
        # Whole pixels: the box the generator fills is the box written.
        box = np.round(self.box_source.draw(rng, background) * size)
        box[2:] = np.maximum(box[2:], box[:2] + 1)
        image = self.insert(background, box)
        if out is not None:
            out[...] = image
            image = out
        x0, y0, x1, y1 = (float(v) for v in box)
        annotation = Annotation((x0, y0, x1 - x0, y1 - y0), 1, (x1 - x0) * (y1 - y0))
        return Sample(index=index, image=image, annotations=[annotation])


def prepare_insert(spec: InsertSpec, method: str | None = None, device: str = "cpu", progress: bool = True) -> tuple[InsertRenderer, InsertSpec, list[str]]:
    """The renderer for ``spec`` (and ``spec`` with its generator fingerprint), checking that
    the checkpoint is an inserter trained with ``method`` (when given)."""
    from synthgen.backgrounds import cached_background_pool, resolve_backgrounds
    from synthgen.engine import _background_note

    spec.validate()
    payload = ckpt.load(spec.checkpoint)
    if method is not None and payload["method"] != method:
        raise InputError(
            f"{ckpt.checkpoint_path(spec.checkpoint)} holds a {payload['method']!r} inserter, not {method!r}: "
            f"pass --method {payload['method']}, or train a {method} run with synthgen train detectorgan --method {method}"
        )
    state = payload["nets"]["insert"]
    size = int(payload["architecture"]["size"])
    labelled = LabelledBoxes.from_state(payload["boxes"])
    box_source = make_box_source(spec.boxes, labelled)
    source = resolve_backgrounds(spec.backgrounds, spec.exclude_classes)
    pool = cached_background_pool(source, size, size, "stretch", progress=progress)
    renderer = InsertRenderer(state, payload["architecture"], payload["category"], pool, box_source, device)
    spec = InsertSpec(**{**spec.to_dict(), "exclude_classes": spec.exclude_classes, "generator": weights_fingerprint(state)})
    notes = [
        f"inserter: {payload['method']} at {size} px, step {payload['step']}, category {payload['category']!r}",
        "backgrounds: " + _background_note(pool.summary),
        f"boxes: {spec.boxes}",
    ]
    return renderer, spec, notes


def run_insert(spec: InsertSpec, options, method: str | None = None, device: str = "cpu", console=None):
    """Write an inserted dataset (``options`` is a :class:`synthgen.engine.RunOptions`)."""
    from synthgen.detectors import resolve_device
    from synthgen.engine import check_run_options, write_dataset

    check_run_options(options)
    dev = resolve_device(device)
    if dev.type == "cuda" and options.workers > 1:
        raise InputError("--workers > 1 runs the generator on the CPU; with a GPU use --workers 1")
    renderer, spec, notes = prepare_insert(spec, method, str(dev), options.progress)
    return write_dataset(renderer, spec, options, notes, console, description="inserting")
