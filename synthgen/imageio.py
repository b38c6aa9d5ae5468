"""Reading images from disk robustly. Every reader in synthgen goes through here.

Arrays are ``uint8`` and **RGB** (or RGBA) in channel-last order everywhere in synthgen; OpenCV's
BGR order stays inside this module and the JPEG encoder.
"""

from __future__ import annotations

import io
import logging
import threading
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

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

    Grey images become 3-channel, 16-bit images are scaled to 8 bits. A file whose end is
    missing (a truncated JPEG or PNG) is decoded as far as it goes, with a warning naming it.
    Returns ``None`` when the file is missing, empty or not an image: callers skip it and count
    it (:func:`unreadable_reason` says why).
    """
    data = _file_bytes(path)
    if data is None:
        return None
    flag = cv2.IMREAD_UNCHANGED if keep_alpha else cv2.IMREAD_COLOR
    image = cv2.imdecode(data, flag)
    if image is None or image.size == 0:
        return _decode_truncated(path, data, keep_alpha)
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


# Pillow's switch for truncated files is a global; the lock keeps other threads' decoding strict.
_truncated_lock = threading.Lock()
_TRUNCATABLE = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")  # JPEG, PNG: formats that decode in order


def _decode_truncated(path: str | Path, data: np.ndarray, keep_alpha: bool) -> np.ndarray | None:
    """What Pillow decodes of a JPEG or PNG whose end is missing (OpenCV's ``imdecode`` returns
    nothing for it, while browsers, ``cv2.imread`` and Pillow show the image); None otherwise."""
    head = data[:8].tobytes()
    if not head.startswith(_TRUNCATABLE):
        return None
    from PIL import Image, ImageFile

    with _truncated_lock:
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            with Image.open(io.BytesIO(data.tobytes())) as im:
                im.load()
                has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
                image = np.array(im.convert("RGBA" if keep_alpha and has_alpha else "RGB"))
        except Exception:  # Pillow raises many types for damaged data: all mean "not decodable"
            return None
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous
    if image.size == 0:
        return None
    log.warning("%s is truncated (its end is missing); using the part that decodes", path)
    return image


def unreadable_reason(path: str | Path) -> str:
    """Why :func:`read_image` returned None for ``path``, in a few words for a person."""
    path = Path(path)
    if path.is_dir():
        return "is a folder"
    if not path.exists():
        return "missing"
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as err:
        return f"cannot be read: {err.strerror or err}"
    if not head:
        return "empty file"
    known = {b"\xff\xd8\xff": "JPEG", b"\x89PNG": "PNG", b"GIF8": "GIF", b"BM": "BMP", b"RIFF": "WebP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}
    for magic, name in known.items():
        if head.startswith(magic):
            return f"damaged {name}, does not decode"
    return "not an image"


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
