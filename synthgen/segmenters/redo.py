"""ReDO (Chen et al., NeurIPS 2019): a learned, unsupervised object-mask network, run in batches.

What this module fixes is the interface and the inference recipe; the loader that rebuilds the
mask network ``netEncM`` from a released ReDO checkpoint (``<dataset>_nets_state.pth`` /
``<dataset>_netM_state.pth``, a ``torch.save`` dict holding ``netEncM`` weights and an
``argparse.Namespace`` of ``options``) comes with the generators work. Until then
:func:`load_redo` explains that, and :class:`RedoSegmenter` runs any network with ReDO's
input/output contract (which is how the loader will use it, and how the tests drive it).

The recipe, from ReDO's code:
- the network sees ``size`` x ``size`` RGB (128 for the released models) scaled to [-1, 1]
  (ReDO's datasets return ``img * 2 - 1``; feeding [0, 1] is a known mistake in the paper
  authors' scripts);
- it returns ``K`` mask channels (``K = 2`` complementary sigmoid masks for ``nMasks = 2``);
- which channel is the object is not fixed by training: ``fg_channel`` picks it, or ``"auto"``
  takes, per image, the channel whose mass lies most in the interior rather than on the border;
- the authors binarise at 0.1, ReDO's own evaluation at 0.5: ``threshold`` is handed to the
  pool's mask cleaning.

Whole images are resized (not centre-cropped) to ``size`` so that no part of the object is lost,
and each mask is resized back to its image's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import cv2
import numpy as np

from synthgen.errors import InputError, NotAvailableError


def _check_fg_channel(fg_channel: Any) -> int | str:
    if fg_channel == "auto":
        return "auto"
    try:
        channel = int(fg_channel)
    except (TypeError, ValueError):
        channel = -1
    if channel < 0 or str(channel) != str(fg_channel).strip():
        raise InputError(f"redo option fg_channel must be 0, 1 or auto, got {fg_channel!r}")
    return channel


def _check_threshold(threshold: Any) -> float:
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        value = -1.0
    if not 0.0 < value <= 1.0:
        raise InputError(f"redo option threshold must be in (0, 1], got {threshold!r}")
    return value


def interior_minus_border(masks: np.ndarray) -> np.ndarray:
    """For ``(K, H, W)`` masks, each channel's mean inside minus its mean on the 1-pixel frame:
    large for a channel that covers a centred object and spares the border."""
    frame = np.zeros(masks.shape[1:], dtype=bool)
    frame[0, :] = frame[-1, :] = frame[:, 0] = frame[:, -1] = True
    return masks[:, ~frame].mean(axis=1) - masks[:, frame].mean(axis=1)


@dataclass
class RedoSegmenter:
    """A batch segmenter around a ReDO-style mask network.

    ``net`` maps a float tensor ``(B, 3, size, size)`` in [-1, 1] on ``device`` to mask
    channels ``(B, K, size, size)`` in [0, 1] (a ``torch.nn.Module`` in eval mode).
    """

    net: Callable[..., Any]
    size: int = 128
    fg_channel: int | str = "auto"
    threshold: float = 0.5
    device: str = "cpu"
    batch_size: int = 64

    name: ClassVar[str] = "redo"

    def __post_init__(self) -> None:
        self.fg_channel = _check_fg_channel(self.fg_channel)
        self.threshold = _check_threshold(self.threshold)

    def settings(self) -> dict[str, Any]:
        return {"size": self.size, "fg_channel": self.fg_channel, "threshold": self.threshold}

    def segment(self, image: np.ndarray, given_mask: np.ndarray | None) -> np.ndarray:
        return self.segment_batch([image], [given_mask])[0]

    def segment_batch(
        self, images: Sequence[np.ndarray], given_masks: Sequence[np.ndarray | None]
    ) -> list[np.ndarray]:
        # torch is imported here, not at module import: the other segmenters and the
        # compositor's worker processes must not pay for it.
        import torch

        masks: list[np.ndarray] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            inputs = np.stack([
                cv2.resize(np.ascontiguousarray(image[..., :3]), (self.size, self.size), interpolation=cv2.INTER_AREA)
                for image in chunk
            ])
            tensor = torch.from_numpy(inputs).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).to(self.device)
            with torch.no_grad():
                output = self.net(tensor).float().cpu().numpy()
            for image, channels in zip(chunk, output):
                masks.append(self._pick(channels, image.shape[:2]))
        return masks

    def _pick(self, channels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        if self.fg_channel == "auto":
            channel = int(np.argmax(interior_minus_border(channels)))
        else:
            channel = int(self.fg_channel)
            if channel >= channels.shape[0]:
                raise InputError(
                    f"redo fg_channel {channel} does not exist: the network gives {channels.shape[0]} masks"
                )
        mask = cv2.resize(channels[channel], (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
        return np.clip(mask, 0.0, 1.0).astype(np.float32)


def load_redo(
    checkpoint: str | Path | None = None,
    fg_channel: int | str = "auto",
    threshold: float = 0.5,
    device: str = "cpu",
    batch_size: int = 64,
) -> RedoSegmenter:
    """The ``redo`` segmenter from a released ReDO checkpoint.

    Options are checked first so that a typo is reported as such; then, in this version, a
    NotAvailableError: the checkpoint loader is not written yet.
    """
    _check_fg_channel(fg_channel)
    _check_threshold(threshold)
    where = f" ({checkpoint})" if checkpoint else ""
    raise NotAvailableError(
        f"the redo segmenter needs a ReDO checkpoint loader{where}, which is not in this version of "
        "synthgen yet (it will read the mask network netEncM from a ReDO <dataset>_nets_state.pth or "
        "<dataset>_netM_state.pth file). Meanwhile use --segmenter grabcut (plain photos), alpha "
        "(RGBA cut-outs) or mask (image + mask pairs), or auto to pick among them per image."
    )
