"""Read detection datasets back: COCO, WebDataset shards and YOLO folders, written by synthgen
or by others in the same formats. Used by preview, stats and training.

Every reader yields the same record. ``labels`` are 1-based indexes into
:func:`read_categories` (label ``k`` is ``read_categories(path)[k - 1]``); for datasets written by
synthgen these are the category ids. Other datasets' ids (COCO ids with gaps, YOLO names given as
a mapping) are renumbered in id order. ``names`` is the class name of each box.

Accepted ``path`` values:
- COCO: a folder holding ``annotations.json``, or any COCO ``.json`` file (image ``file_name`` is
  relative to the json's folder; crowd annotations are skipped);
- YOLO: a folder holding ``data.yaml``, or the ``.yaml`` file (its ``train`` image folders);
- WebDataset: a folder of ``*.tar`` shards, one ``.tar``, or a shard glob (``out/shard-*.tar``)
  or brace URL (``out/shard-{000000..000009}.tar``); class names from ``categories.json`` beside
  the shards.
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal

import numpy as np

from synthgen.errors import InputError
from synthgen.imageio import decode_jpeg, is_image_path, read_image

Format = Literal["coco", "wds", "yolo"]


@dataclass
class ReadSample:
    key: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    boxes_xyxy: np.ndarray  # (N, 4) float32 pixels
    labels: np.ndarray  # (N,) int64, 1-based category indexes
    names: list[str]  # class name of each box


@dataclass
class ReadAnnotations:
    """A sample's annotations without its decoded image (cheap: for statistics)."""

    key: str
    width: int
    height: int
    boxes_xyxy: np.ndarray
    labels: np.ndarray
    names: list[str]


@dataclass
class _Record:
    annotations: ReadAnnotations
    load_image: Callable[[], np.ndarray]


def _is_pattern(text: str) -> bool:
    return any(c in text for c in "*?[{")


def detect_format(path: str | Path) -> Format:
    """Which format ``path`` holds; InputError if it is missing or holds no dataset."""
    text = str(path)
    if _is_pattern(text):
        return "wds"
    p = Path(text)
    if not p.exists():
        raise InputError(f"{p} does not exist; give a dataset folder written by `synthgen paste`, a COCO .json, "
                         "a folder of .tar shards or a shard pattern")
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix == ".json":
            return "coco"
        if suffix == ".tar":
            return "wds"
        if suffix in (".yaml", ".yml"):
            return "yolo"
        raise InputError(f"{p} is not a dataset file: expected a COCO .json, a .tar shard or a YOLO data.yaml")
    if (p / "annotations.json").is_file():
        return "coco"
    if (p / "data.yaml").is_file():
        return "yolo"
    if any(p.glob("*.tar")):
        return "wds"
    raise InputError(
        f"{p} holds no dataset: expected annotations.json (COCO), data.yaml (YOLO) or .tar shards (WebDataset)"
    )


class Dataset:
    """An opened dataset: its format, class names, and iterators over its samples. Opening
    parses the annotations (COCO json, YOLO file list) once; iterate as often as needed."""

    def __init__(self, path: str | Path) -> None:
        self.path = path
        self.format: Format = detect_format(path)
        self._reader: _Coco | _Yolo | _Wds
        if self.format == "coco":
            self._reader = _Coco(Path(path))
        elif self.format == "yolo":
            self._reader = _Yolo(Path(path))
        else:
            self._reader = _Wds(path)
        self.categories: list[str] = self._reader.categories  # label k is categories[k - 1]

    def samples(self, limit: int | None = None, *, seed: int | None = None) -> Iterator[ReadSample]:
        """Samples in stored order (at most ``limit``). With ``seed``, a seeded random pick drawn
        from ``np.random.default_rng(seed)``: for COCO and YOLO a random order, so the first ``n``
        are the pick; WebDataset shards are streamed once, keeping a reservoir of ``limit``."""
        for record in self._reader.records(limit, seed):
            a = record.annotations
            yield ReadSample(a.key, record.load_image(), a.boxes_xyxy, a.labels, a.names)

    def annotations(self, limit: int | None = None) -> Iterator[ReadAnnotations]:
        """Like :meth:`samples` but without decoding images (image size from the annotations or
        the image header)."""
        for record in self._reader.records(limit, None):
            yield record.annotations


def read_categories(path: str | Path) -> list[str]:
    """The class names of a dataset; label ``k`` of its samples is ``names[k - 1]``."""
    return Dataset(path).categories


def iter_dataset(path: str | Path, limit: int | None = None, *, seed: int | None = None) -> Iterator[ReadSample]:
    """Samples of the dataset at ``path``: :meth:`Dataset.samples`."""
    return Dataset(path).samples(limit, seed=seed)


def iter_annotations(path: str | Path, limit: int | None = None) -> Iterator[ReadAnnotations]:
    """Annotations of the dataset at ``path`` without decoding images: :meth:`Dataset.annotations`."""
    return Dataset(path).annotations(limit)


# ---------------------------------------------------------------------------------------------


def _boxes(rows: list[list[float]]) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32).reshape(-1, 4)


def _load(path: Path) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        image = read_image(path)
        if image is None:
            raise InputError(f"image {path} is missing or unreadable; the dataset is incomplete")
        return image

    return load


def _order(count: int, limit: int | None, seed: int | None) -> list[int]:
    order = list(range(count)) if seed is None else np.random.default_rng(seed).permutation(count).tolist()
    return order if limit is None else order[: max(limit, 0)]


class _Coco:
    def __init__(self, path: Path) -> None:
        from pycocotools.coco import COCO

        json_path = path / "annotations.json" if path.is_dir() else path
        self.root = json_path.parent
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints progress
                self.coco = COCO(str(json_path))
        except (ValueError, KeyError, TypeError, AssertionError) as err:
            raise InputError(f"{json_path} is not a COCO annotation file ({err})") from None
        cats = sorted(self.coco.loadCats(self.coco.getCatIds()), key=lambda c: c["id"])
        self.categories = [c["name"] for c in cats]
        self.label_of = {c["id"]: i + 1 for i, c in enumerate(cats)}
        self.image_ids = sorted(self.coco.getImgIds())

    def _image_path(self, file_name: str) -> Path:
        path = self.root / file_name
        if not path.exists() and (self.root / "images" / file_name).exists():
            return self.root / "images" / file_name  # COCO's own layout: bare names, images/ beside
        return path

    def records(self, limit: int | None, seed: int | None) -> Iterator[_Record]:
        for i in _order(len(self.image_ids), limit, seed):
            info = self.coco.imgs[self.image_ids[i]]
            anns = [a for a in self.coco.imgToAnns.get(info["id"], []) if not a.get("iscrowd", 0)]
            labels = [self.label_of[a["category_id"]] for a in anns]
            boxes = _boxes([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)])
            yield _Record(
                ReadAnnotations(Path(info["file_name"]).stem, int(info["width"]), int(info["height"]), boxes,
                                np.asarray(labels, dtype=np.int64), [self.categories[k - 1] for k in labels]),
                _load(self._image_path(info["file_name"])),
            )


class _Yolo:
    def __init__(self, path: Path) -> None:
        import yaml  # PyYAML, a dependency of webdataset

        yaml_path = path / "data.yaml" if path.is_dir() else path
        if not yaml_path.is_file():
            raise InputError(
                f"{path} is not a YOLO dataset: it has no data.yaml (naming the train images folder and the classes); "
                "point at the folder that holds it, or at the yaml file"
            )
        try:
            spec = yaml.safe_load(yaml_path.read_text())
        except (yaml.YAMLError, OSError, UnicodeDecodeError) as err:
            raise InputError(f"{yaml_path} is not a readable YAML file: {err}") from None
        if not isinstance(spec, dict) or "names" not in spec or "train" not in spec:
            raise InputError(f"{yaml_path} is not a YOLO data.yaml: it needs 'train' and 'names'")
        names = spec["names"]
        ids = sorted(names) if isinstance(names, dict) else list(range(len(names)))
        self.categories = [str(names[i]) for i in ids]
        self.label_of = {int(cls): i + 1 for i, cls in enumerate(ids)}
        root = Path(str(spec.get("path") or ""))
        if not root.is_absolute():
            root = yaml_path.parent / root
        elif not root.is_dir():
            root = yaml_path.parent  # the folder was moved since data.yaml was written
        folders = spec["train"] if isinstance(spec["train"], list) else [spec["train"]]
        self.images: list[Path] = []
        for folder in folders:
            images_dir = root / str(folder)
            if not images_dir.is_dir():
                raise InputError(f"{yaml_path}: image folder {images_dir} does not exist (lists of files are not supported)")
            self.images += sorted(p for p in images_dir.rglob("*") if is_image_path(p))

    @staticmethod
    def _label_path(image: Path) -> Path:
        # Ultralytics' rule: the last "images" folder in the path becomes "labels".
        parts = list(image.parts)
        if "images" not in parts[:-1]:
            return image.with_suffix(".txt")
        i = len(parts) - 2 - parts[-2::-1].index("images")
        parts[i] = "labels"
        return Path(*parts).with_suffix(".txt")

    def records(self, limit: int | None, seed: int | None) -> Iterator[_Record]:
        from PIL import Image

        for i in _order(len(self.images), limit, seed):
            image = self.images[i]
            try:
                with Image.open(image) as im:  # reads the header only
                    width, height = im.size
            except OSError:
                raise InputError(f"image {image} is unreadable; the dataset is incomplete") from None
            label_path = self._label_path(image)
            rows, labels = [], []
            if label_path.exists():
                for n, line in enumerate(label_path.read_text().splitlines(), 1):
                    if line.strip():
                        row, label = self._parse(line, label_path, n, width, height)
                        rows.append(row)
                        labels.append(label)
            yield _Record(
                ReadAnnotations(image.stem, width, height, _boxes(rows), np.asarray(labels, dtype=np.int64),
                                [self.categories[k - 1] for k in labels]),
                _load(image),
            )

    def _parse(self, line: str, path: Path, n: int, width: int, height: int) -> tuple[list[float], int]:
        values = line.split()
        try:
            label = self.label_of[int(values[0])]
            coords = [float(v) for v in values[1:]]
        except (ValueError, KeyError):
            raise InputError(f"{path}:{n}: expected 'class cx cy w h' with a class of data.yaml, got {line!r}") from None
        if len(coords) == 4:
            cx, cy, w, h = coords
            x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        elif len(coords) >= 6 and len(coords) % 2 == 0:  # segmentation polygon: its extent
            xs, ys = coords[0::2], coords[1::2]
            x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
        else:
            raise InputError(f"{path}:{n}: expected 'class cx cy w h' or a polygon, got {line!r}")
        return [x0 * width, y0 * height, x1 * width, y1 * height], label


def shard_urls(path: str | Path) -> list[str]:
    """The shard files of a WebDataset given as a folder, a ``.tar``, a glob or a brace URL."""
    text = str(path)
    if "{" in text:
        from braceexpand import braceexpand  # a dependency of webdataset

        urls = []
        for pattern in braceexpand(text):
            urls += sorted(glob.glob(pattern)) if _is_pattern(pattern) else [pattern]
        missing = [u for u in urls if not Path(u).is_file()]
        if missing:
            raise InputError(f"{len(missing)} shard(s) of {text} do not exist, e.g. {missing[0]}")
    elif _is_pattern(text):
        urls = sorted(glob.glob(text))
    elif Path(text).is_dir():
        urls = sorted(str(p) for p in Path(text).glob("*.tar"))
    else:
        urls = [text] if Path(text).is_file() else []
    if not urls:
        raise InputError(f"no WebDataset shards match {text}")
    return urls


def decode_wds_sample(sample: dict) -> ReadSample:
    """A raw webdataset sample (``__key__``, ``jpg``, ``json`` bytes) as a :class:`ReadSample`;
    for use in a custom ``webdataset`` pipeline (e.g. ``.map(decode_wds_sample)``)."""
    annotations, jpeg = _wds_annotations(sample)
    return ReadSample(annotations.key, _decode(jpeg, annotations.key), annotations.boxes_xyxy, annotations.labels,
                      annotations.names)


def _decode(jpeg: bytes, key: str) -> np.ndarray:
    try:
        return decode_jpeg(jpeg)
    except ValueError:
        raise InputError(f"the image of WebDataset sample {key} is not decodable; the shard is damaged") from None


def without_crowd(meta: dict, *keys: str) -> list[list]:
    """The per-box lists ``meta[key]`` of a WebDataset sample's JSON less the entries of its
    crowd regions (``iscrowd`` 1: ignore regions kept from a COCO background, not objects)."""
    crowd = meta.get("iscrowd")
    if not crowd:
        return [list(meta[key]) for key in keys]
    return [[value for value, flag in zip(meta[key], crowd) if not flag] for key in keys]


def _wds_annotations(sample: dict) -> tuple[ReadAnnotations, bytes]:
    try:
        meta = json.loads(sample["json"])
        jpeg = sample["jpg"]
        boxes, labels, names = without_crowd(meta, "boxes", "labels", "names")
        boxes = _boxes(boxes)
        labels = np.asarray(labels, dtype=np.int64)
        names = [str(n) for n in names]
        width, height = int(meta["width"]), int(meta["height"])
    except (KeyError, ValueError, TypeError) as err:
        raise InputError(
            f"sample {sample.get('__key__')} from {sample.get('__url__')} is not a synthgen WebDataset sample "
            f"(needs .jpg and .json with boxes, labels, names, width, height): {err!r}"
        ) from None
    return ReadAnnotations(sample["__key__"], width, height, boxes, labels, names), jpeg


def _open_shards(urls: list[str], current: list[str]) -> Iterator[dict]:
    """Open each shard in turn (closing it after), noting in ``current[0]`` which one is read."""
    for url in urls:
        current[0] = url
        with open(url, "rb") as stream:
            yield {"url": url, "stream": stream}


class _Wds:
    def __init__(self, path: str | Path) -> None:
        self.urls = shard_urls(path)
        categories_path = Path(self.urls[0]).parent / "categories.json"
        if not categories_path.is_file():
            raise InputError(f"{categories_path} is missing: synthgen shards come with the class names beside them")
        cats = sorted(json.loads(categories_path.read_text()), key=lambda c: c["id"])
        self.categories = [c["name"] for c in cats]

    def records(self, limit: int | None, seed: int | None) -> Iterator[_Record]:
        if seed is not None:
            yield from self._seeded_pick(limit, seed)
            return
        from webdataset.tariterators import group_by_keys, tar_file_expander

        # webdataset's own pipeline (wds.WebDataset) leaves shard files open until garbage
        # collection; its tar iterators over streams opened here close each file when done.
        current = [self.urls[0]]
        dataset = group_by_keys(tar_file_expander(_open_shards(self.urls, current)))
        count = 0
        while limit is None or count < limit:
            try:
                sample = next(dataset)
            except StopIteration:
                return
            except (tarfile.TarError, OSError) as err:
                reason = str(err.args[0]).split(" @ ")[0] if err.args else type(err).__name__
                raise InputError(f"WebDataset shard {current[0]} is damaged or not a tar file ({reason})") from None
            annotations, jpeg = _wds_annotations(sample)
            yield _Record(annotations, lambda jpeg=jpeg, key=annotations.key: _decode(jpeg, key))
            count += 1

    def _seeded_pick(self, limit: int | None, seed: int) -> Iterator[_Record]:
        """A seeded random pick of ``limit`` samples (all of them without a limit) in random
        order, drawn from ``np.random.default_rng(seed)`` by reservoir sampling over one pass
        of the shards: only the kept samples' JPEG bytes are held, none is decoded here."""
        rng = np.random.default_rng(seed)
        kept: list[_Record] = []
        for seen, record in enumerate(self.records(None, None)):
            if limit is None or len(kept) < limit:
                kept.append(record)
            else:
                slot = int(rng.integers(seen + 1))
                if slot < limit:
                    kept[slot] = record
        for i in rng.permutation(len(kept)).tolist():
            yield kept[i]
