"""Dataset writers: store encoded samples as COCO, WebDataset shards or a YOLO folder.

Every writer follows one life cycle, driven by the engine::

    writer = make_writer("coco", out, categories, WriterOptions())
    done = writer.open(resume=False)   # resume=True: returns how many samples are already written
    for sample in samples[done:]:      # in index order
        writer.write(sample)
    writer.close()                     # also after Ctrl-C / SIGTERM: leaves a valid dataset

``write`` is two steps, so that the per-sample work can run in the paste worker processes and
the main process only appends bytes in index order: ``stage = writer.stager()`` is a small
picklable callable that turns an encoded sample into a :class:`StagedSample` in any process (the
COCO and YOLO stagers also write the sample's own image and label files there), and
``writer.commit(staged)``, in the process that opened the writer, appends it (tar members,
journal line) in index order.

Durability contract: a sample (or, for WebDataset, a whole shard) is journaled in
``OUT/.synthgen/`` only once its files are in their final place, so after any interruption the
journaled part is intact, ``open(resume=True)`` removes unjournaled leftovers, and
``close()`` makes everything journaled so far a valid dataset. ``OSError`` (full disk, permission
denied) surfaces as :class:`synthgen.errors.WriteError`.

The engine, not the writers, checks that OUT is empty (or handles --overwrite) and stores the run
settings; a writer owns only its format's files and its journal.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Protocol

from synthgen.errors import InputError
from synthgen.registry import Registry
from synthgen.sample import EncodedSample


@dataclass(frozen=True)
class WriterOptions:
    shard_size: int = 1000  # wds: samples per shard (count limit)
    shard_max_bytes: int = 1 << 30  # wds: shard file size limit; roll before a write that would exceed it
    shard_index: int = 0  # this machine's part, for --shard-index/--num-shards
    num_shards: int = 1
    split: str = "train"  # yolo split folder name
    #: yolo: write the visibility sidecar ``visibility/<split>/<key>.txt`` (the other formats
    #: carry visibility in their annotations when the samples have it).
    visibility: bool = False

    def __post_init__(self) -> None:
        if self.shard_size < 1:
            raise InputError(f"shard size must be at least 1 sample, got {self.shard_size}")
        if self.shard_max_bytes < 1:
            raise InputError(f"shard byte limit must be positive, got {self.shard_max_bytes}")
        if self.num_shards < 1 or not 0 <= self.shard_index < self.num_shards:
            raise InputError(
                f"--shard-index must be in 0..{self.num_shards - 1} for --num-shards {self.num_shards}, "
                f"got {self.shard_index}"
            )
        if not self.split or "/" in self.split or self.split.startswith("."):
            raise InputError(f"YOLO split must be a plain folder name like 'train', got {self.split!r}")


@dataclass(frozen=True)
class StagedSample:
    """A sample made ready for its writer's ``commit``: everything but the ordered append."""

    index: int
    key: str
    objects: int  # objects labelled in the sample (crowd regions are not objects)
    skipped_objects: int  # objects drawn that found no valid place
    #: The bytes ``commit`` appends: WebDataset, the sample's tar members; COCO and YOLO, the
    #: journal line (their files are already in place). A read-only ``memoryview`` when the
    #: sample came from a paste worker (see ``__reduce_ex__``).
    payload: bytes | memoryview
    #: COCO: the journal entry, kept in memory for annotations.json.
    entry: dict | None = None
    #: The category id of every object (see :func:`object_labels`), for the run's per-class counts.
    labels: tuple[int, ...] = ()

    def __reduce_ex__(self, protocol: int):
        # Under pickle protocol 5 the payload goes out of band: a paste worker's
        # synthgen.channel.Channel writes it from this object's memory, not from a copy in the
        # pickle. (With no out-of-band receiver, protocol 5 stores it in the pickle as bytes.)
        payload = pickle.PickleBuffer(self.payload) if protocol >= 5 else self.payload
        return (StagedSample, (self.index, self.key, self.objects, self.skipped_objects, payload, self.entry, self.labels))


class Writer(Protocol):
    format: ClassVar[str]  # "coco" | "wds" | "yolo"
    supports_infinite: ClassVar[bool]  # can stop at any sample and still be a complete dataset (only wds)

    def open(self, *, resume: bool) -> int:
        """Prepare OUT. With ``resume``, remove partial leftovers and return how many samples are
        already completely written; 0 when fresh."""
        ...

    def stager(self) -> Callable[[EncodedSample], StagedSample]:
        """The per-sample step, callable in any process (picklable, holds no open file)."""
        ...

    def commit(self, staged: StagedSample) -> None:
        """Append one staged sample; samples arrive in index order."""
        ...

    def write(self, sample: EncodedSample) -> None:
        """Store one sample (``commit(stager()(sample))``); samples arrive in index order."""
        ...

    def close(self) -> None:
        """Finalize so that everything written so far is a valid dataset. Idempotent."""
        ...


WriterFactory = Callable[[Path, list[str], WriterOptions], Writer]

WRITERS: Registry[WriterFactory] = Registry("output format")


def object_labels(sample: EncodedSample) -> tuple[int, ...]:
    """The category id of each object of ``sample``: its annotations but kept crowd regions
    (``iscrowd``), which mark areas of many unlabelled instances, not one object."""
    return tuple(a.category_id for a in sample.annotations if not a.iscrowd)


def state_dir(out: Path, options: WriterOptions) -> Path:
    """Where a run keeps its bookkeeping (settings, journals) in ``out``: ``.synthgen/``, or, for
    one machine of several writing into the same folder, ``.synthgen/part-KKKKK-of-NNNNN/``."""
    base = Path(out) / ".synthgen"
    if options.num_shards == 1:
        return base
    return base / f"part-{options.shard_index:05d}-of-{options.num_shards:05d}"


def check_resume_layout(out: Path, options: WriterOptions) -> None:
    """Refuse to resume a folder written with other --shard-index/--num-shards values: its
    journals are elsewhere, and a resume would take the other machines' files for leftovers."""
    base = Path(out) / ".synthgen"
    parts = sorted(p.name for p in base.glob("part-*-of-*")) if base.is_dir() else []
    mine = state_dir(out, options).name
    if (options.num_shards == 1 and parts) or (options.num_shards > 1 and parts and mine not in parts) or (
        options.num_shards > 1 and not parts and base.is_dir() and any(base.glob("*.jsonl"))
    ):
        found = ", ".join(parts) if parts else "one machine's run"
        raise InputError(
            f"{out} was written with other --shard-index/--num-shards values than {options.shard_index}/"
            f"{options.num_shards} (it holds {found}); resume with the values of the first run"
        )


def owns_key(options: WriterOptions) -> Callable[[str], bool]:
    """Whether a sample file name stem (a sample key) is this machine's to write or delete."""
    k, n = options.shard_index, options.num_shards
    if n == 1:
        return lambda key: True
    return lambda key: key.isdigit() and int(key) % n == k


def make_writer(format: str, out: Path, categories: list[str], options: WriterOptions) -> Writer:
    """The writer for ``format`` ("coco", "wds", "yolo") into folder ``out``; ``categories``
    are the class names, category id ``k`` (1-based) being ``categories[k - 1]``."""
    if not categories:
        raise InputError("a dataset needs at least one category name")
    return WRITERS.get(format)(Path(out), list(categories), options)


# The format modules import WriterOptions from here, so they are loaded after it is defined.
from synthgen.writers.coco import CocoWriter  # noqa: E402
from synthgen.writers.wds import WdsWriter  # noqa: E402
from synthgen.writers.yolo import YoloWriter  # noqa: E402

WRITERS.register("coco", help="images/ + annotations.json (pycocotools, torchvision CocoDetection)")(CocoWriter)
WRITERS.register("wds", help="WebDataset tar shards (streaming; supports endless runs)")(WdsWriter)
WRITERS.register("yolo", help="Ultralytics YOLO folder: images/, labels/, data.yaml")(YoloWriter)

__all__ = ["WRITERS", "CocoWriter", "StagedSample", "WdsWriter", "Writer", "WriterOptions", "YoloWriter", "make_writer"]
