"""Durability primitives shared by the writers: an append-only JSON-lines journal, atomic file
placement, Ctrl-C-safe critical sections and the translation of OS errors into WriteError.

The journal is the source of truth for "what is completely written": a writer appends one line
only after the unit it describes (a sample's files, a whole shard) is in its final place, so
after any interruption (Ctrl-C, SIGTERM, SIGKILL, full disk) the journal's good lines describe
exactly the intact part of the output, and resume continues from there.
"""

from __future__ import annotations

import _signal
import errno
import json
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator

from synthgen.errors import WriteError

if TYPE_CHECKING:
    from synthgen.sample import EncodedSample
    from synthgen.writers import StagedSample


class Journal:
    """An append-only file of JSON objects, one per line, each flushed as soon as it is written.

    ``open(resume=False)`` starts an empty journal; ``open(resume=True)`` returns the entries of
    the good lines and truncates the file after the last of them, dropping a torn line left by a
    kill (a line without its newline or that is not a JSON object) and everything after it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries_on_disk = 0
        self._file: Any = None
        self._offsets: list[int] = []  # byte offset where each good line ends

    def open(self, *, resume: bool) -> list[dict]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        entries: list[dict] = []
        self._offsets = []
        if resume and self.path.exists():
            entries, self._offsets = _read_good_lines(self.path.read_bytes())
        self._file = open(self.path, "r+b" if resume and self.path.exists() else "wb")
        self._file.truncate(self._offsets[-1] if self._offsets else 0)
        self._file.seek(0, os.SEEK_END)
        self.entries_on_disk = len(entries)
        return entries

    def keep(self, count: int) -> None:
        """Drop every entry after the first ``count`` (a writer found their files missing)."""
        if count < self.entries_on_disk:
            self._file.truncate(self._offsets[count - 1] if count else 0)
            self._file.seek(0, os.SEEK_END)
            del self._offsets[count:]
            self.entries_on_disk = count

    def append(self, entry: dict) -> None:
        self.append_line(journal_line(entry))

    def append_line(self, line: bytes) -> None:
        """Append a line made by :func:`journal_line` (possibly in another process)."""
        self._file.write(line)
        self._file.flush()
        self._offsets.append((self._offsets[-1] if self._offsets else 0) + len(line))
        self.entries_on_disk += 1

    @contextmanager
    def closed_on_error(self) -> Iterator[None]:
        """Close the journal if the block fails (a writer's ``open()`` that fails leaves nothing open)."""
        try:
            yield
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
            finally:
                self._file.close()
                self._file = None


class SampleJournalWriter:
    """``write`` and ``commit`` of the writers that journal every sample (COCO, YOLO): the
    sample's files are written by the stager, then its journal line marks it done.

    A subclass sets ``format``, ``journal``, ``_failed = False`` and ``_journaled`` (one item per
    journaled sample, whatever it needs at ``close()``), and defines ``stager()`` and
    ``_remember(staged)``, which appends that item.
    """

    format: ClassVar[str]
    journal: Journal
    _failed: bool
    _journaled: list

    def stager(self) -> Callable:
        raise NotImplementedError

    def _remember(self, staged: StagedSample) -> None:
        raise NotImplementedError

    def _intact(self) -> str:
        return f"everything already journaled ({len(self._journaled)} samples)"

    def _check_not_failed(self) -> None:
        if self._failed:
            raise WriteError(f"the {self.format.upper()} writer already failed; rerun with --resume")

    def write(self, sample: EncodedSample) -> None:
        self._check_not_failed()
        try:
            staged = self.stager()(sample)
        except WriteError:
            self._failed = True
            raise
        self.commit(staged)

    def commit(self, staged: StagedSample) -> None:
        self._check_not_failed()
        try:
            with deferred_interrupts(), write_errors(f"sample {staged.key}", self.journal.path, intact=self._intact):
                self.journal.append_line(staged.payload)
                self._remember(staged)
        except WriteError:
            self._failed = True  # the journal may end in a torn line now: only a resume may go on
            raise


#: Made once: ``json.dumps`` with any option builds a new encoder for every call.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))


def compact_json(value: object) -> bytes:
    """``value`` as JSON without spaces, UTF-8 (what the writers store per sample)."""
    return _COMPACT_JSON.encode(value).encode()


def journal_line(entry: dict) -> bytes:
    """One journal line: compact JSON and a newline."""
    return compact_json(entry) + b"\n"


def _read_good_lines(data: bytes) -> tuple[list[dict], list[int]]:
    entries: list[dict] = []
    offsets: list[int] = []
    start = 0
    while True:
        end = data.find(b"\n", start)
        if end < 0:  # no newline: a torn last line (or end of file)
            break
        try:
            entry = json.loads(data[start:end])
        except ValueError:
            break
        if not isinstance(entry, dict):
            break
        entries.append(entry)
        offsets.append(end + 1)
        start = end + 1
    return entries, offsets


def place_file(final: Path | str, data: bytes) -> None:
    """Write ``data`` to ``final``. No temporary name and no fsync: the journal line written
    after this is what marks the file as done; a file cut short by a kill has no journal line,
    so it is in no annotation file and a resume deletes it (and checks journaled files exist).
    Plain ``os`` calls: ``open()``'s buffered file object costs more than the write itself."""
    fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def resume_sample_journal(journal: Journal, entries: list[dict], files_of: Callable[[str], list[Path]]) -> list[dict]:
    """Keep the longest prefix of journaled samples whose files all exist (a deleted file would
    otherwise become a gap), cut the journal there, and return those entries."""
    for count, entry in enumerate(entries):
        if not all(path.exists() for path in files_of(entry["key"])):
            journal.keep(count)
            return entries[:count]
    return entries


def remove_unjournaled(folder: Path, suffix: str, keep: set[str], mine: Callable[[str], bool] | None = None) -> None:
    """Delete files ``<key><suffix>`` in ``folder`` that the journal does not list (written by a
    run that was stopped before journaling them, possibly cut short, or staged by a worker
    process for a sample the main process never committed). ``mine``: only keys this machine
    writes (other machines share the folder)."""
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.endswith(suffix):
                key = entry.name[: -len(suffix)]
                if key not in keep and (mine is None or mine(key)):
                    os.unlink(entry.path)


class deferred_interrupts:  # noqa: N801 - used like the context-manager functions beside it
    """Hold SIGINT and SIGTERM back until the block ends, so that Ctrl-C never lands half-way
    through writing a file: a signal that arrives meanwhile is handed to the handler that was
    in place (raising KeyboardInterrupt by default) just after the block.

    Python runs signal handlers in the main thread whichever thread the kernel picked, so
    swapping the handlers (rather than a per-thread signal mask, which other threads such as
    torch's or multiprocessing's would bypass) is what makes this reliable. Off the main
    thread, where handlers cannot be changed, the block runs unprotected. A class, not a
    generator: it wraps every sample written.
    """

    def __enter__(self) -> None:
        self._previous: dict[int, object] | None = None
        if threading.current_thread() is not threading.main_thread() or (
            _never_raises(_signal.getsignal(signal.SIGINT)) and _never_raises(_signal.getsignal(signal.SIGTERM))
        ):
            # Off the main thread nothing can be swapped; and ignored signals, or handlers marked
            # ``never_raises`` (synthgen.engine's stop flag), already wait for the write to end.
            return
        self._caught: list[tuple[int, object]] = []
        self._previous = {sig: signal.signal(sig, self._catch) for sig in (signal.SIGINT, signal.SIGTERM)}

    def _catch(self, signum: int, frame: object) -> None:
        self._caught.append((signum, frame))

    def __exit__(self, *exc: object) -> None:
        if self._previous is None:
            return
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        for signum, frame in self._caught:
            handler = self._previous[signum]
            if callable(handler):
                handler(signum, frame)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)


def _never_raises(handler: object) -> bool:
    """``handler`` as ``_signal.getsignal`` returns it (SIG_IGN as the plain int) ignores the
    signal or is marked ``never_raises``. (``signal.getsignal`` wraps the same call in an enum
    lookup that costs 3 us; this check runs for every sample written.)"""
    return handler == signal.SIG_IGN or getattr(handler, "never_raises", False)


class write_errors:  # noqa: N801 - used like the context-manager functions beside it
    """Turn an ``OSError`` raised in the block into a :class:`WriteError` saying what was being
    written (``what`` to ``target``), that ``intact`` (the journaled part) is safe, and how to
    carry on. ``intact`` may be a callable giving that text, called only on failure. A class, not
    a generator: it wraps every sample on the hot path."""

    def __init__(self, what: str, target: Path | str, *, intact: str | Callable[[], str]) -> None:
        self.what, self.target, self.intact = what, target, intact

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, err, tb) -> bool:
        if not isinstance(err, OSError):
            return False
        if err.errno == errno.ENOSPC:
            cause = "the disk is full"
            fix = "free some space"
        elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            cause = "permission denied"
            fix = "make the output folder writable"
        else:
            cause = err.strerror or str(err)
            fix = "fix the problem"
        intact = self.intact() if callable(self.intact) else self.intact
        raise WriteError(
            f"could not write {self.what} to {self.target}: {cause}. {intact} is intact; "
            f"{fix} and rerun the same command with --resume to continue where it stopped."
        ) from err
