"""ReDO (Chen et al., NeurIPS 2019): a learned, unsupervised object-mask network, run in batches.

:func:`load_redo` reads a ReDO checkpoint (a released ``<dataset>_nets_state.pth`` /
``<dataset>_netM_state.pth``, a ``synthgen train redo`` run's ``last.pth``, or a model name such
as ``redo-lfw``), rebuilds the mask network ``netEncM`` (:class:`~.redo_nets.MaskNet`) and wraps
it in :class:`RedoSegmenter`.

The file format is ReDO's: ``torch.save`` of a dict with the ``netEncM`` state dict (beside
``netGenX``, ``netDX``, ``netRecZ`` and optimizer states) and ``options``, an
``argparse.Namespace`` of the training settings (``sizex``, ``nx``, ``nMasks``, ``nResM``,
``nfM``/``nf``, ``temperature``). The released files use torch's legacy (non-zip) serialization
with tensors saved on ``cuda:0``. It is read with torch's safe unpickler, allowing exactly one
global, ``argparse.Namespace``: a file carrying any other Python object is refused, never run.

The recipe, from ReDO's code:
- the network sees ``size`` x ``size`` RGB (the training size, 128 for the released models)
  scaled to [-1, 1] (ReDO's datasets return ``img * 2 - 1``; feeding [0, 1] is a known mistake in
  the paper authors' scripts);
- it returns ``K`` mask channels (``K = 2`` complementary sigmoid masks for ``nMasks = 2``);
- which channel is the object is not fixed by training: ``fg_channel`` picks it (a checkpoint
  written by ``synthgen train redo`` with validation masks records it as ``options.fgChannel``),
  or ``"auto"`` decides once per model, on the first batch, for the channel with the least
  mass on the image border, and says so;
- the authors binarise at 0.1, ReDO's own evaluation at 0.5: ``threshold`` is handed to the
  pool's mask cleaning.

Whole images are resized (not centre-cropped) to ``size`` so that no part of the object is lost,
and each mask is resized back to its image's size.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import cv2
import numpy as np

from synthgen.errors import InputError, NotAvailableError

#: Model names (cards in ``models/``), resolved through the model registry.
MODEL_NAMES = ("redo-lfw", "redo-cub", "redo-flowers")
RELEASED_SIZE = 128  # every released ReDO model was trained at 128 x 128


def _check_fg_channel(fg_channel: Any) -> int | str:
    if fg_channel == "auto":
        return "auto"
    try:
        channel = int(fg_channel)
    except (TypeError, ValueError):
        channel = -1
    if channel < 0 or str(channel) != str(fg_channel).strip():
        raise InputError(f"redo option fg_channel must be a channel number (0, 1, ...) or auto, got {fg_channel!r}")
    return channel


def _check_threshold(threshold: Any) -> float:
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        value = -1.0
    if not 0.0 < value <= 1.0:
        raise InputError(f"redo option threshold must be in (0, 1], got {threshold!r}")
    return value


def channel_border_mass(masks: np.ndarray) -> np.ndarray:
    """For masks ``(N, K, H, W)``, each channel's mean value on the 1-pixel frame of the image,
    over the batch: small for the channel holding a centred object, large for the background."""
    frame = np.zeros(masks.shape[-2:], dtype=bool)
    frame[0, :] = frame[-1, :] = frame[:, 0] = frame[:, -1] = True
    return masks[..., frame].mean(axis=(0, 2))


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class RedoSegmenter:
    """A batch segmenter around a ReDO-style mask network.

    ``net`` maps a float tensor ``(B, 3, size, size)`` in [-1, 1] on ``device`` to mask
    channels ``(B, K, size, size)`` in [0, 1] (a ``torch.nn.Module`` in eval mode). Calling the
    segmenter on such a tensor calls ``net``, so ``load_redo(path)(x)`` is the mask network's
    output. With ``fg_channel="auto"`` the first :meth:`segment_batch` call decides the channel
    for the rest of the run (:attr:`chosen`).
    """

    net: Callable[..., Any]
    size: int = 128
    fg_channel: int | str = "auto"
    threshold: float = 0.5
    device: str = "cpu"
    batch_size: int = 64
    source: str = ""
    chosen: int | None = field(default=None, init=False)
    border_masses: list[float] | None = field(default=None, init=False)

    name: ClassVar[str] = "redo"
    #: ``segment_batch`` also takes ``H x W x 3`` uint8 torch tensors on ``device`` (generated
    #: objects), shrunk to the network's size there: the images are not copied in from the host.
    segments_device_images: ClassVar[bool] = True

    def __post_init__(self) -> None:
        self.fg_channel = _check_fg_channel(self.fg_channel)
        self.threshold = _check_threshold(self.threshold)
        if self.fg_channel != "auto":
            self.chosen = int(self.fg_channel)

    def __call__(self, x: Any) -> Any:
        return self.net(x)

    def settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {"size": self.size, "fg_channel": self.fg_channel, "threshold": self.threshold}
        if self.source:
            settings["checkpoint"] = self.source
        if self.fg_channel == "auto" and self.chosen is not None:
            settings["fg_channel_chosen"] = self.chosen
            settings["border_mass"] = self.border_masses
        return settings

    def segment(self, image: np.ndarray, given_mask: np.ndarray | None) -> np.ndarray:
        return self.segment_batch([image], [given_mask])[0]

    def masks(self, images: Sequence) -> np.ndarray:
        """All mask channels ``(N, K, size, size)`` (float32, network resolution) of ``images``
        (uint8 arrays, or tensors on the device: see ``segments_device_images``)."""
        # torch is imported here, not at module import: the other segmenters and the
        # compositor's worker processes must not pay for it.
        import torch

        outputs = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            if isinstance(chunk[0], torch.Tensor):  # on the device already: area-shrunk there
                pixels = torch.stack([image[..., :3].to(self.device) for image in chunk]).permute(0, 3, 1, 2).float()
                pixels = torch.nn.functional.interpolate(pixels, size=(self.size, self.size), mode="area").round_()
                tensor = pixels.div_(127.5).sub_(1.0)
            else:
                inputs = np.stack([
                    cv2.resize(np.ascontiguousarray(image[..., :3]), (self.size, self.size), interpolation=cv2.INTER_AREA)
                    for image in chunk
                ])
                tensor = torch.from_numpy(inputs).to(self.device).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
            with torch.inference_mode():
                outputs.append(self.net(tensor).float().cpu().numpy())
        return np.concatenate(outputs) if outputs else np.zeros((0, 0, self.size, self.size), np.float32)

    def segment_batch(
        self, images: Sequence[np.ndarray], given_masks: Sequence[np.ndarray | None]
    ) -> list[np.ndarray]:
        channels = self.masks(images)
        if not len(channels):
            return []
        if self.chosen is None:
            self._decide(channels)
        assert self.chosen is not None
        if self.chosen >= channels.shape[1]:
            raise InputError(
                f"redo fg_channel {self.chosen} does not exist: the network gives {channels.shape[1]} masks "
                f"(use 0 to {channels.shape[1] - 1}, or auto)"
            )
        return [
            np.clip(cv2.resize(masks[self.chosen], (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)
            .astype(np.float32)
            for image, masks in zip(images, channels)
        ]

    def _decide(self, channels: np.ndarray) -> None:
        mass = channel_border_mass(channels)
        self.chosen = int(np.argmin(mass))
        self.border_masses = [round(float(m), 4) for m in mass]
        listed = ", ".join(f"channel {k} {m:.3f}" for k, m in enumerate(mass))
        _say(
            f"redo: foreground is mask channel {self.chosen} for this model (fg_channel=auto: least mass on "
            f"the image border over the first {len(channels)} images: {listed}); "
            f"set --segmenter-options fg_channel=N to fix it"
        )


# --- loading ------------------------------------------------------------------------------------

def _resolve(checkpoint: str | Path) -> Path:
    """A checkpoint path, or the file of a model name (``redo-lfw``) from the model registry."""
    text = str(checkpoint)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if text in MODEL_NAMES or (text.startswith("redo-") and "/" not in text and "." not in text):
        try:
            from synthgen.generators.registry import resolve_model_file
        except ImportError:
            raise NotAvailableError(
                f"the model name {text!r} needs synthgen's model registry (synthgen models pull), which is not in "
                f"this version; download the ReDO checkpoint yourself and pass its path: --segmenter redo:PATH.pth"
            ) from None
        card, file = resolve_model_file(text)
        kind = getattr(card, "kind", "segmenter")
        if kind != "segmenter":
            raise InputError(f"{text!r} is a {kind}, not a segmenter; ReDO segmenters: {', '.join(MODEL_NAMES)}")
        return Path(file)
    if path.is_dir():
        raise InputError(f"redo checkpoint {path} is a folder; give the .pth file (a train redo run writes last.pth)")
    raise InputError(
        f"redo checkpoint {text!r}: no such file, and not a model name ({', '.join(MODEL_NAMES)}); "
        "give the path of a ReDO .pth file, e.g. --segmenter redo:RUN/last.pth"
    )


def _refusal(err: Exception) -> str:
    """The part of torch's safe-unpickler message that names what was found, without its advice."""
    lines = [line.strip() for line in str(err).splitlines() if "GLOBAL" in line or "Unsupported" in line]
    return lines[0] if lines else type(err).__name__


def read_checkpoint(path: str | Path) -> Any:
    """Unpickle a ReDO checkpoint safely: tensors, containers, numbers, strings and
    ``argparse.Namespace`` only, every tensor on the CPU. Anything else is refused, unexecuted."""
    import torch

    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(2)
    if head != b"PK" and head[:1] != b"\x80":
        raise InputError(
            f"{path} is not a torch checkpoint (it starts with {head!r}; torch.save files are zip archives or "
            "legacy pickles); ReDO checkpoints are the .pth inside the released .tar.gz: untar it first"
        )
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise InputError(
            f"{path} was refused: it holds Python objects other than tensors and ReDO's argparse.Namespace of "
            f"options ({_refusal(err)}). synthgen never runs code from a model file. Expected a ReDO checkpoint "
            "(a dict with netEncM and options) as ReDO's train.py or synthgen train redo write it"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise InputError(f"{path} could not be read as a torch checkpoint: {str(err).splitlines()[0]}") from None


def _architecture_from_keys(state: dict[str, Any]) -> dict[str, Any]:
    """The mask network's settings from its weight shapes, for a checkpoint without options."""
    blocks = {int(key.split(".")[1]) for key in state if key.startswith("cnn.")}
    out_channels = int(state["out.mods.9.weight"].shape[0])
    return {
        "size": RELEASED_SIZE,
        "n_in": int(state["cnn.0.mods.1.weight"].shape[1]),
        "n_masks": 2 if out_channels == 1 else out_channels,
        "n_res": len(blocks) - 1,
        "nf": int(state["cnn.0.mods.7.weight"].shape[0]),
        "temperature": 1.0,
    }


def _architecture_from_options(options: argparse.Namespace) -> dict[str, Any]:
    o = vars(options)
    nf = o.get("nfM") if o.get("nfM") is not None else o.get("nf")
    missing = [name for name, value in (("sizex", o.get("sizex")), ("nfM or nf", nf)) if value is None]
    if missing:
        raise InputError(f"the checkpoint's options lack {', '.join(missing)}; expected ReDO's train.py options")
    return {
        "size": int(o["sizex"]), "n_in": int(o.get("nx", 3)), "n_masks": int(o.get("nMasks", 2)),
        "n_res": int(o.get("nResM", 3)), "nf": int(nf), "temperature": float(o.get("temperature", 1.0)),
    }


def mask_net_from_checkpoint(payload: Any, source: str = "checkpoint") -> tuple[Any, argparse.Namespace | None]:
    """The :class:`~.redo_nets.MaskNet` (eval mode, CPU) of an unpickled ReDO checkpoint, and its
    options (``None`` for a bare ``netEncM`` state dict, whose settings come from key shapes)."""
    from synthgen.segmenters.redo_nets import MaskNet

    if not isinstance(payload, dict):
        raise InputError(
            f"{source} is not a ReDO checkpoint: it holds a {type(payload).__name__}, expected a dict with netEncM and options"
        )
    if "netEncM" in payload:
        state, options = payload["netEncM"], payload.get("options")
    elif "cnn.0.mods.1.weight" in payload:
        state, options = payload, None
    else:
        keys = ", ".join(sorted(map(str, payload))[:8]) or "nothing"
        raise InputError(
            f"{source} is not a ReDO checkpoint: it holds {keys}; expected netEncM (the mask network) and options, "
            "as in ReDO's <dataset>_nets_state.pth or <dataset>_netM_state.pth. A generator checkpoint goes to "
            "--objects, not --segmenter"
        )
    if options is not None and not isinstance(options, argparse.Namespace):
        raise InputError(f"{source}: options is a {type(options).__name__}, expected ReDO's argparse.Namespace")
    if not isinstance(state, dict) or "cnn.0.mods.1.weight" not in state:
        raise InputError(f"{source}: netEncM is not the state dict of ReDO's mask network (no cnn.0.mods.1.weight)")
    arch = _architecture_from_options(options) if options is not None else _architecture_from_keys(state)
    try:
        net = MaskNet(**arch)
        net.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError) as err:
        raise InputError(
            f"{source}: the mask network weights do not fit its settings {arch}: {str(err).splitlines()[0]}"
        ) from None
    return net.eval(), options


def load_redo(
    checkpoint: str | Path,
    fg_channel: int | str | None = None,
    threshold: float = 0.5,
    device: str = "cpu",
    batch_size: int = 64,
) -> RedoSegmenter:
    """The ``redo`` segmenter from a ReDO checkpoint path or model name (``redo-lfw``,
    ``redo-cub``, ``redo-flowers``).

    ``fg_channel``: the mask channel that is the object (default: the checkpoint's
    ``options.fgChannel`` when it has one, else ``auto``). Calling the returned segmenter on a
    ``(N, 3, S, S)`` tensor in [-1, 1] gives the mask network's output, equal to ReDO's
    ``_netEncM`` on the same file. Options are checked before the file is read.
    """
    if fg_channel is not None:
        _check_fg_channel(fg_channel)
    _check_threshold(threshold)
    if not str(batch_size).strip().isdigit() or int(batch_size) < 1:
        raise InputError(f"redo option batch_size must be a positive whole number, got {batch_size!r}")
    path = _resolve(checkpoint)
    net, options = mask_net_from_checkpoint(read_checkpoint(path), source=str(path))
    if fg_channel is None:
        recorded = getattr(options, "fgChannel", None) if options is not None else None
        fg_channel = "auto" if recorded is None else int(recorded)
    return RedoSegmenter(
        net.to(device), size=net.size, fg_channel=fg_channel, threshold=threshold, device=device,
        batch_size=int(batch_size), source=str(checkpoint),
    )
