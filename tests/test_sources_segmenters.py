"""Object sources (folder layouts, paired masks, generator names) and segmenters (none, alpha,
mask, grabcut, auto, redo) plus mask cleaning and quality checks."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from synthgen.errors import InputError, NotAvailableError
from synthgen.segmenters import (
    SEGMENTERS,
    MaskQuality,
    RedoSegmenter,
    Unsegmentable,
    border_mass,
    clean_mask,
    clean_soft_mask,
    make_segmenter,
)
from synthgen.sources import FolderSource, is_generator_spec, resolve_objects


def disk_image(size: int, radius_fraction: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A red disk on a green background with mild noise, and the disk's true mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    centre = (size - 1) / 2
    truth = (yy - centre) ** 2 + (xx - centre) ** 2 <= (radius_fraction * size) ** 2
    image = np.empty((size, size, 3), dtype=np.int64)
    image[:] = (60, 160, 60)
    image[truth] = (200, 40, 40)
    image += rng.integers(-12, 13, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), truth


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 3:
        code = cv2.COLOR_RGBA2BGRA if array.shape[2] == 4 else cv2.COLOR_RGB2BGR
        array = cv2.cvtColor(array, code)
    assert cv2.imwrite(str(path), array)
    return path


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


# --- FolderSource layouts -------------------------------------------------------------------

def test_single_class_folder_is_named_after_the_folder(tmp_path: Path) -> None:
    root = tmp_path / "faces"
    for name in ("b.jpg", "a.png", ".hidden.jpg"):
        write_png(root / name, np.zeros((8, 8, 3), np.uint8))
    (root / "c.txt").write_text("not an image")
    source = FolderSource(root)
    assert source.classes == ["faces"]
    assert [item.path.name for item in source.items] == ["a.png", "b.jpg"]
    assert len(source) == 2
    assert FolderSource(root, class_name="face").classes == ["face"]


def test_class_subfolders_are_sorted_and_masks_folder_is_no_class(tmp_path: Path) -> None:
    image = np.zeros((8, 8, 3), np.uint8)
    for rel in ("zebra/1.jpg", "cat/2.jpg", "cat/deeper/1.jpg", "masks/cat/2.png", "cat/masks/x.png"):
        write_png(tmp_path / rel, image)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    source = FolderSource(tmp_path)
    assert source.classes == ["cat", "zebra"]
    assert [(i.path.relative_to(tmp_path).as_posix(), i.class_name) for i in source.items] == [
        ("cat/2.jpg", "cat"), ("cat/deeper/1.jpg", "cat"), ("zebra/1.jpg", "zebra"),
    ]
    # mirrored masks tree: ROOT/masks/<class>/<stem>.png pairs with ROOT/<class>/<stem>.jpg
    assert source.items[0].mask_path == tmp_path / "masks/cat/2.png"
    assert source.items[1].mask_path is None
    whole = FolderSource(tmp_path, class_name="animal")
    assert whole.classes == ["animal"] and len(whole) == 3


@pytest.mark.parametrize("mask_rel", ["masks/obj.png", "obj_mask.png", "obj.mask.png"])
def test_paired_mask_layouts_and_mask_files_are_not_objects(tmp_path: Path, mask_rel: str) -> None:
    write_png(tmp_path / "obj.jpg", np.zeros((8, 8, 3), np.uint8))
    write_png(tmp_path / "other.jpg", np.zeros((8, 8, 3), np.uint8))
    write_png(tmp_path / mask_rel, np.zeros((8, 8), np.uint8))
    source = FolderSource(tmp_path)
    assert [i.path.name for i in source.items] == ["obj.jpg", "other.jpg"]
    assert source.items[0].mask_path == tmp_path / mask_rel
    assert source.items[1].mask_path is None
    assert set(source.files()) == {tmp_path / "obj.jpg", tmp_path / mask_rel, tmp_path / "other.jpg"}


def test_bad_object_folders_name_the_path_and_the_layouts(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.jpg").write_bytes(b"x")
    for path in (tmp_path / "missing", tmp_path / "empty", tmp_path / "file.jpg"):
        with pytest.raises(InputError) as err:
            FolderSource(path)
        assert str(path) in str(err.value) and "accepted layouts" in str(err.value)
    mixed = tmp_path / "mixed"
    write_png(mixed / "loose.jpg", np.zeros((8, 8, 3), np.uint8))
    write_png(mixed / "cls/a.jpg", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(InputError, match="both directly inside it and in subfolders"):
        FolderSource(mixed)


# --- resolve_objects and generators ---------------------------------------------------------

def test_resolve_objects(tmp_path: Path) -> None:
    write_png(tmp_path / "objs/a.jpg", np.zeros((8, 8, 3), np.uint8))
    assert isinstance(resolve_objects(str(tmp_path / "objs")), FolderSource)
    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "index.json").write_text("{}")
    (pool / "pixels.bin").write_bytes(b"")
    assert resolve_objects(str(pool)) == pool.resolve()
    with pytest.raises(InputError, match="no such folder"):
        resolve_objects(str(tmp_path / "nope"))


def test_generator_names_and_files_are_generators_not_folders(tmp_path: Path) -> None:
    published = {"stylegan-ffhq", "stylegan-cars", "stylegan2-ffhq", "stylegan2-car", "stylegan2-ada-ffhq", "dmgan-birds"}
    assert all(is_generator_spec(name) for name in published) and not is_generator_spec("redo-lfw-typo")
    with pytest.raises(InputError) as err:
        resolve_objects("stylegan-ffhq")
    assert "synthgen paste --objects stylegan-ffhq" in str(err.value)
    (tmp_path / "G.pkl").write_bytes(b"\x80")
    write_png(tmp_path / "face.png", np.zeros((8, 8, 3), np.uint8))
    assert is_generator_spec(str(tmp_path / "G.pkl")) and not is_generator_spec(str(tmp_path / "face.png"))
    with pytest.raises(InputError, match="image file"):
        resolve_objects(str(tmp_path / "face.png"))


# --- segmenters -----------------------------------------------------------------------------

def test_registry_names_and_option_errors() -> None:
    assert set(SEGMENTERS.names()) == {"none", "alpha", "mask", "grabcut", "auto", "redo"}
    with pytest.raises(InputError, match="choose one of"):
        make_segmenter("magic")
    with pytest.raises(InputError, match="has no option 'radius'.*margin"):
        make_segmenter("grabcut", {"radius": 3})
    with pytest.raises(InputError, match="margin"):
        make_segmenter("grabcut", {"margin": "0.9"})
    assert make_segmenter("grabcut", {"margin": "0.1", "iterations": "3"}).settings()["iterations"] == 3


@pytest.mark.parametrize("size", [36, 96])
def test_grabcut_finds_a_centred_disk(size: int) -> None:
    image, truth = disk_image(size)
    soft = make_segmenter("grabcut").segment(image, None)
    assert soft.shape == truth.shape and soft.dtype == np.float32
    assert iou(clean_mask(soft), truth) > 0.8


def test_grabcut_retries_with_a_centre_prior_on_tight_crops() -> None:
    """A tight crop (object reaching the frame on two sides, like the face crops): the
    rectangle initialisation sees mostly object in its background ring and collapses."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:36, :36]
    truth = ((yy - 17.5) / 19.8) ** 2 + ((xx - 17.5) / 15.1) ** 2 <= 1
    image = np.where(truth[..., None], 190, 70) + rng.integers(-15, 16, (36, 36, 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    assert not clean_mask(make_segmenter("grabcut", {"core": 0}).segment(image, None)).any()
    assert iou(clean_mask(make_segmenter("grabcut").segment(image, None)), truth) > 0.85


def test_grabcut_is_deterministic_and_rejects_flat_images() -> None:
    image, _ = disk_image(64)
    grabcut = make_segmenter("grabcut")
    assert np.array_equal(grabcut.segment(image, None), grabcut.segment(image, None))
    # Blank, and blank with sensor/JPEG-like noise: the centre prior must not invent an object.
    rng = np.random.default_rng(0)
    for flat in (np.full((40, 40, 3), 128, np.uint8), (128 + rng.integers(-2, 3, (40, 40, 3))).astype(np.uint8)):
        with pytest.raises(Unsegmentable) as caught:
            grabcut.segment(flat, None)
        assert caught.value.reason == "flat image"
        with pytest.raises(Unsegmentable, match="flat image"):
            make_segmenter("auto").segment(flat, None)


def test_none_alpha_and_mask_segmenters() -> None:
    rgb, truth = disk_image(32)
    assert np.array_equal(make_segmenter("none").segment(rgb, None), np.ones((32, 32), np.float32))
    rgba = np.dstack([rgb, np.where(truth, 255, 0).astype(np.uint8)])
    assert np.array_equal(make_segmenter("alpha").segment(rgba, None) > 0.5, truth)
    with pytest.raises(Unsegmentable, match="no alpha channel"):
        make_segmenter("alpha").segment(rgb, None)
    given = truth.astype(np.float32)
    assert np.array_equal(make_segmenter("mask").segment(rgb, given), given)
    with pytest.raises(Unsegmentable, match="no mask file"):
        make_segmenter("mask").segment(rgb, None)
    with pytest.raises(Unsegmentable, match="size differs"):
        make_segmenter("mask").segment(rgb, given[:10])


def test_auto_prefers_alpha_then_mask_then_grabcut() -> None:
    rgb, truth = disk_image(64)
    auto = make_segmenter("auto")
    square = np.zeros((64, 64), bool)
    square[10:30, 10:30] = True
    rgba = np.dstack([rgb, np.where(square, 255, 0).astype(np.uint8)])
    assert np.array_equal(auto.segment(rgba, truth.astype(np.float32)) > 0.5, square)
    opaque = np.dstack([rgb, np.full((64, 64), 255, np.uint8)])
    assert np.array_equal(auto.segment(opaque, square.astype(np.float32)) > 0.5, square)
    assert iou(clean_mask(auto.segment(opaque, None)), truth) > 0.8


def test_redo_segmenter_runs_a_mask_network_in_batches() -> None:
    torch = pytest.importorskip("torch")
    seen: list[tuple[int, ...]] = []

    def net(x: "torch.Tensor") -> "torch.Tensor":
        # A fake ReDO net: channel 1 is "red", channel 0 its complement, like nMasks=2.
        seen.append(tuple(x.shape))
        assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0 and float(x.min()) < 0.0
        red = ((x[:, 0] > 0) & (x[:, 1] < 0)).float().unsqueeze(1)
        return torch.cat([1 - red, red], dim=1)

    images = [disk_image(s)[0] for s in (40, 90, 128)]
    segmenter = RedoSegmenter(net, size=32, batch_size=2)
    masks = segmenter.segment_batch(images, [None] * 3)
    assert seen == [(2, 3, 32, 32), (1, 3, 32, 32)]
    for image, mask in zip(images, masks):
        truth = disk_image(image.shape[0])[1]
        assert mask.shape == truth.shape and iou(clean_mask(mask), truth) > 0.8  # auto chose channel 1
    fixed = RedoSegmenter(net, size=32, fg_channel=0).segment(images[0], None)
    assert iou(fixed > 0.5, ~disk_image(40)[1]) > 0.8


# --- cleaning and quality -------------------------------------------------------------------

def test_clean_mask_keeps_the_largest_blob_and_fills_holes() -> None:
    soft = np.zeros((40, 40), np.float32)
    soft[5:25, 5:25] = 0.9  # big blob with a hole
    soft[12:16, 12:16] = 0.0
    soft[30:34, 30:34] = 1.0  # small blob
    kept = clean_mask(soft)
    expected = np.zeros((40, 40), bool)
    expected[5:25, 5:25] = True
    assert np.array_equal(kept, expected)
    alpha, keep = clean_soft_mask(soft)
    assert np.array_equal(keep, expected)
    assert alpha[6, 6] == pytest.approx(0.9) and alpha[13, 13] == 1.0 and alpha[31, 31] == 0.0
    assert not clean_mask(np.full((5, 5), 0.2, np.float32)).any()
    assert clean_mask(np.full((5, 5), 0.2, np.float32), threshold=0.1).all()


def test_only_enclosed_holes_are_filled() -> None:
    ring = np.zeros((20, 20), np.float32)
    ring[2:18, 2:18] = 1
    ring[6:14, 6:14] = 0
    assert clean_mask(ring)[8, 8]
    open_ring = ring.copy()
    open_ring[8:10, 2:6] = 0  # a gap in the wall: the inside is outside
    assert not clean_mask(open_ring)[8, 8]
    diagonal = np.eye(6, dtype=np.float32)[::-1]  # a one-pixel diagonal wall is still a wall
    corner = np.zeros((6, 6), np.float32)
    corner[0, :] = corner[:, 0] = 1
    assert clean_mask(np.maximum(diagonal, corner))[1, 1]


def test_mask_quality_reasons() -> None:
    quality = MaskQuality()
    mask = np.zeros((100, 100), bool)
    assert quality.check(mask) == "empty"
    mask[50:52, 50:52] = True
    assert quality.check(mask) == "too small"
    assert quality.check(np.ones((100, 100), bool)) == "too large"
    tall = np.zeros((100, 100), bool)
    tall[:, 30:70] = True  # reaches top and bottom: 80 of 396 border pixels
    assert border_mass(tall) == pytest.approx(80 / 396)
    assert MaskQuality(max_border=0.1).check(tall) == "touches border"
    centred = np.zeros((100, 100), bool)
    centred[20:80, 20:80] = True
    assert quality.check(centred) is None
    with pytest.raises(InputError):
        MaskQuality(min_area=0.5, max_area=0.2)
    with pytest.raises(InputError):
        MaskQuality(max_border=2)
