"""The object pool: every object segmented once, cut out, and stored for fast random access.

A pool is a folder:

- ``pixels.bin``: all cut-outs as RGBA ``uint8``, row-major, concatenated. Each cut-out is its
  image cropped to the extent of its cleaned mask, alpha = mask * 255 (for the ``none``
  segmenter the whole frame, alpha 255).
- ``index.json``: ``format``/``version``, ``classes`` (names, in category order), ``objects``
  as columns (``class_id`` 0-based, ``source`` path relative to the source folder, byte
  ``offset`` into pixels.bin, ``h``, ``w``, and ``grey``, the mean grey level of the object's
  pixels that colour jitter scales contrast around; pools built before it was stored lack the
  column and the compositor computes it on first use), and a ``summary`` of the build
  (accepted, rejected counts by reason, unreadable files with up to 20 examples, segmenter and
  quality settings), and ``rejected_examples``: for the first few rejected objects of each
  reason, ``{"reason", "source", "image"}``, where ``image`` names a thumbnail in
  ``rejected/`` (the photo, dimmed outside the mask that was rejected, when there was one), so
  ``synthgen preview POOL`` can show what was rejected and why (pools built before it was
  stored lack the key).
- ``unreadable.txt`` (only when some were skipped): every unreadable file, with its reason.

:meth:`ObjectPool.load` memory-maps pixels.bin, so many compositor worker processes share one
copy through the page cache; a pool pickles as its path. :func:`cached_pool` keeps pools under
the synthgen cache, keyed by the source files and the segmentation settings, so segmentation
runs once per object.
"""

from __future__ import annotations

import json
import operator
import shutil
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterator, Mapping, Sequence

import cv2
import numpy as np
from synthgen.progress import progress_bar

from synthgen.cache import atomic_directory, cache_root, fingerprint_files, map_pixels
from synthgen.compositor.augment import mean_grey
from synthgen.errors import InputError, OutputExistsError
from synthgen.imageio import read_image, read_mask
from synthgen.segmenters import (
    MaskQuality,
    NoneSegmenter,
    Segmenter,
    Unsegmentable,
    clean_soft_mask,
    make_segmenter,
    segmenter_spec,
)

if TYPE_CHECKING:
    from synthgen.sources.folder import FolderSource, ObjectItem

POOL_FORMAT = "synthgen-object-pool"
POOL_VERSION = 2  # 2: colours bled into the non-solid pixels (see bleed_colours)
# Bump when mask cleaning, cut-out extraction or a segmenter's defaults change what a pool
# holds, so that cached pools built by older code are not reused.
PIPELINE_VERSION = 1
INDEX_FILE = "index.json"
PIXELS_FILE = "pixels.bin"
UNREADABLE_FILE = "unreadable.txt"  # every skipped file with its reason, when there are any
CHUNK = 32  # images per segment_batch call
MAX_EXAMPLES = 20
REJECTED_DIR = "rejected"  # thumbnails of the first rejected objects of each reason
REJECTED_SHOWN = 4  # rejected objects kept as thumbnails per reason
REJECTED_THUMBNAIL = 128  # their longest side, in pixels


@dataclass(frozen=True)
class Cutout:
    """One pooled object: ``rgba`` is a read-only ``(h, w, 4)`` ``uint8`` view into the pool."""

    rgba: np.ndarray
    class_id: int  # 0-based index into ObjectPool.classes
    source: str  # path relative to the source folder
    grey: float | None = None  # mean grey level of the object's pixels; None: not stored


def is_pool_dir(path: Path) -> bool:
    return (path / INDEX_FILE).is_file() and (path / PIXELS_FILE).is_file()


class ObjectPool:
    """A built object pool, memory-mapped. Use :meth:`load`, :func:`build_pool` or
    :func:`cached_pool`; ``pool[i]`` is a :class:`Cutout`."""

    def __init__(self, path: Path, index: dict[str, Any], pixels: np.ndarray) -> None:
        self.path = path
        self.classes: list[str] = list(index["classes"])
        self.summary: dict[str, Any] = index["summary"]
        objects = index["objects"]
        self.class_ids = np.asarray(objects["class_id"], dtype=np.int64)
        self.shapes = np.asarray([objects["h"], objects["w"]], dtype=np.int64).T.reshape(-1, 2)  # (N, 2): h, w
        # Plain lists: indexing them is several times faster than numpy scalars in pool[i].
        self._offsets: list[int] = list(objects["offset"])
        self._hw: list[tuple[int, int]] = list(zip(objects["h"], objects["w"]))
        self._class_ids: list[int] = list(objects["class_id"])
        self._sources: list[str] = list(objects["source"])
        self._greys: list[float | None] = list(objects["grey"]) if "grey" in objects else [None] * len(self._offsets)
        self._pixels = pixels  # the cut-outs are views of this mapping
        self.rejected_examples: list[dict[str, str]] = list(index.get("rejected_examples", []))

    def rejected_image(self, example: Mapping[str, str]) -> np.ndarray | None:
        """The RGB thumbnail of one of :attr:`rejected_examples`, or None when its file is gone."""
        return read_image(self.path / example["image"])

    @classmethod
    def load(cls, path: str | Path) -> ObjectPool:
        """Open the pool in folder ``path``. InputError if it is not a pool, was written by
        another pool format version, or is damaged."""
        path = Path(path).expanduser().resolve()
        if not path.is_dir() or not (path / INDEX_FILE).is_file():
            raise InputError(
                f"{path} is not an object pool (no {INDEX_FILE}); a pool is built from a folder of "
                "object images, pass that folder instead"
            )
        try:
            index = json.loads((path / INDEX_FILE).read_text())
        except (OSError, ValueError) as err:
            raise InputError(
                f"the object pool index {path / INDEX_FILE} is unreadable ({err}); delete {path} and rebuild it"
            ) from None
        if not isinstance(index, dict) or index.get("format") != POOL_FORMAT:
            raise InputError(f"{path / INDEX_FILE} is not a synthgen object pool index")
        if index.get("version") != POOL_VERSION:
            raise InputError(
                f"the object pool {path} was written by pool format version {index.get('version')}, and "
                f"this synthgen reads version {POOL_VERSION}; delete it and rebuild it from the object "
                "images (cached pools are rebuilt automatically)"
            )
        pixels_path = path / PIXELS_FILE
        size = pixels_path.stat().st_size if pixels_path.is_file() else -1
        try:
            objects = index["objects"]
            expected = sum(4 * h * w for h, w in zip(objects["h"], objects["w"], strict=True))
            optional = ("grey",) if "grey" in objects else ()
            lengths = {len(objects[key]) for key in ("class_id", "source", "offset", "h", "w", *optional)}
            well_formed = len(lengths) == 1 and isinstance(index["classes"], list) and "summary" in index
        except (KeyError, TypeError, ValueError):
            expected, well_formed = 0, False
        if not well_formed or size != expected or expected == 0:
            raise InputError(
                f"the object pool {path} is damaged ({PIXELS_FILE} holds {max(size, 0):,} bytes, the index "
                f"describes {expected:,}); delete it and rebuild it"
            )
        return cls(path, index, map_pixels(pixels_path))

    def __len__(self) -> int:
        return len(self._offsets)

    def __getitem__(self, i: int) -> Cutout:
        i = operator.index(i)
        offset = self._offsets[i]  # IndexError past the end, Python semantics for negatives
        h, w = self._hw[i]
        rgba = self._pixels[offset:offset + h * w * 4].reshape(h, w, 4)
        return Cutout(rgba, self._class_ids[i], self._sources[i], self._greys[i])

    def __reduce__(self) -> tuple[Callable[[str], ObjectPool], tuple[str]]:
        # Workers get the path and map the same file: nothing but the path is pickled.
        return (ObjectPool.load, (str(self.path),))

    def __repr__(self) -> str:
        return f"ObjectPool({str(self.path)!r}, {len(self)} objects, classes={self.classes})"


@contextmanager
def _progress_bar(enabled: bool, total: int, description: str) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; a rich bar with rate and ETA on stderr when ``enabled``."""
    if not enabled:
        yield lambda n: None
        return
    with progress_bar("objects") as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def _segment_chunk(
    segmenter: Segmenter, images: Sequence[np.ndarray], masks: Sequence[np.ndarray | None]
) -> list[np.ndarray | str]:
    """Soft masks for ``images``, or the rejection reason for images the segmenter cannot handle."""
    try:
        return list(segmenter.segment_batch(images, masks))
    except Unsegmentable:
        pass
    results: list[np.ndarray | str] = []
    for image, mask in zip(images, masks):
        try:
            results.append(segmenter.segment(image, mask))
        except Unsegmentable as err:
            results.append(err.reason)
    return results


def _cutout(
    image: np.ndarray, soft: np.ndarray, threshold: float, quality: MaskQuality | None
) -> np.ndarray | str:
    """The RGBA cut-out of ``image`` under ``soft``, cropped to the cleaned mask's extent, or the
    reason the mask is rejected. ``quality=None`` takes the mask as given (naive pasting)."""
    cut = cutout_alpha(soft, threshold, quality)
    if isinstance(cut, str):
        return cut
    return cutout_pixels(image, *cut)


def cutout_pixels(image: np.ndarray, alpha: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The RGBA cut-out: ``image``'s pixels in ``box`` (see :func:`cutout_alpha`) under
    ``alpha``, the colours under its transparent pixels bled from the object's."""
    y0, y1, x0, x1 = box
    rgba = np.empty((y1 - y0, x1 - x0, 4), dtype=np.uint8)
    rgba[..., :3] = image[y0:y1, x0:x1, :3]
    rgba[..., 3] = alpha
    bleed_colours(rgba)
    return rgba


def cutout_alpha(soft: np.ndarray, threshold: float, quality: MaskQuality | None) -> tuple[np.ndarray, tuple[int, int, int, int]] | str:
    """The alpha channel (uint8) of the cut-out under ``soft`` and where it lies in the image,
    ``(y0, y1, x0, x1)``, or the reason the mask is rejected (see :func:`_cutout`)."""
    if quality is None:
        alpha, keep = np.clip(soft, 0.0, 1.0), np.ones(soft.shape, dtype=bool)
    else:
        alpha, keep = clean_soft_mask(soft, threshold)
        reason = quality.check(keep)
        if reason is not None:
            return reason
    rows, cols = np.flatnonzero(keep.any(axis=1)), np.flatnonzero(keep.any(axis=0))
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    return np.rint(alpha[y0:y1, x0:x1] * 255.0).astype(np.uint8), (y0, y1, x0, x1)


def rejection_thumbnail(image: np.ndarray, soft: np.ndarray | None, threshold: float) -> np.ndarray:
    """What a rejected object looked like: ``image`` as RGB at most REJECTED_THUMBNAIL pixels on
    its longest side, dimmed outside the cleaned mask ``soft`` gave (a mask that was too small,
    too large or touched the border shows as such), or whole when there was no mask."""
    rgb = image[..., :3]
    if soft is not None:
        _, keep = clean_soft_mask(soft, threshold)
        rgb = np.where(keep[..., None], rgb, rgb // 3)
    h, w = rgb.shape[:2]
    scale = min(1.0, REJECTED_THUMBNAIL / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.ascontiguousarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA) if scale < 1.0 else rgb)


def bleed_colours(rgba: np.ndarray) -> None:
    """Give every pixel that is not solidly the object (alpha < 128) the colour of the nearest
    pixel that is, in place.

    The compositor resamples and blends cut-outs in straight (not premultiplied) colour, which is
    one fast OpenCV call per step; with the source photo's background left under the transparent
    pixels, that background would bleed into the object's edge as a halo. This also removes the
    background tint that soft edges carry from the source photo.
    """
    solid = rgba[..., 3] >= 128
    if solid.all() or not solid.any():
        return
    # Labels of DIST_LABEL_PIXEL number the zero pixels of the input (our solid pixels) in scan
    # order, from 1; every pixel gets the label of its nearest solid pixel.
    _, labels = cv2.distanceTransformWithLabels((~solid).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    colours = rgba[..., :3][solid]
    rgba[~solid, :3] = colours[labels[~solid] - 1]


class _PoolWriter:
    """Appends accepted cut-outs to pixels.bin, and keeps the index columns and the counts."""

    def __init__(self, pixels: BinaryIO, root: Path, classes: list[str]) -> None:
        self._pixels = pixels
        self._root = root
        self._classes = classes
        self._class_index = {name: i for i, name in enumerate(classes)}
        self._offset = 0
        self.columns: dict[str, list[Any]] = {"class_id": [], "source": [], "offset": [], "h": [], "w": [], "grey": []}
        self.rejected: Counter[str] = Counter()
        self.per_class: Counter[str] = Counter()
        self.unreadable_files: list[str] = []  # "relative/path (reason)", all of them
        self.rejected_shown: list[tuple[str, str, np.ndarray]] = []  # (reason, source, thumbnail), bounded per reason

    def relative(self, path: Path) -> str:
        return path.relative_to(self._root).as_posix()

    def accept(self, item: ObjectItem, rgba: np.ndarray) -> None:
        self._pixels.write(rgba.tobytes())
        row = {"class_id": self._class_index[item.class_name], "source": self.relative(item.path),
               "offset": self._offset, "h": rgba.shape[0], "w": rgba.shape[1], "grey": mean_grey(rgba)}
        for key, value in row.items():
            self.columns[key].append(value)
        self._offset += rgba.nbytes
        self.per_class[item.class_name] += 1

    def reject(self, reason: str, item: ObjectItem | None = None, thumbnail: np.ndarray | None = None) -> None:
        """Count a rejection; keep ``thumbnail`` while fewer than REJECTED_SHOWN of its reason are kept."""
        self.rejected[reason] += 1
        if item is not None and thumbnail is not None and self.rejected[reason] <= REJECTED_SHOWN:
            self.rejected_shown.append((reason, self.relative(item.path), thumbnail))

    def write_rejected(self, folder: Path) -> list[dict[str, str]]:
        """Write the kept thumbnails to ``folder/rejected/`` as PNG; their index entries."""
        examples = []
        for k, (reason, source, thumbnail) in enumerate(self.rejected_shown):
            name = f"{REJECTED_DIR}/{k:03d}.png"
            (folder / REJECTED_DIR).mkdir(exist_ok=True)
            if not cv2.imwrite(str(folder / name), cv2.cvtColor(thumbnail, cv2.COLOR_RGB2BGR)):
                raise OSError(f"could not write {folder / name}")
            examples.append({"reason": reason, "source": source, "image": name})
        return examples

    def skip_unreadable(self, path: Path, reason: str) -> None:
        self.unreadable_files.append(f"{self.relative(path)} ({reason})")

    @property
    def accepted(self) -> int:
        return len(self.columns["offset"])

    def summary(self, images: int, segmenter: Segmenter, quality: MaskQuality | None, seconds: float) -> dict[str, Any]:
        return {
            "images": images,
            "accepted": self.accepted,
            "rejected": dict(self.rejected.most_common()),
            "unreadable": len(self.unreadable_files),
            "unreadable_examples": self.unreadable_files[:MAX_EXAMPLES],
            "per_class": {name: self.per_class[name] for name in self._classes},
            "segmenter": {"name": segmenter.name, "threshold": segmenter.threshold, "settings": segmenter.settings()},
            "quality": None if quality is None else asdict(quality),
            "source": str(self._root.resolve()),
            "seconds": round(seconds, 3),
        }


#: What segmenting one object gave: ("accepted", item, rgba) | ("rejected", item, reason,
#: thumbnail or None) | ("unreadable", path, reason).
Outcome = tuple


def _segment_items(segmenter: Segmenter, quality: MaskQuality | None, items: Sequence[ObjectItem]) -> list[Outcome]:
    """Read, segment, clean and cut out ``items`` (one chunk): an outcome per image file, in
    order. A pure function of the files and settings, so any worker may run any chunk.
    An object whose paired mask is unreadable is dropped too: the user gave that mask to be used."""
    from synthgen.imageio import unreadable_reason

    outcomes: list[Outcome | None] = []
    loaded = []
    for item in items:
        image = read_image(item.path, keep_alpha=True)
        if image is None:
            outcomes.append(("unreadable", item.path, unreadable_reason(item.path)))
            continue
        mask = None
        if item.mask_path is not None:
            mask = read_mask(item.mask_path)
            if mask is None:
                outcomes.append(("unreadable", item.mask_path, "mask " + unreadable_reason(item.mask_path)))
                continue
        outcomes.append(None)  # filled in below, in order
        loaded.append((len(outcomes) - 1, item, image, mask))
    softs = _segment_chunk(segmenter, [image for _, _, image, _ in loaded], [mask for _, _, _, mask in loaded])
    shown: Counter[str] = Counter()  # thumbnails made per reason: the writer keeps at most REJECTED_SHOWN of any
    for (slot, item, image, _), soft in zip(loaded, softs):
        cut = soft if isinstance(soft, str) else _cutout(image, soft, segmenter.threshold, quality)
        if isinstance(cut, str):
            shown[cut] += 1
            thumbnail = None
            if shown[cut] <= REJECTED_SHOWN:
                thumbnail = rejection_thumbnail(image, None if isinstance(soft, str) else soft, segmenter.threshold)
            outcomes[slot] = ("rejected", item, cut, thumbnail)
        else:
            outcomes[slot] = ("accepted", item, cut)
    return outcomes  # type: ignore[return-value]


# The segmenter and quality bounds of a segmentation worker process (set once by its initializer).
_worker_settings: tuple[Segmenter, MaskQuality | None] | None = None


def _init_segment_worker(segmenter: Segmenter, quality: MaskQuality | None) -> None:
    import signal

    global _worker_settings
    # Ctrl-C reaches the whole process group: the main process stops the pool; workers must not
    # print tracebacks of their own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)
    _worker_settings = (segmenter, quality)


def _segment_in_worker(items: Sequence[ObjectItem]) -> list[Outcome]:
    assert _worker_settings is not None
    return _segment_items(*_worker_settings, items)


def _outcomes(segmenter: Segmenter, quality: MaskQuality | None, chunks: list, workers: int) -> Iterator[list[Outcome]]:
    """Outcomes of every chunk, in chunk order, computed here or by ``workers`` processes."""
    if workers <= 1 or len(chunks) <= 1:
        for chunk in chunks:
            yield _segment_items(segmenter, quality, chunk)
        return
    import multiprocessing

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    with context.Pool(min(workers, len(chunks)), _init_segment_worker, (segmenter, quality)) as processes:
        yield from processes.imap(_segment_in_worker, chunks)  # imap keeps the order: same pool for any count


def build_pool(
    source: FolderSource,
    segmenter: Segmenter,
    out: Path,
    quality: MaskQuality,
    progress: bool = True,
    workers: int = 1,
) -> ObjectPool:
    """Segment every object of ``source`` once, clean and check each mask, and write the pool
    to folder ``out`` (atomically: an interrupted build leaves nothing behind).

    ``workers`` processes segment chunks of objects in parallel; the main process writes
    their results in source order, so the pool is byte for byte the same for any number of
    workers. Unreadable or corrupt files are skipped and counted, never fatal: the first are
    named in the summary with their reason, all in ``unreadable.txt`` in the pool folder.
    ``quality`` is not applied for the ``none`` segmenter, whose mask is the whole frame by
    definition. Raises OutputExistsError if ``out`` already holds something, and InputError
    if no object is accepted (with the counts, and advice that fits why).
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputExistsError(f"{out} already exists; choose another folder for the object pool or delete it")
    checked = None if segmenter.name == NoneSegmenter.name else quality
    started = time.perf_counter()
    chunks = [source.items[start:start + CHUNK] for start in range(0, len(source.items), CHUNK)]
    with atomic_directory(out) as tmp:
        with open(tmp / PIXELS_FILE, "wb") as pixels, \
                _progress_bar(progress, len(source), f"segmenting ({segmenter.name})") as advance:
            writer = _PoolWriter(pixels, source.root, source.classes)
            for chunk, outcomes in zip(chunks, _outcomes(segmenter, checked, chunks, workers)):
                for outcome in outcomes:
                    if outcome[0] == "accepted":
                        writer.accept(outcome[1], outcome[2])
                    elif outcome[0] == "rejected":
                        writer.reject(outcome[2], outcome[1], outcome[3])
                    else:
                        writer.skip_unreadable(outcome[1], outcome[2])
                advance(len(chunk))
        summary = writer.summary(len(source), segmenter, checked, time.perf_counter() - started)
        if writer.accepted == 0:
            raise InputError(_nothing_accepted(source.root, segmenter.name, summary))
        if writer.unreadable_files:
            (tmp / UNREADABLE_FILE).write_text("".join(line + "\n" for line in writer.unreadable_files))
        index = {"format": POOL_FORMAT, "version": POOL_VERSION, "classes": source.classes,
                 "objects": writer.columns, "summary": summary, "rejected_examples": writer.write_rejected(tmp)}
        (tmp / INDEX_FILE).write_text(json.dumps(index, separators=(",", ":")))
    return ObjectPool.load(out)


def _nothing_accepted(root: Path, segmenter: str, summary: Mapping[str, Any]) -> str:
    """Why no object was accepted, with advice that fits the reason."""
    if summary["unreadable"] and not summary["rejected"]:
        return (
            f"none of the {summary['unreadable']:,} files in {root} could be read as an image: "
            f"{', '.join(summary['unreadable_examples'][:3])}. Check that the folder holds the images themselves "
            "(JPEG, PNG, BMP, WebP, TIFF), copied whole; another segmenter would not help"
        )
    return (
        f"no object in {root} was accepted by the {segmenter} segmenter: "
        f"{format_summary(summary)}. Try another segmenter (--segmenter grabcut for plain photos, "
        "alpha for RGBA cut-outs, mask for image + mask pairs, none to paste whole frames) or "
        "looser mask-quality bounds (--min-mask-area, --max-mask-area, --max-border)."
    )


def pool_fingerprint(
    source: FolderSource, segmenter_name: str, segmenter_options: Mapping[str, Any], quality: MaskQuality
) -> str:
    """The cache key of the pool built from ``source`` with these settings: the identity (path,
    size, mtime) of every image and mask file, which class each object is in, the segmenter
    name and options (and the identity of any option that names a file, such as a checkpoint),
    the quality bounds, and the pool format and pipeline versions."""
    segmenter_name, segmenter_options = segmenter_spec(segmenter_name, segmenter_options)
    option_files = sorted(
        Path(v) for v in segmenter_options.values() if isinstance(v, (str, Path)) and Path(v).is_file()
    )
    extra = {
        "format": POOL_VERSION,
        "pipeline": PIPELINE_VERSION,
        "root": str(source.root.resolve()),
        "classes": source.classes,
        "labels": [item.class_name for item in source.items],
        "segmenter": segmenter_name,
        "options": dict(segmenter_options),
        "option_files": fingerprint_files(option_files),
        "quality": asdict(quality),
    }
    return fingerprint_files(source.files(), extra)


def cached_pool(
    source: FolderSource,
    segmenter_name: str,
    segmenter_options: Mapping[str, Any],
    quality: MaskQuality,
    progress: bool = True,
    workers: int = 1,
) -> ObjectPool:
    """The pool for ``source`` under ``cache_root()/pools/<fingerprint>``: loaded when it exists
    (no segmentation at all), else built there. Changing any file, the class layout, the
    segmenter, its options or the quality bounds gives a new entry."""
    entry = cache_root() / "pools" / pool_fingerprint(source, segmenter_name, segmenter_options, quality)
    if is_pool_dir(entry):
        try:
            return ObjectPool.load(entry)
        except InputError:
            shutil.rmtree(entry, ignore_errors=True)  # a damaged cache entry: rebuild it
    segmenter = make_segmenter(segmenter_name, segmenter_options)
    try:
        return build_pool(source, segmenter, entry, quality, progress=progress, workers=workers)
    except OutputExistsError:
        if not is_pool_dir(entry):
            raise
        # Another process on the same cache (a second machine of a sharded run) built the
        # entry after the check above: the same settings give the same pool, so use theirs.
        return ObjectPool.load(entry)


def format_summary(summary: Mapping[str, Any]) -> str:
    """One or two lines for people, e.g. "6,713 objects: 6,402 accepted, 311 rejected (too small
    200, touches border 111); 2 unreadable files skipped"."""
    accepted = int(summary["accepted"])
    rejected: dict[str, int] = dict(summary["rejected"])
    n_rejected = sum(rejected.values())
    line = f"{accepted + n_rejected:,} objects: {accepted:,} accepted"
    if n_rejected:
        reasons = ", ".join(f"{reason} {count:,}" for reason, count in rejected.items())
        line += f", {n_rejected:,} rejected ({reasons})"
    unreadable = int(summary["unreadable"])
    if unreadable:
        examples = list(summary.get("unreadable_examples", []))[:3]
        line += f"; {unreadable:,} unreadable file{'s' if unreadable != 1 else ''} skipped"
        if examples:
            line += f": {', '.join(examples)}" + (", ..." if unreadable > len(examples) else "")
    empty = [name for name, count in summary.get("per_class", {}).items() if count == 0]
    if empty and accepted:
        line += f"\nno objects accepted for class{'es' if len(empty) != 1 else ''}: {', '.join(empty)}"
    return line
