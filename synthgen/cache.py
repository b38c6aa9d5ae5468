"""Where synthgen keeps derived data (segmented object pools, resized backgrounds, downloads),
and how a cache entry is named and written safely.

The root is ``$SYNTHGEN_CACHE`` if set, else ``$XDG_CACHE_HOME/synthgen``, else
``~/.cache/synthgen``. Entries are folders named by a content fingerprint, written to a temporary
sibling and renamed into place, so an interrupted build never leaves a half entry behind.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

#: Pixel files up to this size have their pages mapped in when they are opened (see map_pixels).
POPULATE_LIMIT = 2 << 30


def cache_root() -> Path:
    if os.environ.get("SYNTHGEN_CACHE"):
        return Path(os.environ["SYNTHGEN_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "synthgen"


def fingerprint_files(paths: Iterable[Path], extra: Any = None) -> str:
    """A short hex digest of file identities (path, size, mtime) plus any JSON-able ``extra``
    (settings that change the derived data). Cheap: reads no file contents."""
    h = hashlib.sha256()
    for path in paths:
        st = path.stat()
        h.update(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return h.hexdigest()[:20]


@contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; on success rename it to ``final``.

    If ``final`` appeared meanwhile (another process built the same entry) the new copy is
    dropped. On any error the temporary folder is removed and ``final`` is untouched.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it private (0700); the entry follows the umask
    try:
        yield tmp
        try:
            os.replace(tmp, final)
        except OSError:
            if not final.exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates the file 0600; the file it becomes is readable as the user's umask says,
        # like every other file synthgen writes (labels must not be more private than images).
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def current_umask() -> int:
    """The process's file-creation mask (reading it means setting it: set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1).encode())


def map_pixels(path: Path) -> np.ndarray:
    """The bytes of ``path`` as a read-only uint8 array mapped from the page cache (every process
    that maps it shares the memory).

    Files up to POPULATE_LIMIT are mapped with MAP_POPULATE on Linux: otherwise each process pays
    a page fault at its first touch of every 4 KB page, 0.1-1 ms per 320x320 background on a
    virtual machine, a third of a short run's time before the pool is warm. Larger files are
    mapped lazily, so that a pool larger than memory still opens at once.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return np.zeros(0, dtype=np.uint8)
        if os.name != "posix":
            return np.memmap(f, dtype=np.uint8, mode="r").view(np.ndarray)
        flags = mmap.MAP_SHARED | (getattr(mmap, "MAP_POPULATE", 0) if size <= POPULATE_LIMIT else 0)
        mapping = mmap.mmap(f.fileno(), size, flags=flags, prot=mmap.PROT_READ)
    return np.frombuffer(mapping, dtype=np.uint8)  # the array keeps the mapping alive
