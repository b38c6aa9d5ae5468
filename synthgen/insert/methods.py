"""Insertion methods by name: DetectorGAN and the baselines made from the same code by flags."""

from __future__ import annotations

from dataclasses import dataclass

from synthgen.registry import Registry


@dataclass(frozen=True)
class Method:
    """What a method trains.

    ``detector``: a detector is in the loop (pretrained on real images, then trained with the
    GAN). ``detector_sees_synthetic``: its step uses real + synthetic images (else real only).
    ``synthetic_loss``: G minimises the detection loss of its own images. ``unroll``: G also
    minimises the loss on real images after one virtual detector step on real + synthetic
    images, differentiated through that step.
    """

    detector: bool
    detector_sees_synthetic: bool
    synthetic_loss: bool
    unroll: bool


METHODS: Registry[Method] = Registry("insertion method")
METHODS.register("detectorgan", help="DetectorGAN (Liu et al. 2019): CycleGAN + box L1 + detection losses + the unrolled real-image loss")(
    Method(detector=True, detector_sees_synthetic=True, synthetic_loss=True, unroll=True)
)
METHODS.register("no-unroll", help="DetectorGAN without the unrolled step: the real-image loss sends G no gradient")(
    Method(detector=True, detector_sees_synthetic=True, synthetic_loss=True, unroll=False)
)
METHODS.register("acgan", help="G minimises the detection loss of its images; the detector learns from real images only")(
    Method(detector=True, detector_sees_synthetic=False, synthetic_loss=True, unroll=False)
)
METHODS.register("cyclegan", help="CycleGAN with a box mask, local discriminator and box L1; no detector")(
    Method(detector=False, detector_sees_synthetic=False, synthetic_loss=False, unroll=False)
)
