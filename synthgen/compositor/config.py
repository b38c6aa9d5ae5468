"""Settings of the compositor, and the presets that reproduce the paper authors' ranges."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from synthgen.errors import InputError
from synthgen.registry import Registry

BLEND_MODES = ("alpha", "gaussian", "poisson", "motion")
BACKGROUND_FITS = ("crop", "stretch")
ASPECT_POLICIES = ("keep", "stretch")
BOX_KINDS = ("visible", "amodal")
CLASS_BALANCES = ("source", "uniform")

Range = tuple[float, float]


@dataclass(frozen=True)
class CompositeConfig:
    """Everything that decides how one synthetic image is composed.

    Sizes and scales are relative to the output image so that a configuration means the same at
    320x320 and at 640x480. Ranges are ``(low, high)``, drawn uniformly unless said otherwise.
    """

    width: int = 320
    height: int = 320
    #: "crop": backgrounds keep their aspect ratio, scaled to cover the output, randomly cropped;
    #: "stretch": resized to exactly width x height (the paper authors' choice).
    background_fit: str = "crop"
    #: Objects drawn per image (inclusive). Objects that find no valid place are skipped.
    objects_per_image: tuple[int, int] = (1, 5)
    #: Object size: sqrt(w*h) of the pasted object's box, as a fraction of min(width, height).
    scale: Range = (0.1, 0.5)
    #: "keep": the object keeps its own aspect ratio; "stretch": its box gets a w/h ratio drawn
    #: log-uniformly from ``aspect_range`` (the paper stretched objects this way).
    aspect: str = "keep"
    aspect_range: Range = (0.5, 2.0)
    #: Probability of a horizontal flip.
    flip: float = 0.5
    #: Rotation in degrees, drawn from [-rotation, rotation]; the object's box grows to fit.
    rotation: float = 0.0
    #: Colour jitter: multiply by a factor from ``brightness``; scale contrast around the object's
    #: mean by a factor from ``contrast``; blend with grey by a factor from ``saturation``.
    brightness: Range = (0.8, 1.2)
    contrast: Range = (0.8, 1.2)
    saturation: Range = (0.8, 1.2)
    #: Probability of a defocus blur of the object (and its alpha), sigma in px from ``blur_sigma``.
    blur: float = 0.0
    blur_sigma: Range = (0.3, 1.0)
    #: Probability of additive Gaussian noise on the object, std in grey levels from ``noise_std``.
    noise: float = 0.0
    noise_std: Range = (0.0, 8.0)
    #: Blend modes, one drawn uniformly per object: "alpha" (plain alpha), "gaussian" (alpha
    #: feathered by ``feather`` px), "poisson" (OpenCV seamless clone), "motion" (object and alpha
    #: motion-blurred over a length from ``motion_length`` px).
    blend: tuple[str, ...] = ("alpha",)
    feather: float = 1.5
    motion_length: tuple[int, int] = (3, 9)
    #: Occlusion rule: every object keeps at least this fraction of its mask visible (not covered
    #: by later objects, not cut off by the border); a placement that breaks it for any object is
    #: retried up to ``max_tries`` times, then the object is skipped. 1.0 forbids any occlusion.
    min_visible: float = 0.6
    #: Largest fraction of an object's mask that may fall outside the image (0 = no truncation).
    truncation: float = 0.0
    max_tries: int = 20
    #: The main box of each object: "visible" (the extent of its visible pixels) or "amodal"
    #: (the extent of the whole object, hidden parts included, clipped to the image). Every
    #: annotation carries both boxes and the visible fraction whichever is chosen.
    box: str = "visible"
    #: How often each class is drawn: "source" (a uniform draw over all cut-outs, so classes in
    #: proportion to their cut-outs), "uniform" (every class alike), or one weight per class
    #: of the object pool, in its class order.
    class_balance: str | tuple[float, ...] = "source"
    #: Distractors (unlabelled objects, with a distractor pool) per image, and their size as
    #: ``scale`` measures it. Pasted after the objects under the same occlusion rule.
    distractors_per_image: tuple[int, int] = (1, 3)
    distractor_scale: Range = (0.1, 0.5)
    #: Labelled backgrounds (kept annotations): the largest fraction of an existing object that
    #: the pasted objects together may cover. None: ``1 - min_visible``, the rule pasted objects get.
    protect: float | None = None

    def validate(self) -> "CompositeConfig":
        """Raise InputError naming the first impossible setting; return self when all is fine."""

        def check_range(name: str, lo: float, hi: float, low_bound: float, high_bound: float | None = None) -> None:
            if not (lo <= hi):
                raise InputError(f"{name}: low {lo} is above high {hi}")
            if lo < low_bound or (high_bound is not None and hi > high_bound):
                bounds = f"[{low_bound}, {high_bound}]" if high_bound is not None else f">= {low_bound}"
                raise InputError(f"{name}: {lo},{hi} is outside {bounds}")

        if not (8 <= self.width <= 16384 and 8 <= self.height <= 16384):
            raise InputError(f"output size {self.width}x{self.height} is impossible: each side must be 8..16384 px")
        if self.background_fit not in BACKGROUND_FITS:
            raise InputError(f"background fit {self.background_fit!r}: choose one of {', '.join(BACKGROUND_FITS)}")
        if self.aspect not in ASPECT_POLICIES:
            raise InputError(f"aspect {self.aspect!r}: choose one of {', '.join(ASPECT_POLICIES)}")
        check_range("objects per image", *self.objects_per_image, 0, 1000)
        check_range("scale", *self.scale, 1e-3, 4.0)
        check_range("aspect range", *self.aspect_range, 1e-2, 100.0)
        check_range("brightness", *self.brightness, 0.0, 10.0)
        check_range("contrast", *self.contrast, 0.0, 10.0)
        check_range("saturation", *self.saturation, 0.0, 10.0)
        check_range("blur sigma", *self.blur_sigma, 0.0, 50.0)
        check_range("noise std", *self.noise_std, 0.0, 255.0)
        check_range("motion length", *self.motion_length, 1, 101)
        for name in ("flip", "blur", "noise", "min_visible", "truncation"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InputError(f"{name.replace('_', ' ')} {value} must be in [0, 1]")
        if not 0.0 <= self.rotation <= 180.0:
            raise InputError(f"rotation {self.rotation} must be in [0, 180] degrees")
        if self.feather < 0:
            raise InputError(f"feather {self.feather} must be >= 0")
        if not self.blend or any(mode not in BLEND_MODES for mode in self.blend):
            raise InputError(f"blend {','.join(self.blend)!r}: choose from {', '.join(BLEND_MODES)}")
        if self.max_tries < 1:
            raise InputError("max tries must be at least 1")
        if self.box not in BOX_KINDS:
            raise InputError(f"box {self.box!r}: choose one of {', '.join(BOX_KINDS)}")
        if isinstance(self.class_balance, str):
            if self.class_balance not in CLASS_BALANCES:
                raise InputError(
                    f"class balance {self.class_balance!r}: choose {' or '.join(CLASS_BALANCES)}, or give one weight per class (e.g. 1,2,1)"
                )
        elif not self.class_balance or any(not w >= 0 for w in self.class_balance) or not sum(self.class_balance) > 0:
            raise InputError(f"class weights {self.class_balance}: need one weight >= 0 per class, not all zero")
        check_range("distractors per image", *self.distractors_per_image, 0, 1000)
        check_range("distractor scale", *self.distractor_scale, 1e-3, 4.0)
        if self.protect is not None and not 0.0 <= self.protect <= 1.0:
            raise InputError(f"protect {self.protect} must be in [0, 1]")
        return self

    def replace(self, **changes: Any) -> "CompositeConfig":
        """A copy with ``changes`` applied (None values are ignored), validated."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None}).validate()


@dataclass(frozen=True)
class Preset:
    """Compositor settings for one kind of object.

    ``faces``, ``birds`` and ``cars`` reproduce the paper authors' object types: the ranges of
    Blanger et al.'s ``generate_fake_data.py`` defaults (object count, scale, aspect ratio) and
    ``augmentation.py`` (flip, rotation, colour, blur, noise). Their bugs are not reproduced:
    boxes come from the thresholded mask, not the whole warped square. ``pedestrians`` is what
    synthgen measured to work (docs/results-detection.md).
    """

    description: str
    settings: dict[str, Any] = field(default_factory=dict)

    def config(self, **overrides: Any) -> CompositeConfig:
        return CompositeConfig(**self.settings).replace(**overrides)


PRESETS: Registry[Preset] = Registry("preset")

_PAPER_AUGMENTATION = dict(
    width=320,
    height=320,
    background_fit="stretch",  # the authors resized VOC backgrounds to 320x320 without cropping
    aspect="stretch",
    flip=0.5,
    rotation=45.0,
    brightness=(0.8, 1.2),  # imgaug Multiply 0.8-1.2
    contrast=(0.75, 1.5),  # imgaug ContrastNormalization 0.75-1.5
    saturation=(1.0, 1.0),
    blur=0.5,  # GaussianBlur sigma 0-0.5 with p=0.5
    blur_sigma=(0.0, 0.5),
    noise=1.0,  # AdditiveGaussianNoise scale 0-0.05*255
    noise_std=(0.0, 0.05 * 255),
    blend=("alpha",),
    min_visible=1.0,  # the authors allowed no overlap between objects
    truncation=0.0,
)

PRESETS.register("faces", help="StyleGAN faces: 1-10 objects, scale 0.05-0.8, aspect 0.5-2")(
    Preset(
        "faces (Blanger et al.): 1-10 objects, scale 0.05-0.8, aspect stretched 0.5-2",
        dict(_PAPER_AUGMENTATION, objects_per_image=(1, 10), scale=(0.05, 0.8), aspect_range=(0.5, 2.0)),
    )
)
PRESETS.register("birds", help="DM-GAN birds: 1-3 objects, scale 0.5-0.9, aspect 0.5-2")(
    Preset(
        "birds (Blanger et al.): 1-3 objects, scale 0.5-0.9, aspect stretched 0.5-2",
        dict(_PAPER_AUGMENTATION, objects_per_image=(1, 3), scale=(0.5, 0.9), aspect_range=(0.5, 2.0)),
    )
)
PRESETS.register(
    "pedestrians", help="upright people: 1-5 objects, scale 0.12-0.55, own aspect, rotation 5, alpha or feathered blend"
)(
    Preset(
        # The settings of every pedestrian run in docs/results-detection.md (COCO128 person
        # cut-outs over person-free COCO128 images: +23 to +33 AP50 on Penn-Fudan over no
        # pretraining at 5-50 real images, the same finetune steps). People stand upright, so
        # little rotation and their own aspect; a feathered edge half the time hides cut-out seams.
        "pedestrians (measured, docs/results-detection.md): 1-5 objects, scale 0.12-0.55, own aspect, "
        "rotation up to 5 degrees, alpha or feathered (gaussian) blend, at least 60 % visible",
        dict(objects_per_image=(1, 5), scale=(0.12, 0.55), rotation=5.0, blend=("alpha", "gaussian"), min_visible=0.6),
    )
)
PRESETS.register("cars", help="StyleGAN cars: 1-5 objects, scale 0.5-1.0, aspect 1/3-3")(
    Preset(
        "cars (Blanger et al.): 1-5 objects, scale 0.5-1.0, aspect stretched 1/3-3",
        dict(_PAPER_AUGMENTATION, objects_per_image=(1, 5), scale=(0.5, 1.0), aspect_range=(1 / 3, 3.0)),
    )
)
