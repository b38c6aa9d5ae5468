"""Training data of an inserter: clean images, labelled images with their boxes, and the
batches the trainer draws from them.

Both sets are decoded once, stretched to ``size x size`` (the square the detectors see; boxes
scale exactly) and held in memory: DetectorGAN is a small-data method. Clean images come
through synthgen's background sources (a folder, ``coco:FILE.json`` with ``--exclude-classes``
to keep object-free images, ``voc``), so they are cached like ``paste``'s backgrounds.

Batch ``t`` depends only on ``(seed, t)``, so a resumed run draws the batches the interrupted
one would have drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from synthgen.errors import InputError
from synthgen.insert.boxes import LabelledBoxes, jitter, nearest, thumbnail


def load_clean(specs: Sequence[str], size: int, exclude_classes: Sequence[str] = (), progress: bool = True) -> np.ndarray:
    """``N x size x size x 3`` uint8: every image of the background sources ``specs``.

    ``exclude_classes`` drops images showing those classes from the annotated sources (coco,
    voc, yolo). Plain folders beside an annotated source are taken whole (the user names them
    as clean); with only plain folders, excluding classes is an error (nothing to exclude by)."""
    from synthgen.backgrounds import background_kind, cached_background_pool, resolve_backgrounds

    if not specs:
        raise InputError("no clean images given: pass --clean DIR (images without the object), once or more")
    annotated = [background_kind(spec)[0] != "folder" for spec in specs]
    images = []
    for spec, has_labels in zip(specs, annotated):
        exclude = exclude_classes if has_labels or not any(annotated) else ()
        pool = cached_background_pool(resolve_backgrounds(spec, exclude), size, size, "stretch", progress=progress)
        images.extend(np.asarray(pool[i]) for i in range(len(pool)))
    if not images:
        raise InputError(f"no readable clean images in {', '.join(specs)}")
    return np.stack(images)


@dataclass
class LabelledSet:
    """Labelled images at ``size`` and their boxes (``xyxy`` fractions) of one category."""

    images: np.ndarray  # N x S x S x 3 uint8
    boxes: list[np.ndarray]  # N arrays K_n x 4, K_n >= 1
    category: str

    def box_model(self) -> LabelledBoxes:
        return LabelledBoxes(np.stack([thumbnail(im) for im in self.images]), self.boxes)


def load_labelled(path: str | Path, size: int, category: str | None = None) -> LabelledSet:
    """The images of a COCO file that have boxes of ``category`` (default: its only category),
    stretched to ``size``; crowd boxes are ignored. InputError when none has a box."""
    import cv2

    from synthgen.training.coco import load_coco

    coco = load_coco(path)
    names = [c["name"] for c in coco.categories]
    if category is None:
        if len(names) != 1:
            raise InputError(f"{path} has {len(names)} categories ({', '.join(names)}): choose one with --category")
        category = names[0]
    if category not in names:
        raise InputError(f"{path} has no category {category!r}; it has: {', '.join(names)}")
    category_id = coco.categories[names.index(category)]["id"]
    images, boxes = [], []
    for image_id in coco.image_ids:
        targets = coco.targets(image_id)
        keep = (~targets.iscrowd) & (targets.category_ids == category_id)
        if not keep.any():
            continue
        image = coco.read_image(image_id)
        h, w = image.shape[:2]
        xyxy = targets.xyxy[keep].astype(np.float64) / np.array([w, h, w, h])
        xyxy = np.clip(xyxy, 0.0, 1.0)
        xyxy = xyxy[(xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])]
        if not len(xyxy):
            continue
        interpolation = cv2.INTER_AREA if size <= min(h, w) else cv2.INTER_LINEAR
        images.append(cv2.resize(image, (size, size), interpolation=interpolation))
        boxes.append(xyxy)
    if not images:
        raise InputError(
            f"labelled file {path} has no boxes of {category!r} (crowd boxes do not count): the inserter learns "
            "what to insert from labelled boxes, so give a COCO file with at least one"
        )
    return LabelledSet(np.stack(images), boxes, category)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``N x H x W x 3`` -> float ``N x 3 x H x W`` in [-1, 1]."""
    return torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # a copy: pools are read-only


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float ``N x 3 x H x W`` in [-1, 1] -> uint8 ``N x H x W x 3`` (rounded)."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


@dataclass
class Batch:
    clean: torch.Tensor  # B x 3 x S x S in [-1, 1]
    insert_boxes: list[torch.Tensor]  # per clean image, 1 x 4 xyxy pixels: where to insert
    labelled: torch.Tensor  # B x 3 x S x S: the matched labelled images
    labelled_boxes: list[torch.Tensor]  # per labelled image, K x 4 xyxy pixels: all its objects
    source_boxes: list[torch.Tensor]  # per labelled image, 1 x 4: the box the insertion copies

    def to(self, device: torch.device) -> "Batch":
        return Batch(
            self.clean.to(device),
            [b.to(device) for b in self.insert_boxes],
            self.labelled.to(device),
            [b.to(device) for b in self.labelled_boxes],
            [b.to(device) for b in self.source_boxes],
        )


class InsertionData:
    """Clean images matched to their most similar labelled image (DetectorGAN's rule)."""

    def __init__(self, clean: np.ndarray, labelled: LabelledSet) -> None:
        if not len(clean):
            raise InputError("no clean images")
        self.clean, self.labelled = clean, labelled
        self.size = int(clean.shape[1])
        thumbs = np.stack([thumbnail(im) for im in labelled.images])
        self.match = np.array([nearest(thumbs, thumbnail(im)) for im in clean])

    def batch(self, seed: int, step: int, batch_size: int, stream: int = 0) -> Batch:
        """Training batch ``step`` (``stream`` 0), or another fixed draw (the sample sheets'
        ``stream`` 1)."""
        rng = np.random.default_rng([seed, step, stream, 0x494E53])
        s = self.size
        clean, labelled, insert_boxes, labelled_boxes, source_boxes = [], [], [], [], []
        for _ in range(batch_size):
            i = int(rng.integers(len(self.clean)))
            j = int(self.match[i])
            boxes = self.labelled.boxes[j]
            source = boxes[rng.integers(len(boxes))]
            target = jitter(source, rng)
            x, y = self.clean[i], self.labelled.images[j]
            if rng.random() < 0.5:  # flip the pair together: the match and the box still fit
                x, y = x[:, ::-1], y[:, ::-1]
                flip = lambda b: np.stack([1 - b[..., 2], b[..., 1], 1 - b[..., 0], b[..., 3]], -1)  # noqa: E731
                boxes, source, target = flip(boxes), flip(source), flip(target)
            clean.append(x)
            labelled.append(y)
            insert_boxes.append(torch.tensor(target[None] * s, dtype=torch.float32))
            labelled_boxes.append(torch.tensor(boxes * s, dtype=torch.float32))
            source_boxes.append(torch.tensor(source[None] * s, dtype=torch.float32))
        return Batch(to_tensor(np.stack(clean)), insert_boxes, to_tensor(np.stack(labelled)), labelled_boxes, source_boxes)
