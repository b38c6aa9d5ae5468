"""Writers (COCO, WebDataset, YOLO) and readers: formats on disk, durability and resume."""

from __future__ import annotations

import errno
import gc
import json
import os
import signal
import tarfile
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from synthgen.errors import InputError, WriteError
from synthgen.imageio import encode_jpeg
from synthgen.readers import Dataset, decode_wds_sample, detect_format, iter_dataset, read_categories, shard_urls
from synthgen.sample import EncodedAnnotation, EncodedSample, sample_key
from synthgen.writers import WriterOptions, make_writer
from synthgen.writers import coco as coco_module
from synthgen.writers import yolo as yolo_module
from synthgen.writers.journal import Journal

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools

CATEGORIES = ["cat", "dog", "bird"]
FORMATS = ["coco", "wds", "yolo"]


def make_sample(index: int, *, masks: bool = True, size: tuple[int, int] = (40, 56)) -> EncodedSample:
    """A random image with ``index % 4`` rectangular objects (0 boxes every 4th sample)."""
    rng = np.random.default_rng([7, index])
    height, width = size
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    annotations = []
    for k in range(index % 4):
        w, h = int(rng.integers(3, 20)), int(rng.integers(3, 15))
        x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        rle = None
        if masks:
            mask = np.zeros((height, width), dtype=np.uint8, order="F")
            mask[y : y + h, x : x + w] = 1
            rle = mask_utils.encode(mask)  # counts are bytes: the writers must store them as text
        annotations.append(EncodedAnnotation([float(x), float(y), float(w), float(h)], 1 + k % 3, float(w * h), rle))
    return EncodedSample(index, sample_key(index), width, height, encode_jpeg(image, 90), annotations)


def samples(indices) -> list[EncodedSample]:
    return [make_sample(i) for i in indices]


def write(fmt: str, out: Path, items: list[EncodedSample], options: WriterOptions = WriterOptions(), *,
          resume: bool = False, close: bool = True):
    writer = make_writer(fmt, out, CATEGORIES, options)
    done = writer.open(resume=resume)
    for sample in items:
        writer.write(sample)
    if close:
        writer.close()
    return writer, done


def expected_xyxy(sample: EncodedSample) -> np.ndarray:
    rows = [[x, y, x + w, y + h] for x, y, w, h in (a.bbox for a in sample.annotations)]
    return np.array(rows, np.float32).reshape(-1, 4)


def assert_dataset_equals(out: Path, items: list[EncodedSample], atol: float = 1e-3) -> None:
    """Reading ``out`` back gives exactly ``items``, in order: no gap, no duplicate."""
    read = list(iter_dataset(out))
    assert [r.key for r in read] == [s.key for s in items]
    for r, s in zip(read, items):
        np.testing.assert_allclose(r.boxes_xyxy, expected_xyxy(s), atol=atol)
        assert r.labels.tolist() == [a.category_id for a in s.annotations]
        assert r.names == [CATEGORIES[a.category_id - 1] for a in s.annotations]
        assert r.image.shape == (s.height, s.width, 3)


# --- COCO ---------------------------------------------------------------------------------------


def test_coco_loads_in_pycocotools_with_boxes_areas_and_rle(tmp_path):
    from pycocotools.coco import COCO

    items = samples(range(6))
    write("coco", tmp_path, items)
    coco = COCO(str(tmp_path / "annotations.json"))
    assert sorted(coco.getImgIds()) == [s.index + 1 for s in items]
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == CATEGORIES
    for s in items:
        info = coco.imgs[s.index + 1]
        assert info["file_name"] == f"images/{s.key}.jpg"
        assert (info["width"], info["height"]) == (s.width, s.height)
        assert (tmp_path / info["file_name"]).read_bytes() == s.jpeg
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[s.index + 1]))
        assert [a["bbox"] for a in anns] == [a.bbox for a in s.annotations]
        assert [a["area"] for a in anns] == [a.area for a in s.annotations]
        assert [a["category_id"] for a in anns] == [a.category_id for a in s.annotations]
        for ann, want in zip(anns, s.annotations):
            assert ann["iscrowd"] == 0
            np.testing.assert_array_equal(coco.annToMask(ann), mask_utils.decode(want.segmentation))
    ids = coco.getAnnIds()
    assert len(set(ids)) == len(ids) == sum(len(s.annotations) for s in items)


def test_coco_loads_in_torchvision_cocodetection(tmp_path):
    from torchvision.datasets import CocoDetection

    items = samples(range(5))
    write("coco", tmp_path, items)
    dataset = CocoDetection(str(tmp_path), str(tmp_path / "annotations.json"))
    assert len(dataset) == len(items)
    for (image, target), s in zip(dataset, items):
        assert image.size == (s.width, s.height)
        assert [t["bbox"] for t in target] == [a.bbox for a in s.annotations]


def test_coco_without_masks_has_no_segmentation(tmp_path):
    write("coco", tmp_path, [make_sample(3, masks=False)])
    doc = json.loads((tmp_path / "annotations.json").read_text())
    assert doc["annotations"] and all("segmentation" not in a for a in doc["annotations"])


# --- WebDataset ---------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_wds_reads_back_with_webdataset(tmp_path):
    import webdataset as wds

    items = samples(range(7))
    write("wds", tmp_path, items, WriterOptions(shard_size=3))
    assert json.loads((tmp_path / "categories.json").read_text()) == [
        {"id": i + 1, "name": n} for i, n in enumerate(CATEGORIES)
    ]
    urls = sorted(str(p) for p in tmp_path.glob("shard-*.tar"))
    read = list(wds.WebDataset(urls, shardshuffle=False))
    gc.collect()  # webdataset leaves its shard files to the garbage collector
    assert [r["__key__"] for r in read] == [s.key for s in items]
    for r, s in zip(read, items):
        assert r["jpg"] == s.jpeg
        meta = json.loads(r["json"])
        assert (meta["index"], meta["width"], meta["height"]) == (s.index, s.width, s.height)
        assert meta["boxes"] == expected_xyxy(s).tolist()
        assert meta["labels"] == [a.category_id for a in s.annotations]
        assert meta["names"] == [CATEGORIES[a.category_id - 1] for a in s.annotations]
        assert meta["areas"] == [a.area for a in s.annotations]
        for rle, a in zip(meta.get("segmentations", []), s.annotations):
            np.testing.assert_array_equal(mask_utils.decode({**rle, "counts": rle["counts"].encode()}),
                                          mask_utils.decode(a.segmentation))
    assert "segmentations" in json.loads(read[1]["json"])


def test_decode_wds_sample_in_a_webdataset_pipeline_equals_synthgens_reader(tmp_path):
    import webdataset as wds

    items = samples(range(6))
    write("wds", tmp_path, items, WriterOptions(shard_size=4))
    urls = sorted(str(p) for p in tmp_path.glob("shard-*.tar"))
    piped = list(wds.WebDataset(urls, shardshuffle=False).map(decode_wds_sample))
    gc.collect()
    read = list(iter_dataset(tmp_path))
    assert [p.key for p in piped] == [r.key for r in read] == [s.key for s in items]
    for p, r in zip(piped, read):
        np.testing.assert_array_equal(p.image, r.image)
        np.testing.assert_array_equal(p.boxes_xyxy, r.boxes_xyxy)
        assert p.labels.tolist() == r.labels.tolist() and p.names == r.names


def test_wds_same_samples_give_identical_tar_bytes(tmp_path):
    items = samples(range(5))
    write("wds", tmp_path / "a", items, WriterOptions(shard_size=2))
    write("wds", tmp_path / "b", items, WriterOptions(shard_size=2))
    names = sorted(p.name for p in (tmp_path / "a").glob("*.tar"))
    assert names == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    with tarfile.open(tmp_path / "a" / names[0]) as tar:  # fixed headers, not the time of writing
        assert {(m.mtime, m.uname, m.mode) for m in tar.getmembers()} == {(0, "synthgen", 0o444)}


def shard_keys(out: Path) -> dict[str, list[str]]:
    result = {}
    for path in sorted(out.glob("*.tar")):
        with tarfile.open(path) as tar:
            result[path.name] = sorted({m.name.split(".")[0] for m in tar.getmembers()})
    return result


def test_wds_rolls_shards_by_count(tmp_path):
    write("wds", tmp_path, samples(range(7)), WriterOptions(shard_size=3))
    keys = [sample_key(i) for i in range(7)]
    assert shard_keys(tmp_path) == {
        "shard-000000.tar": keys[0:3], "shard-000001.tar": keys[3:6], "shard-000002.tar": keys[6:7]
    }
    journal = [json.loads(line) for line in (tmp_path / ".synthgen" / "wds.jsonl").read_text().splitlines()]
    assert [(e["count"], e["first"], e["last"]) for e in journal] == [(3, 0, 2), (3, 3, 5), (1, 6, 6)]


def test_wds_rolls_shards_before_exceeding_the_byte_limit(tmp_path):
    big = make_sample(1, size=(200, 200))  # a JPEG of random noise: ~30 kB
    items = [EncodedSample(i, sample_key(i), big.width, big.height, big.jpeg, big.annotations) for i in range(6)]
    write("wds", tmp_path / "one", items[:1])
    single = (tmp_path / "one" / "shard-000000.tar").stat().st_size
    limit = 2 * single  # room for 2 samples (a tar's end blocks and padding are shared), not 3
    write("wds", tmp_path / "out", items, WriterOptions(shard_max_bytes=limit))
    sizes = {p.name: p.stat().st_size for p in (tmp_path / "out").glob("*.tar")}
    assert len(sizes) == 3 and all(size <= limit for size in sizes.values())
    assert [len(k) for k in shard_keys(tmp_path / "out").values()] == [2, 2, 2]
    # A sample larger than the limit still gets written, alone in its shard.
    write("wds", tmp_path / "tiny", items[:2], WriterOptions(shard_max_bytes=1000))
    assert [len(k) for k in shard_keys(tmp_path / "tiny").values()] == [1, 1]


def test_wds_several_machines_make_one_gap_free_shard_set(tmp_path):
    num_shards = 3
    all_shards = {}
    for machine in range(num_shards):
        out = tmp_path / f"machine{machine}"
        items = samples(range(machine * 100, machine * 100 + 7))  # the engine's split; any indices
        write("wds", out, items, WriterOptions(shard_size=3, shard_index=machine, num_shards=num_shards))
        for name, keys in shard_keys(out).items():
            assert name not in all_shards
            all_shards[name] = keys
    assert sorted(all_shards) == [f"shard-{n:06d}.tar" for n in range(9)]
    assert all_shards["shard-000004.tar"] == [sample_key(i) for i in range(103, 106)]  # machine 1's 2nd shard


def test_wds_resume_continues_shard_numbering_of_this_machine(tmp_path):
    options = WriterOptions(shard_size=2, shard_index=1, num_shards=2)
    write("wds", tmp_path, samples(range(3)), options)  # shards 1 (2 samples), 3 (1 sample)
    writer, done = write("wds", tmp_path, samples(range(3, 6)), options, resume=True)
    assert done == 3
    assert list(shard_keys(tmp_path)) == ["shard-000001.tar", "shard-000003.tar", "shard-000005.tar", "shard-000007.tar"]
    assert_dataset_equals(tmp_path, samples(range(6)))
    with pytest.raises(InputError, match="num-shards"):
        make_writer("wds", tmp_path, CATEGORIES, WriterOptions(shard_size=2)).open(resume=True)


# --- YOLO ---------------------------------------------------------------------------------------


def test_yolo_labels_round_trip_and_data_yaml(tmp_path):
    import yaml

    items = samples(range(6))
    write("yolo", tmp_path, items, WriterOptions(split="synth"))
    for s in items:
        assert (tmp_path / "images" / "synth" / f"{s.key}.jpg").read_bytes() == s.jpeg
        lines = (tmp_path / "labels" / "synth" / f"{s.key}.txt").read_text().splitlines()
        assert len(lines) == len(s.annotations)  # an image without boxes has an empty label file
        for line, a in zip(lines, s.annotations):
            cls, *coords = line.split()
            assert int(cls) == a.category_id - 1
            assert all(len(c.split(".")[1]) == 6 for c in coords)
            cx, cy, w, h = map(float, coords)
            got = [(cx - w / 2) * s.width, (cy - h / 2) * s.height, w * s.width, h * s.height]
            np.testing.assert_allclose(got, a.bbox, atol=1e-6 * max(s.width, s.height) * 2)
    spec = yaml.safe_load((tmp_path / "data.yaml").read_text())
    assert spec["train"] == spec["val"] == "images/synth"
    assert "path" not in spec  # Ultralytics then uses the folder of data.yaml: the dataset can move
    assert spec["nc"] == 3 and spec["names"] == dict(enumerate(CATEGORIES))
    assert "val points at the same images" in (tmp_path / "data.yaml").read_text()
    assert_dataset_equals(tmp_path, items)


# --- resume and interruption --------------------------------------------------------------------


def kill_while_writing(fmt: str, out: Path, items: list[EncodedSample], options: WriterOptions) -> None:
    """Write ``items`` in a forked child that then dies by SIGKILL (no close, no cleanup), at a
    moment when the WebDataset writer's finished shards are published (a kill before that loses
    them too: they are rewritten on resume)."""
    pid = os.fork()
    if pid == 0:  # the child
        try:
            writer, _ = write(fmt, out, items, options, close=False)
            if fmt == "wds":
                writer._publisher.drain()
        finally:
            os.kill(os.getpid(), signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def add_leftovers(fmt: str, out: Path) -> None:
    """What a kill at a worse moment leaves: a torn journal line and half-written files."""
    journal = out / ".synthgen" / f"{fmt}.jsonl"
    with open(journal, "ab") as f:
        f.write(b'{"index": 5, "key": "00000')
    if fmt == "wds":
        (out / "shard-000002.tar.partial").write_bytes(b"half a tar")
        (out / "shard-000002.tar").write_bytes(b"renamed, never journaled")
    else:
        images = out / "images" / "train" if fmt == "yolo" else out / "images"
        (images / f"{sample_key(5)}.jpg").write_bytes(b"written, never journaled")
        (images / f"{sample_key(6)}.jpg").write_bytes(b"half an image")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork to kill a writer")
@pytest.mark.parametrize("fmt", FORMATS)
def test_resume_after_sigkill_with_torn_journal_and_leftovers(tmp_path, fmt):
    options = WriterOptions(shard_size=2)
    kill_while_writing(fmt, tmp_path, samples(range(5)), options)
    add_leftovers(fmt, tmp_path)
    writer = make_writer(fmt, tmp_path, CATEGORIES, options)
    done = writer.open(resume=True)
    # COCO/YOLO journal each sample; WebDataset whole shards (the 5th sample's shard was open).
    assert done == (4 if fmt == "wds" else 5)
    assert not list(tmp_path.rglob("*.partial"))
    assert not list(tmp_path.rglob(f"{sample_key(5)}.*"))  # written but not journaled: removed
    assert not (tmp_path / "shard-000002.tar").exists()
    for sample in samples(range(done, 9)):
        writer.write(sample)
    writer.close()
    assert_dataset_equals(tmp_path, samples(range(9)))
    lines = (tmp_path / ".synthgen" / f"{fmt}.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines)  # the torn line is gone


@pytest.mark.parametrize("fmt", FORMATS)
def test_close_after_interrupt_leaves_a_valid_dataset_and_resume_continues(tmp_path, fmt):
    write(fmt, tmp_path, samples(range(3)), WriterOptions(shard_size=2))  # Ctrl-C, then close()
    assert_dataset_equals(tmp_path, samples(range(3)))
    _, done = write(fmt, tmp_path, samples(range(3, 6)), WriterOptions(shard_size=2), resume=True)
    assert done == 3
    assert_dataset_equals(tmp_path, samples(range(6)))
    writer = make_writer(fmt, tmp_path, CATEGORIES, WriterOptions(shard_size=2))
    assert writer.open(resume=True) == 6
    writer.close()
    writer.close()  # idempotent
    assert_dataset_equals(tmp_path, samples(range(6)))


@pytest.mark.parametrize(("fmt", "deleted", "kept"), [
    ("coco", f"images/{sample_key(3)}.jpg", 3),
    ("yolo", f"labels/train/{sample_key(3)}.txt", 3),
    ("wds", "shard-000001.tar", 2),  # samples 2 and 3
])
def test_resume_drops_journaled_samples_whose_files_were_deleted(tmp_path, fmt, deleted, kept):
    options = WriterOptions(shard_size=2)
    write(fmt, tmp_path, samples(range(5)), options)
    (tmp_path / deleted).unlink()
    writer = make_writer(fmt, tmp_path, CATEGORIES, options)
    assert writer.open(resume=True) == kept
    writer.close()
    assert_dataset_equals(tmp_path, samples(range(kept)))  # the files after the gap are gone too
    _, done = write(fmt, tmp_path, samples(range(kept, 5)), options, resume=True)
    assert done == kept
    assert_dataset_equals(tmp_path, samples(range(5)))
    assert write(fmt, tmp_path, [], options, resume=True)[1] == 5  # the journal holds each sample once
    assert_dataset_equals(tmp_path, samples(range(5)))


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="needs pthread_sigmask")
def test_wds_ctrl_c_during_a_sample_write_is_held_until_the_sample_is_complete(tmp_path, monkeypatch):
    from synthgen.writers.wds import WdsWriter

    original = WdsWriter._write_members

    def write_with_ctrl_c(self, key, fields):
        if key == sample_key(2):
            os.kill(os.getpid(), signal.SIGINT)  # arrives half-way through this sample
        return original(self, key, fields)

    monkeypatch.setattr(WdsWriter, "_write_members", write_with_ctrl_c)
    writer = make_writer("wds", tmp_path, CATEGORIES, WriterOptions(shard_size=10))
    writer.open(resume=False)
    with pytest.raises(KeyboardInterrupt):
        for sample in samples(range(5)):
            writer.write(sample)
    writer.close()
    assert_dataset_equals(tmp_path, samples(range(3)))


def test_wds_shard_with_a_torn_sample_is_not_published(tmp_path, monkeypatch):
    from synthgen.writers.wds import WdsWriter

    original = WdsWriter._write_members

    def tear(self, key, fields):
        if key == sample_key(3):
            self._file.write(b"x" * 700)  # half a member, then the process is stopped
            raise KeyboardInterrupt
        return original(self, key, fields)

    monkeypatch.setattr(WdsWriter, "_write_members", tear)
    writer = make_writer("wds", tmp_path, CATEGORIES, WriterOptions(shard_size=2))
    writer.open(resume=False)
    with pytest.raises(KeyboardInterrupt):
        for sample in samples(range(5)):
            writer.write(sample)
    writer.close()
    assert list(shard_keys(tmp_path)) == ["shard-000000.tar"]  # not the torn shard 1
    assert not list(tmp_path.glob("*.partial"))
    monkeypatch.setattr(WdsWriter, "_write_members", original)
    _, done = write("wds", tmp_path, samples(range(2, 5)), WriterOptions(shard_size=2), resume=True)
    assert done == 2
    assert_dataset_equals(tmp_path, samples(range(5)))


# --- write errors -------------------------------------------------------------------------------


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("fmt", FORMATS)
def test_full_disk_is_a_write_error_and_the_journaled_part_survives(tmp_path, monkeypatch, fmt):
    from synthgen.writers.wds import WdsWriter

    writer, _ = write(fmt, tmp_path, samples(range(4)), WriterOptions(shard_size=2), close=False)
    if fmt == "wds":
        monkeypatch.setattr(WdsWriter, "_write_members", disk_full)
    else:
        monkeypatch.setattr(coco_module if fmt == "coco" else yolo_module, "place_file", disk_full)
    with pytest.raises(WriteError) as caught:
        writer.write(make_sample(4))
    message = str(caught.value)
    assert "disk is full" in message and "--resume" in message and "intact" in message
    assert sample_key(4) in message
    assert caught.value.exit_code == 4
    monkeypatch.undo()
    with pytest.raises(WriteError, match="already failed"):  # the journal may be torn: only a resume goes on
        writer.write(make_sample(4))
    writer.close()
    assert_dataset_equals(tmp_path, samples(range(4)))
    _, done = write(fmt, tmp_path, samples(range(4, 6)), WriterOptions(shard_size=2), resume=True)
    assert done == 4
    assert_dataset_equals(tmp_path, samples(range(6)))


def test_wds_shard_that_cannot_be_synced_is_a_write_error_and_not_published(tmp_path, monkeypatch):
    """Shards are synced, renamed and journaled in a background thread; its failure reaches
    the caller, and neither that shard nor any later one is published."""
    writer, _ = write("wds", tmp_path, samples(range(2)), WriterOptions(shard_size=2), close=False)
    writer._publisher.drain()  # shard 0 is published
    monkeypatch.setattr(os, "fsync", disk_full)
    for sample in samples(range(2, 4)):  # shard 1 is finished, then fails to sync
        writer.write(sample)
    with pytest.raises(WriteError, match="shard-000001.tar.*disk is full.*--resume"):
        writer.close()
    monkeypatch.undo()
    assert_dataset_equals(tmp_path, samples(range(2)))
    _, done = write("wds", tmp_path, samples(range(2, 5)), WriterOptions(shard_size=2), resume=True)
    assert done == 2
    assert_dataset_equals(tmp_path, samples(range(5)))


def test_full_disk_while_writing_annotations_json_is_a_write_error(tmp_path, monkeypatch):
    writer, _ = write("coco", tmp_path, samples(range(3)), close=False)
    monkeypatch.setattr(coco_module, "atomic_write_bytes", disk_full)
    with pytest.raises(WriteError, match="annotations.json.*disk is full.*--resume"):
        writer.close()
    monkeypatch.undo()
    assert write("coco", tmp_path, [], resume=True)[1] == 3  # resume rebuilds annotations.json
    assert_dataset_equals(tmp_path, samples(range(3)))


def test_permission_denied_is_a_write_error(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    writer, _ = write("yolo", tmp_path, [], close=False)
    monkeypatch.setattr(yolo_module, "place_file", denied)
    with pytest.raises(WriteError, match="permission denied"):
        writer.write(make_sample(1))
    writer.close()


# --- journal and options ------------------------------------------------------------------------


def test_journal_drops_a_torn_last_line_and_what_follows_a_bad_line(tmp_path):
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    assert journal.open(resume=True) == []
    for i in range(3):
        journal.append({"i": i})
    journal.close()
    with open(path, "ab") as f:
        f.write(b'{"i": 3')
    journal = Journal(path)
    assert journal.open(resume=True) == [{"i": 0}, {"i": 1}, {"i": 2}]
    journal.append({"i": 3})
    journal.close()
    assert path.read_text() == "".join(f'{{"i":{i}}}\n' for i in range(4))
    for damaged in ('{"i":0}\nnot json\n{"i":2}\n', '{"i":0}\n7\n{"i":2}\n', '{"i":0}\n{"i":1}'):
        path.write_text(damaged)  # a bad line, a non-object, a last line without its newline
        journal = Journal(path)
        assert journal.open(resume=True) == [{"i": 0}]
        journal.close()
        assert path.read_text() == '{"i":0}\n'
    journal = Journal(path)
    journal.open(resume=True)
    journal.keep(0)
    journal.close()
    assert path.read_bytes() == b""
    journal = Journal(path)
    path.write_text('{"i":0}\n')
    assert journal.open(resume=False) == []  # fresh: starts empty
    journal.close()
    assert path.read_bytes() == b""


def test_bad_options_and_formats_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="shard-index"):
        WriterOptions(shard_index=2, num_shards=2)
    with pytest.raises(InputError):
        WriterOptions(shard_size=0)
    with pytest.raises(InputError, match="split"):
        WriterOptions(split="../x")
    with pytest.raises(InputError, match="coco, wds, yolo"):
        make_writer("voc", tmp_path, CATEGORIES, WriterOptions())


# --- readers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_readers_give_the_written_samples(tmp_path, fmt):
    items = samples(range(6))
    write(fmt, tmp_path, items, WriterOptions(shard_size=4))
    assert detect_format(tmp_path) == fmt
    assert read_categories(tmp_path) == CATEGORIES
    assert_dataset_equals(tmp_path, items)
    assert [r.key for r in iter_dataset(tmp_path, limit=2)] == [sample_key(0), sample_key(1)]
    sample = next(iter_dataset(tmp_path))
    assert sample.image.dtype == np.uint8 and sample.boxes_xyxy.dtype == np.float32 and sample.labels.dtype == np.int64
    annotations = list(Dataset(tmp_path).annotations())
    assert [(a.width, a.height) for a in annotations] == [(s.width, s.height) for s in items]


@pytest.mark.parametrize("fmt", ["coco", "yolo"])
def test_seeded_random_order_is_a_repeatable_permutation(tmp_path, fmt):
    write(fmt, tmp_path, samples(range(8)))
    first = [r.key for r in Dataset(tmp_path).annotations()]
    picked = [r.key for r in iter_dataset(tmp_path, seed=3)]
    assert sorted(picked) == first and picked != first
    assert [r.key for r in iter_dataset(tmp_path, limit=4, seed=3)] == picked[:4]


def test_reader_paths_json_file_shard_globs_and_braces(tmp_path):
    write("coco", tmp_path / "coco", samples(range(2)))
    assert detect_format(tmp_path / "coco" / "annotations.json") == "coco"
    assert len(list(iter_dataset(tmp_path / "coco" / "annotations.json"))) == 2
    write("yolo", tmp_path / "yolo", samples(range(2)))
    assert detect_format(tmp_path / "yolo" / "data.yaml") == "yolo"
    out = tmp_path / "wds"
    write("wds", out, samples(range(5)), WriterOptions(shard_size=2))
    assert detect_format(f"{out}/shard-*.tar") == "wds"
    assert len(shard_urls(f"{out}/shard-*.tar")) == 3
    assert [r.key for r in iter_dataset(f"{out}/shard-{{000001..000002}}.tar")] == [sample_key(i) for i in range(2, 5)]
    assert len(list(iter_dataset(out / "shard-000000.tar"))) == 2
    with pytest.raises(InputError, match="do not exist"):
        shard_urls(f"{out}/shard-{{000001..000004}}.tar")
    picked = [r.key for r in iter_dataset(out, seed=1)]  # shards too: a seeded random order of all samples
    assert sorted(picked) == [sample_key(i) for i in range(5)] and picked == [r.key for r in iter_dataset(out, seed=1)]


def test_readers_reject_missing_and_empty_paths(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        detect_format(tmp_path / "nope")
    with pytest.raises(InputError, match="holds no dataset"):
        iter_dataset(tmp_path)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(InputError, match="not a dataset file"):
        detect_format(tmp_path / "notes.txt")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="not a COCO annotation file"):
        read_categories(tmp_path / "bad.json")
    with pytest.raises(InputError, match="no WebDataset shards"):
        shard_urls(f"{tmp_path}/shard-*.tar")


def test_reader_reports_a_missing_coco_image(tmp_path):
    write("coco", tmp_path, samples(range(2)))
    (tmp_path / "images" / f"{sample_key(1)}.jpg").unlink()
    with pytest.raises(InputError, match="missing or unreadable"):
        list(iter_dataset(tmp_path))


def test_reader_renumbers_foreign_coco_category_ids(tmp_path):
    items = samples(range(4))
    write("coco", tmp_path, items)
    doc = json.loads((tmp_path / "annotations.json").read_text())
    for c in doc["categories"]:
        c["id"] *= 10  # COCO-style ids with gaps: 10, 20, 30
    for a in doc["annotations"]:
        a["category_id"] *= 10
    doc["annotations"].append({**doc["annotations"][0], "id": 999, "iscrowd": 1})
    (tmp_path / "foreign.json").write_text(json.dumps(doc))
    assert read_categories(tmp_path / "foreign.json") == CATEGORIES
    read = list(iter_dataset(tmp_path / "foreign.json"))
    assert [r.labels.tolist() for r in read] == [[a.category_id for a in s.annotations] for s in items]


def test_reader_reports_a_damaged_shard(tmp_path):
    write("wds", tmp_path, samples(range(4)), WriterOptions(shard_size=2))
    shard = tmp_path / "shard-000001.tar"
    shard.write_bytes(shard.read_bytes()[:3000])
    with pytest.raises(InputError, match="shard-000001.tar is damaged"):
        list(iter_dataset(tmp_path))


@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 30000])
def test_shard_bytes_are_what_tarfile_writes(size):
    """The fast ustar writer produces exactly the bytes of Python's tarfile for our members."""
    import io
    import tarfile

    from synthgen.writers.wds import tar_end, tar_members

    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    reference = io.BytesIO()
    with tarfile.open(fileobj=reference, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
        for name in ("0000000007.jpg", "0000000007.json"):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.uname, info.gname = size, 0, 0o444, "synthgen", "synthgen"
            tar.addfile(info, io.BytesIO(payload))
    members = tar_members("0000000007", (("jpg", payload), ("json", payload)))
    assert members + tar_end(len(members)) == reference.getvalue()
