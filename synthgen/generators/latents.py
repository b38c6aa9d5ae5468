"""Per-object latents for the paste pool: a function of (seed, object index) only.

Each object's latent is drawn from its own counter-based stream (Philox keyed by the pair), so any
batch size, worker count or resume point gives the same objects. The streams start at a counter
offset of 2**192 blocks, so they never overlap the per-sample streams of
:func:`synthgen.compositor.render.sample_rng`, which use the same keys from counter 0.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

_LATENT_COUNTER = (0, 0, 0, 1)  # 256-bit counter, most significant word last
_LABEL_COUNTER = (0, 0, 0, 2)


def _stream(seed: int, index: int, counter) -> np.random.Generator:
    return np.random.Generator(np.random.Philox(key=[int(seed), int(index)], counter=list(counter)))


def latents_for(seed: int, indices: Iterable[int], z_dim: int) -> np.ndarray:
    """``float32 [len(indices), z_dim]`` standard-normal latents; row k depends only on
    ``(seed, indices[k])``."""
    indices = list(indices)
    out = np.empty((len(indices), z_dim), np.float32)
    for row, index in enumerate(indices):
        out[row] = _stream(seed, index, _LATENT_COUNTER).standard_normal(z_dim)
    return out


def labels_for(seed: int, indices: Iterable[int], num_classes: int) -> np.ndarray:
    """``int64 [len(indices)]`` class indices, uniform over ``num_classes``, for conditional
    generators; entry k depends only on ``(seed, indices[k])``."""
    return np.array([_stream(seed, i, _LABEL_COUNTER).integers(num_classes) for i in indices], np.int64)
