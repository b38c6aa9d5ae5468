"""Where synthgen keeps derived data (segmented object pools, resized backgrounds, downloads),
and how a cache entry is named and written safely.

The root is ``$SYNTHGEN_CACHE`` if set, else ``$XDG_CACHE_HOME/synthgen``, else
``~/.cache/synthgen``. Entries are folders named by a content fingerprint, written to a temporary
sibling and renamed into place, so an interrupted build never leaves a half entry behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator


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


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1).encode())
