"""Composing one synthetic image: background, layout, occlusion rule, blending, boxes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from synthgen.compositor.augment import ObjectPatch, jitter_photometry, rotated_extent, transform_geometry
from synthgen.compositor.blend import blend_alpha, blend_gaussian, blend_motion, blend_poisson, clip_to_canvas
from synthgen.compositor.config import CompositeConfig
from synthgen.sample import Annotation, Sample


class CutoutLike(Protocol):
    rgba: np.ndarray
    class_id: int


class ObjectPoolLike(Protocol):
    classes: list[str]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> CutoutLike: ...


class BackgroundPoolLike(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> np.ndarray: ...


@dataclass
class _Placed:
    patch: ObjectPatch
    x0: int
    y0: int
    class_id: int
    full_area: int  # mask pixels of the whole object, inside the image or not
    visible_area: int  # mask pixels inside the image and not covered by later objects


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of sample ``index``: a function of (seed, index) only, so any worker
    can render any sample and get the same bytes."""
    return np.random.default_rng([int(seed), int(index)])


class Compositor:
    """Renders sample ``i`` of a run from an object pool and a background pool.

    The pools are read-only; one Compositor per process. ``render`` is a pure function of
    ``(seed, index)`` given the same pools and config.
    """

    def __init__(self, config: CompositeConfig, objects: ObjectPoolLike, backgrounds: BackgroundPoolLike) -> None:
        self.config = config.validate()
        self.objects = objects
        self.backgrounds = backgrounds
        if len(objects) == 0:
            raise ValueError("the object pool is empty")
        if len(backgrounds) == 0:
            raise ValueError("the background pool is empty")

    @property
    def categories(self) -> list[str]:
        return list(self.objects.classes)

    def render(self, seed: int, index: int, keep_masks: bool = False) -> Sample:
        cfg = self.config
        rng = sample_rng(seed, index)
        canvas = self._background(rng)
        height, width = canvas.shape[:2]
        # Which object is on top at each pixel (-1: background), for the occlusion rule and boxes.
        owner = np.full((height, width), -1, dtype=np.int16)
        placed: list[_Placed] = []
        n_objects = int(rng.integers(cfg.objects_per_image[0], cfg.objects_per_image[1] + 1))
        skipped = 0
        for _ in range(n_objects):
            cutout = self.objects[int(rng.integers(len(self.objects)))]
            patch = self._augmented(cutout.rgba, rng)
            blend_mode = cfg.blend[int(rng.integers(len(cfg.blend)))]
            blend_params = (rng.uniform(0.0, 180.0), int(rng.integers(cfg.motion_length[0], cfg.motion_length[1] + 1)))
            position = None if patch is None else self._place(patch, owner, placed, rng)
            if position is None:
                skipped += 1
                continue
            x0, y0, inside = position
            self._commit(owner, placed, patch, x0, y0, inside, cutout.class_id)
            self._blend(canvas, patch, x0, y0, blend_mode, blend_params)
        annotations = [a for a in (self._annotation(owner, k, p, keep_masks) for k, p in enumerate(placed)) if a]
        return Sample(index=index, image=canvas, annotations=annotations, skipped_objects=skipped)

    # -- steps -------------------------------------------------------------------------------

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        cfg = self.config
        bg = self.backgrounds[int(rng.integers(len(self.backgrounds)))]
        h, w = bg.shape[:2]
        if h < cfg.height or w < cfg.width:
            raise ValueError(
                f"background of {w}x{h} is smaller than the output {cfg.width}x{cfg.height}: "
                "the background pool was built for another output size"
            )
        y0 = int(rng.integers(h - cfg.height + 1))
        x0 = int(rng.integers(w - cfg.width + 1))
        return np.array(bg[y0 : y0 + cfg.height, x0 : x0 + cfg.width], dtype=np.uint8, copy=True)

    def _augmented(self, rgba: np.ndarray, rng: np.random.Generator) -> ObjectPatch | None:
        cfg = self.config
        side = rng.uniform(*cfg.scale) * min(cfg.width, cfg.height)
        if cfg.aspect == "stretch":
            lo, hi = cfg.aspect_range
            aspect = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        else:
            aspect = rgba.shape[1] / rgba.shape[0]
        box_w, box_h = side * math.sqrt(aspect), side / math.sqrt(aspect)
        flip = bool(rng.random() < cfg.flip)
        degrees = float(rng.uniform(-cfg.rotation, cfg.rotation)) if cfg.rotation else 0.0
        # Without truncation the object must fit in the image: shrink it (keeping its shape) if the
        # drawn size and rotation would not.
        if cfg.truncation == 0.0:
            ext_w, ext_h = rotated_extent(box_w, box_h, degrees)
            shrink = min(1.0, (cfg.width - 1) / ext_w, (cfg.height - 1) / ext_h)
            box_w, box_h = box_w * shrink, box_h * shrink
        patch = transform_geometry(rgba, box_w, box_h, flip, degrees)
        if patch is not None:
            jitter_photometry(patch, rng, cfg)
        return patch

    def _place(self, patch: ObjectPatch, owner: np.ndarray, placed: Sequence[_Placed], rng: np.random.Generator):
        """Draw positions until one keeps every object (old and new) visible enough.

        Returns ``(x0, y0, pixels of the new mask inside the image)`` or None after
        ``max_tries`` failures. Exactly ``2 * max_tries`` numbers are drawn either way.
        """
        cfg = self.config
        height, width = owner.shape
        full_area = int(patch.mask.sum())
        # Allow the patch to stick out by the truncation fraction of its size on each side.
        slack_x = int(math.floor(patch.width * cfg.truncation))
        slack_y = int(math.floor(patch.height * cfg.truncation))
        x_lo, x_hi = -slack_x, width - patch.width + slack_x
        y_lo, y_hi = -slack_y, height - patch.height + slack_y
        draws = rng.random((cfg.max_tries, 2))
        if x_hi < x_lo or y_hi < y_lo:
            return None
        required_own = max(cfg.min_visible, 1.0 - cfg.truncation) * full_area
        visible = np.array([p.visible_area for p in placed], dtype=np.int64)
        required_old = np.array([cfg.min_visible * p.full_area for p in placed])
        for fx, fy in draws:
            x0 = x_lo + int(fx * (x_hi - x_lo + 1))
            y0 = y_lo + int(fy * (y_hi - y_lo + 1))
            clipped = clip_to_canvas(x0, y0, patch.width, patch.height, width, height)
            if clipped is None:
                continue
            canvas_sl, patch_sl = clipped
            mask_inside = patch.mask[patch_sl]
            inside = int(mask_inside.sum())
            if inside < required_own - 1e-6 or inside == 0:
                continue
            if placed:
                covered = owner[canvas_sl][mask_inside]
                lost = np.bincount(covered[covered >= 0], minlength=len(placed))
                if np.any(visible - lost < required_old - 1e-6):
                    continue
            return x0, y0, inside
        return None

    @staticmethod
    def _commit(owner, placed: list[_Placed], patch: ObjectPatch, x0: int, y0: int, inside: int, class_id: int) -> None:
        height, width = owner.shape
        canvas_sl, patch_sl = clip_to_canvas(x0, y0, patch.width, patch.height, width, height)
        mask_inside = patch.mask[patch_sl]
        region = owner[canvas_sl]
        covered = region[mask_inside]
        if placed:
            lost = np.bincount(covered[covered >= 0], minlength=len(placed))
            for k, n in enumerate(lost):
                placed[k].visible_area -= int(n)
        region[mask_inside] = len(placed)
        placed.append(_Placed(patch, x0, y0, class_id, int(patch.mask.sum()), inside))

    def _blend(self, canvas: np.ndarray, patch: ObjectPatch, x0: int, y0: int, mode: str, params) -> None:
        angle, length = params
        if mode == "poisson" and blend_poisson(canvas, patch, x0, y0):
            return
        if mode in ("gaussian", "poisson"):  # poisson falls back to feathering at the border
            blend_gaussian(canvas, patch, x0, y0, self.config.feather)
        elif mode == "motion":
            blend_motion(canvas, patch, x0, y0, length, angle)
        else:
            blend_alpha(canvas, patch, x0, y0)

    @staticmethod
    def _annotation(owner: np.ndarray, k: int, p: _Placed, keep_mask: bool) -> Annotation | None:
        height, width = owner.shape
        canvas_sl, _ = clip_to_canvas(p.x0, p.y0, p.patch.width, p.patch.height, width, height)
        visible = owner[canvas_sl] == k
        rows = np.flatnonzero(visible.any(axis=1))
        if rows.size == 0:
            return None
        cols = np.flatnonzero(visible.any(axis=0))
        x = canvas_sl[1].start + int(cols[0])
        y = canvas_sl[0].start + int(rows[0])
        w = int(cols[-1]) - int(cols[0]) + 1
        h = int(rows[-1]) - int(rows[0]) + 1
        area = int(visible.sum())
        mask = None
        if keep_mask:
            mask = np.zeros((height, width), dtype=bool)
            mask[canvas_sl] = visible
        return Annotation(
            bbox=(float(x), float(y), float(w), float(h)),
            category_id=p.class_id + 1,
            area=float(area),
            mask=mask,
            visible_fraction=area / max(p.full_area, 1),
        )
