"""Trained generators as object sources: ``--objects stylegan-ffhq`` (a model card's name) or
``--objects PATH`` (a generator file), an endless stream of objects that never repeats.

Objects are made in *blocks*. Block ``b`` holds the objects with indices
``b*pool_size ... (b+1)*pool_size - 1``; object ``k`` is generated from
``latents_for(seed, [k], z_dim)`` (and, for conditional models, ``labels_for``), segmented, cut
out and written as an ordinary object pool folder (:mod:`synthgen.pool`). Sample ``i`` pastes
objects of block ``i // refresh`` only. So a block is a pure function of ``(seed, b)`` and the
settings, sample ``i`` still depends only on ``(seed, i)``, and no object appears in two blocks:
the pool is refreshed from fresh latents every ``refresh`` samples.

Blocks are built in the main process only, batched on ``device``: generated, shrunk to the
object size and (a learned segmenter, ReDO) segmented there; the host gets the shrunk images to
clean the masks (OpenCV) and to write the block. For the torch compositor the block's cut-outs
are also kept on the device, made there from the generated images (only each cut-out's alpha
comes back from the host). One block ahead is built in a background thread while the current
one is pasted. Blocks are written into the run's folder
(``OUT/.synthgen/objects/<fingerprint>/block-<b>``), where the paste workers map them: the worker
count never changes what is generated, and a resumed run finds the block it stopped in, byte for
byte, even when it was generated on a GPU. Blocks before the sample being written are deleted,
so an endless run keeps a few blocks on disk (those of the samples in flight, and one ahead) and
at most two mapped per process.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Protocol

import numpy as np

from synthgen.cache import atomic_directory, cache_root, fingerprint_files
from synthgen.errors import InputError
from synthgen.imageio import is_image_path

if TYPE_CHECKING:
    from synthgen.generators import GeneratorBase
    from synthgen.generators.registry import ModelCard
    from synthgen.pool import ObjectPool
    from synthgen.segmenters import MaskQuality

#: Bump when what a block holds for the same settings changes (generation, cut-outs).
BLOCK_VERSION = 2
BLOCKS_KEPT_MAPPED = 2


@dataclass(frozen=True)
class GeneratorSettings:
    """What decides the objects a generator source gives (part of a run's settings)."""

    #: Samples pasted from one block of objects before the next, fresh block.
    refresh: int = 1000
    #: Objects generated per block (before segmentation rejects any).
    pool_size: int = 256
    #: Truncation psi; None: the card's (0.7 for StyleGAN v1, as NVIDIA sampled it), else 1.
    truncation: float | None = None
    #: Generated images are resized (area averaging) so that their longer side is at most this
    #: before segmentation; 0 keeps them as generated. Pasted objects are rarely larger, and a
    #: block of 256 FFHQ faces at 1024 px would take 1 GiB (and GrabCut a second per face).
    object_size: int = 256

    def validate(self) -> "GeneratorSettings":
        if self.refresh < 1 or self.pool_size < 1:
            raise InputError(f"--refresh {self.refresh} and --pool-size {self.pool_size} must be at least 1")
        if self.object_size < 0 or 0 < self.object_size < 16:
            raise InputError(f"--object-size {self.object_size} must be 0 (as generated) or at least 16 pixels")
        if self.truncation is not None and not 0.0 <= self.truncation <= 2.0:
            raise InputError(f"--truncation {self.truncation} must be in [0, 2] (1 = none, 0.7 = NVIDIA's StyleGAN v1 default)")
        return self


def is_generator_spec(spec: str | None) -> bool:
    """Whether ``--objects SPEC`` names a generator: a card's name, or a file that is not an
    image (folders are object images or pools)."""
    if spec is None:
        return False
    from synthgen.generators.registry import all_cards

    if spec in all_cards():
        return True
    path = Path(spec).expanduser()
    return path.is_file() and not is_image_path(path)


@dataclass(frozen=True)
class GeneratorSource:
    """A resolved generator: the name or path given, its card (None for an unknown file) and
    its file. Resolving checks the file is there (NotAvailableError saying where to put it)."""

    spec: str
    card: "ModelCard | None"
    path: Path

    @classmethod
    def resolve(cls, spec: str) -> "GeneratorSource":
        from synthgen.generators.registry import all_cards, resolve_model_file

        card = all_cards().get(spec)
        if card is not None and card.kind != "generator":  # said before whether its file is here
            raise InputError(
                f"{spec} is a {card.kind} ({card.title}), not a generator of objects: use it as "
                f"--segmenter {card.family} --segmenter-options checkpoint={card.name}"
            )
        card, path = resolve_model_file(spec)
        return cls(spec, card, path)

    def truncation(self, settings: GeneratorSettings) -> float:
        if settings.truncation is not None:
            return settings.truncation
        return float(self.card.architecture.get("truncation_psi", 1.0)) if self.card is not None else 1.0

    def load(self, device: str) -> GeneratorBase:
        from synthgen.generators import GeneratorBase, load_generator

        generator = load_generator(self.spec, device=device)
        if not isinstance(generator, GeneratorBase):
            raise InputError(f"{self.spec}: a {generator.family} generator cannot make pool objects (no images_from_latents)")
        return generator


def generate_objects(generator: GeneratorBase, seed: int, indices: np.ndarray):
    """Objects ``indices`` of the stream seeded ``seed`` as post-processed uint8 RGB images, one
    ``N x H x W x 3`` tensor on the generator's device (the generator's crop and truncation;
    noise "const"): latents from ``latents_for``, and classes from ``labels_for`` for a
    conditional model."""
    from synthgen.generators.latents import labels_for, latents_for

    labels = labels_for(seed, indices, generator.c_dim) if generator.c_dim else None
    return generator.tensors_from_latents(latents_for(seed, indices, generator.z_dim), labels)


def fit_within(images, side: int):
    """``images`` (``N x H x W x 3`` uint8 tensor) shrunk by area averaging, on their device, so
    that their longer side is at most ``side`` (0: as they are). On the device, before anything
    goes to the host: a 1024 px face is 16 times the bytes of its 256 px object."""
    import torch

    h, w = images.shape[1:3]
    if side == 0 or max(h, w) <= side:
        return images
    scale = side / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    shrunk = torch.nn.functional.interpolate(images.permute(0, 3, 1, 2).float(), size=size, mode="area")
    return shrunk.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def device_cutouts(images, cuts: list[tuple[int, np.ndarray, tuple[int, int, int, int]]]) -> list:
    """The cut-outs ``cuts`` (``(image number, alpha, (y0, y1, x0, x1))``, as
    :func:`synthgen.pool.cutout_alpha` gives them) of ``images`` (``N x H x W x 3`` uint8 on a
    device) as ``(h, w, 4)`` uint8 tensors there: the colour never leaves the device; the alpha,
    decided on the host (mask cleaning and quality checks are OpenCV code), comes in at one byte
    per pixel. Colours under transparent pixels are bled from the object's as on the host
    (:func:`synthgen.pool.bleed_colours`), approximately: each pass gives the pixels next to the
    filled ones the mean colour of their filled neighbours, where the host copies the colour of
    the nearest solid pixel."""
    import torch

    device = images.device
    frames = torch.zeros((len(cuts),) + tuple(images.shape[1:3]), dtype=torch.uint8, device=device)
    region = torch.zeros(frames.shape, dtype=torch.bool, device=device)
    for row, (_, alpha, (y0, y1, x0, x1)) in enumerate(cuts):
        frames[row, y0:y1, x0:x1] = torch.from_numpy(alpha).to(device)
        region[row, y0:y1, x0:x1] = True
    colour = _bleed(images[[j for j, _, _ in cuts]], frames >= 128, region)
    return [torch.cat([colour[row, y0:y1, x0:x1], frames[row, y0:y1, x0:x1, None]], dim=2).contiguous()
            for row, (_, _, (y0, y1, x0, x1)) in enumerate(cuts)]


def _bleed(colour, solid, region):
    """``colour`` (``N x H x W x 3`` uint8) with every pixel of ``region`` that is not ``solid``
    given the colour of the solid ones nearby (see :func:`device_cutouts`); images that are all
    solid or have no solid pixel unchanged."""
    import torch

    pixels = colour.permute(0, 3, 1, 2).float()
    filled = solid[:, None].float()
    bled = region[:, None] & ~solid[:, None] & solid.flatten(1).any(1)[:, None, None, None]
    value = pixels * filled
    while True:
        todo = bled & (filled == 0)
        if not bool(todo.any()):
            break
        # Both sums are over the same 3x3 window (divided by 9 alike): their ratio is the mean.
        total = torch.nn.functional.avg_pool2d(value, 3, stride=1, padding=1)
        count = torch.nn.functional.avg_pool2d(filled, 3, stride=1, padding=1)
        grow = todo & (count > 0)
        if not bool(grow.any()):
            break  # the rest cannot be reached (not connected to a solid pixel in its region)
        value = torch.where(grow, total / count.clamp_min(1e-12), value)
        filled = torch.where(grow, torch.ones_like(filled), filled)
    out = torch.where(bled, value, pixels)
    return out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


class GeneratedObjects:
    """The object pool of a run with a generator source: ``pool_for(i)`` is the block of sample
    ``i`` (an :class:`~synthgen.pool.ObjectPool`).

    In the main process it also builds blocks (``ensure``, ``prepared``) and deletes spent ones
    (``release_before``); it pickles, for paste workers, as the folder and the block geometry
    only, and a worker maps blocks the main process has already built.
    """

    def __init__(self, classes: list[str], settings: GeneratorSettings, builder: "_BlockBuilder | None" = None) -> None:
        self.classes = list(classes)
        self.settings = settings
        self._builder = builder
        self.folder: Path | None = None
        self._mapped: dict[int, ObjectPool] = {}
        self._owned_folder = False
        self._kept_from = 0  # blocks below this one are deleted
        # Forked paste workers inherit this object as it is: only the process that made it builds.
        self._owner = os.getpid()

    def __len__(self) -> int:
        return self.settings.pool_size

    def __getstate__(self) -> dict[str, Any]:
        return {"classes": self.classes, "settings": self.settings, "folder": self.folder}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["classes"], state["settings"])
        self.folder = state["folder"]

    # -- where blocks live --------------------------------------------------------------------

    def attach(self, run_dir: Path | None) -> Path:
        """Keep blocks under ``run_dir`` (a run's ``OUT/.synthgen``), or, given None, in a
        temporary folder in the cache that :meth:`close` removes. Leftovers of an interrupted
        block build are removed."""
        assert self._builder is not None, "blocks are attached in the process that builds them"
        if run_dir is None:
            base = cache_root() / "generated"
            base.mkdir(parents=True, exist_ok=True)
            self.folder = Path(tempfile.mkdtemp(prefix="stream-", dir=base))
            self._owned_folder = True
        else:
            self.folder = run_dir / "objects" / self._builder.fingerprint()
            self.folder.mkdir(parents=True, exist_ok=True)
            for stale in self.folder.glob(".block-*.tmp"):
                shutil.rmtree(stale, ignore_errors=True)
            for other in self.folder.parent.iterdir():  # blocks of an older generator file: never used again
                if other != self.folder:
                    shutil.rmtree(other, ignore_errors=True)
        return self.folder

    def close(self) -> None:
        """Stop a block being built ahead (it stops after its current batch and leaves nothing),
        unmap the blocks, and remove a temporary folder."""
        if self._builds():
            self._builder.cancel()
        self._mapped.clear()
        if self._owned_folder and self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def _builds(self) -> bool:
        return self._builder is not None and os.getpid() == self._owner

    def _block_dir(self, block: int) -> Path:
        if self.folder is None:
            raise RuntimeError("GeneratedObjects used before attach()")
        return self.folder / f"block-{block:08d}"

    def block_of(self, index: int) -> int:
        return index // self.settings.refresh

    # -- reading ------------------------------------------------------------------------------

    def pool_for(self, index: int) -> ObjectPool:
        """The block of sample ``index``, mapped (built first when this process builds blocks;
        rendering in this process means every earlier sample is written, so older blocks go)."""
        block = self.block_of(index)
        pool = self._mapped.get(block)
        if pool is not None:
            return pool
        from synthgen.pool import ObjectPool

        if self._builds():
            self.ensure(block)
            self.release_before(index)
        path = self._block_dir(block)
        if not path.is_dir():
            raise RuntimeError(f"object block {block} is not built ({path}): the main process builds blocks before it hands their samples out")
        pool = self._mapped[block] = ObjectPool.load(path)
        for old in sorted(self._mapped)[:-BLOCKS_KEPT_MAPPED]:
            del self._mapped[old]
        return pool

    # -- building (main process) --------------------------------------------------------------

    def ensure(self, block: int) -> None:
        """Block ``block`` exists on disk (built now if needed); the next one is started in the
        background."""
        assert self._builder is not None
        self._builder.ensure(block, self._block_dir(block))
        self._builder.prefetch(block + 1, self._block_dir(block + 1))

    def prepared(self, indices: Iterator[int]) -> Iterator[int]:
        """``indices``, each yielded once the block it needs is on disk (for paste workers)."""
        current = None
        for index in indices:
            block = self.block_of(index)
            if block != current:
                self.ensure(block)
                current = block
            yield index

    def take_device_images(self, block: int):
        """Block ``block``'s cut-outs as they were made on the device
        (:class:`~synthgen.compositor.torch_render.DeviceImages`, in the block's order), handed
        over once (the device copies of earlier blocks are dropped); None when this process did
        not build the block with ``device_copies`` (a block found on disk when resuming: put it
        on the device from there)."""
        return self._builder.take_device_images(block) if self._builds() else None

    def release_before(self, index: int) -> None:
        """Delete blocks only samples before ``index`` used (every such sample is written)."""
        keep_from = self.block_of(index)
        if self.folder is None or keep_from <= self._kept_from:  # the common case: nothing new to delete
            return
        self._kept_from = keep_from
        for path in self.folder.glob("block-*"):
            if int(path.name.split("-")[1]) < keep_from:
                shutil.rmtree(path, ignore_errors=True)


class _BlockBuilder:
    """Generates, segments and writes blocks, one at a time, in the main process."""

    def __init__(self, source: GeneratorSource, generator: GeneratorBase, seed: int, settings: GeneratorSettings,
                 segmenter_name: str, segmenter_options: Mapping[str, Any], quality: "MaskQuality",
                 device: str, batch_size: int, device_copies: bool = False) -> None:
        """``device_copies``: also keep each block's cut-outs on ``device`` (for the torch
        compositor), made there from the generated images (see :func:`device_cutouts`)."""
        from synthgen.segmenters import SEGMENTERS, NoneSegmenter, make_segmenter

        self.source, self.generator, self.seed, self.settings = source, generator, seed, settings
        self.segmenter_options = dict(segmenter_options)  # as the user gave them: they name the blocks
        options = dict(segmenter_options)
        if "device" in inspect.signature(SEGMENTERS.get(segmenter_name)).parameters:
            options.setdefault("device", device)  # a learned segmenter (redo) runs where the generator does
        self.segmenter = make_segmenter(segmenter_name, options)
        self.quality = None if self.segmenter.name == NoneSegmenter.name else quality
        self.batch_size = batch_size
        # Images are computed compute_batch latents at a time (the last chunk padded), so an
        # object's pixels do not depend on which objects it is generated with.
        generator.truncation_psi = source.truncation(settings)
        generator.compute_batch = batch_size
        self._lock = threading.Lock()
        self._background: dict[int, tuple[threading.Thread, list[BaseException]]] = {}
        self._cancelled = threading.Event()
        self.device_copies = device_copies
        self._device_blocks: dict[int, Any] = {}  # block -> DeviceImages, until taken or spent
        self._device_lock = threading.Lock()  # not the build lock: taking a block must not wait for the next build

    def fingerprint(self) -> str:
        """Names the blocks' folder: the generator file's identity and every setting that
        changes what a block holds."""
        return fingerprint_files([self.source.path], {
            "version": BLOCK_VERSION, "seed": self.seed, "settings": dataclasses.asdict(self.settings),
            "truncation": self.source.truncation(self.settings), "crop": self.generator.crop,
            "segmenter": self.segmenter.name, "options": self.segmenter_options,
            "quality": None if self.quality is None else dataclasses.asdict(self.quality),
        })

    def ensure(self, block: int, path: Path) -> None:
        pending = self._background.pop(block, None)
        if pending is not None:
            thread, errors = pending
            thread.join()
            if errors:
                raise errors[0]
        if not path.is_dir():
            self._build(block, path)

    def prefetch(self, block: int, path: Path) -> None:
        if block in self._background or path.is_dir():
            return
        errors: list[BaseException] = []

        def run() -> None:
            try:
                self._build(block, path)
            except BaseException as err:  # handed to the ensure() that waits for this block
                errors.append(err)

        thread = threading.Thread(target=run, name=f"synthgen-block-{block}", daemon=True)
        self._background[block] = (thread, errors)
        thread.start()

    def cancel(self) -> None:
        """Stop building: a block in progress is abandoned after its current batch (a thread
        killed inside torch at interpreter exit would abort the process)."""
        self._cancelled.set()
        for thread, _ in self._background.values():
            thread.join()
        self._background.clear()
        self._device_blocks.clear()

    def take_device_images(self, block: int):
        with self._device_lock:
            for spent in [b for b in self._device_blocks if b < block]:  # blocks come in order: never asked for
                del self._device_blocks[spent]
            return self._device_blocks.pop(block, None)

    def _build(self, block: int, path: Path) -> None:
        from synthgen.pool import INDEX_FILE, PIXELS_FILE, POOL_FORMAT, POOL_VERSION, _PoolWriter, _segment_chunk, cutout_alpha, cutout_pixels, format_summary
        from synthgen.sources.folder import ObjectItem

        with self._lock:
            if path.is_dir():
                return
            size = self.settings.pool_size
            indices = np.arange(block * size, (block + 1) * size, dtype=np.int64)
            with atomic_directory(path) as tmp, open(tmp / PIXELS_FILE, "wb") as pixels:
                writer = _PoolWriter(pixels, self.source.path.parent, self.generator_classes)
                on_device: list = []
                for start in range(0, size, self.batch_size):
                    if self._cancelled.is_set():
                        raise _Cancelled()
                    chunk = indices[start:start + self.batch_size]
                    generated = fit_within(generate_objects(self.generator, self.seed, chunk), self.settings.object_size)
                    # The host copy: the block on disk (planning workers, resume) and the mask cleaning.
                    images = list(generated.cpu().numpy())
                    # ReDO segments the images where they are; GrabCut (OpenCV) needs the host's.
                    inputs = generated if getattr(self.segmenter, "segments_device_images", False) else images
                    masks = _segment_chunk(self.segmenter, inputs, [None] * len(images))
                    cuts = []
                    for j, (k, image, soft, label) in enumerate(zip(chunk, images, masks, self._labels(chunk))):
                        cut = soft if isinstance(soft, str) else cutout_alpha(soft, self.segmenter.threshold, self.quality)
                        if isinstance(cut, str):
                            writer.reject(cut)
                        else:
                            # A generated object's source is its latent's index: enough to make it again.
                            writer.accept(ObjectItem(self.source.path.parent / f"{self.source.path.name}#{int(k)}", label),
                                          cutout_pixels(image, *cut))
                            cuts.append((j, *cut))
                    if self.device_copies and cuts:
                        on_device += device_cutouts(generated, cuts)
                summary = writer.summary(size, self.segmenter, self.quality, 0.0)
                if writer.accepted == 0:
                    raise InputError(
                        f"none of the {size} objects {self.source.spec} generated for block {block} was accepted "
                        f"by the {self.segmenter.name} segmenter ({format_summary(summary)}). Try --segmenter none "
                        "(paste whole frames), another segmenter, or looser mask-quality bounds."
                    )
                index = {"format": POOL_FORMAT, "version": POOL_VERSION, "classes": self.generator_classes,
                         "objects": writer.columns, "summary": summary}
                (tmp / INDEX_FILE).write_text(json.dumps(index, separators=(",", ":")))
            if on_device:
                from synthgen.compositor.torch_render import DeviceImages

                made = DeviceImages.from_arrays(on_device, on_device[0].device, 4)
                with self._device_lock:
                    self._device_blocks[block] = made

    @property
    def generator_classes(self) -> list[str]:
        return list(self.generator.classes)

    def _labels(self, indices: np.ndarray) -> list[str]:
        classes = self.generator_classes
        if not self.generator.c_dim:
            return [classes[0]] * len(indices)
        from synthgen.generators.latents import labels_for

        return [classes[i] for i in labels_for(self.seed, indices, self.generator.c_dim)]


class _Cancelled(Exception):
    """A block build stopped by :meth:`_BlockBuilder.cancel` (the run is over)."""


def generated_objects(
    spec: str, seed: int, settings: GeneratorSettings, segmenter_name: str, segmenter_options: Mapping[str, Any],
    quality: "MaskQuality", device: str = "cpu", batch_size: int = 32, device_copies: bool = False,
) -> GeneratedObjects:
    """The object pool of a run whose ``--objects`` is generator ``spec``: the generator is
    resolved and loaded here (so a missing or bad file is reported before anything is
    written); blocks are built on first use, after :meth:`GeneratedObjects.attach`.
    ``device_copies``: keep each block's cut-outs on ``device`` too, for the torch compositor
    (:meth:`GeneratedObjects.take_device_images`)."""
    source = GeneratorSource.resolve(spec)
    generator = source.load(device)
    builder = _BlockBuilder(source, generator, seed, settings.validate(), segmenter_name, segmenter_options, quality, device,
                            batch_size, device_copies)
    classes = builder.generator_classes
    if len(classes) != max(1, generator.c_dim):
        raise InputError(f"{spec}: the generator names {len(classes)} classes for {generator.c_dim} labels")
    return GeneratedObjects(classes, settings, builder)
