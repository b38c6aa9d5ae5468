"""Running paste jobs: determinism across workers, resume, clean stops, output folder rules."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from synthgen.compositor import CompositeConfig
from synthgen.engine import PasteSpec, RunOptions, iter_samples, local_count, run_paste
from synthgen.errors import InputError, OutputExistsError


def spec_for(objects_dir: Path, backgrounds_dir: Path, **changes) -> PasteSpec:
    composite = CompositeConfig(width=96, height=80, objects_per_image=(1, 4), scale=(0.2, 0.5), rotation=15.0, noise=0.3)
    return PasteSpec(objects=str(objects_dir), backgrounds=str(backgrounds_dir), composite=composite, **changes)


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every data file under root (run bookkeeping excluded)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".synthgen" not in p.parts
    }


@pytest.mark.parametrize("fmt", ["coco", "wds", "yolo"])
def test_same_seed_same_bytes_for_one_and_two_workers(tmp_path, objects_dir, backgrounds_dir, fmt):
    spec = spec_for(objects_dir, backgrounds_dir, seed=5)
    one = run_paste(spec, RunOptions(out=tmp_path / "one", format=fmt, n=30, workers=1, shard_size=8, progress=False))
    two = run_paste(spec, RunOptions(out=tmp_path / "two", format=fmt, n=30, workers=2, shard_size=8, progress=False))
    assert one.written == two.written == 30
    digest = tree_digest(tmp_path / "one")
    assert digest == tree_digest(tmp_path / "two")
    assert len(digest) > 1
    other_seed = run_paste(spec_for(objects_dir, backgrounds_dir, seed=6), RunOptions(out=tmp_path / "three", format=fmt, n=30, shard_size=8, progress=False))
    assert other_seed.written == 30 and tree_digest(tmp_path / "three") != digest


@pytest.mark.parametrize(("fmt", "workers"), [("wds", 1), ("wds", 2), ("coco", 2)])
def test_resume_after_interrupt_has_no_duplicate_and_no_gap(tmp_path, objects_dir, backgrounds_dir, monkeypatch, fmt, workers):
    spec = spec_for(objects_dir, backgrounds_dir)
    full = tmp_path / "full"
    run_paste(spec, RunOptions(out=full, format=fmt, n=40, shard_size=7, progress=False))

    # Interrupt a run after 17 samples, as a SIGTERM would. With two workers, samples after the
    # 17th are already rendered (and, for COCO, their images written) when the run stops.
    import synthgen.engine as engine

    real_produce = engine._produce

    def produce_then_stop(compositor, spec_, indices, workers_, stop, stage):
        for k, sample in enumerate(real_produce(compositor, spec_, indices, workers_, stop, stage)):
            yield sample
            if k == 16:
                stop.requested = True

    part = tmp_path / "part"
    monkeypatch.setattr(engine, "_produce", produce_then_stop)
    first = run_paste(spec, RunOptions(out=part, format=fmt, n=40, shard_size=7, workers=workers, progress=False))
    assert first.interrupted and first.written == 17
    if fmt == "coco":  # a valid dataset of exactly the written samples: no image without annotations
        assert len(json.loads((part / "annotations.json").read_text())["images"]) == 17
        assert len(list((part / "images").iterdir())) == 17
    monkeypatch.setattr(engine, "_produce", real_produce)
    second = run_paste(spec, RunOptions(out=part, format=fmt, n=40, shard_size=7, resume=True, workers=workers, progress=False))
    assert second.written == 23 and second.total == 40
    if fmt == "coco":
        assert tree_digest(part) == tree_digest(full)  # no gap, no duplicate, the same bytes
        return

    # The stopped run closed a short shard, so shard boundaries differ; the samples do not.
    def samples(folder: Path) -> list[tuple[str, bytes, bytes]]:
        urls = [str(p) for p in sorted(folder.glob("shard-*.tar"))]
        return [(s["__key__"], s["jpg"], s["json"]) for s in wds.WebDataset(urls, shardshuffle=False)]

    resumed = samples(part)
    assert [key for key, *_ in resumed] == [f"{i:010d}" for i in range(40)]  # in order, no gap, no duplicate
    assert resumed == samples(full)


def test_resume_refuses_other_settings_and_empty_folders(tmp_path, objects_dir, backgrounds_dir):
    spec = spec_for(objects_dir, backgrounds_dir)
    out = tmp_path / "out"
    run_paste(spec, RunOptions(out=out, format="coco", n=5, progress=False))
    with pytest.raises(InputError, match="seed"):
        run_paste(spec_for(objects_dir, backgrounds_dir, seed=9), RunOptions(out=out, format="coco", n=10, resume=True, progress=False))
    with pytest.raises(InputError, match="nothing to resume"):
        run_paste(spec, RunOptions(out=tmp_path / "empty", format="coco", n=5, resume=True, progress=False))


def test_output_folder_rules(tmp_path, objects_dir, backgrounds_dir):
    spec = spec_for(objects_dir, backgrounds_dir)
    out = tmp_path / "out"
    run_paste(spec, RunOptions(out=out, format="coco", n=3, progress=False))
    with pytest.raises(OutputExistsError, match="--overwrite"):
        run_paste(spec, RunOptions(out=out, format="coco", n=3, progress=False))
    summary = run_paste(spec, RunOptions(out=out, format="coco", n=4, overwrite=True, progress=False))
    assert summary.total == 4 and len(list((out / "images").iterdir())) == 4
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(OutputExistsError, match="not a synthgen output"):
        run_paste(spec, RunOptions(out=foreign, format="coco", n=3, overwrite=True, progress=False))
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_several_machines_partition_the_samples(tmp_path, objects_dir, backgrounds_dir):
    spec = spec_for(objects_dir, backgrounds_dir)
    whole = run_paste(spec, RunOptions(out=tmp_path / "whole", format="wds", n=20, shard_size=4, progress=False))
    keys: dict[str, bytes] = {}
    for k in range(3):
        part = run_paste(spec, RunOptions(out=tmp_path / f"m{k}", format="wds", n=20, shard_size=4, shard_index=k, num_shards=3, progress=False))
        assert part.written == local_count(20, k, 3)
        for s in wds.WebDataset([str(p) for p in sorted((tmp_path / f"m{k}").glob("*.tar"))], shardshuffle=False):
            assert s["__key__"] not in keys
            keys[s["__key__"]] = s["jpg"]
    reference = {s["__key__"]: s["jpg"] for s in wds.WebDataset([str(p) for p in sorted((tmp_path / "whole").glob("*.tar"))], shardshuffle=False)}
    assert whole.written == 20 and keys == reference


def test_inf_needs_wds_and_other_impossible_options(tmp_path, objects_dir, backgrounds_dir):
    spec = spec_for(objects_dir, backgrounds_dir)
    with pytest.raises(InputError, match="wds"):
        run_paste(spec, RunOptions(out=tmp_path / "o", format="coco", n=None, progress=False))
    with pytest.raises(InputError, match="shard-index"):
        run_paste(spec, RunOptions(out=tmp_path / "o", format="wds", n=5, shard_index=3, num_shards=2, progress=False))
    with pytest.raises(InputError, match="JPEG quality"):
        run_paste(spec_for(objects_dir, backgrounds_dir, jpeg_quality=0), RunOptions(out=tmp_path / "o", n=5, progress=False))


def test_stream_from_paste_workers_is_the_in_process_stream(objects_dir, backgrounds_dir):
    spec = spec_for(objects_dir, backgrounds_dir, seed=4)
    local = iter_samples(spec, start=1, step=3)
    fed = iter_samples(spec, start=1, step=3, workers=2)
    for _ in range(20):
        a, b = next(local), next(fed)
        assert a.index == b.index and np.array_equal(a.image, b.image)
        assert [x.bbox for x in a.annotations] == [x.bbox for x in b.annotations]
    fed.close()  # stopping the consumer stops the workers


def test_iter_samples_streams_the_same_samples_as_the_files(tmp_path, objects_dir, backgrounds_dir):
    spec = spec_for(objects_dir, backgrounds_dir, seed=2)
    stream = iter_samples(spec, start=3, step=2)
    a, b = next(stream), next(stream)
    assert (a.index, b.index) == (3, 5)
    assert a.image.shape == (80, 96, 3) and a.image.dtype == np.uint8
    run_paste(spec, RunOptions(out=tmp_path / "c", format="coco", n=4, progress=False))
    coco = json.loads((tmp_path / "c" / "annotations.json").read_text())
    boxes_3 = [ann["bbox"] for ann in coco["annotations"] if ann["image_id"] == 3 + 1]
    assert boxes_3 == [list(x.bbox) for x in a.annotations]


def _valid_tar(path: Path) -> int:
    with tarfile.open(path) as tar:
        return len(tar.getmembers())


def endless_paste_command(objects_dir: Path, backgrounds_dir: Path, out: Path, *extra: str) -> list[str]:
    """``synthgen paste --n inf`` writing 5-sample WebDataset shards to ``out``, for the signal tests."""
    return [
        sys.executable, "-m", "synthgen", "paste", "--objects", str(objects_dir), "--backgrounds", str(backgrounds_dir),
        "--size", "96x80", "--format", "wds", "--n", "inf", "--shard-size", "5", *extra, "--quiet", "--out", str(out),
    ]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_endless_run_leaves_only_valid_tars(tmp_path, objects_dir, backgrounds_dir, spawn, sig):
    out = tmp_path / "stream"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = endless_paste_command(objects_dir, backgrounds_dir, out, "--workers", "2")
    proc = spawn(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(out.glob("shard-*.tar"))) < 3:
        time.sleep(0.1)
    assert len(list(out.glob("shard-*.tar"))) >= 3, proc.stderr.read().decode() if proc.poll() is not None else "too slow"
    os.killpg(proc.pid, sig)  # like Ctrl-C in a terminal: the whole process group gets it
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr.decode()
    assert "Traceback" not in stderr.decode()
    tars = sorted(out.glob("shard-*.tar"))
    assert not list(out.glob("*.partial"))
    keys = []
    for tar in tars:
        assert _valid_tar(tar) > 0
        keys += [s["__key__"] for s in wds.WebDataset([str(tar)], shardshuffle=False)]
    assert keys == sorted(set(keys)) and len(keys) >= 15
    # The stream resumes where it stopped.
    assert int(keys[-1]) == len(keys) - 1


def test_an_endless_run_started_with_ctrl_c_ignored_keeps_it_ignored(tmp_path, objects_dir, backgrounds_dir, spawn):
    """A shell's background job is started with SIGINT ignored, so that a Ctrl-C meant for the
    foreground does not stop it; synthgen keeps it that way and still stops cleanly on SIGTERM."""
    out = tmp_path / "stream"
    cmd = endless_paste_command(objects_dir, backgrounds_dir, out)
    inherited_handler = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the child inherits the ignored disposition
    try:
        proc = spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    finally:
        signal.signal(signal.SIGINT, inherited_handler)

    def wait_for_shards(n: int) -> int:
        deadline = time.time() + 60
        while time.time() < deadline and len(list(out.glob("shard-*.tar"))) < n and proc.poll() is None:
            time.sleep(0.1)
        return len(list(out.glob("shard-*.tar")))

    assert wait_for_shards(2) >= 2, proc.stderr.read().decode() if proc.poll() is not None else "too slow"
    os.killpg(proc.pid, signal.SIGINT)
    shards = len(list(out.glob("shard-*.tar")))
    assert wait_for_shards(shards + 2) >= shards + 2, "the run stopped on the ignored Ctrl-C"
    os.killpg(proc.pid, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr.decode()
    assert not list(out.glob("*.partial"))


def test_masks_on_request_are_the_visible_masks_of_the_boxes(tmp_path, objects_dir, backgrounds_dir):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    composite = CompositeConfig(width=96, height=80, objects_per_image=(3, 6), scale=(0.3, 0.6), min_visible=0.3)
    spec = PasteSpec(objects=str(objects_dir), backgrounds=str(backgrounds_dir), composite=composite, masks=True)
    run_paste(spec, RunOptions(out=tmp_path / "c", format="coco", n=8, progress=False))
    coco = COCO(str(tmp_path / "c" / "annotations.json"))
    for ann in coco.loadAnns(coco.getAnnIds()):
        mask = mask_utils.decode(ann["segmentation"]).astype(bool)
        ys, xs = np.nonzero(mask)
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert ann["area"] == mask.sum()
    assert len(coco.getAnnIds()) > 8
