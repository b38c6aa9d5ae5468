"""Where an inserted object goes: box sources, chosen by name.

Boxes are ``xyxy`` fractions of the image side (the inserter works on square images), drawn
from a sample's own random stream so that sample ``i`` gets the same box in any process.

* ``match`` (DetectorGAN's rule): the clean image's most similar labelled image (nearest
  16x16 colour thumbnail) lends one of its boxes, jittered (centre moved by up to 10% of the
  box's size, sides scaled by 0.9-1.1).
* ``learned``: a Gaussian over (centre x, centre y, log width, log height), fitted to every
  labelled box: sizes and places that occur in the labelled set, without copying one.
* ``file:PATH``: a user's boxes, drawn uniformly: a COCO JSON (its boxes, as fractions of each
  image's size), a JSON list of ``[x, y, w, h]`` fractions, or a CSV/text file of ``x,y,w,h``
  fraction rows.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from synthgen.errors import InputError

THUMBNAIL = 16  # side of the thumbnails the match rule compares
MIN_SIDE = 0.02  # boxes narrower than this fraction of the image are redrawn or widened
JITTER_SHIFT = 0.1
JITTER_SCALE = (0.9, 1.1)


def thumbnail(image: np.ndarray) -> np.ndarray:
    """The ``THUMBNAIL x THUMBNAIL x 3`` area-averaged thumbnail (``uint8``) of an RGB image."""
    return cv2.resize(image, (THUMBNAIL, THUMBNAIL), interpolation=cv2.INTER_AREA)


def nearest(thumbs: np.ndarray, query: np.ndarray) -> int:
    """Index of the thumbnail in ``thumbs`` (``N x T x T x 3``) nearest to ``query`` (L2)."""
    diff = thumbs.reshape(len(thumbs), -1).astype(np.float32) - query.reshape(1, -1).astype(np.float32)
    return int(np.argmin((diff * diff).sum(axis=1)))


def clip_box(box: np.ndarray) -> np.ndarray:
    """``box`` inside the unit square, at least ``MIN_SIDE`` wide and high."""
    x0, y0, x1, y1 = np.clip(np.asarray(box, dtype=np.float64), 0.0, 1.0)
    if x1 - x0 < MIN_SIDE:
        x0 = min(max(0.0, (x0 + x1 - MIN_SIDE) / 2), 1.0 - MIN_SIDE)
        x1 = x0 + MIN_SIDE
    if y1 - y0 < MIN_SIDE:
        y0 = min(max(0.0, (y0 + y1 - MIN_SIDE) / 2), 1.0 - MIN_SIDE)
        y1 = y0 + MIN_SIDE
    return np.array([x0, y0, x1, y1])


def jitter(box: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The paper's box jitter: centre moved and sides scaled a little, kept in the image."""
    shift, scale = rng.uniform(-JITTER_SHIFT, JITTER_SHIFT, 2), rng.uniform(*JITTER_SCALE, 2)
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2 + shift[0] * w, (y0 + y1) / 2 + shift[1] * h
    w, h = w * scale[0], h * scale[1]
    return clip_box([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


@dataclass(frozen=True)
class LabelledBoxes:
    """What the box sources know of the labelled set: each image's thumbnail and boxes
    (``xyxy`` fractions); images without boxes are left out. Stored in the inserter's
    checkpoint, so inserting needs no labelled file."""

    thumbnails: np.ndarray  # N x T x T x 3 uint8
    boxes: list[np.ndarray]  # N arrays K_n x 4

    def __post_init__(self) -> None:
        if not self.boxes:
            raise InputError("the labelled set has no boxes to learn sizes and places from")

    def to_state(self) -> dict:
        return {"thumbnails": self.thumbnails.tolist(), "boxes": [b.tolist() for b in self.boxes]}

    @classmethod
    def from_state(cls, state: dict) -> "LabelledBoxes":
        return cls(
            np.asarray(state["thumbnails"], dtype=np.uint8),
            [np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in state["boxes"]],
        )


class BoxSource(Protocol):
    def draw(self, rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
        """One ``xyxy`` fraction box for an object inserted into ``image`` (RGB ``uint8``)."""
        ...


class MatchedBoxes:
    """DetectorGAN's rule: a jittered box of the most similar labelled image."""

    def __init__(self, labelled: LabelledBoxes) -> None:
        self.labelled = labelled

    def draw(self, rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
        boxes = self.labelled.boxes[nearest(self.labelled.thumbnails, thumbnail(image))]
        return jitter(boxes[rng.integers(len(boxes))], rng)


class LearnedBoxes:
    """A Gaussian over (cx, cy, log w, log h) of the labelled boxes."""

    def __init__(self, labelled: LabelledBoxes) -> None:
        boxes = np.concatenate(labelled.boxes)
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        features = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2, np.log(w), np.log(h)], 1)
        self.mean = features.mean(axis=0)
        # A single box (or identical ones) has no spread: a little keeps the covariance proper.
        self.cov = (np.cov(features.T) if len(features) > 1 else np.zeros((4, 4))) + np.eye(4) * 1e-4

    def draw(self, rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
        cx, cy, lw, lh = rng.multivariate_normal(self.mean, self.cov, method="cholesky")
        w, h = min(np.exp(lw), 1.0), min(np.exp(lh), 1.0)
        # Keep the whole box in the image: move its centre rather than cut the object.
        cx, cy = np.clip(cx, w / 2, 1 - w / 2), np.clip(cy, h / 2, 1 - h / 2)
        return clip_box([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


class FileBoxes:
    """A user's boxes, drawn uniformly."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.boxes = read_box_file(path)

    def draw(self, rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
        return self.boxes[rng.integers(len(self.boxes))]


def read_box_file(path: Path) -> np.ndarray:
    """``N x 4`` xyxy fractions from a box file (see the module docstring)."""
    if not path.is_file():
        raise InputError(f"box file {path} does not exist")
    text = path.read_text()
    rows: list[list[float]] = []
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
            if isinstance(data, dict) and "annotations" in data:  # COCO: pixels of each image
                sizes = {img["id"]: (img["width"], img["height"]) for img in data.get("images", [])}
                for ann in data["annotations"]:
                    if ann.get("iscrowd", 0):
                        continue
                    w, h = sizes[ann["image_id"]]
                    x, y, bw, bh = ann["bbox"]
                    rows.append([x / w, y / h, bw / w, bh / h])
            else:
                rows = [[float(v) for v in box] for box in data]
        else:
            lines = list(csv.reader(ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")))
            if lines and not any(_is_number(v) for v in lines[0]):  # a header row such as x,y,w,h
                lines = lines[1:]
            rows = [[float(v) for v in line] for line in lines]
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(
            f"box file {path} could not be read ({type(err).__name__}: {err}); expected a COCO JSON, a JSON list "
            "of [x, y, w, h] fractions of the image side, or CSV rows x,y,w,h of such fractions"
        ) from None
    if not rows:
        raise InputError(f"box file {path} holds no boxes")
    short = next((row for row in rows if len(row) != 4), None)
    if short is not None:
        raise InputError(f"box file {path}: every box needs 4 numbers x, y, w, h; found {short}")
    boxes = np.asarray(rows, dtype=np.float64)
    if (boxes[:, 2:] <= 0).any() or (boxes < -1e-6).any() or (boxes[:, :2] + boxes[:, 2:] > 1 + 1e-6).any():
        bad = boxes[((boxes[:, 2:] <= 0).any(1)) | (boxes < -1e-6).any(1) | ((boxes[:, :2] + boxes[:, 2:]) > 1 + 1e-6).any(1)][0]
        raise InputError(
            f"box file {path}: box {bad.tolist()} is not inside the image; boxes are x, y, w, h as fractions "
            "of the image side (0..1, w and h > 0)"
        )
    boxes[:, 2:] += boxes[:, :2]
    return np.stack([clip_box(b) for b in boxes])


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def make_box_source(spec: str, labelled: LabelledBoxes) -> BoxSource:
    """``match`` | ``learned`` | ``file:PATH``."""
    if spec == "match":
        return MatchedBoxes(labelled)
    if spec == "learned":
        return LearnedBoxes(labelled)
    if spec.startswith("file:"):
        return FileBoxes(Path(spec[len("file:"):]))
    raise InputError(f"unknown box source {spec!r}; use match (the paper's rule), learned or file:PATH")
