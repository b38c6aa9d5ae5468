"""Background sources (folder, Pascal VOC, COCO), the background pool and dataset downloads."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import tarfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from synthgen.backgrounds import (
    BackgroundSource,
    build_background_pool,
    cached_background_pool,
    fitted_size,
    resolve_backgrounds,
)
from synthgen.backgrounds import pool as pool_module
from synthgen.download import Archive, DatasetSpec, fetch_dataset
from synthgen.errors import InputError, NotAvailableError


def write_image(path: Path, width: int = 8, height: int = 6, rgb: tuple[int, int, int] = (10, 20, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.empty((height, width, 3), np.uint8)
    image[:] = rgb[::-1]  # cv2 writes BGR
    assert cv2.imwrite(str(path), image)
    return path


def voc_annotation(names: list[str]) -> str:
    objects = "".join(f"<object><name>{n}</name><bndbox><xmin>1</xmin></bndbox></object>" for n in names)
    return f"<annotation><filename>x.jpg</filename>{objects}</annotation>"


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    """A two-year VOCdevkit. VOC2007: trainval lists 000001 twice, test repeats 000002.
    VOC2012: 2008_000003 is listed but has no JPEG; 2008_000004 has no annotation."""
    root = tmp_path / "VOCdevkit"
    years = {
        "VOC2007": {
            "lists": {"trainval": ["000001", "000002", "000001"], "test": ["000003", "000002"]},
            "objects": {"000001": ["person"], "000002": ["car", "dog"], "000003": ["car"]},
        },
        "VOC2012": {
            "lists": {"trainval": ["2008_000001", "2008_000002", "2008_000003", "2008_000004"]},
            "objects": {"2008_000001": ["dog"], "2008_000002": ["tvmonitor"], "2008_000003": ["car"]},
        },
    }
    for year, spec in years.items():
        main = root / year / "ImageSets" / "Main"
        main.mkdir(parents=True)
        for name, ids in spec["lists"].items():
            (main / f"{name}.txt").write_text("\n".join(ids) + "\n")
        (root / year / "Annotations").mkdir()
        for image_id, names in spec["objects"].items():
            (root / year / "Annotations" / f"{image_id}.xml").write_text(voc_annotation(names))
        for image_id in {i for ids in spec["lists"].values() for i in ids} - {"2008_000003"}:
            write_image(root / year / "JPEGImages" / f"{image_id}.jpg")
    return root


def names(source: BackgroundSource) -> list[str]:
    return [f"{p.parent.parent.name}/{p.stem}" for p in source.paths]


# --- Pascal VOC -----------------------------------------------------------------------------


def test_voc_lists_each_listed_image_once_in_year_then_list_order(voc_root: Path) -> None:
    source = resolve_backgrounds(f"voc:{voc_root}", [])
    assert names(source) == [
        "VOC2007/000001",
        "VOC2007/000002",
        "VOC2007/000003",
        "VOC2012/2008_000001",
        "VOC2012/2008_000002",
        "VOC2012/2008_000004",
    ]
    assert "2 duplicates" in source.description and "1 without a JPEG" in source.description


def test_voc_excludes_images_showing_the_classes(voc_root: Path) -> None:
    source = resolve_backgrounds(f"voc:{voc_root}", ["person", "DOG"])
    # 000001 has a person, 000002 and 2008_000001 a dog; 2008_000004 has no annotation, so it
    # cannot be shown to be free of them.
    assert names(source) == ["VOC2007/000003", "VOC2012/2008_000002"]
    assert "1 without a readable annotation" in source.description


def test_voc_class_names_are_matched_loosely(voc_root: Path) -> None:
    source = resolve_backgrounds(f"voc:{voc_root}", ["TV/Monitor"])
    assert "VOC2012/2008_000002" not in names(source)


def test_voc_unknown_class_is_an_input_error(voc_root: Path) -> None:
    with pytest.raises(InputError, match="zebra.*person"):
        resolve_backgrounds(f"voc:{voc_root}", ["person", "zebra"])


def test_voc_accepts_one_year_folder_or_the_devkits_parent(voc_root: Path) -> None:
    assert names(resolve_backgrounds(f"voc:{voc_root / 'VOC2012'}", [])) == [
        "VOC2012/2008_000001",
        "VOC2012/2008_000002",
        "VOC2012/2008_000004",
    ]
    assert len(resolve_backgrounds(f"voc:{voc_root.parent}", [])) == 6


def test_voc_with_everything_excluded_says_so(voc_root: Path) -> None:
    with pytest.raises(InputError, match="no background images left.*showing"):
        resolve_backgrounds(f"voc:{voc_root / 'VOC2007'}", ["person", "car"])


def test_voc_path_without_devkit_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no Pascal VOC year folder"):
        resolve_backgrounds(f"voc:{tmp_path}", [])
    with pytest.raises(InputError, match="does not exist"):
        resolve_backgrounds(f"voc:{tmp_path / 'nope'}", [])


def test_bare_voc_without_download_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNTHGEN_CACHE", str(tmp_path / "cache"))
    with pytest.raises(NotAvailableError) as err:
        resolve_backgrounds("voc", ["person"])
    message = str(err.value)
    assert "synthgen download voc" in message
    assert str(tmp_path / "cache" / "datasets" / "VOCdevkit") in message
    assert "voc:/path/to/VOCdevkit" in message


def test_bare_voc_uses_the_downloaded_copy(voc_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = tmp_path / "cache" / "datasets"
    datasets.mkdir(parents=True)
    voc_root.rename(datasets / "VOCdevkit")
    monkeypatch.setenv("SYNTHGEN_CACHE", str(tmp_path / "cache"))
    assert names(resolve_backgrounds("voc", ["person"]))[0] == "VOC2007/000002"


# --- COCO -----------------------------------------------------------------------------------


def coco_file(path: Path, file_names: list[str]) -> Path:
    data = {
        "images": [{"id": i + 1, "file_name": name, "width": 8, "height": 6} for i, name in enumerate(file_names)],
        "categories": [{"id": 1, "name": "person"}, {"id": 7, "name": "traffic light"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]},
            {"id": 2, "image_id": 3, "category_id": 7, "bbox": [0, 0, 1, 1]},
            {"id": 3, "image_id": 3, "category_id": 1, "bbox": [0, 0, 1, 1]},
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_coco_file_names_relative_to_the_json_folder(tmp_path: Path) -> None:
    for name in ("a.jpg", "sub/b.jpg", "c.jpg", "d.jpg"):
        write_image(tmp_path / name)
    ann = coco_file(tmp_path / "ann.json", ["a.jpg", "sub/b.jpg", "c.jpg", "d.jpg"])
    assert [p.name for p in resolve_backgrounds(str(ann), []).paths] == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    assert [p.name for p in resolve_backgrounds(f"coco:{ann}", ["person"]).paths] == ["b.jpg", "d.jpg"]
    assert [p.name for p in resolve_backgrounds(f"coco:{ann}", ["Traffic_Light"]).paths] == ["a.jpg", "b.jpg", "d.jpg"]


def test_coco_images_in_a_folder_named_like_the_json(tmp_path: Path) -> None:
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        write_image(tmp_path / "images" / "train2017" / name)
    ann = coco_file(tmp_path / "annotations" / "instances_train2017.json", ["a.jpg", "b.jpg", "c.jpg"])
    source = resolve_backgrounds(str(ann), [])
    assert source.paths == tuple(tmp_path / "images" / "train2017" / n for n in ("a.jpg", "b.jpg", "c.jpg"))


def test_coco_unknown_class_lists_the_valid_ones(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg")
    ann = coco_file(tmp_path / "ann.json", ["a.jpg"])
    with pytest.raises(InputError, match="zebra.*person, traffic light"):
        resolve_backgrounds(str(ann), ["zebra"])


def test_coco_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        resolve_backgrounds(str(tmp_path / "missing.json"), [])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="cannot read"):
        resolve_backgrounds(str(tmp_path / "bad.json"), [])
    ann = coco_file(tmp_path / "ann.json", ["nowhere.jpg"])
    with pytest.raises(InputError, match="cannot find the images"):
        resolve_backgrounds(str(ann), [])
    write_image(tmp_path / "a.jpg")
    ann = coco_file(tmp_path / "ann.json", ["a.jpg"])
    with pytest.raises(InputError, match="no background images left"):
        resolve_backgrounds(str(ann), ["person"])


# --- folders --------------------------------------------------------------------------------


def test_folder_lists_images_recursively_sorted_skipping_hidden(tmp_path: Path) -> None:
    for rel in ("b.png", "a/z.jpg", "a/c.JPG", ".hidden/x.jpg", "a/.y.jpg"):
        write_image(tmp_path / rel)
    (tmp_path / "notes.txt").write_text("not an image")
    source = resolve_backgrounds(str(tmp_path), [])
    assert [p.relative_to(tmp_path).as_posix() for p in source.paths] == ["a/c.JPG", "a/z.jpg", "b.png"]


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        resolve_backgrounds(str(tmp_path / "nope"), [])
    with pytest.raises(InputError, match="no images"):
        resolve_backgrounds(str(tmp_path), [])
    write_image(tmp_path / "a.jpg")
    with pytest.raises(InputError, match="voc"):
        resolve_backgrounds(str(tmp_path), ["person"])


# --- background pool ------------------------------------------------------------------------


@pytest.fixture
def photos(tmp_path: Path) -> BackgroundSource:
    sizes = [(40, 30), (30, 60), (100, 20), (64, 48), (10, 10)]
    paths = [write_image(tmp_path / "photos" / f"{i}.png", w, h, (200, 10 * i, 5)) for i, (w, h) in enumerate(sizes)]
    return BackgroundSource(tuple(paths), "test photos")


def test_fitted_size() -> None:
    assert fitted_size(640, 480, 320, 240, "crop") == (320, 240)
    assert fitted_size(100, 20, 32, 24, "crop") == (120, 24)
    assert fitted_size(30, 60, 32, 24, "crop") == (32, 64)
    assert fitted_size(30, 60, 32, 24, "stretch") == (32, 24)


def test_crop_pool_covers_the_output_keeping_aspect(photos: BackgroundSource, tmp_path: Path) -> None:
    pool = build_background_pool(photos, 32, 24, "crop", tmp_path / "pool", progress=False)
    assert len(pool) == 5
    for i, path in enumerate(photos.paths):
        h, w, c = pool[i].shape
        src_h, src_w = cv2.imread(str(path)).shape[:2]
        assert c == 3 and h >= 24 and w >= 32 and (h == 24 or w == 32)
        assert abs(w / h - src_w / src_h) < 0.1
        assert pool.source_path(i) == path


def test_stretch_pool_is_exactly_the_output_size_and_rgb(photos: BackgroundSource, tmp_path: Path) -> None:
    pool = build_background_pool(photos, 32, 24, "stretch", tmp_path / "pool", progress=False)
    assert {pool[i].shape for i in range(len(pool))} == {(24, 32, 3)}
    assert pool[2].dtype == np.uint8 and tuple(pool[2][5, 5]) == (200, 20, 5)


def test_corrupt_files_are_skipped_and_counted(photos: BackgroundSource, tmp_path: Path) -> None:
    broken = tmp_path / "photos" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    source = BackgroundSource((photos.paths[0], broken, photos.paths[1]), "with a broken file")
    pool = build_background_pool(source, 16, 16, "stretch", tmp_path / "pool", progress=False)
    assert len(pool) == 2
    assert pool.summary["images"] == 2
    assert pool.summary["unreadable"] == 1 and pool.summary["unreadable_examples"] == [f"{broken} (not an image)"]
    assert pool.source_path(1) == photos.paths[1]


def test_all_files_unreadable_is_an_input_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"nope")
    with pytest.raises(InputError, match="none of the 1 background images"):
        build_background_pool(BackgroundSource((broken,), "broken"), 16, 16, "crop", tmp_path / "pool", progress=False)
    assert not (tmp_path / "pool").exists()


def test_pool_views_are_read_only_and_the_pool_pickles_by_path(photos: BackgroundSource, tmp_path: Path) -> None:
    pool = build_background_pool(photos, 32, 24, "crop", tmp_path / "pool", progress=False)
    with pytest.raises(ValueError):
        pool[0][0, 0, 0] = 1
    data = pickle.dumps(pool)
    assert len(data) < 500  # the path, not the pixels
    again = pickle.loads(data)
    assert len(again) == len(pool) and all(np.array_equal(again[i], pool[i]) for i in range(len(pool)))
    assert again.summary == pool.summary


def test_bad_fit_or_size_is_an_input_error(photos: BackgroundSource, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="crop, stretch"):
        build_background_pool(photos, 32, 24, "zoom", tmp_path / "pool", progress=False)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="positive"):
        cached_background_pool(photos, 0, 24, "crop", progress=False)


def test_cached_pool_is_reused_and_rebuilt_when_files_change(
    photos: BackgroundSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNTHGEN_CACHE", str(tmp_path / "cache"))
    first = cached_background_pool(photos, 32, 24, "crop", progress=False)
    assert first.path.parent == tmp_path / "cache" / "backgrounds"

    def no_rebuild(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached pool was rebuilt")

    monkeypatch.setattr(pool_module, "build_background_pool", no_rebuild)
    assert cached_background_pool(photos, 32, 24, "crop", progress=False).path == first.path
    monkeypatch.undo()
    monkeypatch.setenv("SYNTHGEN_CACHE", str(tmp_path / "cache"))
    assert cached_background_pool(photos, 32, 24, "stretch", progress=False).path != first.path
    write_image(photos.paths[0], 41, 30)
    assert cached_background_pool(photos, 32, 24, "crop", progress=False).path != first.path


# --- downloads ------------------------------------------------------------------------------


def make_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def spec_for(tar: Path, *, urls: tuple[str, ...] | None = None, md5: str | None = None) -> DatasetSpec:
    data = tar.read_bytes()
    archive = Archive(
        filename=tar.name,
        urls=urls or (tar.as_uri(),),
        size=len(data),
        md5=md5 or hashlib.md5(data).hexdigest(),
        marker="VOC2007/ImageSets/Main/trainval.txt",
        description="tiny VOC",
    )
    return DatasetSpec(name="tiny", folder="VOCdevkit", archives=(archive,), description="tiny")


TINY_VOC = {
    "VOCdevkit/VOC2007/ImageSets/Main/trainval.txt": b"000001\n",
    "VOCdevkit/VOC2007/JPEGImages/000001.jpg": b"jpeg bytes",
}


def test_download_streams_verifies_and_extracts(tmp_path: Path) -> None:
    tar = make_tar(tmp_path / "tiny.tar", TINY_VOC)
    spec = spec_for(tar)
    dest = tmp_path / "datasets"
    root = fetch_dataset(spec, dest, progress=False)
    assert root == dest / "VOCdevkit"
    assert (root / "VOC2007" / "JPEGImages" / "000001.jpg").read_bytes() == b"jpeg bytes"
    assert not list((dest / ".downloads").iterdir())  # the archive is removed once extracted
    assert [p.name for p in dest.iterdir()] in (["VOCdevkit", ".downloads"], [".downloads", "VOCdevkit"])
    tar.unlink()  # already extracted: nothing is fetched again
    assert fetch_dataset(spec, dest, progress=False) == root


def test_download_with_wrong_checksum_keeps_nothing(tmp_path: Path) -> None:
    spec = spec_for(make_tar(tmp_path / "tiny.tar", TINY_VOC), md5="0" * 32)
    with pytest.raises(NotAvailableError, match="corrupt.*md5"):
        fetch_dataset(spec, tmp_path / "datasets", progress=False)
    assert not (tmp_path / "datasets" / "VOCdevkit").exists()
    assert not list((tmp_path / "datasets" / ".downloads").iterdir())


def test_download_without_network_fails_fast_and_says_where_to_put_the_file(tmp_path: Path) -> None:
    tar = make_tar(tmp_path / "tiny.tar", TINY_VOC)
    url = "http://127.0.0.1:9/VOC/tiny.tar"  # the discard port: refused at once
    spec = spec_for(tar, urls=(url,))
    dest = tmp_path / "datasets"
    start = time.monotonic()
    with pytest.raises(NotAvailableError) as err:
        fetch_dataset(spec, dest, progress=False)
    assert time.monotonic() - start < 20
    message = str(err.value)
    assert url in message and str(dest / ".downloads" / "tiny.tar") in message
    # Following the advice (placing the file there) works without the network.
    (dest / ".downloads").mkdir(parents=True, exist_ok=True)
    tar.rename(dest / ".downloads" / "tiny.tar")
    assert (fetch_dataset(spec, dest, progress=False) / "VOC2007" / "ImageSets" / "Main" / "trainval.txt").is_file()


def test_download_refuses_unsafe_archives(tmp_path: Path) -> None:
    tar = make_tar(tmp_path / "evil.tar", {**TINY_VOC, "../outside.txt": b"gotcha"})
    with pytest.raises(NotAvailableError, match="not a valid or safe archive"):
        fetch_dataset(spec_for(tar), tmp_path / "datasets", progress=False)
    assert not (tmp_path / "outside.txt").exists()
    assert not (tmp_path / "datasets" / "VOCdevkit").exists()
