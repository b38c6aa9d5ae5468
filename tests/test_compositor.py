"""The compositor: boxes are the visible extent of each pasted mask, under occlusion and
truncation, for every blend mode; rendering is a pure function of (seed, index)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from synthgen.compositor import PRESETS, CompositeConfig, Compositor
from synthgen.compositor.augment import MASK_THRESHOLD, transform_geometry
from synthgen.compositor.blend import blend_poisson
from synthgen.compositor.augment import ObjectPatch
from synthgen.compositor.render import _Owners, _SampleStreams, sample_rng
from synthgen.errors import InputError
from synthgen.pool import bleed_colours


@dataclass
class FakeCutout:
    rgba: np.ndarray
    class_id: int
    grey: float | None = None  # not stored: the compositor computes it


class FakeObjects:
    """Opaque ellipses with a soft edge, in two classes."""

    classes = ["disk", "bar"]

    def __init__(self) -> None:
        rng = np.random.default_rng(1)
        self.items = []
        for k in range(6):
            h, w = (50, 70) if k % 2 else (64, 40)
            rgba = np.zeros((h, w, 4), np.uint8)
            rgba[..., :3] = rng.integers(0, 255, 3)
            cv2.ellipse(rgba, (w // 2, h // 2), (w // 2 - 1, h // 2 - 1), 0, 0, 360, (200, 40, 90, 255), -1, cv2.LINE_AA)
            self.items.append(FakeCutout(rgba, k % 2))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> FakeCutout:
        return self.items[i]


class FakeBackgrounds:
    def __init__(self, h: int = 300, w: int = 360) -> None:
        self.images = [np.random.default_rng(i).integers(0, 255, (h, w, 3), dtype=np.uint8) for i in range(3)]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.images[i]


def compositor(**changes) -> Compositor:
    config = CompositeConfig(width=256, height=224, objects_per_image=(4, 9), scale=(0.15, 0.6)).replace(**changes)
    return Compositor(config, FakeObjects(), FakeBackgrounds())


def mask_extent(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return (float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1))


@pytest.mark.parametrize("blend", ["alpha", "gaussian", "poisson", "motion"])
@pytest.mark.parametrize("min_visible,truncation", [(1.0, 0.0), (0.3, 0.0), (0.3, 0.5)])
def test_boxes_are_the_visible_mask_extent(blend, min_visible, truncation):
    comp = compositor(blend=(blend,), min_visible=min_visible, truncation=truncation, rotation=30.0)
    occluded = truncated = 0
    for index in range(12):
        sample = comp.render(seed=3, index=index, keep_masks=True)
        union = np.zeros((224, 256), dtype=int)
        for ann in sample.annotations:
            assert ann.mask is not None and ann.mask.shape == (224, 256)
            assert ann.bbox == mask_extent(ann.mask)
            assert ann.area == ann.mask.sum()
            assert ann.visible_fraction >= min_visible - 1e-9
            assert ann.category_id in (1, 2)
            union += ann.mask
            occluded += ann.visible_fraction < 1.0
            x, y, w, h = ann.bbox
            truncated += x == 0 or y == 0 or x + w == 256 or y + h == 224
        # Visible masks never overlap: each pixel shows at most one object.
        assert union.max() <= 1
    if min_visible < 1.0:
        assert occluded > 0, "the occlusion path was never exercised"
    if truncation > 0:
        assert truncated > 0, "the truncation path was never exercised"


def test_no_occlusion_means_full_visibility():
    comp = compositor(min_visible=1.0)
    for index in range(10):
        for ann in comp.render(seed=0, index=index, keep_masks=True).annotations:
            assert ann.visible_fraction == pytest.approx(1.0)


def test_occluded_object_box_shrinks_to_its_visible_part():
    """Hand-made scene: a later object covers the right half of an earlier one."""
    comp = compositor(min_visible=0.2)
    placed = []
    owners = _Owners(224, 256, placed)
    square = ObjectPatch(np.full((40, 40, 4), 255, np.uint8), np.ones((40, 40), bool), (0, 0, 40, 40), 1600)
    comp._commit(owners, placed, square, 10, 10, (10, 10, 50, 50), 1600, 0)
    comp._commit(owners, placed, square, 30, 10, (30, 10, 70, 50), 1600, 1)
    first = comp._annotation(owners, 0, placed[0], keep_mask=True)
    assert first.bbox == (10.0, 10.0, 20.0, 40.0)
    assert first.area == 20 * 40
    assert first.visible_fraction == pytest.approx(0.5)


def test_the_compositor_draws_the_documented_sample_stream():
    """Render re-keys one generator per sample; it must be the stream sample_rng documents."""
    streams = _SampleStreams()
    for seed, index in [(0, 0), (7, 41), (2**40, 3), (7, 41)]:
        assert streams(seed, index).random(6).tolist() == sample_rng(seed, index).random(6).tolist()


def test_render_is_a_function_of_seed_and_index():
    comp = compositor(blend=("alpha", "gaussian", "motion"), blur=0.5, noise=0.5, rotation=20.0)
    a = comp.render(seed=7, index=41)
    # Render other samples in between: no state may leak from one sample to the next.
    comp.render(seed=7, index=3)
    b = comp.render(seed=7, index=41)
    assert np.array_equal(a.image, b.image)
    assert [x.bbox for x in a.annotations] == [x.bbox for x in b.annotations]
    assert not np.array_equal(a.image, comp.render(seed=8, index=41).image)


def test_sizes_follow_the_scale_range():
    comp = compositor(scale=(0.2, 0.2), aspect="keep", objects_per_image=(1, 1), rotation=0.0)
    for index in range(10):
        (ann,) = comp.render(seed=0, index=index).annotations
        side = np.sqrt(ann.bbox[2] * ann.bbox[3])
        assert side == pytest.approx(0.2 * 224, rel=0.12)


def test_stretch_aspect_draws_box_ratios_from_the_range():
    comp = compositor(scale=(0.3, 0.3), aspect="stretch", aspect_range=(2.0, 2.0), objects_per_image=(1, 1))
    for index in range(5):
        (ann,) = comp.render(seed=0, index=index).annotations
        assert ann.bbox[2] / ann.bbox[3] == pytest.approx(2.0, rel=0.15)


def test_pool_colour_bleed_keeps_foreign_colour_out_of_resampled_edges():
    rgba = np.zeros((30, 20, 4), np.uint8)
    rgba[..., :3] = 255  # the source photo's white background under the transparent part
    rgba[5:25, 5:15] = (10, 20, 30, 255)
    bleed_colours(rgba)  # what the object pool does once per cut-out
    assert np.all(rgba[..., :3].max(axis=(0, 1)) <= (10, 20, 30))
    patch = transform_geometry(rgba, 40, 60, flip=True, degrees=33.0)
    assert patch is not None
    alpha = patch.rgba[..., 3]
    edge = (alpha > 0) & (alpha < 255)
    assert edge.any()
    assert patch.rgba[..., :3][edge].max() <= 30  # no white halo at the soft edge
    assert np.array_equal(patch.mask, alpha >= MASK_THRESHOLD)
    ys, xs = np.nonzero(patch.mask)
    assert patch.extent == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) and patch.area == len(xs)


def test_poisson_writes_exactly_at_the_mask():
    canvas = np.full((100, 120, 3), 90, np.uint8)
    mask = np.zeros((20, 30), bool)
    mask[4:16, 5:25] = True
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 0] = np.arange(30) * 8  # Poisson keeps gradients: give it some
    rgba[..., 3] = mask * 255
    rgba[~mask] = 0
    patch = ObjectPatch(rgba, mask, (5, 4, 25, 16), int(mask.sum()))
    before = canvas.copy()
    assert blend_poisson(canvas, patch, 40, 30)
    changed = np.any(canvas != before, axis=2)
    expected = np.zeros_like(changed)
    expected[34:46, 45:65] = True
    assert changed.sum() > 0 and not np.any(changed & ~expected)
    # At the border, poisson declines so that the caller can blend another way.
    assert not blend_poisson(canvas, patch, -5, 30)


def test_presets_and_impossible_ranges():
    faces = PRESETS.get("faces").config()
    assert faces.objects_per_image == (1, 10) and faces.scale == (0.05, 0.8) and faces.aspect == "stretch"
    assert PRESETS.get("cars").config().aspect_range == pytest.approx((1 / 3, 3.0))
    people = PRESETS.get("pedestrians").config(width=160, height=160)  # the measured pedestrian settings
    assert (people.objects_per_image, people.scale, people.aspect, people.rotation) == ((1, 5), (0.12, 0.55), "keep", 5.0)
    assert (people.blend, people.min_visible, people.width) == (("alpha", "gaussian"), 0.6, 160)
    with pytest.raises(InputError, match="scale"):
        CompositeConfig(scale=(0.5, 0.1)).validate()
    with pytest.raises(InputError, match="min visible"):
        CompositeConfig(min_visible=1.5).validate()
    with pytest.raises(InputError, match="blend"):
        CompositeConfig(blend=("glow",)).validate()
    with pytest.raises(InputError, match="preset"):
        PRESETS.get("boats")


def test_alpha_blend_is_the_alpha_weighted_mean_also_when_clipped():
    from synthgen.compositor.blend import blend_alpha

    rng = np.random.default_rng(0)
    canvas = rng.integers(0, 255, (100, 120, 3), dtype=np.uint8)
    expected = canvas.astype(np.float32)
    rgba = rng.integers(0, 255, (30, 40, 4), dtype=np.uint8)
    blend_alpha(canvas, rgba, 95, 80)  # sticks out at the right and the bottom
    alpha = rgba[:20, :25, 3:4] / 255.0
    expected[80:, 95:] = rgba[:20, :25, :3] * alpha + expected[80:, 95:] * (1 - alpha)
    assert np.abs(canvas.astype(int) - np.rint(expected).astype(int)).max() <= 1
