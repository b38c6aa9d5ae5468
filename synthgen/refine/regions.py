"""Regions for SOD-MTGAN: crops of a detector's proposals and of the true boxes, their
low-resolution inputs, their classes and box offsets.

A region is a box grown by ``context`` of its side on every side (the discriminator regresses
the box from what surrounds it), resampled to ``hr_size`` x ``hr_size`` pixels (RoIAlign with
as many samples per output pixel as the region has source pixels: an area average, so large
regions are not aliased). Its low-resolution input is the 4x bicubic (anti-aliased)
down-sampling of that crop, as in the paper's training pairs. The same two steps make the input
at test time, so G always sees the distribution it was trained on; for a region smaller than
``hr_size / 4`` pixels the "high-resolution" crop is itself an up-sampling and its 4x
down-sampling is close to the region at its own resolution.

Targets follow Fast R-CNN: a proposal whose best IoU with a true (non-crowd) box is at least
``positive_iou`` takes that box's class and the offsets to it; one below ``negative_iou`` is
background (class 0), unless it lies mostly on a crowd (ignore) region; others are left out.
Every true box is also a positive region of its own (offsets zero), so that positives exist even
where the baseline finds nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import box_iou, roi_align

from synthgen.errors import InputError
from synthgen.refine.networks import SCALE

# R-CNN's delta normalisation (torchvision's Faster R-CNN box head).
BOX_CODER = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
SMALL_AREA = 32 * 32  # COCO's "small": area below 32^2 pixels


def context_boxes(boxes: torch.Tensor, context: float) -> torch.Tensor:
    """``boxes`` (xyxy) grown by ``context`` x their width/height on each side."""
    if boxes.numel() == 0:
        return boxes.reshape(0, 4)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    grow = torch.stack([-w, -h, w, h], dim=1) * context
    return boxes + grow


def crop_regions(image: torch.Tensor, boxes: torch.Tensor, hr_size: int, context: float) -> torch.Tensor:
    """High-resolution crops ``(N, 3, hr_size, hr_size)`` of ``image`` (``3 x H x W`` float in
    [0, 1]) around ``boxes`` (xyxy pixels, grown by ``context``)."""
    if boxes.numel() == 0:
        return image.new_zeros((0, 3, hr_size, hr_size))
    regions = context_boxes(boxes.to(image.dtype), context)
    return roi_align(image[None], [regions], output_size=hr_size, spatial_scale=1.0, sampling_ratio=0, aligned=True).clamp_(0, 1)


def low_resolution(hr: torch.Tensor) -> torch.Tensor:
    """The 4x bicubic down-sampling (anti-aliased) of high-resolution crops, in [0, 1]."""
    return F.interpolate(hr, scale_factor=1 / SCALE, mode="bicubic", antialias=True, align_corners=False).clamp_(0, 1)


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """An RGB uint8 ``H x W x 3`` array as a ``3 x H x W`` float tensor in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


@dataclass
class RegionSet:
    """Training regions: ``hr`` uint8 ``(N, 3, S, S)`` crops, ``labels`` int64 ``(N,)`` (0 =
    background, k = the detector's label k), ``deltas`` float32 ``(N, 4)`` (offsets from the
    proposal to its true box; zero for background), ``small`` bool ``(N,)`` (the true box, or for
    background the proposal, is smaller than 32x32 pixels), ``from_detector`` bool ``(N,)``."""

    hr: torch.Tensor
    labels: torch.Tensor
    deltas: torch.Tensor
    small: torch.Tensor
    from_detector: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.numel())

    def to_state(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k) for k in ("hr", "labels", "deltas", "small", "from_detector")}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RegionSet:
        return cls(**{k: state[k] for k in ("hr", "labels", "deltas", "small", "from_detector")})

    @property
    def positives(self) -> torch.Tensor:
        return torch.nonzero(self.labels > 0).flatten()

    @property
    def negatives(self) -> torch.Tensor:
        return torch.nonzero(self.labels == 0).flatten()


def assign_regions(
    proposals: torch.Tensor,
    truth: torch.Tensor,
    truth_labels: torch.Tensor,
    crowd: torch.Tensor,
    positive_iou: float = 0.5,
    negative_iou: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Proposals and true boxes of one image as regions (see the module docstring): returns
    ``(boxes, labels, deltas, small)``, the true boxes appended after the kept proposals."""
    keep_truth = truth[~crowd]
    keep_labels = truth_labels[~crowd]
    boxes, labels, targets = [], [], []
    if len(proposals):
        if len(keep_truth):
            iou = box_iou(proposals, keep_truth)
            best, index = iou.max(dim=1)
        else:
            best, index = torch.zeros(len(proposals)), torch.zeros(len(proposals), dtype=torch.int64)
        on_crowd = torch.zeros(len(proposals), dtype=torch.bool)
        if bool(crowd.any()):
            on_crowd = _covered(proposals, truth[crowd]) >= 0.5
        positive = best >= positive_iou
        negative = (best < negative_iou) & ~on_crowd
        for mask, is_positive in ((positive, True), (negative, False)):
            if bool(mask.any()):
                boxes.append(proposals[mask])
                if is_positive:
                    labels.append(keep_labels[index[mask]])
                    targets.append(keep_truth[index[mask]])
                else:
                    labels.append(torch.zeros(int(mask.sum()), dtype=torch.int64))
                    targets.append(proposals[mask])
    if len(keep_truth):
        boxes.append(keep_truth)
        labels.append(keep_labels)
        targets.append(keep_truth)
    if not boxes:
        empty = torch.zeros((0, 4))
        return empty, torch.zeros(0, dtype=torch.int64), empty, torch.zeros(0, dtype=torch.bool)
    boxes_t, labels_t, targets_t = torch.cat(boxes), torch.cat(labels), torch.cat(targets)
    deltas = BOX_CODER.encode_single(targets_t, boxes_t)
    deltas[labels_t == 0] = 0
    measured = torch.where((labels_t > 0)[:, None], targets_t, boxes_t)
    small = (measured[:, 2] - measured[:, 0]) * (measured[:, 3] - measured[:, 1]) < SMALL_AREA
    return boxes_t, labels_t, deltas.float(), small


def _covered(boxes: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """For each box, the largest fraction of its area that one of ``regions`` covers."""
    lt = torch.maximum(boxes[:, None, :2], regions[None, :, :2])
    rb = torch.minimum(boxes[:, None, 2:], regions[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    area = ((boxes[:, 2:] - boxes[:, :2]).clamp(min=0).prod(dim=1))[:, None]
    return (inter / area.clamp(min=1e-6)).max(dim=1).values


def mine_regions(
    image_ids: Sequence[int],
    read_image: Callable[[int], np.ndarray],
    truth_of: Callable[[int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    proposals_of: Callable[[int], torch.Tensor],
    *,
    hr_size: int,
    context: float,
    positive_iou: float = 0.5,
    negative_iou: float = 0.5,
    on_image: Callable[[], None] | None = None,
) -> RegionSet:
    """The regions of all images: ``truth_of(id)`` gives ``(boxes, labels, crowd)``,
    ``proposals_of(id)`` the detector's boxes (xyxy). InputError when no region results."""
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("hr", "labels", "deltas", "small", "from_detector")}
    for image_id in image_ids:
        truth, labels, crowd = truth_of(image_id)
        proposals = proposals_of(image_id)
        boxes, region_labels, deltas, small = assign_regions(proposals, truth, labels, crowd, positive_iou, negative_iou)
        if len(boxes):
            image = image_tensor(read_image(image_id))
            hr = crop_regions(image, boxes, hr_size, context)
            parts["hr"].append(hr.mul(255).round_().to(torch.uint8))
            parts["labels"].append(region_labels)
            parts["deltas"].append(deltas)
            parts["small"].append(small)
            n_truth = int((~crowd).sum())
            parts["from_detector"].append(torch.arange(len(boxes)) < len(boxes) - n_truth)
        if on_image is not None:
            on_image()
    if not parts["hr"]:
        raise InputError("no training region was found: the data has no boxes and the detector proposed nothing")
    return RegionSet(**{k: torch.cat(v) for k, v in parts.items()})
