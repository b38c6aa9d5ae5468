"""``synthgen verify OUT``: check a whole output folder, made by one machine or by several
(``--shard-index``/``--num-shards``) writing into the same place.

It confirms that every machine of the job wrote its part with the same settings, that every
shard or file is complete and readable, that the samples are exactly ``0 .. n-1`` (no gap, no
sample twice) and that every sample's labels are valid (boxes inside the image with a positive
size, known category ids, areas within the box, visibility in (0, 1], iscrowd 0 or 1). Problems are collected,
not raised, so one run names all of them; :class:`InputError` only when OUT is not a synthgen
output at all.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from synthgen.errors import InputError

_RECORD = 10240  # synthgen's shards are whole tar records
_EPS = 1e-3  # slack on box bounds (floats written with 6 decimals in YOLO labels)


@dataclass
class VerifyReport:
    out: Path
    format: str
    machines: int  # num_shards of the job
    samples: int  # distinct samples found
    files: int  # shards (wds) or images (coco, yolo) read
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_output(out: str | Path, expected: int | None = None, merge: bool = False) -> VerifyReport:
    """Check ``out``; ``expected``: the number of samples the job was to make (else the samples
    must be ``0 .. max``). ``merge`` (COCO from several machines): when all is well, join their
    ``annotations.part-*.json`` into ``annotations.json``."""
    out = Path(out)
    runs = _runs(out)
    first = next(iter(runs.values()))
    fmt, machines = str(first.get("format")), int(first.get("num_shards", 1))
    report = VerifyReport(out, fmt, machines, 0, 0)
    _check_runs(runs, machines, report)
    places: dict[int, list[str]] = {}
    if fmt == "wds":
        _check_wds(out, runs, report, places)
    elif fmt == "coco":
        _check_coco(out, report, places)
    elif fmt == "yolo":
        _check_yolo(out, report, places)
    else:
        raise InputError(f"{out}: run settings name an unknown format {fmt!r}")
    report.samples = len(places)
    duplicated: dict[tuple[str, ...], list[int]] = {}
    for index, where in sorted(places.items()):
        if len(where) > 1:
            duplicated.setdefault(tuple(where), []).append(index)
    for where, indices in duplicated.items():
        report.problems.append(f"{len(indices)} samples appear {len(where)} times, in {', '.join(where)}: {_ranges(indices)}")
    top = expected if expected is not None else (max(places) + 1 if places else 0)
    missing = sorted(set(range(top)) - places.keys())
    if missing:
        report.problems.append(f"{len(missing)} of samples 0..{top - 1} are missing: {_ranges(missing)}")
    beyond = sorted(i for i in places if i >= top)
    if beyond:
        report.problems.append(f"{len(beyond)} samples beyond the expected {top}: {_ranges(beyond)}")
    if merge and fmt == "coco" and machines > 1:
        if report.ok:
            _merge_coco(out)
        else:
            report.problems.append("annotations.json not written: fix the problems above first")
    return report


# -- run settings -----------------------------------------------------------------------------


def _runs(out: Path) -> dict[str, dict]:
    """Run settings by part name ("" for a one-machine run)."""
    base = out / ".synthgen"
    if not out.is_dir():
        raise InputError(f"{out} is not a folder")
    runs: dict[str, dict] = {}
    candidates = [("", base / "run.json")] + [(p.name, p / "run.json") for p in sorted(base.glob("part-*-of-*"))]
    for name, path in candidates:
        if path.is_file():
            try:
                runs[name] = json.loads(path.read_text())
            except ValueError as err:
                raise InputError(f"{path} is not valid JSON ({err}); this folder's bookkeeping is damaged") from None
    if not runs:
        raise InputError(f"{out} holds no synthgen run (no .synthgen/run.json nor .synthgen/part-*/run.json)")
    return runs


def _check_runs(runs: dict[str, dict], machines: int, report: VerifyReport) -> None:
    if machines == 1:
        return
    found = {int(r.get("shard_index", -1)) for r in runs.values()}
    for k in range(machines):
        if k not in found:
            report.problems.append(
                f"machine {k} of {machines} wrote nothing here (no .synthgen/part-{k:05d}-of-{machines:05d}/): "
                f"run it with --shard-index {k} --num-shards {machines}"
            )
    reference = None
    for name, run in sorted(runs.items()):
        if int(run.get("num_shards", 1)) != machines:
            report.problems.append(f"{name or 'run.json'} is part of a job over {run.get('num_shards')} machines, not {machines}")
            continue
        settings = {k: v for k, v in run.items() if k not in ("shard_index", "synthgen_version")}
        if reference is None:
            reference = (name, settings)
        elif settings != reference[1]:
            report.problems.append(f"{name} was made with other settings than {reference[0]}: the parts do not form one dataset")


# -- labels -----------------------------------------------------------------------------------


def _check_boxes(where: str, width: Any, height: Any, boxes: list, labels: list, categories: int, areas: list | None,
                 visibility: list | None, problems: list[str], crowd: list | None = None) -> None:
    """``boxes`` as xyxy pixels; ``crowd``: each box's ``iscrowd`` flag (0 or 1), when the
    format has them."""
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        problems.append(f"{where}: image size {width}x{height} is not positive")
        return
    if len(labels) != len(boxes) or (areas is not None and len(areas) != len(boxes)) or (
        visibility is not None and len(visibility) != len(boxes)
    ) or (crowd is not None and len(crowd) != len(boxes)):
        problems.append(f"{where}: {len(boxes)} boxes but {len(labels)} labels")
        return
    for j, (box, label) in enumerate(zip(boxes, labels)):
        try:
            x0, y0, x1, y1 = (float(v) for v in box)
        except (TypeError, ValueError):
            problems.append(f"{where}: box {j} {box!r} is not four numbers")
            continue
        if not (-_EPS <= x0 < x1 <= width + _EPS and -_EPS <= y0 < y1 <= height + _EPS):
            problems.append(f"{where}: box {j} {[x0, y0, x1, y1]} is empty or outside the {width}x{height} image")
        if not (isinstance(label, int) and 1 <= label <= categories):
            problems.append(f"{where}: box {j} has category {label!r}, not one of 1..{categories}")
        if areas is not None and not 0 < float(areas[j]) <= (x1 - x0) * (y1 - y0) + _EPS:
            problems.append(f"{where}: box {j} has area {areas[j]}, outside (0, box area]")
        if visibility is not None and not 0 < float(visibility[j]) <= 1 + 1e-9:
            problems.append(f"{where}: box {j} has visibility {visibility[j]}, outside (0, 1]")
        if crowd is not None and crowd[j] not in (0, 1):
            problems.append(f"{where}: box {j} has iscrowd {crowd[j]!r}, not 0 or 1")


def _complete_jpeg(data: bytes) -> bool:
    """Starts with the JPEG start-of-image marker and ends with end-of-image (a file cut short
    loses the latter)."""
    return data[:2] == b"\xff\xd8" and data.rstrip(b"\0")[-2:] == b"\xff\xd9"


# -- formats ----------------------------------------------------------------------------------


def _categories_json(out: Path, report: VerifyReport) -> int:
    try:
        return len(json.loads((out / "categories.json").read_text()))
    except (OSError, ValueError) as err:
        report.problems.append(f"categories.json is missing or unreadable ({err})")
        return 0


def _check_wds(out: Path, runs: dict[str, dict], report: VerifyReport, places: dict[int, list[str]]) -> None:
    categories = _categories_json(out, report)
    shards = sorted(out.glob("shard-*.tar"))
    counts: dict[str, int] = {}
    for path in shards:
        report.files += 1
        counts[path.name] = _check_shard(path, categories, report, places)
    for partial in sorted(out.glob("shard-*.tar.partial")):
        report.problems.append(
            f"{partial.name}: an unfinished shard (a machine is still writing, or was stopped by a kill: rerun it with --resume)"
        )
    numbers = sorted(int(p.name[6:-4]) for p in shards if p.name[6:-4].isdigit())
    missing = sorted(set(range(numbers[-1] + 1)) - set(numbers)) if numbers else []
    if missing:
        report.problems.append(f"{len(missing)} shard(s) missing: " + ", ".join(f"shard-{n:06d}.tar" for n in missing[:20]))
    journaled: set[str] = set()
    for name in runs:
        journal = out / ".synthgen" / name / "wds.jsonl"
        for line in journal.read_text().splitlines() if journal.is_file() else []:
            try:
                entry = json.loads(line)
            except ValueError:
                break  # a torn last line: the journal's own resume rule
            shard, count = entry.get("shard"), entry.get("count")
            journaled.add(shard)
            if shard not in counts:
                report.problems.append(f"{shard} was written (journaled) but is not in the folder")
            elif counts[shard] >= 0 and counts[shard] != count:
                report.problems.append(f"{shard} holds {counts[shard]} complete samples, but {count} were written into it: it is truncated or changed")
    for name in sorted(set(counts) - journaled):
        report.problems.append(f"{name} was written by no machine of this job (a copy, or left from another run)")


def _check_shard(path: Path, categories: int, report: VerifyReport, places: dict[int, list[str]]) -> int:
    """Read one shard whole; its count of complete samples (-1 when unreadable)."""
    size = path.stat().st_size
    if size % _RECORD:
        report.problems.append(f"{path.name}: {size} bytes, not whole tar records: the file is truncated")
        return -1
    with open(path, "rb") as file:
        file.seek(max(size - 1024, 0))
        if file.read(1024).strip(b"\0"):
            report.problems.append(f"{path.name} lacks the tar end-of-archive blocks: the file is truncated")
            return -1
    samples: dict[str, dict[str, bytes]] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                key, _, ext = member.name.partition(".")
                data = tar.extractfile(member)
                if data is None:
                    continue
                content = data.read()
                if len(content) != member.size:
                    raise tarfile.ReadError("unexpected end of data")
                samples.setdefault(key, {})[ext] = content
    except (tarfile.TarError, OSError, EOFError) as err:
        report.problems.append(f"{path.name} is truncated or damaged and cannot be read ({err})")
        return -1
    complete = 0
    for key, members in samples.items():
        where = f"{path.name}:{key}"
        if "jpg" not in members or "json" not in members:
            report.problems.append(f"{where}: lacks its .jpg or .json")
            continue
        if not _complete_jpeg(members["jpg"]):
            report.problems.append(f"{where}: the JPEG is cut short or not a JPEG")
        try:
            meta = json.loads(members["json"])
            index = int(meta["index"])
        except (ValueError, KeyError, TypeError):
            report.problems.append(f"{where}: its .json is not a synthgen sample")
            continue
        if key != f"{index:010d}":
            report.problems.append(f"{where}: the key does not match its index {index}")
        _check_boxes(where, meta.get("width"), meta.get("height"), meta.get("boxes", []), meta.get("labels", []),
                     categories, meta.get("areas"), meta.get("visibility"), report.problems, meta.get("iscrowd"))
        places.setdefault(index, []).append(path.name)
        complete += 1
    return complete


def _check_coco(out: Path, report: VerifyReport, places: dict[int, list[str]]) -> None:
    files = sorted(out.glob("annotations.part-*.json")) or [out / "annotations.json"]
    listed: set[str] = set()
    for path in files:
        try:
            data = json.loads(path.read_text())
            images, annotations, categories = data["images"], data["annotations"], data["categories"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            report.problems.append(f"{path.name} is missing or not a COCO file ({err}): the machine that writes it has not finished")
            continue
        by_image: dict[int, list[dict]] = {}
        for ann in annotations:
            by_image.setdefault(ann.get("image_id"), []).append(ann)
        for image in images:
            name, image_id = image.get("file_name", ""), image.get("id")
            where = f"{path.name}: image {image_id}"
            listed.add(name)
            report.files += 1
            try:
                data_bytes = (out / name).read_bytes()
            except OSError:
                report.problems.append(f"{where}: its file {name} is missing")
                data_bytes = b""
            if data_bytes and not _complete_jpeg(data_bytes):
                report.problems.append(f"{where}: {name} is cut short or not a JPEG")
            anns = by_image.get(image_id, [])
            boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns]
            visibility = [a["visibility"] for a in anns] if anns and "visibility" in anns[0] else None
            _check_boxes(where, image.get("width"), image.get("height"), boxes, [a.get("category_id") for a in anns],
                         len(categories), [a.get("area") for a in anns], visibility, report.problems,
                         [a.get("iscrowd", 0) for a in anns])
            places.setdefault(int(image_id) - 1, []).append(path.name)
    stray = sorted(p.name for p in (out / "images").glob("*.jpg") if f"images/{p.name}" not in listed) if (out / "images").is_dir() else []
    if stray:
        report.problems.append(f"{len(stray)} images are in no annotation file (e.g. images/{stray[0]}): a part's annotations are missing")


def _check_yolo(out: Path, report: VerifyReport, places: dict[int, list[str]]) -> None:
    import yaml

    try:
        spec = yaml.safe_load((out / "data.yaml").read_text())
        categories, split = int(spec["nc"]), Path(str(spec["train"])).name
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as err:
        report.problems.append(f"data.yaml is missing or unreadable ({err})")
        return
    images_dir, labels_dir = out / "images" / split, out / "labels" / split
    sidecars = out / "visibility" / split
    for image in sorted(images_dir.glob("*.jpg")):
        report.files += 1
        where = f"images/{split}/{image.name}"
        if not _complete_jpeg(image.read_bytes()):
            report.problems.append(f"{where} is cut short or not a JPEG")
        label = labels_dir / f"{image.stem}.txt"
        if not label.is_file():
            report.problems.append(f"{where} has no label file labels/{split}/{label.name}")
            continue
        boxes, labels = [], []
        for line in label.read_text().splitlines():
            values = line.split()
            try:
                cls, cx, cy, w, h = int(values[0]), *(float(v) for v in values[1:])
            except (ValueError, IndexError, TypeError):
                report.problems.append(f"labels/{split}/{label.name}: line {line!r} is not 'cls cx cy w h'")
                continue
            boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
            labels.append(cls + 1)
        _check_boxes(f"labels/{split}/{label.name}", 1, 1, boxes, labels, categories, None, None, report.problems)
        if sidecars.is_dir():
            sidecar = sidecars / label.name
            if not sidecar.is_file() or len(sidecar.read_text().splitlines()) != len(boxes):
                report.problems.append(f"visibility/{split}/{label.name} is missing or does not match its label file")
        if image.stem.isdigit():
            places.setdefault(int(image.stem), []).append(where)
        else:
            report.problems.append(f"{where} is not named by a sample index")


def _merge_coco(out: Path) -> None:
    """Join the machines' annotation parts into ``annotations.json`` (images in index order,
    annotation ids renumbered 1, 2, ...), written atomically."""
    from synthgen.cache import atomic_write_bytes
    from synthgen.writers.journal import compact_json

    parts = [json.loads(p.read_text()) for p in sorted(out.glob("annotations.part-*.json"))]
    images = sorted((image for part in parts for image in part["images"]), key=lambda image: image["id"])
    by_image: dict[int, list[dict]] = {}
    for part in parts:
        for ann in part["annotations"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
    annotations = []
    for image in images:
        for ann in by_image.get(image["id"], []):
            annotations.append({**ann, "id": len(annotations) + 1})
    merged = {**parts[0], "images": images, "annotations": annotations}
    atomic_write_bytes(out / "annotations.json", compact_json(merged))


def _ranges(values: Iterable[int], most: int = 8) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2, 5, 7-8"`` (the first ``most`` runs)."""
    runs: list[list[int]] = []
    for v in values:
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    text = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in runs[:most])
    return text + (f", ... ({len(runs) - most} more ranges)" if len(runs) > most else "")
