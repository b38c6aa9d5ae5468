"""COCO writer: ``OUT/images/<key>.jpg`` and ``OUT/annotations.json``.

Each sample's JPEG is written (by :class:`CocoStager`, in a paste worker when there are
several), then journaled with its annotations in ``OUT/.synthgen/coco.jsonl`` by the main
process, in index order. ``annotations.json`` is built from the journal, once, at ``close()``
(written atomically), so the cost is linear in the dataset size and an interrupted run still
finalizes, or, after a SIGKILL, is rebuilt by a resume. ``close()`` also deletes images that
were written but never journaled (a stopped run's samples in flight). ``file_name`` is relative to OUT
("images/<key>.jpg"), so ``pycocotools.coco.COCO(OUT/annotations.json)`` and
``torchvision.datasets.CocoDetection(OUT, OUT/annotations.json)`` load it as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from synthgen import __version__
from synthgen.cache import atomic_write_bytes
from synthgen.sample import EncodedSample
from synthgen.writers import StagedSample, WriterOptions, check_resume_layout, object_labels, owns_key, state_dir
from synthgen.writers.journal import (
    Journal,
    SampleJournalWriter,
    compact_json,
    deferred_interrupts,
    journal_line,
    place_file,
    remove_unjournaled,
    resume_sample_journal,
    write_errors,
)

ANNOTATIONS = "annotations.json"
#: Keys of an annotation beyond COCO's own, written when the run asks for them (--visibility).
#: ``iscrowd`` keeps its meaning: 0 for every pasted object (one instance each) and every kept
#: object, 1 for a crowd region kept from a labelled COCO background (--keep-annotations).
EXTRA_KEYS = ("visibility", "visible_bbox", "amodal_bbox")


def journal_entry(sample: EncodedSample) -> dict:
    """A sample as one journal line (shared with the YOLO writer)."""
    annotations = []
    for ann in sample.annotations:
        record = {"bbox": [float(v) for v in ann.bbox], "category_id": int(ann.category_id), "area": float(ann.area)}
        if ann.segmentation is not None:
            record["segmentation"] = json_rle(ann.segmentation)
        if ann.iscrowd:
            record["iscrowd"] = 1
        if ann.visibility is not None:
            record["visibility"] = ann.visibility
            record["visible_bbox"] = [float(v) for v in ann.visible_bbox]
            record["amodal_bbox"] = [float(v) for v in ann.amodal_bbox]
        annotations.append(record)
    return {"index": sample.index, "key": sample.key, "width": sample.width, "height": sample.height,
            "annotations": annotations}


def annotations_part_name(options: WriterOptions) -> str:
    """The annotation file of one machine of several writing COCO into one folder
    (``synthgen verify --merge`` joins the parts into annotations.json)."""
    return f"annotations.part-{options.shard_index:05d}-of-{options.num_shards:05d}.json"


def json_rle(rle: dict) -> dict:
    """A COCO RLE with its ``counts`` as text (pycocotools.mask.encode gives bytes; JSON needs str)."""
    counts = rle["counts"]
    text = counts.decode("ascii") if isinstance(counts, bytes) else counts
    return {"size": [int(v) for v in rle["size"]], "counts": text}


@dataclass(frozen=True)
class CocoStager:
    """Writes a sample's ``images/<key>.jpg`` and makes its journal line (any process)."""

    images_dir: Path

    def __call__(self, sample: EncodedSample) -> StagedSample:
        name = f"{sample.key}.jpg"
        path = f"{self.images_dir}/{name}"  # a str: joining with pathlib cost 9 us a sample in a run
        entry = journal_entry(sample)
        with deferred_interrupts(), write_errors(f"image {name}", path, intact="everything already journaled"):
            place_file(path, sample.jpeg)
        labels = object_labels(sample)
        return StagedSample(sample.index, sample.key, len(labels), sample.skipped_objects, journal_line(entry), entry, labels)


class CocoWriter(SampleJournalWriter):
    format: ClassVar[str] = "coco"
    supports_infinite: ClassVar[bool] = False

    def __init__(self, out: Path, categories: list[str], options: WriterOptions) -> None:
        self.out = out
        self.categories = categories
        self.options = options
        self.images_dir = out / "images"
        self.journal = Journal(state_dir(out, options) / "coco.jsonl")
        self._mine = owns_key(options)
        # Several machines in one folder: each writes its own part of the annotations.
        self.annotations_name = ANNOTATIONS if options.num_shards == 1 else annotations_part_name(options)
        self._journaled: list[dict] = []  # the journal entries, in order
        self._opened = False
        self._failed = False

    def open(self, *, resume: bool) -> int:
        with write_errors("the COCO image folder", self.out, intact="everything already journaled"):
            self.images_dir.mkdir(parents=True, exist_ok=True)
            if resume:
                check_resume_layout(self.out, self.options)
            entries = self.journal.open(resume=resume)
            with self.journal.closed_on_error():
                if resume:
                    entries = resume_sample_journal(self.journal, entries, self._files_of)
                    remove_unjournaled(self.images_dir, ".jpg", {e["key"] for e in entries}, self._mine)
        self._journaled = entries
        self._opened = True
        return len(entries)

    def _files_of(self, key: str) -> list[Path]:
        return [self.images_dir / f"{key}.jpg"]

    def stager(self) -> CocoStager:
        return CocoStager(self.images_dir)

    def _remember(self, staged: StagedSample) -> None:
        self._journaled.append(staged.entry)

    def close(self) -> None:
        """Write annotations.json from the journaled samples (atomically); idempotent."""
        if not self._opened:
            return
        self._opened = False
        target = self.out / self.annotations_name
        with write_errors(self.annotations_name, target, intact=f"every image and the journal ({len(self._journaled)} samples)"):
            try:
                self.journal.close()
            finally:
                remove_unjournaled(self.images_dir, ".jpg", {e["key"] for e in self._journaled}, self._mine)
                # Compact JSON: the indented form goes through json's pure-Python encoder, which
                # cost about a tenth of the whole run at 10 objects per image.
                atomic_write_bytes(target, compact_json(coco_document(self._journaled, self.categories)))


def coco_document(entries: list[dict], categories: list[str]) -> dict:
    """The annotations.json object for journaled samples: image id = sample index + 1,
    annotation ids 1, 2, ... in sample order."""
    images = []
    annotations = []
    for entry in entries:
        image_id = entry["index"] + 1
        images.append({"id": image_id, "file_name": f"images/{entry['key']}.jpg",
                       "width": entry["width"], "height": entry["height"]})
        for ann in entry["annotations"]:
            record = {"id": len(annotations) + 1, "image_id": image_id, "category_id": ann["category_id"],
                      "bbox": ann["bbox"], "area": ann["area"], "iscrowd": ann.get("iscrowd", 0)}
            if "segmentation" in ann:
                record["segmentation"] = ann["segmentation"]
            if "visibility" in ann:
                record.update((key, ann[key]) for key in EXTRA_KEYS)
            annotations.append(record)
    return {
        "info": {"description": "synthetic detection data made by synthgen", "version": __version__},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name, "supercategory": "object"} for i, name in enumerate(categories)],
    }
