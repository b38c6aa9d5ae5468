"""The compositor: pastes augmented cut-outs onto backgrounds and computes their visible boxes."""

from synthgen.compositor.config import PRESETS, CompositeConfig, Preset
from synthgen.compositor.render import Compositor, sample_rng

__all__ = ["CompositeConfig", "Compositor", "PRESETS", "Preset", "sample_rng"]
