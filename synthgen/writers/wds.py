"""WebDataset writer: ``OUT/shard-XXXXXX.tar`` plus ``OUT/categories.json``.

Each sample is ``<key>.jpg`` (the encoded JPEG, stored as is) and ``<key>.json``
(``index, width, height, boxes`` (xyxy), ``labels`` (category ids), ``names``, ``areas``, and
``segmentations`` (COCO RLE) when masks are kept). A sample's tar members are
made by :class:`WdsStager` (in a paste worker when there are several) with a small ustar writer
(the format ``webdataset.TarWriter`` writes; importing webdataset would pull in torch, 1.5 s, and
``tarfile``'s headers cost a fifth of the hot path); the main process appends them to
``shard-XXXXXX.tar.partial``, renamed to ``.tar`` once complete
(shard_size samples, the byte limit reached, or ``close()``), then journaled in
``OUT/.synthgen/wds.jsonl`` (by a background thread: the fsync is mostly waiting for the disk);
so every ``.tar`` present is a complete, readable shard, and a run
can be stopped at any sample (endless runs end with Ctrl-C). Tar headers are fixed (mtime 0,
fixed owner and mode): the same samples give byte-identical shards.

Several machines: this machine's j-th shard is number ``j * num_shards + shard_index``, so the
union of all machines' folders is one gap-free ``shard-{000000..N}.tar`` set.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar, Sequence

from synthgen.cache import atomic_write_json
from synthgen.errors import InputError, WriteError
from synthgen.sample import EncodedSample
from synthgen.writers import StagedSample, WriterOptions, check_resume_layout, object_labels, state_dir
from synthgen.writers.coco import json_rle
from synthgen.writers.journal import Journal, compact_json, deferred_interrupts, write_errors

CATEGORIES = "categories.json"
_BLOCK = 512  # tar block
_RECORD = 20 * _BLOCK  # tar files are padded to whole records
#: Shard files buffer this much: a sample's 30 KB no longer costs a write system call of its own.
_WRITE_BUFFER = 1 << 20


def shard_name(number: int) -> str:
    return f"shard-{number:06d}.tar"


def sample_json(sample: EncodedSample, categories: Sequence[str]) -> dict:
    """The ``<key>.json`` member of a sample."""
    anns = sample.annotations
    record: dict[str, Any] = {
        "index": sample.index,
        "width": sample.width,
        "height": sample.height,
        "boxes": [[float(x), float(y), float(x) + float(w), float(y) + float(h)] for x, y, w, h in (a.bbox for a in anns)],
        "labels": [int(a.category_id) for a in anns],
        "names": [categories[int(a.category_id) - 1] for a in anns],
        "areas": [float(a.area) for a in anns],
    }
    if any(a.segmentation is not None for a in anns):
        record["segmentations"] = [json_rle(a.segmentation) if a.segmentation is not None else None for a in anns]
    if any(a.iscrowd for a in anns):  # crowd regions kept from a COCO background: COCO's flag, per box
        record["iscrowd"] = [int(a.iscrowd) for a in anns]
    if anns and anns[0].visibility is not None:
        record["visibility"] = [float(a.visibility) for a in anns]
        record["visible_boxes"] = [_xyxy(a.visible_bbox) for a in anns]
        record["amodal_boxes"] = [_xyxy(a.amodal_bbox) for a in anns]
    return record


def _xyxy(bbox) -> list[float]:
    x, y, w, h = (float(v) for v in bbox)
    return [x, y, x + w, y + h]


def _file_bytes(members: int) -> int:
    """Size of a finished tar whose members take ``members`` bytes: two end blocks, padded to a record."""
    return -(-(members + 2 * _BLOCK) // _RECORD) * _RECORD


def _fixed_header() -> bytearray:
    """The fields every member header shares, the checksum field as spaces (as it is summed)."""
    header = bytearray(_BLOCK)
    header[100:108] = b"0000444\0"
    header[108:116] = header[116:124] = b"0000000\0"
    header[136:148] = b"00000000000\0"
    header[148:156] = b" " * 8
    header[156:157] = b"0"  # regular file
    header[257:265] = b"ustar\x0000"
    header[265:273] = header[297:305] = b"synthgen"
    return header


_FIXED_HEADER = bytes(_fixed_header())
_FIXED_SUM = sum(_FIXED_HEADER)


def ustar_header(name: str, size: int) -> bytes:
    """The POSIX ustar header of a regular file member: mode 0444, owner and group "synthgen",
    mtime 0, as ``tarfile`` would write it. Built directly from a fixed template whose checksum
    is summed once: ``tarfile``'s generic header code costs about 50 us a member, a fifth of a
    sample's whole budget on the hot path."""
    encoded = name.encode()
    if len(encoded) > 100:
        raise ValueError(f"tar member name longer than 100 bytes: {name}")
    size_field = b"%011o\0" % size
    header = bytearray(_FIXED_HEADER)
    header[0 : len(encoded)] = encoded
    header[124:136] = size_field
    # The size field replaces zero bytes of the template, the name zero bytes too.
    header[148:156] = b"%06o\0 " % (_FIXED_SUM + sum(encoded) + sum(size_field))
    return bytes(header)


def tar_members(key: str, fields: tuple[tuple[str, bytes], ...]) -> bytes:
    """The tar members ``<key>.<ext>`` of one sample, contiguous, each a fixed header (mtime 0,
    owner synthgen, mode 0444) and its data padded to whole blocks: the same samples give the
    same bytes, wherever they are placed in a shard."""
    parts = []
    for ext, data in fields:
        parts += (ustar_header(f"{key}.{ext}", len(data)), data, bytes(-len(data) % _BLOCK))
    return b"".join(parts)


def tar_end(members: int) -> bytes:
    """What closes a tar whose members take ``members`` bytes: two zero blocks, padded to a whole
    record (what ``tarfile.open(mode="w|")`` writes)."""
    return bytes(_file_bytes(members) - members)


@dataclass(frozen=True)
class WdsStager:
    """Makes a sample's tar members (``<key>.jpg``, ``<key>.json``), in any process."""

    categories: tuple[str, ...]

    def __call__(self, sample: EncodedSample) -> StagedSample:
        meta = compact_json(sample_json(sample, self.categories))
        members = tar_members(sample.key, (("jpg", sample.jpeg), ("json", meta)))
        labels = object_labels(sample)
        return StagedSample(sample.index, sample.key, len(labels), sample.skipped_objects, members, labels=labels)


class _Publisher:
    """Publishes finished shards in a background thread, in order: fsync, close, rename
    ``.partial`` to ``.tar``, journal. A failure stops all later publishing (the journal must
    stay gap-free) and is raised in the writer's thread by ``check()`` or ``drain()``; shards
    left as ``.partial`` are removed by a resume."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.shards = self.samples = 0  # journaled so far (set by the writer's open)
        self._queue: queue.Queue = queue.Queue(maxsize=2)  # at most two shards wait for the disk
        self._thread: threading.Thread | None = None
        self._error: WriteError | None = None

    def intact(self) -> str:
        return f"every .tar shard already journaled ({self.shards} shards, {self.samples} samples)"

    def submit(self, file: IO[bytes], partial: Path, final: Path, entry: dict) -> None:
        self.check()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="synthgen-shard-publisher", daemon=True)
            self._thread.start()
        self._queue.put((file, partial, final, entry))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            file, partial, final, entry = item
            if self._error is not None:
                file.close()
                continue
            try:
                with write_errors(f"shard {final.name}", final, intact=self.intact()):
                    os.fsync(file.fileno())
                    file.close()
                    os.replace(partial, final)
                    self.journal.append(entry)
                    self.shards += 1
                    self.samples += int(entry["count"])
            except WriteError as err:
                self._error = err
                with contextlib.suppress(OSError):
                    file.close()

    def check(self) -> None:
        if self._error is not None:
            raise self._error

    def drain(self) -> None:
        """Wait until every submitted shard is published; raise the first failure."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        self.check()


class WdsWriter:
    format: ClassVar[str] = "wds"
    supports_infinite: ClassVar[bool] = True

    def __init__(self, out: Path, categories: list[str], options: WriterOptions) -> None:
        self.out = out
        self.categories = categories
        self.options = options
        self.journal = Journal(state_dir(out, options) / "wds.jsonl")
        self._shards_done = 0  # finished shards of this machine (j of the next shard)
        self._partial = self._partial_path()  # the shard being (or next to be) written
        self._publisher = _Publisher(self.journal)
        self._opened = False
        self._failed = False
        # The shard being written:
        self._file: IO[bytes] | None = None
        self._count = 0
        self._members = 0  # bytes of tar members so far
        self._first = -1
        self._last = -1
        self._torn = False  # a sample write into it did not finish: it must not become a .tar

    def shard_number(self, j: int) -> int:
        return j * self.options.num_shards + self.options.shard_index

    def _partial_path(self) -> Path:
        return self.out / (shard_name(self.shard_number(self._shards_done)) + ".partial")

    def _intact(self) -> str:
        return self._publisher.intact()

    def open(self, *, resume: bool) -> int:
        with write_errors("the WebDataset folder", self.out, intact="every .tar shard already written"):
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.out / CATEGORIES, [{"id": i + 1, "name": n} for i, n in enumerate(self.categories)])
            if resume:
                check_resume_layout(self.out, self.options)
            entries = self.journal.open(resume=resume)
            with self.journal.closed_on_error():
                if resume:
                    entries = self._resume(entries)
        self._shards_done = len(entries)
        self._publisher.shards, self._publisher.samples = len(entries), sum(int(e["count"]) for e in entries)
        self._opened = True
        return self._publisher.samples

    def _resume(self, entries: list[dict]) -> list[dict]:
        """Keep the journaled shards that still exist (up to the first missing one), and delete
        every ``.partial`` and this machine's shards after them (renamed but not journaled when
        the last run was killed, or after a missing one): the folder then matches the journal."""
        for j, entry in enumerate(entries):
            if entry["number"] != self.shard_number(j):
                raise InputError(
                    f"{self.out} was written with other --shard-index/--num-shards values than "
                    f"{self.options.shard_index}/{self.options.num_shards}; resume with the values of the first run"
                )
            if not (self.out / entry["shard"]).is_file():
                self.journal.keep(j)
                entries = entries[:j]
                break
        # Only this machine's shard numbers: other machines may be writing into the same folder.
        mine = lambda number: number.isdigit() and int(number) % self.options.num_shards == self.options.shard_index  # noqa: E731
        for path in self.out.glob("shard-*.tar.partial"):
            if mine(path.name[len("shard-") : -len(".tar.partial")]):
                path.unlink()
        first_unjournaled = self.shard_number(len(entries))
        for path in self.out.glob("shard-*.tar"):
            number = path.name[len("shard-") : -len(".tar")]
            if mine(number) and int(number) >= first_unjournaled:
                path.unlink()
        return entries

    def stager(self) -> WdsStager:
        return WdsStager(tuple(self.categories))

    def write(self, sample: EncodedSample) -> None:
        self.commit(self.stager()(sample))

    def commit(self, staged: StagedSample) -> None:
        if self._failed:
            raise WriteError("the WebDataset writer already failed; rerun with --resume")
        try:
            self._publisher.check()
        except WriteError:
            self._failed = True
            raise
        size = len(staged.payload)
        if self._file is not None and _file_bytes(self._members + size) > self.options.shard_max_bytes:
            self._finish_shard()
        if self._file is None:
            self._partial = self._partial_path()
        try:
            with deferred_interrupts(), write_errors(f"sample {staged.key}", self._partial, intact=self._intact):
                if self._file is None:
                    self._start_shard()
                self._torn = True
                self._write_members(staged.key, staged.payload)
                # Bookkeeping inside the block: a Ctrl-C held back by it is raised on leaving it.
                self._torn = False
                self._count += 1
                self._members += size
                self._first = staged.index if self._count == 1 else self._first
                self._last = staged.index
        except WriteError:
            self._failed = True
            raise
        if self._count >= self.options.shard_size:
            self._finish_shard()

    def _start_shard(self) -> None:
        self._file = open(self._partial, "wb", buffering=_WRITE_BUFFER)
        self._count = self._members = 0

    def _write_members(self, key: str, members: bytes) -> None:
        """Append one sample's tar members (from :func:`tar_members`) to the shard."""
        self._file.write(members)

    def _finish_shard(self) -> None:
        """Complete the current shard's bytes and hand it to the publisher, which syncs it,
        renames it to ``.tar`` and journals it in the background (waiting for the disk is most
        of a shard's cost; rendering goes on meanwhile)."""
        partial = self._partial
        final = partial.with_suffix("")  # drop ".partial"
        entry = {"shard": final.name, "number": self.shard_number(self._shards_done), "count": self._count,
                 "first": self._first, "last": self._last}
        try:
            with deferred_interrupts(), write_errors(f"shard {final.name}", final, intact=self._intact):
                self._file.write(tar_end(self._members))
                self._file.flush()
                self._publisher.submit(self._file, partial, final, entry)
                self._file = None
                self._shards_done += 1
        except WriteError:
            self._failed = True
            raise

    def _discard_shard(self) -> None:
        """Drop a shard that cannot be completed (a write into it failed or was interrupted);
        its samples are not journaled, so a resume writes them again."""
        with contextlib.suppress(OSError):  # the file is thrown away: its state does not matter
            self._file.close()
        self._file = None
        self._partial.unlink(missing_ok=True)

    def close(self) -> None:
        """Complete the shard in progress (or drop it if it is broken) and close the journal."""
        if not self._opened:
            return
        self._opened = False
        try:
            if self._file is not None:
                if self._torn or self._failed:
                    self._discard_shard()
                else:
                    try:
                        self._finish_shard()
                    finally:
                        if self._file is not None:
                            self._discard_shard()
        finally:
            publish_error = None
            try:
                self._publisher.drain()
            except WriteError as err:  # raised after the journal is closed: it is the first cause
                publish_error = err
            try:
                with write_errors("the journal", self.journal.path, intact=self._intact()):
                    self.journal.close()
            except WriteError:
                if publish_error is None:
                    raise
            if publish_error is not None:
                raise publish_error
