"""The object pool: building (skips, rejections, cut-outs), loading, pickling, and the cache."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from synthgen.errors import InputError, OutputExistsError
from synthgen.pool import POOL_VERSION, ObjectPool, build_pool, cached_pool, format_summary
from synthgen.segmenters import GrabCutSegmenter, MaskQuality, make_segmenter
from synthgen.sources import FolderSource


def write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGBA2BGRA if array.shape[2] == 4 else cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), array)
    return path


def noise_image(seed: int, h: int = 40, w: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def blob_mask(h: int = 40, w: int = 48) -> np.ndarray:
    """A 0/255 mask: an ellipse (kept), a speck (dropped as a smaller component) and a hole
    (filled)."""
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (24, 20), (14, 10), 0, 0, 360, 255, -1)
    mask[18:21, 22:25] = 0  # hole
    mask[1:3, 1:3] = 255  # speck
    return mask


@pytest.fixture
def paired(tmp_path: Path) -> Path:
    """Class folders of PNG images with paired masks, a corrupt JPEG, an empty file and an
    all-white mask."""
    root = tmp_path / "objects"
    for i in range(3):
        write(root / "apple" / f"{i}.png", noise_image(i))
        write(root / "apple" / "masks" / f"{i}.png", blob_mask())
    write(root / "pear" / "p.png", noise_image(7))
    write(root / "pear" / "p_mask.png", blob_mask())
    write(root / "pear" / "white.png", noise_image(8))
    write(root / "pear" / "white_mask.png", np.full((40, 48), 255, np.uint8))
    (root / "pear" / "corrupt.jpg").write_bytes(np.random.default_rng(0).bytes(500))
    (root / "pear" / "empty.png").write_bytes(b"")
    return root


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNTHGEN_CACHE", str(tmp_path / "cache"))


def test_cutout_is_the_masked_crop_pixel_for_pixel(paired: Path, tmp_path: Path) -> None:
    pool = build_pool(FolderSource(paired), make_segmenter("mask"), tmp_path / "pool", MaskQuality(), progress=False)
    assert pool.classes == ["apple", "pear"]
    assert len(pool) == 4
    assert pool.class_ids.tolist() == [0, 0, 0, 1]
    cut = pool[1]
    assert cut.source == "apple/1.png" and cut.class_id == 0
    expected_mask = blob_mask()
    expected_mask[18:21, 22:25] = 255  # hole filled
    expected_mask[1:3, 1:3] = 0  # speck dropped
    rows = np.flatnonzero(expected_mask.any(axis=1))
    cols = np.flatnonzero(expected_mask.any(axis=0))
    crop = np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    assert cut.rgba.shape == (rows.size, cols.size, 4)
    solid = expected_mask[crop] >= 128
    # The object's pixels are the source's; under the transparent ones the pool bleeds the
    # nearest object colour (see bleed_colours), never the source background.
    assert np.array_equal(cut.rgba[..., :3][solid], noise_image(1)[crop][solid])
    object_colours = {tuple(c) for c in noise_image(1)[crop][solid]}
    assert all(tuple(c) in object_colours for c in cut.rgba[..., :3][~solid])
    assert np.array_equal(cut.rgba[..., 3], expected_mask[crop])
    assert tuple(pool.shapes[1]) == cut.rgba.shape[:2]
    assert not cut.rgba.flags.writeable


def test_summary_counts_rejections_and_unreadable_files(paired: Path, tmp_path: Path) -> None:
    pool = build_pool(FolderSource(paired), make_segmenter("mask"), tmp_path / "pool", MaskQuality(), progress=False)
    summary = pool.summary
    assert summary["accepted"] == 4
    assert summary["rejected"] == {"too large": 1}
    assert summary["unreadable"] == 2
    assert sorted(summary["unreadable_examples"]) == ["pear/corrupt.jpg (not an image)", "pear/empty.png (empty file)"]
    assert (tmp_path / "pool" / "unreadable.txt").read_text().splitlines() == summary["unreadable_examples"]
    assert summary["per_class"] == {"apple": 3, "pear": 1}
    assert summary["segmenter"]["name"] == "mask"
    assert format_summary(summary) == (
        "5 objects: 4 accepted, 1 rejected (too large 1); 2 unreadable files skipped: "
        "pear/corrupt.jpg (not an image), pear/empty.png (empty file)"
    )
    index = json.loads((tmp_path / "pool" / "index.json").read_text())
    assert index["objects"]["source"] == ["apple/0.png", "apple/1.png", "apple/2.png", "pear/p.png"]


def test_format_summary_matches_the_documented_form() -> None:
    summary = {"accepted": 6402, "rejected": {"too small": 200, "touches border": 111}, "unreadable": 2,
               "per_class": {"face": 6402, "cat": 0}}
    assert format_summary(summary) == (
        "6,713 objects: 6,402 accepted, 311 rejected (too small 200, touches border 111); "
        "2 unreadable files skipped\nno objects accepted for class: cat"
    )


def test_none_segmenter_pastes_whole_frames_without_quality_checks(paired: Path, tmp_path: Path) -> None:
    quality = MaskQuality(max_area=0.5)  # would reject every whole frame
    pool = build_pool(FolderSource(paired), make_segmenter("none"), tmp_path / "pool", quality, progress=False)
    assert len(pool) == 5
    cut = pool[4]
    assert cut.source == "pear/white.png"
    assert np.array_equal(cut.rgba[..., :3], noise_image(8)) and (cut.rgba[..., 3] == 255).all()


def test_alpha_cutouts_keep_soft_alpha_and_rgba_images_without_alpha_are_rejected(tmp_path: Path) -> None:
    root = tmp_path / "rgba"
    alpha = np.zeros((30, 30), np.uint8)
    alpha[5:25, 8:20] = 200
    alpha[5:25, 8] = 90  # soft edge below the threshold, outside the kept component
    write(root / "a.png", np.dstack([noise_image(1, 30, 30), alpha]))
    write(root / "b.png", noise_image(2, 30, 30))  # plain RGB
    pool = build_pool(FolderSource(root), make_segmenter("alpha"), tmp_path / "pool", MaskQuality(), progress=False)
    assert len(pool) == 1 and pool.summary["rejected"] == {"no alpha channel": 1}
    assert pool[0].rgba.shape == (20, 11, 4)
    assert (pool[0].rgba[..., 3] == 200).all()


def test_pool_pickles_by_path(paired: Path, tmp_path: Path) -> None:
    pool = build_pool(FolderSource(paired), make_segmenter("mask"), tmp_path / "pool", MaskQuality(), progress=False)
    data = pickle.dumps(pool)
    assert len(data) < 500  # the path, not the pixels
    clone = pickle.loads(data)
    assert clone.path == pool.path and clone.classes == pool.classes and len(clone) == len(pool)
    for i in range(len(pool)):
        assert np.array_equal(clone[i].rgba, pool[i].rgba) and clone[i].source == pool[i].source
    assert np.array_equal(pool[-1].rgba, pool[len(pool) - 1].rgba)
    with pytest.raises(IndexError):
        pool[len(pool)]


def test_pool_stores_mean_grey_and_older_pools_without_it_render_the_same(paired: Path, tmp_path: Path) -> None:
    from synthgen.compositor import CompositeConfig, Compositor
    from synthgen.compositor.augment import mean_grey

    pool = build_pool(FolderSource(paired), make_segmenter("mask"), tmp_path / "pool", MaskQuality(), progress=False)
    for i in range(len(pool)):
        assert pool[i].grey == mean_grey(pool[i].rgba)
    # A pool written before the column existed: the compositor computes the level itself.
    index_path = tmp_path / "pool" / "index.json"
    index = json.loads(index_path.read_text())
    del index["objects"]["grey"]
    older = tmp_path / "older"
    older.mkdir()
    (older / "index.json").write_text(json.dumps(index))
    (older / "pixels.bin").write_bytes((tmp_path / "pool" / "pixels.bin").read_bytes())
    assert ObjectPool.load(older)[0].grey is None
    backgrounds = [np.random.default_rng(3).integers(0, 256, (80, 90, 3), dtype=np.uint8)]
    config = CompositeConfig(width=64, height=64, objects_per_image=(3, 3), scale=(0.3, 0.5), contrast=(0.5, 1.5))
    stored, computed = Compositor(config, pool, backgrounds), Compositor(config, ObjectPool.load(older), backgrounds)
    for i in range(5):
        assert np.array_equal(stored.render(0, i).image, computed.render(0, i).image)


def test_load_rejects_folders_that_are_not_pools(tmp_path: Path, paired: Path) -> None:
    with pytest.raises(InputError, match="not an object pool"):
        ObjectPool.load(paired)
    build_pool(FolderSource(paired), make_segmenter("mask"), tmp_path / "pool", MaskQuality(), progress=False)
    index_path = tmp_path / "pool" / "index.json"
    index = json.loads(index_path.read_text())
    index["version"] = 999
    index_path.write_text(json.dumps(index))
    with pytest.raises(InputError, match="format version 999"):
        ObjectPool.load(tmp_path / "pool")
    index["version"] = POOL_VERSION
    del index["objects"]["offset"]
    index_path.write_text(json.dumps(index))
    with pytest.raises(InputError, match="damaged"):
        ObjectPool.load(tmp_path / "pool")
    build_pool(FolderSource(paired), make_segmenter("mask"), tmp_path / "pool2", MaskQuality(), progress=False)
    (tmp_path / "pool").rename(tmp_path / "broken")
    (tmp_path / "pool2").rename(tmp_path / "pool")
    with open(tmp_path / "pool" / "pixels.bin", "r+b") as f:
        f.truncate(10)
    with pytest.raises(InputError, match="damaged"):
        ObjectPool.load(tmp_path / "pool")


def test_nothing_accepted_says_why_and_leaves_nothing_behind(paired: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        build_pool(FolderSource(paired), make_segmenter("alpha"), tmp_path / "pool", MaskQuality(), progress=False)
    text = str(err.value)
    assert "5 rejected (no alpha channel 5)" in text and "another segmenter" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["objects"]  # no pool, no temporary folder


def test_existing_output_is_not_overwritten(paired: Path, tmp_path: Path) -> None:
    (tmp_path / "pool").mkdir()
    (tmp_path / "pool" / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError):
        build_pool(FolderSource(paired), make_segmenter("mask"), tmp_path / "pool", MaskQuality(), progress=False)


@pytest.fixture
def disks(tmp_path: Path) -> Path:
    """Three JPEGs of a coloured disk on a plain background, and the disk's mask."""
    root = tmp_path / "disks"
    for i in range(3):
        image = np.full((48, 48, 3), (40, 150, 40), np.uint8)
        image[DISK] = (210, 30 + 40 * i, 30)
        write(root / f"{i}.jpg", image)
    return root


YY, XX = np.mgrid[:48, :48]
DISK = (YY - 23.5) ** 2 + (XX - 23.5) ** 2 <= 14**2


def test_grabcut_pool_with_progress_bar(disks: Path, tmp_path: Path) -> None:
    pool = build_pool(FolderSource(disks), make_segmenter("grabcut"), tmp_path / "pool", MaskQuality(), progress=True)
    assert len(pool) == 3
    for i in range(3):
        alpha = pool[i].rgba[..., 3] > 127
        assert abs(int(alpha.sum()) - int(DISK.sum())) < 0.15 * DISK.sum()


def test_an_entry_built_meanwhile_by_another_process_is_used(disks: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two machines of a sharded run share the cache: when the other one finishes the same
    pool between this process's cache check and its build, its pool is loaded, no error."""
    import synthgen.pool as pool_module

    quality = MaskQuality()
    entry = pool_module.cache_root() / "pools" / pool_module.pool_fingerprint(FolderSource(disks), "grabcut", {"margin": 0.1}, quality)
    real_make = pool_module.make_segmenter

    def other_process_finishes_first(name, options):
        segmenter = real_make(name, options)
        build_pool(FolderSource(disks), segmenter, entry, quality, progress=False)
        return segmenter

    monkeypatch.setattr(pool_module, "make_segmenter", other_process_finishes_first)
    pool = cached_pool(FolderSource(disks), "grabcut", {"margin": 0.1}, quality, progress=False)
    assert pool.path == entry and len(pool) == 3


def test_cache_hit_does_not_segment_again(disks: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    original = GrabCutSegmenter.segment

    def counting(self: GrabCutSegmenter, image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        calls["n"] += 1
        return original(self, image, mask)

    monkeypatch.setattr(GrabCutSegmenter, "segment", counting)
    quality = MaskQuality()
    first = cached_pool(FolderSource(disks), "grabcut", {"margin": 0.1}, quality, progress=False)
    assert calls["n"] == 3 and len(first) == 3
    second = cached_pool(FolderSource(disks), "grabcut", {"margin": 0.1}, quality, progress=False)
    assert calls["n"] == 3
    assert second.path == first.path and second.path.parent.name == "pools"
    third = cached_pool(FolderSource(disks), "grabcut", {"margin": 0.2}, quality, progress=False)
    assert calls["n"] == 6 and third.path != first.path
    cached_pool(FolderSource(disks), "grabcut", {"margin": 0.1}, MaskQuality(max_border=0.9), progress=False)
    assert calls["n"] == 9
    (disks / "0.jpg").write_bytes((disks / "1.jpg").read_bytes())  # the file changed
    cached_pool(FolderSource(disks), "grabcut", {"margin": 0.1}, quality, progress=False)
    assert calls["n"] == 12
