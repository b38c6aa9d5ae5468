"""Backgrounds decoded and resized for one output size, stored for instant random access.

The compositor draws a background per sample in many worker processes; decoding a JPEG and
resizing it every time would dominate the cost of a sample. So every background is decoded and
fitted once, and all of them are stored as raw RGB ``uint8`` in one ``pixels.bin`` beside an
``index.json`` (offset and shape of each image, its source file, a summary). Workers memory-map
the file: ``pool[i]`` is a zero-copy read-only view, shared between processes by the OS page
cache, and a pool pickles as its path.

``fit="stretch"`` resizes to exactly ``width x height``. ``fit="crop"`` scales, keeping the
aspect ratio, by the smallest factor that covers ``width x height`` (one side equal, the other
at least as large); the compositor then picks a random ``width x height`` window per sample.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections import deque
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, TypeVar

import cv2
import numpy as np
from synthgen.progress import progress_bar

from synthgen.backgrounds.folder import BackgroundSource
from synthgen.cache import atomic_directory, cache_root, fingerprint_files, map_pixels
from synthgen.errors import InputError, WriteError
from synthgen.imageio import read_image, unreadable_reason

Fit = Literal["crop", "stretch"]
FITS: tuple[str, ...] = ("crop", "stretch")

# Bump when the on-disk layout or the resizing changes, so old cache entries are not reused.
POOL_FORMAT = 1
_MAX_EXAMPLES = 20
# Decoding threads: OpenCV releases the GIL while decoding and resizing, so two threads keep
# two cores busy, and the writer (this thread) keeps up easily.
_DECODE_THREADS = 2

T = TypeVar("T")
R = TypeVar("R")


class BackgroundPool:
    """A built pool, memory-mapped: ``len(pool)``, ``pool[i]`` -> ``(h, w, 3)`` RGB ``uint8``
    read-only view, ``pool.source_path(i)``, ``pool.path`` and ``pool.summary``, a JSON-able
    dict like the object pool's: ``source`` (the source's description), ``width``, ``height``,
    ``fit``, ``images`` (stored), ``unreadable`` (corrupt or undecodable files),
    ``unreadable_examples`` (up to 20 of them as "path (reason)"), ``unreadable_files`` (all),
    ``nbytes`` (size of pixels.bin).

    Open it with :meth:`load`. Pickling sends only the path; the receiver maps the file again.
    """

    def __init__(self, path: Path, summary: dict[str, Any], entries: np.ndarray, sources: list[str]) -> None:
        self.path = path
        self.summary = summary
        # (offset, height, width) per background, as Python ints: unpacking a NumPy row costs
        # about 10 us, a few per cent of rendering a small sample.
        self._entries: list[tuple[int, int, int]] = [tuple(row) for row in entries.tolist()]
        self._sources = sources
        self._pixels: np.ndarray | None = None  # mapped on first access

    @classmethod
    def load(cls, path: str | Path) -> BackgroundPool:
        """Open the pool folder ``path`` (as written by :func:`build_background_pool`)."""
        path = Path(path)
        try:
            index = json.loads((path / "index.json").read_bytes())
            summary = dict(index["summary"])
            entries = np.asarray(index["entries"], dtype=np.int64).reshape(-1, 3)
            sources = list(index["sources"])
            size = (path / "pixels.bin").stat().st_size
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InputError(f"{path} is not a readable background pool ({err}); delete it to rebuild") from err
        if index.get("format") != POOL_FORMAT or size != summary.get("nbytes") or len(entries) != len(sources):
            raise InputError(f"background pool {path} is damaged or from another synthgen version; delete it to rebuild")
        return cls(path, summary, entries, sources)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, i: int) -> np.ndarray:
        offset, h, w = self._entries[i]  # IndexError past the end, Python semantics for negatives
        if self._pixels is None:
            self._pixels = map_pixels(self.path / "pixels.bin")
        return self._pixels[offset : offset + h * w * 3].reshape(h, w, 3)

    def source_path(self, i: int) -> Path:
        """The file background ``i`` was decoded from."""
        return Path(self._sources[i])

    def __reduce__(self) -> tuple[Callable[[str], BackgroundPool], tuple[str]]:
        return (BackgroundPool.load, (str(self.path),))

    def __repr__(self) -> str:
        s = self.summary
        return f"BackgroundPool({str(self.path)!r}, {len(self)} images, {s['width']}x{s['height']} {s['fit']})"


def fitted_size(width: int, height: int, out_width: int, out_height: int, fit: Fit) -> tuple[int, int]:
    """The ``(w, h)`` an image of ``width x height`` is resized to for an output of
    ``out_width x out_height``: exactly that for ``"stretch"``; for ``"crop"`` the aspect-keeping
    size that covers it with one side equal to the output's."""
    if fit == "stretch":
        return out_width, out_height
    sx, sy = out_width / width, out_height / height
    if sx >= sy:
        return out_width, max(out_height, round(height * sx))
    return max(out_width, round(width * sy)), out_height


def fit_image(image: np.ndarray, out_width: int, out_height: int, fit: Fit) -> np.ndarray:
    """Resize ``image`` per :func:`fitted_size`: area averaging when shrinking (no aliasing),
    bilinear when enlarging in either direction."""
    h, w = image.shape[:2]
    nw, nh = fitted_size(w, h, out_width, out_height, fit)
    if (nw, nh) == (w, h):
        return image
    shrinking = nw <= w and nh <= h
    return cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def build_background_pool(
    source: BackgroundSource, width: int, height: int, fit: Fit, out: Path, progress: bool = True
) -> BackgroundPool:
    """Decode and fit every image of ``source`` into a new pool folder ``out`` (written
    atomically) and return it loaded. Unreadable files are skipped and counted in the summary (all of them, with their reasons, in ``unreadable_files``);
    if none is readable, :class:`InputError`. Not enough disk space: :class:`WriteError`."""
    _check_geometry(width, height, fit)
    if not source.paths:
        raise InputError(f"no background images in {source.description}")
    out = Path(out)
    try:
        _check_free_space(out.parent, len(source.paths) * width * height * 3)
        with atomic_directory(out) as tmp:
            summary, entries, sources = _write_pixels(source, width, height, fit, tmp / "pixels.bin", progress)
            index = {
                "format": POOL_FORMAT,
                "summary": summary,
                "entries": entries,
                "sources": sources,
            }
            (tmp / "index.json").write_text(json.dumps(index))
    except OSError as err:
        raise WriteError(f"could not write the background pool {out}: {err}") from err
    return BackgroundPool.load(out)


def cached_background_pool(
    source: BackgroundSource, width: int, height: int, fit: Fit, progress: bool = True
) -> BackgroundPool:
    """The pool for ``source`` at this size and fit, built on first use and then reused from
    ``cache_root()/"backgrounds"/<fingerprint>`` (the fingerprint covers each file's path, size
    and mtime, the size, the fit and the pool format)."""
    _check_geometry(width, height, fit)
    try:
        key = fingerprint_files(
            source.paths, extra={"width": width, "height": height, "fit": fit, "format": POOL_FORMAT}
        )
    except OSError as err:
        raise InputError(f"background image disappeared while fingerprinting {source.description}: {err}") from err
    out = cache_root() / "backgrounds" / key
    if (out / "index.json").is_file():
        try:
            return BackgroundPool.load(out)
        except InputError:
            shutil.rmtree(out, ignore_errors=True)  # a damaged entry: rebuild it
    return build_background_pool(source, width, height, fit, out, progress=progress)


def _check_geometry(width: int, height: int, fit: str) -> None:
    if fit not in FITS:
        raise InputError(f"unknown background fit {fit!r}; choose one of: {', '.join(FITS)}")
    if width < 1 or height < 1:
        raise InputError(f"output size must be positive, got {width}x{height}")


def _check_free_space(folder: Path, needed: int) -> None:
    """Fail before decoding anything when the pool cannot fit (``needed`` is a lower bound:
    "crop" pools are a little larger)."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise WriteError(
            f"a background pool for these images needs at least {needed / 1e9:.1f} GB in {folder}, "
            f"but only {free / 1e9:.1f} GB is free: free space, point SYNTHGEN_CACHE at a larger "
            "disk, or use fewer backgrounds or a smaller output size"
        )


def _write_pixels(
    source: BackgroundSource, width: int, height: int, fit: Fit, target: Path, progress: bool
) -> tuple[dict[str, Any], list[list[int]], list[str]]:
    entries: list[list[int]] = []
    sources: list[str] = []
    unreadable_files: list[str] = []
    offset = 0

    def load(path: Path) -> np.ndarray | None:
        image = read_image(path)
        return None if image is None else np.ascontiguousarray(fit_image(image, width, height, fit))

    with (
        open(target, "wb") as f,
        ThreadPoolExecutor(_DECODE_THREADS) as executor,
        progress_bar("img", progress) as bar,
    ):
        task = bar.add_task(f"backgrounds {width}x{height} {fit}", total=len(source.paths))
        for path, image in _map_ordered(executor, load, source.paths, window=4 * _DECODE_THREADS):
            bar.advance(task)
            if image is None:
                unreadable_files.append(f"{path} ({unreadable_reason(path)})")
                continue
            f.write(memoryview(image).cast("B"))
            entries.append([offset, image.shape[0], image.shape[1]])
            sources.append(str(path))
            offset += image.nbytes
    if not entries:
        raise InputError(
            f"none of the {len(source.paths)} background images could be read ({source.description}): "
            f"{', '.join(unreadable_files[:3])}. Check that the folder holds the photos themselves (JPEG, PNG, ...), copied whole"
        )
    summary = {
        "source": source.description,
        "width": width,
        "height": height,
        "fit": fit,
        "images": len(entries),
        "unreadable": len(unreadable_files),
        "unreadable_examples": unreadable_files[:_MAX_EXAMPLES],
        "unreadable_files": unreadable_files,
        "nbytes": offset,
    }
    return summary, entries, sources


def _map_ordered(executor: Executor, fn: Callable[[T], R], items: Iterable[T], window: int) -> Iterator[tuple[T, R]]:
    """``(item, fn(item))`` in input order, with at most ``window`` calls in flight (so memory
    stays bounded however many images there are)."""
    it = iter(items)
    pending: deque[tuple[T, Future[R]]] = deque((item, executor.submit(fn, item)) for item in itertools.islice(it, window))
    while pending:
        item, future = pending.popleft()
        for nxt in itertools.islice(it, 1):
            pending.append((nxt, executor.submit(fn, nxt)))
        yield item, future.result()
