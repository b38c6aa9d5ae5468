"""YOLO (Ultralytics) writer: ``OUT/images/<split>/<key>.jpg``, ``OUT/labels/<split>/<key>.txt``
and ``OUT/data.yaml``.

A label file has one line ``cls cx cy w h`` per box: ``cls`` = category id - 1, the rest
normalised by the image size, 6 decimals; an image without boxes gets an empty label file (a
background image, as Ultralytics expects). Label, then image, are written (by
:class:`YoloStager`, in a paste worker when there are several), then the main process journals
the sample in ``OUT/.synthgen/yolo.jsonl``, in index order; resume and ``close()`` remove files the
journal does not list. ``data.yaml`` is written at open (so the folder is usable while it grows) and at close.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from synthgen.cache import atomic_write_bytes
from synthgen.sample import EncodedSample
from synthgen.writers import StagedSample, WriterOptions, check_resume_layout, object_labels, owns_key, state_dir
from synthgen.writers.coco import journal_entry
from synthgen.writers.journal import (
    Journal,
    SampleJournalWriter,
    deferred_interrupts,
    journal_line,
    place_file,
    remove_unjournaled,
    resume_sample_journal,
    write_errors,
)

DATA_YAML = "data.yaml"
VISIBILITY = "visibility"  # the sidecar folder: OUT/visibility/<split>/<key>.txt


def label_text(sample: EncodedSample) -> str:
    """The label file of a sample: ``cls cx cy w h`` lines, normalised, 6 decimals. Crowd
    regions kept from a COCO background are left out: YOLO labels cannot mark a region to
    ignore, and as a box a crowd would teach one object (Ultralytics' own COCO converter
    drops them too)."""
    lines = []
    for ann in sample.annotations:
        if ann.iscrowd:
            continue
        x, y, w, h = (float(v) for v in ann.bbox)
        cx = (x + w / 2) / sample.width
        cy = (y + h / 2) / sample.height
        lines.append(f"{int(ann.category_id) - 1} {cx:.6f} {cy:.6f} {w / sample.width:.6f} {h / sample.height:.6f}\n")
    return "".join(lines)


def visibility_text(sample: EncodedSample) -> str:
    """The visibility sidecar of a sample, one line per label line, in the same order:
    ``cls visibility`` then the visible box and the amodal box, each ``cx cy w h`` normalised
    (the amodal box may reach past the image: its values can leave [0, 1])."""
    lines = []
    for ann in sample.annotations:
        if ann.iscrowd:
            continue
        values = [f"{int(ann.category_id) - 1} {float(ann.visibility):.6f}"]
        for x, y, w, h in (ann.visible_bbox, ann.amodal_bbox):
            x, y, w, h = float(x), float(y), float(w), float(h)
            values.append(f"{(x + w / 2) / sample.width:.6f} {(y + h / 2) / sample.height:.6f} {w / sample.width:.6f} {h / sample.height:.6f}")
        lines.append(" ".join(values) + "\n")
    return "".join(lines)


def data_yaml(split: str, categories: list[str]) -> str:
    # Names are JSON strings: valid YAML double-quoted scalars, safe for any class name.
    names = "".join(f"  {i}: {json.dumps(name)}\n" for i, name in enumerate(categories))
    return (
        "# Ultralytics YOLO dataset written by synthgen.\n"
        "# No `path:` key, so Ultralytics takes the folder of this file as the dataset root: the\n"
        "# folder can be moved, and the same run always writes the same bytes.\n"
        f"train: images/{split}\n"
        f"# synthgen writes a single split: val points at the same images (evaluate on real data instead).\n"
        f"val: images/{split}\n"
        f"nc: {len(categories)}\n"
        "names:\n"
        f"{names}"
    )


@dataclass(frozen=True)
class YoloStager:
    """Writes a sample's label and image files and makes its journal line (any process)."""

    images_dir: Path
    labels_dir: Path
    visibility_dir: Path | None = None  # the sidecar folder, with --visibility

    def __call__(self, sample: EncodedSample) -> StagedSample:
        # str paths: joining with pathlib cost about 9 us a file in a run
        image, label = f"{self.images_dir}/{sample.key}.jpg", f"{self.labels_dir}/{sample.key}.txt"
        with deferred_interrupts(), write_errors(f"sample {sample.key}", self.images_dir.parents[1], intact="everything already journaled"):
            place_file(label, label_text(sample).encode())
            if self.visibility_dir is not None:
                place_file(f"{self.visibility_dir}/{sample.key}.txt", visibility_text(sample).encode())
            place_file(image, sample.jpeg)
        labels = object_labels(sample)
        return StagedSample(sample.index, sample.key, len(labels), sample.skipped_objects, journal_line(journal_entry(sample)),
                            labels=labels)


class YoloWriter(SampleJournalWriter):
    format: ClassVar[str] = "yolo"
    supports_infinite: ClassVar[bool] = False

    def __init__(self, out: Path, categories: list[str], options: WriterOptions) -> None:
        self.out = out
        self.categories = categories
        self.options = options
        self.split = options.split
        self.images_dir = out / "images" / options.split
        self.labels_dir = out / "labels" / options.split
        self.visibility_dir = out / VISIBILITY / options.split if options.visibility else None
        self.journal = Journal(state_dir(out, options) / "yolo.jsonl")
        self._mine = owns_key(options)
        self._journaled: list[str] = []  # keys of the journaled samples
        self._opened = False
        self._failed = False

    def _files_of(self, key: str) -> list[Path]:
        sidecar = [] if self.visibility_dir is None else [self.visibility_dir / f"{key}.txt"]
        return [self.images_dir / f"{key}.jpg", self.labels_dir / f"{key}.txt", *sidecar]

    def _remove_unjournaled(self, keys: set[str]) -> None:
        remove_unjournaled(self.images_dir, ".jpg", keys, self._mine)
        remove_unjournaled(self.labels_dir, ".txt", keys, self._mine)
        if self.visibility_dir is not None:
            remove_unjournaled(self.visibility_dir, ".txt", keys, self._mine)

    def _write_yaml(self) -> None:
        atomic_write_bytes(self.out / DATA_YAML, data_yaml(self.split, self.categories).encode())

    def open(self, *, resume: bool) -> int:
        with write_errors("the YOLO folders", self.out, intact="everything already journaled"):
            self.images_dir.mkdir(parents=True, exist_ok=True)
            self.labels_dir.mkdir(parents=True, exist_ok=True)
            if self.visibility_dir is not None:
                self.visibility_dir.mkdir(parents=True, exist_ok=True)
            if resume:
                check_resume_layout(self.out, self.options)
            entries = self.journal.open(resume=resume)
            with self.journal.closed_on_error():
                if resume:
                    entries = resume_sample_journal(self.journal, entries, self._files_of)
                    self._remove_unjournaled({e["key"] for e in entries})
                self._write_yaml()
        self._journaled = [e["key"] for e in entries]
        self._opened = True
        return len(entries)

    def stager(self) -> YoloStager:
        return YoloStager(self.images_dir, self.labels_dir, self.visibility_dir)

    def _remember(self, staged: StagedSample) -> None:
        self._journaled.append(staged.key)

    def close(self) -> None:
        if not self._opened:
            return
        self._opened = False
        with write_errors(DATA_YAML, self.out / DATA_YAML, intact=f"everything journaled ({len(self._journaled)} samples)"):
            try:
                self.journal.close()
            finally:
                self._remove_unjournaled(set(self._journaled))
                self._write_yaml()
