"""The batched torch compositor: the same samples as :class:`~synthgen.compositor.Compositor`,
their pixels made in one pass per batch on any torch device.

A sample is made in two steps:

1. **Plan** (host, :class:`Planner`): the CPU renderer itself (a subclass of ``Compositor``) runs
   every random draw of ``sample_rng(seed, i)`` and every decision: background and crop, which
   cut-outs, their size, flip, rotation, colour, blur, noise pixels, blend mode, and the
   placement tries under the occlusion rule. Only the alpha channel is resampled there (with
   the same OpenCV calls as the CPU path), because masks decide placements: so the placements,
   and with them the labels, are *the same* as the CPU path's, and the random stream (whose
   noise draws depend on each patch's size) stays in step.
2. **Draw** (device, :meth:`TorchCompositor.draw`): for a batch of plans, all objects at once as
   one ragged tensor: area / bilinear resize (separable taps, OpenCV's ``INTER_AREA`` and
   ``INTER_LINEAR`` rules), flip, rotation (OpenCV's fixed-point ``warpAffine`` coordinates),
   colour matrix, noise, defocus blur, gaussian feathering, then alpha blending object slot by
   object slot (k-th object of every sample at once), onto background crops gathered from the
   background pool on the device. The annotations are made there too
   (:func:`visible_objects`): each object's mask is its drawn alpha at or above 128, the
   occlusion rule's owner map is painted for the whole batch, and visible pixel counts, visible
   fractions, visible and whole-mask boxes are reduced per object; only those numbers (and,
   when asked for, the owner map for instance masks) leave the device. Boxes agree with the CPU
   path's within 1 px (the device's alpha is a grey level off here and there). Distractors are
   drawn and cover objects there like any pasted object, and are never labelled; ``box``
   (amodal or visible main box) is applied to the device's boxes.

   The annotations of a labelled background's own objects (kept annotations, COCO crowd regions
   included) are the exception: the planner makes them on the host with the CPU renderer's rule
   (:meth:`Planner._annotation`), from its owner map, in which the pasted objects' masks are the
   CPU path's own. They are exact (the CPU path's), need no device copy of every kept mask, and
   the planner paints that owner map for placement anyway; the sample's annotations are those,
   then the device's, in paste order as on the CPU path.

Pixels are close to the CPU path's, not identical (float arithmetic where OpenCV uses fixed
point; colour applied after resampling): ``bench/paste_torch.py`` reports the mean absolute
difference. Poisson and motion blending have no device version: a sample with such an object is
rendered whole by the CPU renderer in the planning step and only copied in.

Pools live on the device as :class:`DeviceImages` (one flat tensor, moved once). Objects of a
generator source come as the source made them on the device, block by block
(``take_device_images``); the planner still needs each object's alpha channel on the host, since
placements are decided there (one byte per pixel, once per object, not per use).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np
import torch

from synthgen.compositor.augment import MASK_THRESHOLD, ObjectPatch, colour_matrix, draw_photometry, rotated_extent
from synthgen.compositor.config import CompositeConfig
from synthgen.compositor.render import (BackgroundLabelsLike, BackgroundPoolLike, Compositor, CutoutLike, ObjectPoolLike,
                                        RefreshingPoolLike)
from synthgen.errors import InputError
from synthgen.sample import Annotation, Sample

#: Blend modes drawn on the device; the others make their sample render on the CPU.
DEVICE_BLENDS = ("alpha", "gaussian")

#: CompositeConfig fields the planner and the device drawing know. A field added to the CPU
#: renderer later is refused (when not at its default) until the torch path learns it. The
#: main box, class balance, distractors and the protection of kept objects are decisions of the
#: planning step (the CPU renderer's own code): distractors are drawn from the same device
#: tensor as the objects, after them (after a generator source's blocks); the main box is
#: applied to the device-made boxes.
_KNOWN_FIELDS = frozenset(
    "width height background_fit objects_per_image scale aspect aspect_range flip rotation brightness contrast "
    "saturation blur blur_sigma noise noise_std blend feather motion_length min_visible truncation max_tries "
    "box class_balance distractors_per_image distractor_scale protect".split()
)


def check_supported(config: CompositeConfig) -> None:
    """Raise InputError if ``config`` uses a setting the torch compositor does not implement."""
    default = type(config)()
    unknown = [f.name for f in dataclasses.fields(config) if f.name not in _KNOWN_FIELDS and getattr(config, f.name) != getattr(default, f.name)]
    if unknown:
        raise InputError(
            f"the torch compositor does not implement {', '.join(unknown)} yet: "
            "use --compositor numpy for these settings"
        )


# -- plans (host) -------------------------------------------------------------------------------


@dataclass
class ObjectPlan:
    """One pasted object, as the device draws it."""

    choice: int  # cut-out index in its own pool: the object pool (or block) or, for a distractor, the distractor pool
    resized: tuple[int, int]  # (w, h) after resizing, before rotation
    area_resize: bool  # OpenCV INTER_AREA (shrinking) rather than INTER_LINEAR
    flip: bool
    #: Rotation: OpenCV's inverse map (2x3, patch pixel -> framed resized pixel) and the trimmed
    #: window's top-left (row, col) in the warped canvas; None without rotation.
    rotation: tuple[tuple[float, ...], int, int] | None
    shape: tuple[int, int]  # (h, w) of the final patch
    colour: np.ndarray | None  # (4, 5) colour matrix, None: unchanged
    #: The colour matrix applied to the cut-out's pixels before resampling (as the CPU path does
    #: when the cut-out has fewer pixels than the pasted object), else to the pasted pixels.
    colour_first: bool
    noise: np.ndarray | None  # (h, w, 3) float32 noise already scaled by its std
    blur_sigma: float
    feather: float  # > 0: gaussian blending with this sigma
    class_id: int | None = 0  # 0-based class of the cut-out; None: a distractor (drawn, occluding, never labelled)
    origin: tuple[int, int] = (0, 0)  # (x0, y0) on the canvas


@dataclass
class SamplePlan:
    background: tuple[int, int, int]  # (index, y0, x0) of the crop
    #: The block of a refreshing object source (generator objects) the cut-outs are from, None
    #: for one fixed pool: ``ObjectPlan.choice`` indexes that block.
    block: int | None = None
    objects: list[ObjectPlan] = field(default_factory=list)
    #: The annotations of the background's own objects (kept annotations, crowd regions
    #: included), already final: made on the host by the CPU renderer's rule from its owner
    #: map, in which the pasted objects' masks are the CPU path's own (see Planner._annotation).
    kept: list[Annotation] = field(default_factory=list)
    #: The whole image rendered by the CPU renderer (poisson or motion blending), else None.
    image: np.ndarray | None = None


@dataclass
class PlannedSample(Sample):
    """A :class:`Sample` whose pixels are not made yet: ``image`` is (H, W, 0), ``plan`` says
    how to draw them. Its annotations are made with its pixels, by :meth:`TorchCompositor.draw`
    (already final for a sample the CPU renderer rendered whole, ``plan.image``)."""

    plan: SamplePlan | None = None


@dataclass
class _PlannedPatch(ObjectPatch):
    plan: ObjectPlan | None = None


def alpha_geometry(alpha: np.ndarray, box_w: float, box_h: float, flip: bool, degrees: float):
    """:func:`synthgen.compositor.augment.transform_geometry` of the alpha channel alone (the same
    OpenCV calls, so the same mask, extent and patch size): ``(alpha, resized (w, h), area,
    rotation)`` as in :class:`ObjectPlan`, or None when nothing survives."""
    out_w, out_h = max(1, int(round(box_w))), max(1, int(round(box_h)))
    area = out_w <= alpha.shape[1] and out_h <= alpha.shape[0]
    patch = cv2.resize(alpha, (out_w, out_h), interpolation=cv2.INTER_AREA if area else cv2.INTER_LINEAR).reshape(out_h, out_w)
    if flip:
        patch = cv2.flip(patch, 1)
    rotation = None
    if degrees:
        framed = cv2.copyMakeBorder(patch, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
        new_w, new_h = rotated_extent(out_w + 2, out_h + 2, degrees)
        new_w, new_h = int(math.ceil(new_w)), int(math.ceil(new_h))
        matrix = cv2.getRotationMatrix2D(((out_w + 2) / 2.0, (out_h + 2) / 2.0), degrees, 1.0)
        matrix[0, 2] += (new_w - out_w - 2) / 2.0
        matrix[1, 2] += (new_h - out_h - 2) / 2.0
        patch = cv2.warpAffine(framed, matrix, (new_w, new_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        rows = np.flatnonzero(patch.any(axis=1))
        if rows.size == 0:
            return None
        cols = np.flatnonzero(patch.any(axis=0))
        patch = np.ascontiguousarray(patch[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
        inverse = cv2.invertAffineTransform(matrix)
        rotation = (tuple(float(v) for v in inverse.ravel()), int(rows[0]), int(cols[0]))
    return patch, (out_w, out_h), area, rotation


class Planner(Compositor):
    """The CPU renderer making every draw and decision of a sample, without its colour pixels:
    ``render`` returns a :class:`PlannedSample`. Picklable like a Compositor (runs in paste
    workers). ``distractors`` and ``labels`` as for :class:`Compositor`: kept annotations and
    distractors only change decisions and labels, which are the CPU renderer's own."""

    def __init__(self, config: CompositeConfig, objects: ObjectPoolLike, backgrounds: BackgroundPoolLike,
                 distractors: ObjectPoolLike | None = None, labels: BackgroundLabelsLike | None = None) -> None:
        check_supported(config)
        super().__init__(config, objects, backgrounds, distractors, labels)
        self._plan: SamplePlan | None = None
        self._no_pixels = np.empty((self.config.height, self.config.width, 0), np.uint8)
        self._cpu: Compositor | None = None  # renders samples with poisson / motion blending
        self._labelled = True  # the object being planned is labelled (not a distractor)

    def render(self, seed: int, index: int, keep_masks: bool = False, out: np.ndarray | None = None) -> PlannedSample:
        sample = super().render(seed, index, keep_masks=keep_masks)  # only the kept annotations
        plan, self._plan = self._plan, None
        plan.kept = sample.annotations
        if self._pool_for is not None:
            plan.block = self.objects.block_of(index)
        annotations: list = []  # made on the device, from the drawn masks
        if any(obj.feather < 0 for obj in plan.objects):  # a blend without a device version
            if self._cpu is None:
                self._cpu = Compositor(self.config, self.objects, self.backgrounds, self.distractors, self.labels)
            whole = self._cpu.render(seed, index, keep_masks=keep_masks)
            plan.image, plan.objects, annotations = whole.image, [], whole.annotations
        return PlannedSample(index=index, image=self._no_pixels, annotations=annotations,
                             skipped_objects=sample.skipped_objects, plan=plan)

    @staticmethod
    def _annotation(owners, k, p, keep_mask, box="visible", min_visible=0.0) -> Annotation | None:
        """No annotation of a pasted object on the host: the device makes them from the drawn
        masks (the occlusion rule's placements are already decided; only the visible pixels are
        left to count). A kept annotation of a labelled background (crowd regions included) is
        made here, by the CPU renderer's rule: the pasted objects' masks in the host's owner
        map are the CPU path's own (the same OpenCV resampling of the alpha channel), so the
        kept objects' visible masks, boxes, fractions and drops are exactly the CPU path's;
        the device's masks differ from them by a grey level here and there, and the device has
        no copy of the kept masks (which would have to travel with every sample)."""
        if not p.kept:
            return None
        return Compositor._annotation(owners, k, p, keep_mask, box, min_visible)

    def _background(self, u_background: float, u_y: float, u_x: float, out: np.ndarray | None) -> np.ndarray:
        _, index, y0, x0 = self._background_crop(u_background, u_y, u_x)
        self._plan = SamplePlan(background=(index, y0, x0))
        return self._no_pixels

    def _paste(self, pool, pick, scale, greys, rng, canvas, owners, placed, labelled: bool = True) -> bool:
        self._labelled = labelled  # a distractor's plan has no class: drawn, never labelled
        return super()._paste(pool, pick, scale, greys, rng, canvas, owners, placed, labelled)

    def _augmented(self, choice: int, cutout: CutoutLike, draws: list[float], rng: np.random.Generator,
                   scale=None, greys: dict | None = None) -> ObjectPatch | None:
        rgba = cutout.rgba
        box_w, box_h, flip, degrees = self._geometry(rgba.shape, draws, scale)
        photometry = draw_photometry(draws[5:12], self.config)
        geometry = alpha_geometry(cv2.extractChannel(rgba, 3), box_w, box_h, flip, degrees)
        if geometry is None:
            return None
        alpha, resized, area, rotation = geometry
        ones = cv2.threshold(alpha, MASK_THRESHOLD - 1, 1, cv2.THRESH_BINARY)[1]
        x, y, w, h = cv2.boundingRect(ones)
        if w == 0:
            return None
        colour = colour_matrix(photometry, self._grey_level(choice, cutout, greys)) if photometry.recolours else None
        noise = None
        if photometry.noise_std > 0:  # the CPU path's draw (add_texture), keeping the stream in step
            noise = rng.standard_normal(alpha.shape + (3,), dtype=np.float32)
            noise *= photometry.noise_std
        colour_first = colour is not None and rgba.shape[0] * rgba.shape[1] < box_w * box_h
        plan = ObjectPlan(choice, resized, area, flip, rotation, alpha.shape, colour, colour_first, noise,
                          photometry.blur_sigma, 0.0, cutout.class_id if self._labelled else None)
        return _PlannedPatch(rgba=alpha[..., None], mask=ones.view(bool), extent=(x, y, x + w, y + h),
                             area=cv2.countNonZero(ones), plan=plan)

    def _blend(self, canvas: np.ndarray, patch: ObjectPatch, x0: int, y0: int, mode: str, params) -> None:
        plan = patch.plan  # type: ignore[attr-defined]
        plan.origin = (x0, y0)
        plan.feather = -1.0 if mode not in DEVICE_BLENDS else self.config.feather if mode == "gaussian" else 0.0
        self._plan.objects.append(plan)


# -- pools on the device --------------------------------------------------------------------------


class DeviceImages:
    """Images of different sizes packed in one flat ``(pixels, channels)`` uint8 tensor on a
    device, row-major, with each image's first pixel, height and width (device tensors, and host
    lists for planning). How the torch compositor holds its object (RGBA) and background (RGB)
    pools: moved to the device once per process."""

    def __init__(self, pixels: torch.Tensor, heights: Sequence[int], widths: Sequence[int]) -> None:
        self.pixels = pixels
        self.device = pixels.device
        self.heights = torch.as_tensor(list(heights), dtype=torch.int64, device=self.device)
        self.widths = torch.as_tensor(list(widths), dtype=torch.int64, device=self.device)
        sizes = self.heights * self.widths
        self.starts = torch.cumsum(sizes, 0) - sizes

    def __len__(self) -> int:
        return int(self.heights.numel())

    @classmethod
    def from_arrays(cls, images: Sequence, device: str | torch.device, channels: int) -> "DeviceImages":
        """Pack ``images`` ((h, w, channels) uint8 NumPy arrays, or torch tensors already on
        ``device``: these are not copied through the host) onto ``device``."""
        device = torch.device(device)
        shapes = [(int(im.shape[0]), int(im.shape[1])) for im in images]
        for im in images:
            if im.ndim != 3 or im.shape[2] != channels:
                raise ValueError(f"expected (h, w, {channels}) images, got shape {tuple(im.shape)}")
        total = sum(h * w for h, w in shapes)
        pixels = torch.empty((total, channels), dtype=torch.uint8, device=device)
        start = 0
        for im, (h, w) in zip(images, shapes):
            src = im if isinstance(im, torch.Tensor) else torch.from_numpy(np.array(im))  # a writable copy
            pixels[start : start + h * w].copy_(src.reshape(h * w, channels), non_blocking=False)
            start += h * w
        return cls(pixels, [h for h, _ in shapes], [w for _, w in shapes])

    @classmethod
    def join(cls, parts: Sequence["DeviceImages"]) -> "DeviceImages":
        """The images of ``parts`` (on one device), in order, as one."""
        return cls(torch.cat([p.pixels for p in parts]), torch.cat([p.heights for p in parts]).tolist(),
                   torch.cat([p.widths for p in parts]).tolist())

    @classmethod
    def from_object_pool(cls, pool: ObjectPoolLike, device: str | torch.device) -> "DeviceImages":
        return cls.from_arrays([pool[i].rgba for i in range(len(pool))], device, 4)

    @classmethod
    def from_background_pool(cls, pool: BackgroundPoolLike, device: str | torch.device) -> "DeviceImages":
        return cls.from_arrays([pool[i] for i in range(len(pool))], device, 3)


# -- drawing (device) -----------------------------------------------------------------------------


def _ragged(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For items with ``counts[n]`` elements each, laid end to end: each element's item, its index
    within the item, and each item's first element."""
    starts = torch.cumsum(counts, 0) - counts
    owner = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)
    local = torch.arange(owner.numel(), device=counts.device) - starts[owner]
    return owner, local, starts


def _resize_taps(src: torch.Tensor, dst: torch.Tensor, area: torch.Tensor):
    """Source indices and weights (T, K) for every output coordinate of every item (T = sum of
    ``dst``), OpenCV's rules: ``INTER_AREA`` box weights where ``area`` (the source is not
    smaller), else ``INTER_LINEAR`` (half-pixel centres, edge replicated). Returns the taps,
    each item's first row and how many taps each item uses."""
    owner, j, starts = _ragged(dst)
    s, d = src[owner].double(), dst[owner].double()
    scale = s / d
    jf = j.double()
    is_area = area[owner]
    if bool(area.any()):
        k_max = int(math.ceil(float((src.double() / dst.double())[area].max()))) + 1
    else:
        k_max = 2
    taps = torch.arange(k_max, device=src.device, dtype=torch.float64)
    # INTER_AREA: the output pixel covers [j * scale, (j + 1) * scale) of the source.
    lo = jf * scale
    hi = torch.minimum(lo + scale, s)
    first = torch.floor(lo)
    idx_area = first[:, None] + taps[None, :]
    overlap = (torch.minimum(idx_area + 1, hi[:, None]) - torch.maximum(idx_area, lo[:, None])).clamp_min(0)
    w_area = overlap / overlap.sum(1, keepdim=True)
    # INTER_LINEAR: two taps around (j + 0.5) * scale - 0.5.
    f = (jf + 0.5) * scale - 0.5
    i0 = torch.floor(f)
    t = f - i0
    idx_lin = i0[:, None] + taps[None, :].clamp(max=1)
    w_lin = torch.zeros_like(w_area)
    w_lin[:, 0] = 1 - t
    if k_max > 1:
        w_lin[:, 1] = t
    idx = torch.where(is_area[:, None], idx_area, idx_lin)
    limit = (s - 1)[:, None]
    idx = torch.minimum(idx.clamp_min(0), limit).long()
    weights = torch.where(is_area[:, None], w_area, w_lin).float()
    needed = torch.where(area, torch.ceil(src.double() / dst.double()).long() + 1, torch.full_like(src, 2))
    return idx, weights, starts, needed


def _rows(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values[index]`` along the first axis (``index_select``: on the CPU several times
    faster than advanced indexing)."""
    return torch.index_select(values, 0, index)


def _reflect101(i: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """OpenCV's BORDER_REFLECT_101 index into [0, n)."""
    period = (2 * n - 2).clamp_min(1)
    i = torch.remainder(i, period)
    i = torch.where(i >= n, period - i, i)
    return torch.where(n == 1, torch.zeros_like(i), i)


def _recolour(matrices: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
    """``cv2.transform`` of (E, 3) pixels by per-element (E, 3, 4) affine colour matrices:
    rounded and saturated."""
    out = matrices[:, :, 0] * rgb[:, 0:1] + matrices[:, :, 1] * rgb[:, 1:2] + matrices[:, :, 2] * rgb[:, 2:3] + matrices[:, :, 3]
    return torch.round(out).clamp_(0, 255)


def _taps_sum(read, idx: torch.Tensor, weights: torch.Tensor, tap_row: torch.Tensor, needed: torch.Tensor) -> torch.Tensor:
    """``sum_k read(k, elements) * weights[tap_row, k]`` over the taps each element ``needed``:
    ``read(k, sel)`` returns the (len(sel), C) values of tap k for the elements ``sel`` (None:
    all). A big shrink in the batch widens the tap table; only its own elements pay for it."""
    out = read(0, None) * _rows(weights[:, 0], tap_row)[:, None]
    for k in range(1, idx.shape[1]):
        sel = torch.nonzero(needed > k).squeeze(1)
        if sel.numel() == 0:
            break
        out.index_add_(0, sel, read(k, sel) * _rows(weights[:, k], _rows(tap_row, sel))[:, None])
    return out


def gaussian_kernel(sigma: float) -> np.ndarray:
    """OpenCV's GaussianBlur kernel for uint8 images and ``sigma``."""
    size = int(round(sigma * 3 * 2 + 1)) | 1
    return cv2.getGaussianKernel(size, sigma).ravel()


def _blur(values: torch.Tensor, sel: torch.Tensor, owner: torch.Tensor, y: torch.Tensor, x: torch.Tensor, starts: torch.Tensor,
          heights: torch.Tensor, widths: torch.Tensor, kernels: torch.Tensor, constant: bool) -> torch.Tensor:
    """Separable convolution of ragged images (elements ``values`` (E, C) of item ``owner`` at
    (y, x), item n starting at ``starts[n]``) with each item's centred kernel (rows of
    ``kernels``, zero-padded to one odd width), borders reflected (OpenCV's default) or
    ``constant`` zero: the results for the elements ``sel``, unrounded."""
    radius = kernels.shape[1] // 2
    o = owner[sel]
    ys, xs = y[sel], x[sel]
    h, w, base = heights[o], widths[o], starts[o]
    source = values
    acc = values[sel]
    for axis in (1, 0):  # horizontal, then vertical
        acc = torch.zeros_like(acc)
        for t in range(kernels.shape[1]):
            weight = kernels[o, t]
            if axis == 1:
                xx = xs + (t - radius)
                inside = (xx >= 0) & (xx < w)
                src = base + ys * w + _reflect101(xx, w)
            else:
                yy = ys + (t - radius)
                inside = (yy >= 0) & (yy < h)
                src = base + _reflect101(yy, h) * w + xs
            if constant:
                weight = torch.where(inside, weight, torch.zeros_like(weight))
            acc += _rows(source, src) * weight[:, None]
        if axis == 1:
            source = values.clone()
            source[sel] = acc
    return acc


@dataclass
class VisibleObjects:
    """What :func:`visible_objects` finds, per object: ``stats`` (N, 10) int64 on the device,
    columns: visible pixels, mask pixels (whole object), visible box (x0, y0, x1, y1, inclusive;
    meaningless without a visible pixel), the whole mask's box (the same, on the canvas's
    coordinates, not clipped); ``owners``: which object is on top of each canvas pixel (-1:
    none), when asked for."""

    stats: torch.Tensor
    owners: torch.Tensor | None


def visible_objects(mask: torch.Tensor, owner: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, inside: torch.Tensor,
                    pixel: torch.Tensor, objects: int, pixels: int, keep_owners: bool = False) -> VisibleObjects:
    """The occlusion rule on the device, for a batch of pasted objects given as ragged elements:
    element e belongs to object ``owner[e]`` (objects numbered in paste order within each
    sample: a later object lies on top), is at canvas row ``cy``, column ``cx``, ``inside`` the
    canvas at flat pixel ``pixel`` (sample-major, of ``pixels`` in all), and is part of the
    object's ``mask`` or not. An object is visible where its mask is inside the canvas and no
    later object's mask is: the CPU renderer's owner map (``_Owners``), for all samples at
    once. Returns each object's visible pixel count, mask pixel count and boxes."""
    dev = mask.device
    drawn = torch.nonzero(mask & inside).squeeze(1)
    number = _rows(owner, drawn).to(torch.int32)  # int32: the map is B x H x W
    top = torch.full((pixels,), -1, dtype=torch.int32, device=dev)
    # The largest object number wins at a pixel: objects of one sample are numbered in paste
    # order, and objects of different samples never share a pixel.
    top.scatter_reduce_(0, _rows(pixel, drawn), number, reduce="amax", include_self=True)
    shown = drawn[_rows(top, _rows(pixel, drawn)) == number]
    stats = torch.zeros((objects, 10), dtype=torch.int64, device=dev)
    o = _rows(owner, shown)
    stats[:, 0].index_add_(0, o, torch.ones_like(o))
    for column, values, reduce in ((2, cx, "amin"), (3, cy, "amin"), (4, cx, "amax"), (5, cy, "amax")):
        stats[:, column].scatter_reduce_(0, o, _rows(values, shown), reduce=reduce, include_self=False)
    whole = torch.nonzero(mask).squeeze(1)
    o = _rows(owner, whole)
    stats[:, 1].index_add_(0, o, torch.ones_like(o))
    for column, values, reduce in ((6, cx, "amin"), (7, cy, "amin"), (8, cx, "amax"), (9, cy, "amax")):
        stats[:, column].scatter_reduce_(0, o, _rows(values, whole), reduce=reduce, include_self=False)
    return VisibleObjects(stats, top if keep_owners else None)


class TorchCompositor:
    """Renders batches of samples: the same annotations as the CPU :class:`Compositor` for the
    same ``(seed, index)`` (planned by it), the pixels drawn with torch on ``device``.

    ``render_batch`` returns a ``(B, H, W, 3)`` uint8 tensor on the device and the samples'
    annotations. A sample's pixels do not depend on the batch it is drawn in.
    """

    def __init__(self, config: CompositeConfig, objects: ObjectPoolLike | RefreshingPoolLike, backgrounds: BackgroundPoolLike,
                 device: str | torch.device = "cpu", *, distractors: ObjectPoolLike | None = None,
                 labels: BackgroundLabelsLike | None = None, device_objects: DeviceImages | None = None,
                 device_backgrounds: DeviceImages | None = None) -> None:
        """``device_objects``, when given, holds the object pool's cut-outs followed by the
        distractor pool's."""
        self.planner = Planner(config, objects, backgrounds, distractors, labels)
        self.config = self.planner.config
        self.device = torch.device(device)
        #: A refreshing source (generator objects): each block is put on the device when a batch
        #: first needs it (see :meth:`_object_images`), the distractors (now) after it; else the
        #: one pool and the distractors, now, as one tensor.
        self.refreshing = hasattr(objects, "pool_for")
        self._blocks: dict[int, DeviceImages] = {}
        self._joined: tuple[tuple[int, ...], DeviceImages] | None = None  # the last batch's blocks and distractors, as one
        distractor_cutouts = [distractors[i].rgba for i in range(len(distractors))] if distractors is not None else []
        self.objects = self.distractors = None
        if self.refreshing:
            self.distractors = DeviceImages.from_arrays(distractor_cutouts, self.device, 4) if distractor_cutouts else None
            expected = None
        else:
            cutouts = [objects[i].rgba for i in range(len(objects))] + distractor_cutouts
            self.objects = device_objects if device_objects is not None else DeviceImages.from_arrays(cutouts, self.device, 4)
            expected = len(cutouts)
        self.backgrounds = (device_backgrounds if device_backgrounds is not None
                            else DeviceImages.from_background_pool(backgrounds, self.device))
        if (expected is not None and len(self.objects) != expected) or len(self.backgrounds) != len(backgrounds):
            raise ValueError("the device pools must hold the same images as the host pools")

    @classmethod
    def from_compositor(cls, compositor: Compositor, device: str | torch.device = "cpu") -> "TorchCompositor":
        return cls(compositor.config, compositor.objects, compositor.backgrounds, device,
                   distractors=compositor.distractors, labels=compositor.labels)

    @property
    def categories(self) -> list[str]:
        return self.planner.categories

    def render_batch(self, seed: int, indices: Sequence[int], keep_masks: bool = False) -> tuple[torch.Tensor, list[PlannedSample]]:
        plans = [self.planner.render(seed, i, keep_masks=keep_masks) for i in indices]
        return self.draw(plans, keep_masks=keep_masks), plans

    # -- the device work ------------------------------------------------------------------------

    @torch.no_grad()
    def draw(self, samples: Sequence[PlannedSample], keep_masks: bool = False) -> torch.Tensor:
        """The pixels of planned samples: ``(B, H, W, 3)`` uint8 on the device. Fills each
        sample's ``annotations`` from the drawn masks (see :func:`visible_objects`; with
        ``keep_masks``, each annotation's visible mask too)."""
        cfg, dev = self.config, self.device
        height, width = cfg.height, cfg.width
        canvas = self._backgrounds([s.plan.background for s in samples])
        for b, s in enumerate(samples):
            if s.plan.image is not None:
                canvas[b] = torch.from_numpy(s.plan.image).to(dev)
            else:  # the kept annotations (made on the host), then the pasted objects' (below)
                s.annotations = list(s.plan.kept)
        # Objects ordered by slot, then sample: each slot is one contiguous run of elements.
        slots = max((len(s.plan.objects) for s in samples), default=0)
        order = [(b, s.plan.objects[k]) for k in range(slots) for b, s in enumerate(samples) if k < len(s.plan.objects)]
        if not order:
            return canvas
        per_slot = [sum(1 for s in samples if k < len(s.plan.objects)) for k in range(slots)]
        plans = [p for _, p in order]
        element_ends = np.cumsum([p.shape[0] * p.shape[1] for p in plans]).tolist()
        pool, first_cutout, first_distractor = self._object_images(samples)
        first = [first_cutout[b] if p.class_id is not None else first_distractor for b, p in order]
        patches, owner, y, x, mask = self._patches(plans, pool, first)
        sample_of = torch.as_tensor([b for b, _ in order], dtype=torch.int64, device=dev)
        origin = torch.as_tensor([p.origin for p in plans], dtype=torch.int64, device=dev)
        cy, cx = _rows(origin[:, 1], owner) + y, _rows(origin[:, 0], owner) + x
        inside = (cy >= 0) & (cy < height) & (cx >= 0) & (cx < width)
        pixel = (_rows(sample_of, owner) * height + cy.clamp(0, height - 1)) * width + cx.clamp(0, width - 1)
        flat = canvas.view(-1, 3)
        lo, last = 0, 0
        for count in per_slot:  # slot by slot: the k-th objects of all samples do not overlap
            last += count
            sl = slice(lo, element_ends[last - 1])
            lo = sl.stop
            valid = inside[sl]
            pix = pixel[sl][valid]
            part = patches[sl][valid]
            alpha = part[:, 3:4]
            # OpenCV's blend_alpha: two rounded products, a saturating sum.
            colour = torch.round(part[:, :3] * alpha * (1.0 / 255.0))
            under = torch.round(_rows(flat, pix).float() * (255.0 - alpha) * (1.0 / 255.0))
            flat.index_copy_(0, pix, (colour + under).clamp_(0, 255).to(torch.uint8))
        visible = visible_objects(mask, owner, cy, cx, inside, pixel, len(plans), len(samples) * height * width, keep_masks)
        self._annotate(samples, order, visible, height, width)
        return canvas

    def _annotate(self, samples: Sequence[PlannedSample], order: list, visible: "VisibleObjects", height: int, width: int) -> None:
        """Appends to each drawn sample's annotations (its kept ones so far) those of its pasted
        objects, in paste order: the labelled ones (not distractors) with a visible pixel, the
        main box chosen by ``config.box`` as on the CPU path (``amodal``: the whole mask's box
        clipped to the image)."""
        stats = visible.stats.cpu().tolist()  # one copy per batch
        owners = None if visible.owners is None else visible.owners.view(len(samples), height, width).cpu().numpy()
        amodal = self.config.box == "amodal"
        for n, (b, p) in enumerate(order):
            count, full, vx0, vy0, vx1, vy1, ax0, ay0, ax1, ay1 = stats[n]
            if count == 0 or p.class_id is None:
                continue  # no pixel left (the CPU path drops it too), or a distractor
            box = (float(vx0), float(vy0), float(vx1 - vx0 + 1), float(vy1 - vy0 + 1))
            main = box
            if amodal:
                cx0, cy0, cx1, cy1 = max(ax0, 0), max(ay0, 0), min(ax1 + 1, width), min(ay1 + 1, height)
                main = (float(cx0), float(cy0), float(cx1 - cx0), float(cy1 - cy0))
            samples[b].annotations.append(Annotation(
                bbox=main, category_id=p.class_id + 1, area=float(count),
                mask=None if owners is None else owners[b] == n,
                visible_fraction=count / max(full, 1), visible_bbox=box,
                amodal_bbox=(float(ax0), float(ay0), float(ax1 - ax0 + 1), float(ay1 - ay0 + 1)),
            ))

    def _object_images(self, samples: Sequence[PlannedSample]) -> tuple[DeviceImages, list[int], int]:
        """The cut-outs the samples paste from, on the device, where each sample's object pool
        starts in them, and where the distractor pool starts (after the objects). A refreshing
        source's blocks come once each, kept until a batch starts after them: as the
        generator source made them on the device, or else (a block found on disk when resuming)
        copied from the block the planner mapped. A batch across a block boundary pastes from
        both, joined."""
        if not self.refreshing:
            return self.objects, [0] * len(samples), len(self.planner.objects)
        first_index: dict[int, int] = {}
        for s in samples:
            if s.plan.objects:
                first_index[s.plan.block] = min(first_index.get(s.plan.block, s.index), s.index)
        blocks = sorted(first_index)
        for spent in [b for b in self._blocks if b < blocks[0]]:  # samples come in order: never needed again
            del self._blocks[spent]
        for block in blocks:
            if block not in self._blocks:
                made = self.planner.objects.take_device_images(block)  # made on the device by the generator source
                if made is None or made.device != self.device:  # else from the block the planner mapped
                    made = DeviceImages.from_object_pool(self.planner.objects.pool_for(first_index[block]), self.device)
                self._blocks[block] = made
        parts = [self._blocks[b] for b in blocks]
        first_distractor = sum(len(part) for part in parts)
        if self.distractors is not None:
            parts.append(self.distractors)
        starts = dict(zip(blocks, np.cumsum([0] + [len(self._blocks[b]) for b in blocks[:-1]]).tolist()))
        first_cutout = [starts.get(s.plan.block, 0) for s in samples]
        if len(parts) == 1:
            return parts[0], first_cutout, first_distractor
        if self._joined is None or self._joined[0] != tuple(blocks):  # joined once for the batches of a block
            self._joined = (tuple(blocks), DeviceImages.join(parts))
        return self._joined[1], first_cutout, first_distractor

    def _backgrounds(self, crops: list[tuple[int, int, int]]) -> torch.Tensor:
        cfg, dev = self.config, self.device
        height, width = cfg.height, cfg.width
        index = torch.as_tensor([c[0] for c in crops], dtype=torch.int64, device=dev)
        y0 = torch.as_tensor([c[1] for c in crops], dtype=torch.int64, device=dev)
        x0 = torch.as_tensor([c[2] for c in crops], dtype=torch.int64, device=dev)
        bg = self.backgrounds
        rows = torch.arange(height, device=dev)
        cols = torch.arange(width, device=dev)
        canvas = torch.empty((len(crops), height, width, 3), dtype=torch.uint8, device=dev)
        chunk = max(1, (1 << 24) // (height * width))  # bounds the index tensor (128 MB)
        for c in range(0, len(crops), chunk):
            sl = slice(c, c + chunk)
            w = bg.widths[index[sl]]
            start = bg.starts[index[sl]] + y0[sl] * w + x0[sl]
            src = start[:, None, None] + rows[None, :, None] * w[:, None, None] + cols[None, None, :]
            canvas[sl] = _rows(bg.pixels, src.reshape(-1)).view(src.shape + (3,))
        return canvas

    def _patches(self, plans: list[ObjectPlan], pool: DeviceImages, first_cutout: list[int]):
        """All final patches (object ``n`` is cut-out ``plans[n].choice + first_cutout[n]`` of
        ``pool``) as one ragged (E, 4) float tensor (RGBA, whole grey levels), with
        each element's object, row and column, and whether it is the object's mask (alpha at
        or above MASK_THRESHOLD after the geometric transform, before blur and feathering)."""
        dev = self.device
        choice = torch.as_tensor([p.choice + first for p, first in zip(plans, first_cutout)], dtype=torch.int64, device=dev)
        src_h, src_w = pool.heights[choice], pool.widths[choice]
        rw = torch.as_tensor([p.resized[0] for p in plans], dtype=torch.int64, device=dev)
        rh = torch.as_tensor([p.resized[1] for p in plans], dtype=torch.int64, device=dev)
        area = torch.as_tensor([p.area_resize for p in plans], dtype=torch.bool, device=dev)
        flip = torch.as_tensor([p.flip for p in plans], dtype=torch.bool, device=dev)

        coloured = [n for n, p in enumerate(plans) if p.colour is not None]
        matrices = first = None
        if coloured:
            matrices = torch.zeros((len(plans), 3, 4), dtype=torch.float32, device=dev)
            matrices[:, :, :3] = torch.eye(3, device=dev)
            matrices[coloured] = torch.as_tensor(np.stack([plans[n].colour[:3, [0, 1, 2, 4]] for n in coloured]), dtype=torch.float32, device=dev)
            first = torch.as_tensor([p.colour_first for p in plans], dtype=torch.bool, device=dev)

        # Resize, horizontal pass: (source rows x output columns) per object.
        x_idx, x_w, x_starts, x_needed = _resize_taps(src_w, rw, area)
        owner, local, inter_starts = _ragged(src_h * rw)
        row, col = local // rw[owner], local % rw[owner]
        tap_row = x_starts[owner] + col
        base = pool.starts[choice][owner] + row * src_w[owner]
        source_matrices = None
        if first is not None and bool(first.any()):
            source_matrices = matrices

        def read_source(k: int, sel: torch.Tensor | None) -> torch.Tensor:
            b, t, o = (base, tap_row, owner) if sel is None else (base[sel], tap_row[sel], owner[sel])
            value = _rows(pool.pixels, b + _rows(x_idx[:, k], t)).float()
            if source_matrices is not None:
                sub = torch.nonzero(_rows(first, o)).squeeze(1)
                value[sub, :3] = _recolour(_rows(source_matrices, _rows(o, sub)), value[sub, :3])
            return value

        inter = _taps_sum(read_source, x_idx, x_w, tap_row, x_needed[owner])
        # Vertical pass, and the flip: output (rows x columns) per object.
        y_idx, y_w, y_starts, y_needed = _resize_taps(src_h, rh, area)
        owner, local, resized_starts = _ragged(rh * rw)
        row, col = local // rw[owner], local % rw[owner]
        read_col = torch.where(flip[owner], rw[owner] - 1 - col, col)
        tap_row = y_starts[owner] + row
        base = inter_starts[owner] + read_col
        stride = rw[owner]

        def read_rows(k: int, sel: torch.Tensor | None) -> torch.Tensor:
            if sel is None:
                return _rows(inter, base + _rows(y_idx[:, k], tap_row) * stride)
            return _rows(inter, _rows(base, sel) + _rows(y_idx[:, k], _rows(tap_row, sel)) * _rows(stride, sel))

        resized = _taps_sum(read_rows, y_idx, y_w, tap_row, y_needed[owner])
        resized = torch.round(resized).clamp_(0, 255)
        del inter

        # Rotation: each final pixel read from the framed resized patch, OpenCV's warpAffine rules.
        fh = torch.as_tensor([p.shape[0] for p in plans], dtype=torch.int64, device=dev)
        fw = torch.as_tensor([p.shape[1] for p in plans], dtype=torch.int64, device=dev)
        owner, local, starts = _ragged(fh * fw)
        y, x = local // fw[owner], local % fw[owner]
        rotated_objects = [n for n, p in enumerate(plans) if p.rotation is not None]
        if not rotated_objects:
            patches = resized
        else:
            patches = torch.empty((owner.numel(), 4), dtype=torch.float32, device=dev)
            rotated = torch.zeros(len(plans), dtype=torch.bool, device=dev)
            rotated[rotated_objects] = True
            plain = ~rotated[owner]
            patches[plain] = resized[resized_starts[owner[plain]] + local[plain]]
            sel = torch.nonzero(~plain).squeeze(1)
            o = owner[sel]
            inverse = torch.zeros((len(plans), 6), dtype=torch.float64, device=dev)
            corner = torch.zeros((len(plans), 2), dtype=torch.int64, device=dev)
            inverse[rotated_objects] = torch.as_tensor([plans[n].rotation[0] for n in rotated_objects], dtype=torch.float64, device=dev)
            corner[rotated_objects] = torch.as_tensor([plans[n].rotation[1:] for n in rotated_objects], dtype=torch.int64, device=dev)
            gx = (x[sel] + corner[o, 1]).double()
            gy = (y[sel] + corner[o, 0]).double()
            m = inverse[o]
            # Fixed point as OpenCV: 10-bit coordinates rounded to 1/32 pixel.
            fx = torch.floor((torch.round(m[:, 0] * gx * 1024) + torch.round((m[:, 1] * gy + m[:, 2]) * 1024) + 16) / 32)
            fy = torch.floor((torch.round(m[:, 3] * gx * 1024) + torch.round((m[:, 4] * gy + m[:, 5]) * 1024) + 16) / 32)
            ix, iy = torch.floor(fx / 32).long(), torch.floor(fy / 32).long()
            ax, ay = ((fx - ix * 32) / 32).float(), ((fy - iy * 32) / 32).float()
            frame_w, frame_h = rw[o] + 2, rh[o] + 2
            acc = torch.zeros((sel.numel(), 4), dtype=torch.float32, device=dev)
            for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
                u = (ix + dx).clamp(min=0)
                u = torch.minimum(u, frame_w - 1)
                v = (iy + dy).clamp(min=0)
                v = torch.minimum(v, frame_h - 1)
                inside = (u >= 1) & (u <= rw[o]) & (v >= 1) & (v <= rh[o])
                ru = torch.minimum((u - 1).clamp(min=0), rw[o] - 1)
                rv = torch.minimum((v - 1).clamp(min=0), rh[o] - 1)
                value = _rows(resized, resized_starts[o] + rv * rw[o] + ru)
                value[:, 3] *= inside
                weight = (ax if dx else 1 - ax) * (ay if dy else 1 - ay)
                acc += value * weight[:, None]
            patches[sel] = torch.round(acc).clamp_(0, 255)
        del resized
        mask = patches[:, 3] >= MASK_THRESHOLD  # as the CPU path: right after the geometry, before blur

        # Colour matrix (on the pasted pixels, unless done on the cut-out's), noise, blur, feathering.
        if coloured:
            later = torch.as_tensor([p.colour is not None and not p.colour_first for p in plans], dtype=torch.bool, device=dev)
            sub = torch.nonzero(_rows(later, owner)).squeeze(1)
            patches[sub, :3] = _recolour(_rows(matrices, _rows(owner, sub)), patches[sub, :3])
        noisy = [n for n, p in enumerate(plans) if p.noise is not None]
        if noisy:
            first = np.cumsum([0] + [p.shape[0] * p.shape[1] for p in plans])
            noise = np.zeros((int(first[-1]), 3), np.float32)
            for n in noisy:
                noise[first[n] : first[n + 1]] = plans[n].noise.reshape(-1, 3)
            # The CPU path's float32 sum, rounded half up and saturated.
            patches[:, :3] = torch.floor((torch.from_numpy(noise).to(dev) + patches[:, :3] + 0.5).clamp_(0, 255))
        patches = self._filter(patches, owner, y, x, starts, fh, fw, [p.blur_sigma for p in plans], constant=False)
        feathered = self._filter(patches[:, 3:4].clone(), owner, y, x, starts, fh, fw, [p.feather for p in plans], constant=True)
        patches[:, 3:4] = torch.minimum(patches[:, 3:4], feathered)
        return patches, owner, y, x, mask

    def _filter(self, values, owner, y, x, starts, fh, fw, sigmas: list[float], constant: bool):
        """``values`` with the elements of every object whose sigma is > 0 blurred by that
        sigma (rounded to whole grey levels); the rest unchanged."""
        chosen = [n for n, s in enumerate(sigmas) if s > 0]
        if not chosen:
            return values
        kernels = [gaussian_kernel(sigmas[n]) for n in chosen]
        width = max(k.size for k in kernels)
        table = torch.zeros((len(sigmas), width), dtype=torch.float32, device=self.device)
        for n, k in zip(chosen, kernels):
            pad = (width - k.size) // 2
            table[n, pad : pad + k.size] = torch.from_numpy(k.astype(np.float32))
        selected = torch.zeros(len(sigmas), dtype=torch.bool, device=self.device)
        selected[chosen] = True
        sel = torch.nonzero(selected[owner]).squeeze(1)
        blurred = _blur(values, sel, owner, y, x, starts, fh, fw, table, constant)
        out = values.clone()
        out[sel] = torch.round(blurred).clamp_(0, 255)
        return out


# -- encoding -------------------------------------------------------------------------------------


def encode_images(images: torch.Tensor, quality: int) -> list[bytes]:
    """JPEG bytes of a ``(B, H, W, 3)`` uint8 RGB batch: nvJPEG through torchvision for CUDA
    tensors (the whole batch in one call), else OpenCV's libjpeg-turbo (the CPU path's encoder).

    The CUDA encoder reads its input on its own stream: the caller's stream is drained before
    the call (the render kernels must have finished writing the pixels) and after it (the input
    must outlive the encode), the synchronisation whose absence corrupted outputs in
    torchvision issues 8587 / 9060.
    """
    if images.device.type == "cuda":
        from torchvision.io import encode_jpeg as encode_on_device

        chw = images.permute(0, 3, 1, 2).contiguous()
        torch.cuda.synchronize(images.device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision 0.29 deprecates its codecs for TorchCodec
            encoded = encode_on_device(list(chw), quality=quality)
        torch.cuda.synchronize(images.device)
        return [bytes(e.cpu().numpy()) for e in encoded]
    from synthgen.imageio import encode_jpeg

    host = images.cpu().numpy()
    return [encode_jpeg(image, quality) for image in host]
