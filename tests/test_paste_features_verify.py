"""Across machines: `synthgen paste --shard-index I --num-shards N` from several processes into one
folder, and `synthgen verify`, which must catch a missing, truncated or duplicated shard."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synthgen.cli import app
from synthgen.verify import verify_output

REPO = Path(__file__).resolve().parents[1]


def paste_in_two_processes(out: Path, objects_dir: Path, backgrounds_dir: Path, fmt: str, n: int = 30, cache: Path | None = None) -> None:
    """Machines 0 and 1 of 2, started together as separate processes, writing into ``out``."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if cache is not None:
        env["SYNTHGEN_CACHE"] = str(cache)
    command = [sys.executable, "-m", "synthgen", "paste", "--objects", str(objects_dir), "--backgrounds", str(backgrounds_dir),
               "--out", str(out), "--format", fmt, "--n", str(n), "--shard-size", "4", "--size", "64x64", "--num-shards", "2",
               "--visibility", "-q"]
    processes = [subprocess.Popen([*command, "--shard-index", str(k)], env=env, stderr=subprocess.PIPE, text=True) for k in (0, 1)]
    for process in processes:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err


@pytest.fixture(scope="module")
def two_machine_wds(tmp_path_factory) -> Path:
    from tests.conftest import write_backgrounds, write_rgba_objects

    root = tmp_path_factory.mktemp("cluster")
    out = root / "wds"
    paste_in_two_processes(out, write_rgba_objects(root / "objects"), write_backgrounds(root / "backgrounds"), "wds", cache=root / "cache")
    return out


def damaged_copy(source: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(source, out)
    return out


def test_two_processes_write_one_complete_dataset(two_machine_wds):
    report = verify_output(two_machine_wds, expected=30)
    assert report.ok, report.problems
    assert (report.format, report.machines, report.samples, report.files) == ("wds", 2, 30, 8)
    assert sorted(p.name for p in (two_machine_wds / ".synthgen").iterdir()) == ["part-00000-of-00002", "part-00001-of-00002"]
    result = CliRunner().invoke(app, ["verify", str(two_machine_wds), "--n", "30"])
    assert result.exit_code == 0 and "30 samples in 8 shards from 2 machines" in " ".join(result.output.split())


def test_verify_catches_a_missing_shard(two_machine_wds, tmp_path):
    out = damaged_copy(two_machine_wds, tmp_path)
    (out / "shard-000003.tar").unlink()
    problems = verify_output(out).problems
    assert any("shard-000003.tar" in p and "missing" in p for p in problems)
    assert any("4 of samples 0..29 are missing: 9, 11, 13, 15" in p for p in problems)  # machine 1's second shard
    result = CliRunner().invoke(app, ["verify", str(out)])
    assert result.exit_code == 1


def test_verify_catches_a_truncated_shard(two_machine_wds, tmp_path):
    out = damaged_copy(two_machine_wds, tmp_path)
    shard = out / "shard-000002.tar"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    assert any("shard-000002.tar" in p and "truncated" in p for p in verify_output(out).problems)
    # Cut at a record boundary, dropping the last samples whole: the journal's count tells.
    shard.write_bytes(data[:10240] + bytes(len(data) - 10240) if len(data) > 10240 else data)
    problems = verify_output(out).problems
    assert any("shard-000002.tar" in p for p in problems), problems


def test_verify_catches_a_duplicated_shard(two_machine_wds, tmp_path):
    out = damaged_copy(two_machine_wds, tmp_path)
    shutil.copy(out / "shard-000001.tar", out / "shard-000009.tar")
    problems = verify_output(out).problems
    assert any("4 samples appear 2 times, in shard-000001.tar, shard-000009.tar" in p for p in problems), problems
    assert any("shard-000009.tar was written by no machine" in p for p in problems)


def test_verify_catches_a_machine_that_never_ran(two_machine_wds, tmp_path):
    out = damaged_copy(two_machine_wds, tmp_path)
    shutil.rmtree(out / ".synthgen" / "part-00001-of-00002")
    for number in (1, 3, 5, 7):
        (out / f"shard-{number:06d}.tar").unlink()
    problems = verify_output(out, expected=30).problems
    assert any("machine 1 of 2 wrote nothing" in p for p in problems)


def test_verify_catches_invalid_labels(two_machine_wds, tmp_path):
    import tarfile

    out = damaged_copy(two_machine_wds, tmp_path)
    shard = out / "shard-000000.tar"
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    name, data = next((m.name, d) for m, d in members if m.name.endswith(".json") and json.loads(d)["boxes"])
    meta = json.loads(data)
    meta["boxes"][0][2] = meta["width"] + 5
    meta["labels"][0] = 99
    with tarfile.open(shard, "w") as tar:  # rewritten whole (other header bytes; still a valid tar)
        for member, content in members:
            if member.name == name:
                content = json.dumps(meta).encode()
                member.size = len(content)
            import io

            tar.addfile(member, io.BytesIO(content))
    problems = verify_output(out).problems
    assert any("outside the 64x64 image" in p for p in problems) and any("category 99" in p for p in problems)


@pytest.mark.parametrize("fmt", ["coco", "yolo"])
def test_two_processes_into_one_coco_or_yolo_folder(tmp_path, objects_dir, backgrounds_dir, fmt):
    from synthgen.compositor import CompositeConfig
    from synthgen.engine import PasteSpec, RunOptions, run_paste

    out = tmp_path / fmt
    spec = PasteSpec(objects=str(objects_dir), backgrounds=str(backgrounds_dir), composite=CompositeConfig(width=64, height=64))
    for k in (1, 0):  # in this process, one machine after the other (the wds test runs two processes)
        run_paste(spec, RunOptions(out=out, format=fmt, n=12, shard_index=k, num_shards=2, progress=False))
    report = verify_output(out, expected=12, merge=True)
    assert report.ok, report.problems
    assert report.samples == 12
    if fmt == "coco":  # the two parts joined
        from pycocotools.coco import COCO

        merged = COCO(str(out / "annotations.json"))
        assert sorted(merged.imgs) == list(range(1, 13))
        assert sorted(merged.anns) == list(range(1, len(merged.anns) + 1))
    image = next((out / "images").rglob("0000000005.jpg"))
    image.write_bytes(image.read_bytes()[:300])
    assert any("cut short" in p for p in verify_output(out).problems)
