"""Running a paste job: resolve the inputs, render samples in worker processes, write them in
order, stop cleanly on Ctrl-C / SIGTERM, and resume.

Sample ``i`` depends only on ``(seed, i)`` (see :func:`synthgen.compositor.sample_rng`), and the
main process writes samples in index order, so the output bytes do not depend on the number of
workers, and a resumed run continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import multiprocessing
import multiprocessing.connection
import os
import queue
import shutil
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping

import numpy as np

from synthgen import __version__
from synthgen.channel import Channel
from synthgen.compositor import CompositeConfig, Compositor
from synthgen.errors import InputError, OutputExistsError, SynthgenError, WriteError
from synthgen.imageio import encode_jpeg
from synthgen.progress import progress_bar
from synthgen.sample import EncodedAnnotation, EncodedSample, Sample, sample_key

from synthgen.sources.generators import GeneratedObjects, GeneratorSettings

if TYPE_CHECKING:
    from synthgen.writers import StagedSample

RUN_DIR = ".synthgen"
COMPOSITORS = ("numpy", "torch")
RUN_FILE = "run.json"
UNREADABLE_LIST = "unreadable.txt"  # in RUN_DIR: the input files skipped, with their reasons


@dataclass(frozen=True)
class PasteSpec:
    """Everything that decides the content of a synthetic dataset, byte for byte."""

    #: A folder of object images (one class, or a subfolder per class), an object pool folder made
    #: by ``synthgen segment``, or a generator name. None: the built-in demo objects.
    objects: str | None = None
    #: A folder of photos, ``voc``/``voc:PATH``, or ``coco:PATH.json``. None: built-in demo scenes.
    backgrounds: str | None = None
    #: With voc/coco/yolo backgrounds: drop images that contain any of these classes.
    exclude_classes: tuple[str, ...] = ()
    #: With coco/yolo backgrounds: keep the images' own objects as labels, updated under
    #: occlusion by the pasted ones (copy-paste augmentation of a labelled set).
    keep_annotations: bool = False
    #: With coco backgrounds: only the images with these ids (e.g. a few-shot subset).
    background_images: tuple[int, ...] = ()
    #: Objects pasted without labels (same forms as ``objects``): Cut-Paste-Learn's distractors.
    distractors: str | None = None
    segmenter: str = "auto"
    #: Options of the segmenter, e.g. {"margin": "0.1"} for grabcut or {"checkpoint": "..."} for redo.
    segmenter_options: dict[str, str] = field(default_factory=dict)
    #: Mask quality bounds for segmented objects (fractions of the object image).
    min_mask_area: float = 0.05
    max_mask_area: float = 0.95
    max_border: float = 0.5
    composite: CompositeConfig = field(default_factory=CompositeConfig)
    seed: int = 0
    jpeg_quality: int = 90
    #: Write instance masks (COCO RLE) of the visible part of each object.
    masks: bool = False
    #: How a generator source (``objects`` a model name or file) makes objects; None otherwise.
    generator: GeneratorSettings | None = None
    #: "numpy": the OpenCV renderer, one sample at a time; "torch": the batched torch compositor
    #: (same boxes and labels, pixels within a few grey levels: synthgen.compositor.torch_render).
    compositor: str = "numpy"
    #: Write each object's visible fraction, visible box and amodal box (COCO and WebDataset
    #: JSON keys, a YOLO sidecar).
    visibility: bool = False

    def validate(self) -> "PasteSpec":
        self.composite.validate()
        if not 1 <= self.jpeg_quality <= 100:
            raise InputError(f"JPEG quality {self.jpeg_quality} must be 1..100")
        if not 0.0 <= self.min_mask_area <= self.max_mask_area <= 1.0:
            raise InputError(
                f"mask area bounds {self.min_mask_area},{self.max_mask_area} must satisfy 0 <= min <= max <= 1"
            )
        if not 0.0 <= self.max_border <= 1.0:
            raise InputError(f"max border {self.max_border} must be in [0, 1]")
        if self.seed < 0:
            raise InputError(f"seed {self.seed} must be >= 0")
        if self.generator is not None:
            self.generator.validate()
        if self.compositor not in COMPOSITORS:
            raise InputError(f"compositor {self.compositor!r}: choose one of {', '.join(COMPOSITORS)}")
        if self.compositor == "torch":
            from synthgen.compositor.torch_render import check_supported

            check_supported(self.composite)
        if self.exclude_classes and self.backgrounds is None:
            raise InputError("--exclude-classes needs --backgrounds voc or coco:FILE.json (the demo scenes have no classes)")
        if self.keep_annotations and self.backgrounds is None:
            raise InputError("--keep-annotations needs labelled --backgrounds: coco:FILE.json or yolo:DIR (the demo scenes have no labels)")
        return self

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["exclude_classes"] = list(self.exclude_classes)
        data["background_images"] = list(self.background_images)
        return data


@dataclass(frozen=True)
class RunOptions:
    """How a paste job is run and written: none of this changes a sample's content."""

    out: Path
    format: str = "coco"
    #: Samples in the whole dataset (all machines together); None runs until stopped (wds only).
    n: int | None = 1000
    workers: int = 1
    #: This machine's part of the dataset: it makes samples i with i % num_shards == shard_index.
    shard_index: int = 0
    num_shards: int = 1
    resume: bool = False
    overwrite: bool = False
    shard_size: int = 1000
    shard_max_bytes: int = 1 << 30
    progress: bool = True
    #: Where a generator source and the torch compositor run ("cpu", "cuda", "cuda:N"); the numpy
    #: compositor runs on the CPU.
    device: str = "cpu"
    #: Objects a generator source makes per forward pass.
    generator_batch: int = 32
    #: Samples drawn per pass of the torch compositor (no effect on any sample).
    batch_size: int = 64


@dataclass
class Scene:
    """Resolved inputs of a paste job, ready to render."""

    compositor: Compositor
    notes: list[str]  # human lines about the inputs: demo notice, pool and background summaries
    is_demo: bool
    #: The compositor's objects when they come from a generator (blocks to attach and close).
    generated: GeneratedObjects | None = None
    unreadable: list[str] = field(default_factory=list)  # every input file skipped, with its reason


@dataclass
class RunSummary:
    out: Path
    format: str
    written: int  # samples written by this run
    total: int  # samples in the output (this machine's part), including earlier runs
    objects: int
    skipped_objects: int
    empty_images: int
    seconds: float
    interrupted: bool
    notes: list[str]
    #: Boxes written by this run per class name, in category order.
    per_class: dict[str, int] = field(default_factory=dict)
    planned: int | None = None  # samples this machine makes in all (None: endless)

    @property
    def rate(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0


# -- inputs -----------------------------------------------------------------------------------


def prepare(spec: PasteSpec, progress: bool = True, device: str = "cpu", generator_batch: int = 32, workers: int = 1) -> Scene:
    """Resolve objects and backgrounds, building (or loading cached) object and background pools
    (objects of a folder segmented by ``workers`` processes; the pool is the same for any number).
    A generator source is loaded on ``device``; its objects are made as samples need them (see
    :mod:`synthgen.sources.generators`), once the scene's ``generated`` objects are attached."""
    from synthgen.backgrounds import BackgroundLabels, cached_background_pool, resolve_backgrounds
    from synthgen.demo import ensure_demo_data
    from synthgen.pool import ObjectPool, cached_pool, format_summary
    from synthgen.segmenters import MaskQuality
    from synthgen.sources import resolve_objects
    from synthgen.sources.generators import generated_objects, is_generator_spec

    spec.validate()
    notes: list[str] = []
    objects_spec, backgrounds_spec = spec.objects, spec.backgrounds
    is_demo = objects_spec is None or backgrounds_spec is None
    if is_demo:
        demo = ensure_demo_data()
        which = [name for name, given in (("objects", objects_spec), ("backgrounds", backgrounds_spec)) if given is None]
        notes.append(
            f"DEMO: no --{' / --'.join(which)} given, so synthgen's built-in demo "
            f"{' and '.join(which)} are used (made on this machine, no download). "
            "Pass --objects DIR --backgrounds DIR for real data."
        )
        objects_spec = objects_spec or str(demo.objects_dir)
        backgrounds_spec = backgrounds_spec or str(demo.backgrounds_dir)

    quality = MaskQuality(min_area=spec.min_mask_area, max_area=spec.max_mask_area, max_border=spec.max_border)
    generated = None
    settings = spec.generator or (GeneratorSettings() if is_generator_spec(objects_spec) else None)
    if settings is not None:
        generated = generated_objects(objects_spec, spec.seed, settings, spec.segmenter, dict(spec.segmenter_options),
                                      quality, device=device, batch_size=generator_batch,
                                      device_copies=getattr(spec, "compositor", "numpy") == "torch")
        pool = generated
        notes.append(
            f"objects: generated by {objects_spec}, {settings.pool_size:,} per block, a fresh block every "
            f"{settings.refresh:,} samples, segmented by {spec.segmenter}, on {device}"
        )
    else:
        resolved = resolve_objects(objects_spec)
        if isinstance(resolved, Path):
            pool = ObjectPool.load(resolved)
        else:
            pool = cached_pool(resolved, spec.segmenter, dict(spec.segmenter_options), quality, progress=progress, workers=workers)
        notes.append("objects: " + format_summary(pool.summary))

    distractors = None
    if spec.distractors is not None:
        resolved = resolve_objects(spec.distractors)
        if isinstance(resolved, Path):
            distractors = ObjectPool.load(resolved)
        else:
            quality = MaskQuality(min_area=spec.min_mask_area, max_area=spec.max_mask_area, max_border=spec.max_border)
            distractors = cached_pool(resolved, spec.segmenter, dict(spec.segmenter_options), quality, progress=progress)
        notes.append("distractors (unlabelled): " + format_summary(distractors.summary))

    cfg = spec.composite
    source = resolve_backgrounds(backgrounds_spec, list(spec.exclude_classes), spec.keep_annotations, spec.background_images)
    backgrounds = cached_background_pool(source, cfg.width, cfg.height, cfg.background_fit, progress=progress)
    notes.append("backgrounds: " + _background_note(backgrounds.summary))
    labels = None
    if spec.keep_annotations:
        labels = BackgroundLabels(source.labels, backgrounds, pool.classes)
        extra = f"; new classes after the objects': {', '.join(labels.extra_classes)}" if labels.extra_classes else ""
        notes.append(f"kept annotations: {labels.count:,} objects of the backgrounds{extra}")
    compositor = Compositor(cfg, pool, backgrounds, distractors=distractors, labels=labels)
    unreadable = [] if generated is not None else [f"objects: {line}" for line in _pool_unreadable(pool)]
    unreadable += [f"backgrounds: {line}" for line in backgrounds.summary.get("unreadable_files", backgrounds.summary["unreadable_examples"])]
    return Scene(compositor=compositor, notes=notes, is_demo=is_demo, generated=generated, unreadable=unreadable)


def _pool_unreadable(pool) -> list[str]:
    from synthgen.pool import UNREADABLE_FILE

    listing = pool.path / UNREADABLE_FILE
    if listing.is_file():
        return listing.read_text().splitlines()
    return list(pool.summary.get("unreadable_examples", []))  # pools built before the listing existed


def _background_note(summary: dict) -> str:
    """One line from a BackgroundPool summary (keys images, unreadable, unreadable_examples)."""
    line = f"{summary['images']:,} images"
    if summary["unreadable"]:
        examples = summary["unreadable_examples"][:3]
        line += f"; {summary['unreadable']:,} unreadable files skipped: {', '.join(examples)}"
        line += ", ..." if summary["unreadable"] > len(examples) else ""
    return line


def render_encoded(compositor: Compositor, spec: PasteSpec, index: int, canvas: np.ndarray) -> EncodedSample:
    """Render and encode sample ``index`` into the reusable ``canvas`` buffer (a fresh 300 KB
    array per sample costs page faults that show on the hot path)."""
    return encode_sample(compositor.render(spec.seed, index, keep_masks=spec.masks, out=canvas), spec.jpeg_quality, spec.masks, visibility=getattr(spec, "visibility", False))


def new_canvas(compositor: Compositor) -> np.ndarray:
    return np.empty((compositor.config.height, compositor.config.width, 3), dtype=np.uint8)


def encode_sample(sample: Sample, jpeg_quality: int, masks: bool, jpeg: bytes | None = None, visibility: bool = False) -> EncodedSample:
    """JPEG-encode a rendered sample (or take its ``jpeg``, encoded elsewhere) and turn its
    annotations into plain data (RLE masks when ``masks``; visible fraction, visible and amodal
    boxes when ``visibility``), ready for any writer."""
    from pycocotools import mask as mask_utils

    annotations = []
    for ann in sample.annotations:
        segmentation = None
        if masks and ann.mask is not None:
            rle = mask_utils.encode(np.asfortranarray(ann.mask.astype(np.uint8)))
            segmentation = {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
        encoded = EncodedAnnotation(list(ann.bbox), ann.category_id, ann.area, segmentation, iscrowd=ann.iscrowd)
        if visibility:
            encoded.visibility = float(ann.visible_fraction)
            encoded.visible_bbox = list(ann.visible_bbox or ann.bbox)
            encoded.amodal_bbox = list(ann.amodal_bbox or ann.bbox)
        annotations.append(encoded)
    return EncodedSample(
        index=sample.index,
        key=sample_key(sample.index),
        width=sample.width,
        height=sample.height,
        jpeg=encode_jpeg(sample.image, jpeg_quality) if jpeg is None else jpeg,
        annotations=annotations,
        skipped_objects=sample.skipped_objects,
    )


def iter_samples(spec: PasteSpec, start: int = 0, step: int = 1, workers: int = 0, progress: bool = False, device: str = "cpu") -> Iterator[Sample]:
    """An endless stream of samples ``start, start+step, ...``, in order, for training without
    writing anything to disk: rendered in this process (``workers=0``) or by that many paste
    worker processes feeding the caller. The same samples ``synthgen paste`` would write
    (generated objects live in a temporary cache folder while the stream runs)."""
    scene = prepare(spec, progress=progress, device=device)
    if scene.generated is not None:
        scene.generated.attach(None)
    try:
        yield from render_stream(scene.compositor, spec, start, step, workers)
    finally:
        if scene.generated is not None:
            scene.generated.close()


def render_stream(compositor: Compositor, spec: PasteSpec, start: int = 0, step: int = 1, workers: int = 0) -> Iterator[Sample]:
    """:func:`iter_samples` from an already prepared compositor (no inputs resolved again)."""
    indices = itertools.count(start, step)
    if workers <= 0:
        for index in indices:
            yield compositor.render(spec.seed, index, keep_masks=spec.masks)
    else:
        yield from _render_in_workers(compositor, spec, indices, workers, stage=None, should_stop=lambda: False)


# -- workers ----------------------------------------------------------------------------------

def _worker_main(tasks, results: Channel, compositor: Compositor, spec: PasteSpec, stage) -> None:
    """Render batches from ``tasks`` into ``results`` until told to stop or orphaned: raw
    samples, or (given a writer's ``stage``) encoded and staged samples, the sample's files
    already written where the format has them.

    Workers ignore SIGINT and SIGTERM: a signal to the whole process group (Ctrl-C in a
    terminal, ``kill -TERM -PGID``) must not kill a worker half-way through a queue operation,
    which would leave a shared lock held forever. The main process decides when to stop, and
    then kills its workers outright.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = os.getppid()
    canvas = new_canvas(compositor)
    while True:
        try:
            task = tasks.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:  # the main process died without stopping us
                return
            continue
        if task is None:
            return
        batch_id, indices = task
        try:
            if stage is not None:
                rendered = [stage(render_encoded(compositor, spec, i, canvas)) for i in indices]
            else:
                rendered = [compositor.render(spec.seed, i, keep_masks=spec.masks) for i in indices]
            message = (batch_id, rendered, None)
        except (SynthgenError, OSError) as err:  # the user's problem (disk full): re-raised as is
            message = (batch_id, None, err)
        except BaseException:  # a bug: report it, so the main process fails with the real cause
            message = (batch_id, None, traceback.format_exc())
        results.send(message)


class _WorkerPool:
    """Worker processes fed through a task queue, each answering through its own
    :class:`~synthgen.channel.Channel`; batches come back in any order and are re-ordered by the
    caller. Used as a context manager: exit kills the workers."""

    def __init__(self, workers: int, compositor: Compositor, spec: PasteSpec, stage) -> None:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        self._context = multiprocessing.get_context(method)
        self.tasks = self._context.Queue()
        self._worker_args = (compositor, spec, stage)
        self._workers = workers
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self.channels: list[Channel] = []

    def __enter__(self) -> "_WorkerPool":
        for _ in range(self._workers):
            channel = Channel(self._context)
            process = self._context.Process(target=_worker_main, args=(self.tasks, channel, *self._worker_args), daemon=True)
            process.start()
            # Only the worker holds the write end now (workers started later do not inherit
            # it): the pipe ends, and the read fails, when that worker dies.
            channel.close_writer()
            self.processes.append(process)
            self.channels.append(channel)
        return self

    def submit(self, batch_id: int, indices: list[int]) -> None:
        self.tasks.put((batch_id, indices))

    def next_result(self, timeout: float):
        """``(batch_id, samples)``, or None if nothing arrived within ``timeout`` seconds."""
        ready = multiprocessing.connection.wait(self.channels, timeout)
        if not ready:
            if not all(p.is_alive() for p in self.processes):
                raise RuntimeError("a paste worker process died unexpectedly (out of memory?)")
            return None
        try:
            batch_id, samples, error = ready[0].receive()
        except EOFError:
            raise RuntimeError("a paste worker process died unexpectedly (out of memory?)") from None
        if isinstance(error, BaseException):
            raise error
        if error is not None:
            raise RuntimeError(f"a paste worker failed:\n{error}")
        return batch_id, samples

    def __exit__(self, *exc) -> None:
        for process in self.processes:
            process.kill()
        for process in self.processes:
            process.join()
        for channel in self.channels:
            channel.close()
        self.tasks.cancel_join_thread()  # never wait at exit to flush a queue nobody reads
        self.tasks.close()


def _batched(iterable: Iterator[int], size: int) -> Iterator[list[int]]:
    while batch := list(itertools.islice(iterable, size)):
        yield batch


class _StopFlag:
    """Set by SIGINT/SIGTERM. The first signal asks for a clean stop after the sample being
    written; a second Ctrl-C stops at once. A signal the process was started with ignored stays
    ignored (a shell's background job keeps running through a Ctrl-C meant for the foreground)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) != signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    # Writers need not shield their writes from this handler (see writers.journal.deferred_interrupts):
    # the first signal only sets a flag; the second Ctrl-C is the user forcing a stop.
    _handle.never_raises = True  # type: ignore[attr-defined]

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclass
class DeviceRun:
    """The torch compositor's part of a run: the CPU compositor that plans, where to draw, and
    how many samples per pass."""

    compositor: Compositor
    device: str = "cpu"
    batch_size: int = 64


def _produce(compositor: Compositor | DeviceRun, spec: PasteSpec, indices: Iterator[int], workers: int, stop: _StopFlag, stage) -> Iterator[StagedSample]:
    """Staged samples for ``indices``, in order, rendered, encoded and staged (``stage``, a
    writer's stager) in this process or, with several ``workers``, in worker processes; by the
    torch compositor given a :class:`DeviceRun`."""
    if isinstance(compositor, DeviceRun):
        yield from _produce_on_device(compositor, spec, indices, workers, stop, stage)
        return
    if workers <= 1:
        canvas = new_canvas(compositor)
        for index in indices:
            if stop.requested:
                return
            yield stage(render_encoded(compositor, spec, index, canvas))
        return
    yield from _render_in_workers(compositor, spec, indices, workers, stage=stage, should_stop=lambda: stop.requested)


def _produce_on_device(run: DeviceRun, spec: PasteSpec, indices: Iterator[int], workers: int, stop: _StopFlag, stage) -> Iterator[StagedSample]:
    """:func:`_produce` with the torch compositor: samples are planned (every draw and
    placement) by the CPU renderer, here or in ``workers`` processes, then drawn, annotated
    (visible masks and boxes) and JPEG-encoded ``run.batch_size`` at a time on ``run.device``;
    staged and committed by this process."""
    from synthgen.compositor.torch_render import Planner, TorchCompositor, encode_images

    host = run.compositor
    planner = Planner(host.config, host.objects, host.backgrounds, host.distractors, host.labels)
    if workers <= 1:
        planned: Iterator = (planner.render(spec.seed, i, keep_masks=spec.masks) for i in indices)
    else:
        planned = _render_in_workers(planner, spec, indices, workers, stage=None, should_stop=lambda: stop.requested)
    drawer = None
    try:
        for batch in _batched(planned, run.batch_size):
            if stop.requested:
                return
            if drawer is None:  # after the planning workers have forked: no device state in them
                drawer = TorchCompositor.from_compositor(planner, run.device)
            jpegs = encode_images(drawer.draw(batch, keep_masks=spec.masks), spec.jpeg_quality)
            for sample, jpeg in zip(batch, jpegs):
                if stop.requested:
                    return
                yield stage(encode_sample(sample, spec.jpeg_quality, spec.masks, jpeg=jpeg, visibility=getattr(spec, "visibility", False)))
    finally:
        planned.close()  # the planning workers ignore SIGTERM: stop them now, even on an error here


def _render_in_workers(compositor: Compositor, spec: PasteSpec, indices: Iterator[int], workers: int, stage, should_stop) -> Iterator:
    """Samples for ``indices`` rendered by ``workers`` processes (and staged, given ``stage``),
    yielded in index order; stops (and kills the workers) as soon as ``should_stop()`` or the
    consumer stops iterating."""
    # A message per batch costs the main process a wake-up and a read: staged samples (a JPEG's
    # bytes, or the names of files already written) are small, so batches of them can be large;
    # raw rendered images are not, and the batches in flight bound the memory of endless runs.
    batch_size = 32 if stage is not None else 8
    window = 4 * workers  # batches in flight: keeps workers busy, bounds memory for endless runs
    objects = getattr(compositor, "objects", None)  # renderers other than the compositor have none
    generated = objects if isinstance(objects, GeneratedObjects) else None
    if generated is not None:  # blocks of generated objects are built here, before their samples go out
        indices = generated.prepared(indices)
    batches = _batched(indices, batch_size)
    with _WorkerPool(workers, compositor, spec, stage) as pool:
        submitted = 0
        for batch in itertools.islice(batches, window):
            pool.submit(submitted, batch)
            submitted += 1
        finished: dict[int, list] = {}
        next_id = 0
        while next_id < submitted:
            while next_id not in finished:
                if should_stop():
                    return
                result = pool.next_result(timeout=0.2)
                if result is not None:
                    finished[result[0]] = result[1]
            samples = finished.pop(next_id)
            next_id += 1
            for batch in itertools.islice(batches, 1):
                pool.submit(submitted, batch)
                submitted += 1
            for sample in samples:
                if should_stop():
                    return
                yield sample
                if generated is not None:  # every sample before the next one is written now
                    generated.release_before(sample.index + 1)


# -- output folder ----------------------------------------------------------------------------


def _run_settings(spec: PasteSpec, options: RunOptions) -> dict:
    return {
        "synthgen_version": __version__,
        "spec": spec.to_dict(),
        "format": options.format,
        "shard_index": options.shard_index,
        "num_shards": options.num_shards,
        "shard_size": options.shard_size,
        "shard_max_bytes": options.shard_max_bytes,
        # The JPEG encoder (nvJPEG on CUDA, libjpeg-turbo otherwise) changes the bytes: a resume
        # must use the same one.
        "jpeg_encoder": "cuda" if getattr(spec, "compositor", "numpy") == "torch" and options.device.startswith("cuda") else "cpu",
    }


def _flatten(settings: dict) -> dict:
    """{"spec": {"seed": 1}} -> {"seed": 1}: setting names as a user knows them."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flatten(value))
        else:
            flat[key] = value
    return flat


def _prepare_output(spec: PasteSpec, options: RunOptions) -> None:
    """Check the output folder against --resume/--overwrite and record the run's settings."""
    from synthgen.cache import atomic_write_json

    out = options.out
    settings_path = run_settings_path(options)
    if options.resume and options.overwrite:
        raise InputError("--resume and --overwrite contradict each other: choose one")
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder")
    if options.resume:
        if not settings_path.exists():
            raise InputError(f"nothing to resume in {out}: it holds no synthgen run (no {settings_path.relative_to(out)})")
        previous = _flatten(json.loads(settings_path.read_text()))
        current = _flatten(json.loads(json.dumps(_run_settings(spec, options))))
        # Paste settings added since the run was made count as their defaults (what that run used).
        if isinstance(spec, PasteSpec):
            defaults = _flatten(json.loads(json.dumps(_run_settings(PasteSpec(), options))))
            previous = {**{k: v for k, v in defaults.items() if k not in previous}, **previous}
        changed = [
            f"{key}: {previous.get(key)!r} -> {current.get(key)!r}"
            for key in sorted(set(previous) | set(current))
            if key != "synthgen_version" and previous.get(key) != current.get(key)
        ]
        if changed:
            raise InputError(
                f"cannot resume {out}: it was made with other settings ({'; '.join(changed)}). "
                "Resume with the same settings, or write to a new folder."
            )
        return
    if options.num_shards > 1 and out.exists() and any(out.iterdir()):
        _check_shared_output(options, settings_path)
    elif out.exists() and any(out.iterdir()):
        if not options.overwrite:
            raise OutputExistsError(
                f"output folder {out} is not empty: pass --overwrite to replace it, "
                "--resume to continue the run in it, or choose another --out"
            )
        if not settings_path.exists():
            raise OutputExistsError(
                f"refusing to --overwrite {out}: it is not a synthgen output folder (no {RUN_DIR}/{RUN_FILE}), "
                "so deleting it could lose your files. Choose an empty or new folder."
            )
        for child in out.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(settings_path, _run_settings(spec, options))


def run_settings_path(options: RunOptions) -> Path:
    """``OUT/.synthgen/run.json``, or this machine's own in a folder several machines share."""
    from synthgen.writers import WriterOptions, state_dir

    return state_dir(options.out, WriterOptions(shard_index=options.shard_index, num_shards=options.num_shards)) / RUN_FILE


def _check_shared_output(options: RunOptions, settings_path: Path) -> None:
    """A folder that other machines of the same job write into may hold their files; it must
    hold nothing of this machine's (unless resuming) and nothing that is not synthgen's."""
    out = options.out
    run_dir = out / RUN_DIR
    if not run_dir.is_dir() or (run_dir / RUN_FILE).exists():
        raise OutputExistsError(
            f"output folder {out} is not empty and holds no other part of a job split over machines "
            "(--num-shards): choose an empty or new folder, shared by all machines of the job"
        )
    if options.overwrite:
        raise InputError(
            f"--overwrite with --num-shards {options.num_shards}: other machines share {out}, so it is not "
            "deleted; remove it yourself, or continue with --resume"
        )
    if settings_path.exists():
        raise OutputExistsError(
            f"machine {options.shard_index} of {options.num_shards} already wrote into {out}: pass --resume to "
            "continue its part, or choose another --out"
        )


def check_run_options(options: RunOptions) -> None:
    """InputError for run options that cannot work together (e.g. an endless COCO run)."""
    from synthgen.writers import WRITERS

    factory = WRITERS.get(options.format)
    if options.n is None and not getattr(factory, "supports_infinite", False):
        raise InputError(
            f"--n inf writes an endless stream, which only --format wds can hold (it is the default with --n inf); "
            f"the {options.format} format is one finite dataset: give a number of samples, or leave --format out"
        )
    if options.n is not None and options.n < 1:
        raise InputError(f"--n {options.n}: give at least 1 sample, or inf")
    if options.workers < 1:
        raise InputError(f"--workers {options.workers} must be at least 1")
    if not (options.num_shards >= 1 and 0 <= options.shard_index < options.num_shards):
        raise InputError(
            f"--shard-index {options.shard_index} / --num-shards {options.num_shards}: "
            "need num-shards >= 1 and 0 <= shard-index < num-shards"
        )
    if options.shard_size < 1 or options.shard_max_bytes < 1024:
        raise InputError("--shard-size must be >= 1 and --shard-max-bytes >= 1024")
    if options.batch_size < 1:
        raise InputError(f"--batch-size {options.batch_size} must be at least 1")


def _check_device(spec: PasteSpec, options: RunOptions) -> None:
    from synthgen.detectors import resolve_device
    from synthgen.sources.generators import is_generator_spec

    generated = spec.generator is not None or is_generator_spec(spec.objects)
    if spec.compositor == "torch" or generated:
        resolve_device(options.device)  # a clear error for a GPU that is not there
    elif options.device != "cpu":
        raise InputError(f"--device {options.device} needs --compositor torch (or generator objects): the numpy compositor runs on the CPU")


def device_parts(options: RunOptions, devices: list[str]) -> list[RunOptions]:
    """The run options of one process per device: process k writes ``OUT/part-k`` and makes the
    samples of shard ``shard_index + num_shards * k`` of ``num_shards * len(devices)``, so the
    parts of all devices (and machines) together are the whole dataset, and for WebDataset one
    gap-free ``shard-*.tar`` numbering. Only the first part shows a progress bar."""
    if not devices:
        raise InputError("--devices needs at least one device, e.g. 0,1 or cuda:0,cuda:1")
    return [
        dataclasses.replace(
            options,
            out=options.out / f"part-{k}",
            device=device,
            shard_index=options.shard_index + options.num_shards * k,
            num_shards=options.num_shards * len(devices),
            progress=options.progress and k == 0,
        )
        for k, device in enumerate(devices)
    ]


def torchrun_part(options: RunOptions, environ: Mapping[str, str]) -> RunOptions:
    """This process's run options when ``torchrun`` started it (``WORLD_SIZE``, ``RANK`` and
    ``LOCAL_RANK`` in ``environ``), else ``options`` unchanged. Each process is one more machine
    of the job, writing into the same ``OUT``: rank r makes shard ``shard_index + num_shards * r``
    of ``num_shards * WORLD_SIZE`` (so ranks and machines together make one gap-free shard set,
    and ``synthgen verify OUT`` checks the whole), on ``cuda:LOCAL_RANK`` when ``--device cuda``.
    Only rank 0 shows a progress bar."""
    if "WORLD_SIZE" not in environ:
        return options
    try:
        world, rank, local = (int(environ[name]) for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"))
    except (KeyError, ValueError):
        found = {name: environ.get(name) for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
        raise InputError(f"torchrun's environment is incomplete ({found}): WORLD_SIZE, RANK and LOCAL_RANK must "
                         "all be whole numbers; start synthgen with torchrun, or unset WORLD_SIZE") from None
    if not (world >= 1 and 0 <= rank < world and local >= 0):
        raise InputError(f"torchrun's RANK {rank} / WORLD_SIZE {world} / LOCAL_RANK {local}: need 0 <= RANK < WORLD_SIZE")
    device = options.device
    if device.startswith("cuda"):
        if device != "cuda" and world > 1:
            raise InputError(f"--device {device} under torchrun: each process takes cuda:LOCAL_RANK; pass --device cuda")
        device = f"cuda:{local}"
    return dataclasses.replace(
        options,
        device=device,
        shard_index=options.shard_index + options.num_shards * rank,
        num_shards=options.num_shards * world,
        progress=options.progress and rank == 0,
    )


def _device_main(spec: PasteSpec, options: RunOptions, results) -> None:
    try:
        results.put((options.shard_index, run_paste(spec, options), None))
    except SynthgenError as err:
        results.put((options.shard_index, None, err))
    except BaseException:
        results.put((options.shard_index, None, traceback.format_exc()))


def run_paste_on_devices(spec: PasteSpec, options: RunOptions, devices: list[str]) -> list[RunSummary]:
    """:func:`run_paste` in one process per device (see :func:`device_parts`), all at once.
    Ctrl-C / SIGTERM reach every process (one process group): each stops cleanly and
    ``--resume`` with the same ``--devices`` continues all parts."""
    spec.validate()
    parts = device_parts(options, devices)
    for part in parts:
        check_run_options(part)
        _check_device(spec, part)
    context = multiprocessing.get_context("spawn")  # CUDA cannot be used in forked children
    results = context.Queue()
    processes = [context.Process(target=_device_main, args=(spec, part, results)) for part in parts]
    summaries: dict[int, RunSummary] = {}
    errors: list = []
    with _StopFlag():  # the children receive the signal themselves and stop cleanly
        for process in processes:
            process.start()
        answered = 0
        while answered < len(processes):
            try:
                shard, summary, error = results.get(timeout=1.0)
            except queue.Empty:
                if sum(p.exitcode is not None for p in processes) > answered:
                    time.sleep(1.0)  # a result put just before exiting may still be in the pipe
                    if results.empty():
                        raise RuntimeError("a device process died unexpectedly (out of memory?)") from None
                continue
            answered += 1
            if error is not None:
                errors.append(error)
            else:
                summaries[shard] = summary
        for process in processes:
            process.join()
    for error in errors:
        if isinstance(error, BaseException):
            raise error
        raise RuntimeError(f"a device process failed:\n{error}")
    return [summaries[part.shard_index] for part in parts]


def local_count(n: int, shard_index: int, num_shards: int) -> int:
    """How many of samples 0..n-1 fall to machine ``shard_index`` of ``num_shards``."""
    return max(0, (n - shard_index + num_shards - 1) // num_shards)


def run_paste(spec: PasteSpec, options: RunOptions, console=None) -> RunSummary:
    """Make (or continue) a synthetic dataset in ``options.out``.

    Stops cleanly on SIGINT/SIGTERM: every sample written so far stays valid and ``--resume``
    continues after it. Raises :class:`synthgen.errors.SynthgenError` on bad input and
    :class:`WriteError` when the disk fills up.
    """
    spec.validate()
    check_run_options(options)
    _check_device(spec, options)
    scene = prepare(spec, progress=options.progress, device=options.device, generator_batch=options.generator_batch, workers=options.workers)
    return write_dataset(scene.compositor, spec, options, scene.notes, console, generated=scene.generated, unreadable=scene.unreadable)


def write_dataset(
    renderer, spec, options: RunOptions, notes: list[str], console=None, description: str = "pasting", generated=None,
    unreadable: list[str] = (),
) -> RunSummary:
    """Render samples with ``renderer`` and write them to ``options.out``, in index order, with
    resume and clean stops: the writing half of :func:`run_paste`, shared by every command that
    makes samples.

    ``renderer`` is anything shaped like a :class:`Compositor`: ``render(seed, index,
    keep_masks=..., out=...) -> Sample`` (a function of ``(seed, index)`` only), ``categories``
    (class names) and ``config.width``/``config.height``; it must pickle for ``spawn`` workers.
    ``spec`` has ``seed``, ``jpeg_quality``, ``masks``, ``validate()`` and ``to_dict()`` (the
    settings a resume must repeat). ``generated``: a generator object source, whose object blocks
    are kept in the run's folder so that a resume reuses them. ``unreadable``: the input files
    that were skipped, with their reasons, listed in the run's ``.synthgen/unreadable.txt``.
    """
    from synthgen.writers import WriterOptions, make_writer

    spec.validate()
    check_run_options(options)
    _prepare_output(spec, options)
    if generated is not None:
        generated.attach(options.out / RUN_DIR)
    if unreadable:
        listing = options.out / RUN_DIR / UNREADABLE_LIST
        listing.write_text("".join(line + "\n" for line in unreadable))
        notes = [*notes, f"{len(unreadable):,} unreadable input files skipped; all are listed in {listing}"]
    writer = make_writer(
        options.format,
        options.out,
        renderer.categories,
        WriterOptions(
            shard_size=options.shard_size,
            shard_max_bytes=options.shard_max_bytes,
            shard_index=options.shard_index,
            num_shards=options.num_shards,
            visibility=getattr(spec, "visibility", False),
        ),
    )
    done = writer.open(resume=options.resume)
    total = None if options.n is None else local_count(options.n, options.shard_index, options.num_shards)
    positions = itertools.count(done) if total is None else iter(range(done, total))
    indices = (options.shard_index + p * options.num_shards for p in positions)

    written = objects = skipped = empty = 0
    categories = renderer.categories
    per_class = [0] * (len(categories) + 1)  # by category id
    started = time.perf_counter()
    stop = _StopFlag()
    progress = progress_bar("samples", options.progress, console)
    try:
        with stop, progress:
            task = progress.add_task(description, total=total, completed=done)
            if getattr(spec, "compositor", "numpy") == "torch":
                renderer = DeviceRun(renderer, options.device, options.batch_size)
            for staged in _produce(renderer, spec, indices, options.workers, stop, writer.stager()):
                writer.commit(staged)
                written += 1
                objects += staged.objects
                skipped += staged.skipped_objects
                empty += not staged.objects
                for label in staged.labels:
                    per_class[label] += 1
                progress.advance(task)
    except WriteError:
        _close_after_failure(writer)
        raise
    except OSError as err:
        _close_after_failure(writer)
        raise WriteError(
            f"writing to {options.out} failed: {err}. Samples written before this are intact; "
            "fix the cause (free disk space?) and rerun with --resume."
        ) from None
    finally:
        if generated is not None:
            generated.close()
    writer.close()
    return RunSummary(
        out=options.out,
        format=options.format,
        written=written,
        total=done + written,
        objects=objects,
        skipped_objects=skipped,
        empty_images=empty,
        seconds=time.perf_counter() - started,
        interrupted=stop.requested and (total is None or done + written < total),
        notes=notes,
        per_class=dict(zip(categories, per_class[1:])),
        planned=total,
    )


def _close_after_failure(writer) -> None:
    try:
        writer.close()
    except Exception:  # the original failure is what the user needs to see
        pass
