"""Composing one synthetic image: background, layout, occlusion rule, blending, boxes."""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass
from typing import Protocol, Sequence

import cv2
import numpy as np

from synthgen.compositor.augment import ObjectPatch, add_texture, draw_photometry, lerp, mean_grey, recolour, rotated_extent, transform_geometry
from synthgen.compositor.blend import blend_alpha, blend_gaussian, blend_motion, blend_poisson
from synthgen.compositor.config import CompositeConfig
from synthgen.errors import InputError
from synthgen.sample import Annotation, Sample


class CutoutLike(Protocol):
    rgba: np.ndarray
    class_id: int
    grey: float | None  # the mean grey level of its pixels (see mean_grey), None: not known


class ObjectPoolLike(Protocol):
    classes: list[str]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> CutoutLike: ...


class RefreshingPoolLike(Protocol):
    """Objects that change along the run (a generator's blocks): sample ``index`` pastes from
    ``pool_for(index)``, a function of the index only. Its pools store every cut-out's grey
    level (the compositor's cache of computed ones is keyed by position in one pool)."""

    classes: list[str]

    def __len__(self) -> int: ...

    def pool_for(self, index: int) -> ObjectPoolLike: ...

    def block_of(self, index: int) -> int:
        """Which pool sample ``index`` pastes from: samples of one block share ``pool_for``."""
        ...

    def take_device_images(self, block: int):
        """Block ``block``'s cut-outs already on a torch device, or None (see the torch compositor)."""
        ...


class BackgroundPoolLike(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> np.ndarray: ...


class KeptObjectLike(Protocol):
    """An object already labelled in a background image (see synthgen.backgrounds.labels)."""

    class_id: int  # 0-based output class (an index into Compositor.categories)
    origin: tuple[int, int]  # top-left of ``patch.mask`` in the background image (pool pixels)
    patch: ObjectPatch  # its mask (the filled box when the annotation has none); rgba is None
    crowd: bool  # a COCO crowd region (iscrowd 1)


class BackgroundLabelsLike(Protocol):
    """The existing annotations of a background pool's images, for pasting into labelled images."""

    #: Class names of the annotations that are not among the object pool's classes: output
    #: categories after the object pool's.
    extra_classes: list[str]

    def objects(self, background: int) -> Sequence[KeptObjectLike]: ...


@dataclass
class _Placed:
    patch: ObjectPatch
    class_id: int
    origin: tuple[int, int]  # the patch's top-left corner on the canvas
    box: tuple[int, int, int, int]  # the mask's extent on the canvas (x0, y0, x1, y1), clipped
    #: A lower bound on the mask pixels still visible (inside the image, not covered by later
    #: objects), exact when ``exact``. Later objects subtract their box overlap (an upper bound
    #: on what they cover), so the occlusion rule needs pixel work only when the bound is tight.
    visible: int
    #: Visible pixels the occlusion rule requires of this object (min_visible of its full area).
    need: float
    exact: bool = True
    #: False for distractors: pasted and occluding like objects, never labelled.
    labelled: bool = True
    #: An object of the background image (kept annotations): not painted in the owner map, so
    #: kept objects never hide each other (their annotations overlap freely); only pasted
    #: objects cover them. ``patch.rgba`` is None.
    kept: bool = False
    #: A kept COCO crowd region: labelled with iscrowd 1, free to cover, kept while any of it shows.
    crowd: bool = False

    @property
    def full_area(self) -> int:  # mask pixels of the whole object, inside the image or not
        return self.patch.area


class _Owners:
    """Which object is on top at each pixel (-1: background), for the occlusion rule and the
    boxes of occluded or truncated objects. Painted on first use by replaying the objects placed
    so far: most samples (objects apart, inside the image) never need it."""

    def __init__(self, height: int, width: int, placed: list[_Placed]) -> None:
        self.shape = (height, width)
        self._placed = placed
        self._map: np.ndarray | None = None

    def placed(self, k: int) -> None:
        """Object ``k`` (the last in ``placed``) was pasted on top."""
        if self._map is not None:
            self._paint(k)

    @property
    def map(self) -> np.ndarray:
        if self._map is None:
            self._map = np.full(self.shape, -1, dtype=np.int16)
            for k in range(len(self._placed)):
                self._paint(k)
        return self._map

    def _paint(self, k: int) -> None:
        p = self._placed[k]
        if p.kept:
            return
        x0, y0 = p.origin
        bx0, by0, bx1, by1 = p.box
        region = self._map[by0:by1, bx0:bx1]
        # OpenCV's masked copy of a constant block: a third of what np.copyto(where=) costs.
        cv2.copyTo(np.full(region.shape, k, np.int16), p.patch.mask[by0 - y0 : by1 - y0, bx0 - x0 : bx1 - x0].view(np.uint8), region)


#: Uniform numbers drawn per object before its placement draws, in this order: which cut-out,
#: scale, aspect, flip, rotation, 7 photometric draws, blend mode, motion angle, motion length.
#: One call into NumPy per object: a call costs about as much as drawing a hundred numbers.
_OBJECT_DRAWS = 15


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of sample ``index``: a function of (seed, index) only, so any worker
    can render any sample and get the same bytes. Philox, a counter-based generator, keyed by
    the pair: every key is an independent stream by design, with no seeding hash to compute."""
    return np.random.Generator(np.random.Philox(key=[int(seed), int(index)]))


class _SampleStreams:
    """:func:`sample_rng` for one process, re-keying one generator instead of building one per
    sample (about 1.3 us against 15-20: a few percent of a small sample's whole budget). The
    state handed to the bit generator is built once; its setter copies the values."""

    def __init__(self) -> None:
        self._bits = np.random.Philox(key=0)
        self._generator = np.random.Generator(self._bits)
        self._key = np.zeros(2, np.uint64)
        start = np.zeros(4, np.uint64)
        self._state = {
            "bit_generator": "Philox",
            "state": {"counter": start, "key": self._key},
            "buffer": start,
            "buffer_pos": 4,
            "has_uint32": 0,
            "uinteger": 0,
        }

    def __call__(self, seed: int, index: int) -> np.random.Generator:
        self._key[0], self._key[1] = seed, index
        self._bits.state = self._state
        return self._generator


class Compositor:
    """Renders sample ``i`` of a run from an object pool and a background pool.

    The pools are read-only; one Compositor per process. ``render`` is a pure function of
    ``(seed, index)`` given the same pools and config.
    """

    def __init__(
        self,
        config: CompositeConfig,
        objects: ObjectPoolLike | RefreshingPoolLike,
        backgrounds: BackgroundPoolLike,
        distractors: ObjectPoolLike | None = None,
        labels: BackgroundLabelsLike | None = None,
    ) -> None:
        """``distractors``: a pool pasted without labels (``config.distractors_per_image``);
        ``labels``: the backgrounds' own annotations, kept and updated under occlusion."""
        self.config = config.validate()
        self.objects = objects
        self._pool_for = getattr(objects, "pool_for", None)
        self.backgrounds = backgrounds
        self.distractors = distractors
        self.labels = labels
        if len(objects) == 0:
            raise ValueError("the object pool is empty")
        if len(backgrounds) == 0:
            raise ValueError("the background pool is empty")
        if distractors is not None and len(distractors) == 0:
            raise ValueError("the distractor pool is empty")
        self._grey: dict[int, float] = {}  # mean grey levels the pool does not store, once computed
        self._distractor_grey: dict[int, float] = {}
        self._pick = class_picker(self.config.class_balance, objects)
        self._streams = _SampleStreams()

    @property
    def categories(self) -> list[str]:
        """Output class names: the object pool's, then those only the kept annotations have."""
        extra = [] if self.labels is None else list(self.labels.extra_classes)
        return list(self.objects.classes) + extra

    def render(self, seed: int, index: int, keep_masks: bool = False, out: np.ndarray | None = None) -> Sample:
        """Sample ``index`` of the run seeded ``seed``. ``out``, a (height, width, 3) uint8 array,
        receives the image instead of a new array (the caller then owns reusing it)."""
        cfg = self.config
        rng = self._streams(seed, index)
        u_background, u_y, u_x, u_count = rng.random(4).tolist()
        canvas = self._background(u_background, u_y, u_x, out)
        placed: list[_Placed] = []
        owners = _Owners(cfg.height, cfg.width, placed)
        if self.labels is not None:  # the background's own objects, at the bottom of the scene
            _, background, y0, x0 = self._background_crop(u_background, u_y, u_x)
            self._keep_labels(self.labels.objects(background), (x0, y0), placed)
        low, high = cfg.objects_per_image
        n_objects = low + int(u_count * (high - low + 1))
        skipped = 0
        objects = self.objects if self._pool_for is None else self._pool_for(index)
        for _ in range(n_objects):
            skipped += not self._paste(objects, self._pick if objects is self.objects else None, cfg.scale, self._grey, rng, canvas, owners, placed)
        if self.distractors is not None:  # after the objects, from draws of their own
            low, high = cfg.distractors_per_image
            for _ in range(low + int(rng.random() * (high - low + 1))):
                self._paste(self.distractors, None, cfg.distractor_scale, self._distractor_grey, rng, canvas, owners, placed, labelled=False)
        box, min_visible = cfg.box, cfg.min_visible
        annotations = [a for a in (self._annotation(owners, k, p, keep_masks, box, min_visible) for k, p in enumerate(placed)) if a]
        return Sample(index=index, image=canvas, annotations=annotations, skipped_objects=skipped)

    def _paste(self, pool: ObjectPoolLike, pick, scale, greys: dict, rng: np.random.Generator, canvas: np.ndarray,
               owners: _Owners, placed: list[_Placed], labelled: bool = True) -> bool:
        """Draw one cut-out of ``pool`` (``pick`` maps the first uniform draw to it; None: a
        uniform choice), augment it at a size from ``scale``, place it under the occlusion rule
        and blend it in. Returns False when it found no place (skipped)."""
        cfg = self.config
        draws = rng.random(_OBJECT_DRAWS + 2 * cfg.max_tries).tolist()
        choice = int(draws[0] * len(pool)) if pick is None else pick(draws[0])
        cutout = pool[choice]
        # Objects leave the scale and grey cache to their defaults, the config's and the object pool's.
        patch = self._augmented(choice, cutout, draws, rng) if labelled else self._augmented(choice, cutout, draws, rng, scale, greys)
        blend_mode = cfg.blend[int(draws[12] * len(cfg.blend))]
        motion_lo, motion_hi = cfg.motion_length
        blend_params = (draws[13] * 180.0, motion_lo + int(draws[14] * (motion_hi - motion_lo + 1)))
        position = None if patch is None else self._place(patch, owners, placed, draws[_OBJECT_DRAWS:])
        if position is None:
            return False
        x0, y0, box, inside = position
        self._commit(owners, placed, patch, x0, y0, box, inside, cutout.class_id, labelled)
        self._blend(canvas, patch, x0, y0, blend_mode, blend_params)
        return True

    def _keep_labels(self, kept: Sequence[KeptObjectLike], crop: tuple[int, int], placed: list[_Placed]) -> None:
        """Enter the background's own objects (shifted by the ``crop`` offset) at the bottom of
        ``placed``: pasted objects may cover at most ``protect`` of each (what is already cut
        off by the crop is not theirs to cover).

        A crowd region (COCO ``iscrowd`` 1) is an ignore region, not an instance: pasting over it
        loses no object's label, so ``protect`` does not apply to it (nothing it contains could
        be dropped by the visibility rule). It stays a crowd region, shrunk to what remains
        visible, as long as any pixel of it does: evaluation then still ignores detections of
        the unlabelled instances in what is left of it."""
        cfg = self.config
        protect = 1.0 - cfg.min_visible if cfg.protect is None else cfg.protect
        height, width = cfg.height, cfg.width
        for obj in kept:
            patch = obj.patch
            x0, y0 = obj.origin[0] - crop[0], obj.origin[1] - crop[1]
            ex0, ey0, ex1, ey1 = patch.extent
            bx0, by0, bx1, by1 = max(x0 + ex0, 0), max(y0 + ey0, 0), min(x0 + ex1, width), min(y0 + ey1, height)
            if bx0 >= bx1 or by0 >= by1:
                continue  # outside the crop
            inside = patch.area
            if (bx0, by0, bx1, by1) != (x0 + ex0, y0 + ey0, x0 + ex1, y0 + ey1):
                inside = int(np.count_nonzero(patch.mask[by0 - y0 : by1 - y0, bx0 - x0 : bx1 - x0]))
                if inside == 0:
                    continue
            need = -math.inf if obj.crowd else inside - protect * patch.area - 1e-6
            placed.append(_Placed(patch, obj.class_id, (x0, y0), (bx0, by0, bx1, by1), inside, need, kept=True, crowd=obj.crowd))

    # -- steps -------------------------------------------------------------------------------

    def _background(self, u_background: float, u_y: float, u_x: float, out: np.ndarray | None):
        """A crop of the output size from the background ``u_background`` picks, at the place
        ``u_y``, ``u_x`` pick (uniform numbers in [0, 1))."""
        cfg = self.config
        bg, _, y0, x0 = self._background_crop(u_background, u_y, u_x)
        crop = bg[y0 : y0 + cfg.height, x0 : x0 + cfg.width]
        if out is None:
            out = np.empty((cfg.height, cfg.width, 3), np.uint8)
        cv2.copyTo(crop, None, out)  # row by row: about 15% faster than NumPy's strided copy
        return out

    def _background_crop(self, u_background: float, u_y: float, u_x: float) -> tuple[np.ndarray, int, int, int]:
        """The background ``u_background`` picks, its index, and the top-left corner (y0, x0) of
        the crop that ``u_y``, ``u_x`` pick."""
        cfg = self.config
        index = int(u_background * len(self.backgrounds))
        bg = self.backgrounds[index]
        h, w = bg.shape[:2]
        if h < cfg.height or w < cfg.width:
            raise ValueError(
                f"background of {w}x{h} is smaller than the output {cfg.width}x{cfg.height}: "
                "the background pool was built for another output size"
            )
        return bg, index, int(u_y * (h - cfg.height + 1)), int(u_x * (w - cfg.width + 1))

    def _augmented(self, choice: int, cutout: CutoutLike, draws: list[float], rng: np.random.Generator,
                   scale=None, greys: dict | None = None) -> ObjectPatch | None:
        """Cut-out ``choice`` scaled (within ``scale``, default the config's), flipped, rotated
        and recoloured by ``draws[1:12]``; ``rng`` draws the noise pixels. ``greys`` caches the
        mean grey levels of the pool the cut-out is from (default: the object pool's)."""
        rgba = cutout.rgba
        box_w, box_h, flip, degrees = self._geometry(rgba.shape, draws, scale)
        photometry = draw_photometry(draws[5:12], self.config)
        grey = self._grey_level(choice, cutout, greys) if photometry.recolours else 0.0
        recolour_first = photometry.recolours and rgba.shape[0] * rgba.shape[1] < box_w * box_h
        if recolour_first:  # fewer pixels to recolour in the cut-out than in the pasted object
            rgba = recolour(rgba, photometry, grey)
        patch = transform_geometry(rgba, box_w, box_h, flip, degrees)
        if patch is None:
            return None
        if photometry.recolours and not recolour_first:
            recolour(patch.rgba, photometry, grey, out=patch.rgba)
        add_texture(patch, photometry, rng)
        return patch

    def _grey_level(self, choice: int, cutout: CutoutLike, greys: dict | None = None) -> float:
        """The cut-out's mean grey level (contrast's pivot), from the pool or computed once per
        cut-out per process for pools that do not store it (cached in ``greys``, default the
        object pool's cache)."""
        grey = cutout.grey
        if grey is None:
            greys = self._grey if greys is None else greys
            grey = greys.get(choice)
            if grey is None:
                grey = greys[choice] = mean_grey(cutout.rgba)
        return grey

    def _geometry(self, shape: tuple[int, ...], draws: list[float], scale=None) -> tuple[float, float, bool, float]:
        """The pasted size (before rotation; within ``scale``, default the config's), flip and
        rotation in degrees that ``draws[1:5]`` pick for a cut-out of ``shape`` (h, w, ...)."""
        cfg = self.config
        side = lerp(cfg.scale if scale is None else scale, draws[1]) * min(cfg.width, cfg.height)
        if cfg.aspect == "stretch":
            lo, hi = cfg.aspect_range
            aspect = math.exp(lerp((math.log(lo), math.log(hi)), draws[2]))
        else:
            aspect = shape[1] / shape[0]
        box_w, box_h = side * math.sqrt(aspect), side / math.sqrt(aspect)
        flip = draws[3] < cfg.flip
        degrees = (2.0 * draws[4] - 1.0) * cfg.rotation
        # Without truncation the object must fit in the image: shrink it (keeping its shape) if the
        # drawn size and rotation would not.
        if cfg.truncation == 0.0:
            ext_w, ext_h = rotated_extent(box_w, box_h, degrees)
            shrink = min(1.0, (cfg.width - 1) / ext_w, (cfg.height - 1) / ext_h)
            box_w, box_h = box_w * shrink, box_h * shrink
        return box_w, box_h, flip, degrees

    def _place(self, patch: ObjectPatch, owners: _Owners, placed: Sequence[_Placed], draws: Sequence[float]):
        """Try the positions given by ``draws`` (pairs of uniform numbers, ``max_tries`` of
        them) until one keeps every object (old and new) visible enough.

        Returns ``(x0, y0, the new mask's box on the canvas, its pixels inside the image)`` or
        None after ``max_tries`` failures. Pixels are only looked at where a bound cannot
        decide: the common cases (no overlap; a small overlap; fully inside the image) cost no
        pixel work. The loop is written out (no helper calls per pair of boxes): it runs about
        150 times per 10-object sample.
        """
        cfg = self.config
        height, width = cfg.height, cfg.width
        full_area = patch.area
        # Allow the patch to stick out by the truncation fraction of its size on each side.
        slack_x = int(math.floor(patch.width * cfg.truncation))
        slack_y = int(math.floor(patch.height * cfg.truncation))
        x_lo, x_hi = -slack_x, width - patch.width + slack_x
        y_lo, y_hi = -slack_y, height - patch.height + slack_y
        if x_hi < x_lo or y_hi < y_lo:
            return None
        required_own = max(cfg.min_visible, 1.0 - cfg.truncation) * full_area
        ex0, ey0, ex1, ey1 = patch.extent
        for fx, fy in zip(draws[0::2], draws[1::2]):
            x0 = x_lo + int(fx * (x_hi - x_lo + 1))
            y0 = y_lo + int(fy * (y_hi - y_lo + 1))
            bx0, by0, bx1, by1 = x0 + ex0, y0 + ey0, x0 + ex1, y0 + ey1
            inside = full_area
            if bx0 < 0 or by0 < 0 or bx1 > width or by1 > height:  # truncated: count what is left
                bx0, by0, bx1, by1 = max(bx0, 0), max(by0, 0), min(bx1, width), min(by1, height)
                if bx0 >= bx1 or by0 >= by1:
                    continue
                inside = int(np.count_nonzero(patch.mask[by0 - y0 : by1 - y0, bx0 - x0 : bx1 - x0]))
                if inside == 0 or inside < required_own - 1e-6:
                    continue
            for k, p in enumerate(placed):
                px0, py0, px1, py1 = p.box
                if bx0 >= px1 or px0 >= bx1 or by0 >= py1 or py0 >= by1:
                    continue  # boxes apart: nothing of k can be covered (the common case)
                overlap = (max(bx0, px0), max(by0, py0), min(bx1, px1), min(by1, py1))
                area = (overlap[2] - overlap[0]) * (overlap[3] - overlap[1])
                if p.visible - area >= p.need:
                    continue  # even if the whole box overlap were covered, k stays visible enough
                if not self._keeps_visible(k, p, patch, x0, y0, overlap, area, owners):
                    break
            else:
                return x0, y0, (bx0, by0, bx1, by1), inside
        return None

    @staticmethod
    def _keeps_visible(k: int, p: _Placed, patch: ObjectPatch, x0: int, y0: int, overlap, area: int, owners: _Owners) -> bool:
        """Whether object ``k`` stays visible enough if ``patch`` is pasted at (x0, y0), given
        the overlap of their boxes and its ``area``, when the box-level bound alone could not tell."""
        owner = owners.map
        if not p.exact:
            bx0, by0, bx1, by1 = p.box
            p.visible, p.exact = int(np.count_nonzero(_owned(owner, k, p, bx0, by0, bx1, by1))), True
            if p.visible - area >= p.need:
                return True
        ox0, oy0, ox1, oy1 = overlap
        covered = _owned(owner, k, p, ox0, oy0, ox1, oy1) & patch.mask[oy0 - y0 : oy1 - y0, ox0 - x0 : ox1 - x0]
        return p.visible - int(np.count_nonzero(covered)) >= p.need

    def _commit(self, owners: _Owners, placed: list[_Placed], patch: ObjectPatch, x0: int, y0: int, box, inside: int,
                class_id: int, labelled: bool = True) -> None:
        """Record ``patch`` as pasted at (x0, y0), its mask's box ``box`` on the canvas and
        ``inside`` of its pixels in the image: earlier objects whose boxes it overlaps lose that
        overlap from their visible bound (no longer exact). Nothing protects a distractor
        (``labelled`` False) from later ones."""
        bx0, by0, bx1, by1 = box
        for p in placed:
            px0, py0, px1, py1 = p.box
            if bx0 < px1 and px0 < bx1 and by0 < py1 and py0 < by1:
                p.visible -= (min(bx1, px1) - max(bx0, px0)) * (min(by1, py1) - max(by0, py0))
                p.exact = False
        need = self.config.min_visible * patch.area - 1e-6 if labelled else -math.inf
        placed.append(_Placed(patch, class_id, (x0, y0), box, inside, need, labelled=labelled))
        owners.placed(len(placed) - 1)

    def _blend(self, canvas: np.ndarray, patch: ObjectPatch, x0: int, y0: int, mode: str, params) -> None:
        angle, length = params
        if mode == "poisson" and blend_poisson(canvas, patch, x0, y0):
            return
        if mode in ("gaussian", "poisson"):  # poisson falls back to feathering at the border
            blend_gaussian(canvas, patch, x0, y0, self.config.feather)
        elif mode == "motion":
            blend_motion(canvas, patch, x0, y0, length, angle)
        else:
            blend_alpha(canvas, patch.rgba, x0, y0)

    @staticmethod
    def _annotation(owners: _Owners, k: int, p: _Placed, keep_mask: bool, box: str = "visible", min_visible: float = 0.0) -> Annotation | None:
        """Object ``k``'s annotation: its visible box, amodal box (the whole object's mask
        extent, unclipped) and visible fraction, ``box`` choosing the main box; None for a
        distractor, an object with no pixel left, or a kept object (not a crowd region) less than
        ``min_visible`` visible."""
        if not p.labelled:
            return None
        bx0, by0, bx1, by1 = p.box
        area = p.visible
        visible = None
        if keep_mask or not (p.exact and p.visible == p.full_area):  # touched: look at the pixels
            visible = _owned(owners.map, k, p, bx0, by0, bx1, by1)
            x, y, w, h = cv2.boundingRect(visible.view(np.uint8))
            if w == 0:
                return None
            area = cv2.countNonZero(visible.view(np.uint8))
            visible = visible[y : y + h, x : x + w]
            bx0, by0 = bx0 + x, by0 + y
            bx1, by1 = bx0 + w, by0 + h
        if p.kept and not p.crowd and area < min_visible * p.full_area - 1e-6:
            return None  # the same rule as pasted objects: too little of it is left
        mask = None
        if keep_mask:
            mask = np.zeros(owners.shape, dtype=bool)
            mask[by0:by1, bx0:bx1] = visible
        x0, y0 = p.origin
        ex0, ey0, ex1, ey1 = p.patch.extent
        ax0, ay0, ax1, ay1 = x0 + ex0, y0 + ey0, x0 + ex1, y0 + ey1
        visible_box = (float(bx0), float(by0), float(bx1 - bx0), float(by1 - by0))
        main = visible_box
        if box == "amodal":
            height, width = owners.shape
            cx0, cy0, cx1, cy1 = max(ax0, 0), max(ay0, 0), min(ax1, width), min(ay1, height)
            main = (float(cx0), float(cy0), float(cx1 - cx0), float(cy1 - cy0))
        return Annotation(
            bbox=main,
            category_id=p.class_id + 1,
            area=float(area),
            mask=mask,
            visible_fraction=area / max(p.full_area, 1),
            visible_bbox=visible_box,
            amodal_bbox=(float(ax0), float(ay0), float(ax1 - ax0), float(ay1 - ay0)),
            iscrowd=p.crowd,
        )


def _owned(owner: np.ndarray, k: int, p: _Placed, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """Where object ``k`` (``p``) is visible within canvas rows ``y0:y1``, columns ``x0:x1``: it
    owns the pixel, or, for a kept object (never in the owner map), its mask is there and no
    pasted object is."""
    if not p.kept:
        return owner[y0:y1, x0:x1] == k
    ox, oy = p.origin
    return (owner[y0:y1, x0:x1] < 0) & p.patch.mask[y0 - oy : y1 - oy, x0 - ox : x1 - ox]


def class_picker(balance, objects: ObjectPoolLike):
    """How the first uniform draw of an object picks its cut-out under a class balance: None for
    "source" (``int(u * len(objects))``, every cut-out alike); otherwise a function that finds
    the class whose share of [0, 1) holds ``u`` (shares by the weights) and the cut-out at the
    same relative place among that class's cut-outs: still one draw per object."""
    if balance == "source":
        return None
    classes = list(objects.classes)
    weights = [1.0] * len(classes) if balance == "uniform" else [float(w) for w in balance]
    if len(weights) != len(classes):
        raise InputError(
            f"--class-balance gives {len(weights)} weights, but the objects have {len(classes)} classes "
            f"({', '.join(classes)}): give one weight per class, in that order"
        )
    members: list[list[int]] = [[] for _ in classes]
    for i in range(len(objects)):
        members[objects[i].class_id].append(i)
    empty = [name for name, m, w in zip(classes, members, weights) if w > 0 and not m]
    if empty:
        raise InputError(f"--class-balance draws class(es) {', '.join(empty)}, but the objects have no cut-out of them")
    drawn = [(w, m) for w, m in zip(weights, members) if w > 0]
    total = sum(w for w, _ in drawn)
    edges = list(itertools.accumulate(w / total for w, _ in drawn))
    edges[-1] = 1.0
    starts = [0.0] + edges[:-1]
    lists = [m for _, m in drawn]

    def pick(u: float) -> int:
        c = min(bisect.bisect_right(edges, u), len(edges) - 1)
        share = (u - starts[c]) / (edges[c] - starts[c])
        chosen = lists[c]
        return chosen[min(int(share * len(chosen)), len(chosen) - 1)]

    return pick
