"""Reading images from disk robustly. Every reader in synthgen goes through here.

Arrays are ``uint8`` and **RGB** (or RGBA) in channel-last order everywhere in synthgen; OpenCV's
BGR order stays inside this module and the JPEG encoder.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"})

# One decoding thread per process: synthgen parallelises with worker processes, and OpenCV's
# own thread pool would oversubscribe the cores and make timings noisy.
cv2.setNumThreads(1)


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _file_bytes(path: str | Path) -> np.ndarray | None:
    """The file's bytes, or None when it is missing, unreadable or empty."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    return data if data.size else None


def read_image(path: str | Path, *, keep_alpha: bool = False) -> np.ndarray | None:
    """Decode an image file to ``uint8`` RGB ``(H, W, 3)``, or RGBA ``(H, W, 4)`` when
    ``keep_alpha`` and the file has an alpha channel.

    Grey images become 3-channel, 16-bit images are scaled to 8 bits. Returns ``None`` when the
    file is missing, empty, truncated or not an image: callers skip it and count it.
    """
    data = _file_bytes(path)
    if data is None:
        return None
    flag = cv2.IMREAD_UNCHANGED if keep_alpha else cv2.IMREAD_COLOR
    image = cv2.imdecode(data, flag)
    if image is None or image.size == 0:
        return None
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        return None
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        if keep_alpha:
            return cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_mask(path: str | Path) -> np.ndarray | None:
    """Decode a mask file to ``float32`` ``(H, W)`` in [0, 1] (any non-zero grey is foreground
    weight: 255 is 1.0). Returns ``None`` when unreadable."""
    data = _file_bytes(path)
    if data is None:
        return None
    mask = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
    if mask is None or mask.size == 0:
        return None
    if mask.max() == 1:  # 0/1 label masks
        return mask.astype(np.float32)
    return mask.astype(np.float32) / 255.0


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    """Encode an RGB ``uint8`` image as baseline JPEG. Deterministic for the same input."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray:
    """Decode encoded image bytes (JPEG or PNG) to RGB ``uint8``."""
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("not a decodable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
