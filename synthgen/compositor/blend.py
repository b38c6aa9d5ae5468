"""Blending an augmented object into the canvas.

Every mode writes only inside the object's patch rectangle (clipped to the canvas). Which pixels
count as the object (for boxes and occlusion) is decided by ``ObjectPatch.mask`` before blending,
so the blend mode never changes a box.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from synthgen.compositor.augment import ObjectPatch


def clip_to_canvas(x0: int, y0: int, width: int, height: int, canvas_w: int, canvas_h: int):
    """Slices of the canvas and of the patch for a patch placed with its top-left at (x0, y0);
    None when the two do not overlap."""
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = min(x0 + width, canvas_w), min(y0 + height, canvas_h)
    if cx0 >= cx1 or cy0 >= cy1:
        return None
    canvas_sl = (slice(cy0, cy1), slice(cx0, cx1))
    patch_sl = (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))
    return canvas_sl, patch_sl


def blend_alpha(canvas: np.ndarray, rgba: np.ndarray, x0: int, y0: int) -> None:
    """Alpha-blend straight-alpha ``rgba`` onto the uint8 canvas with its top-left at (x0, y0):
    ``colour * a + background * (1 - a)``, within one grey level of the exact mean."""
    clipped = clip_to_canvas(x0, y0, rgba.shape[1], rgba.shape[0], canvas.shape[1], canvas.shape[0])
    if clipped is None:
        return
    canvas_sl, patch_sl = clipped
    part = np.ascontiguousarray(rgba[patch_sl])
    alpha = cv2.extractChannel(part, 3)
    alpha3 = cv2.merge((alpha, alpha, alpha))
    # Two rounded uint8 products, summed, written straight into the canvas view: a third
    # cheaper than one float blend (cv2.blendLinear, with its float weights) of the same pixels.
    colour = cv2.cvtColor(part, cv2.COLOR_RGBA2RGB)
    cv2.multiply(colour, alpha3, dst=colour, scale=1.0 / 255.0)
    region = canvas[canvas_sl]
    cv2.multiply(region, cv2.bitwise_not(alpha3), dst=region, scale=1.0 / 255.0)
    cv2.add(region, colour, dst=region)


def blend_gaussian(canvas: np.ndarray, patch: ObjectPatch, x0: int, y0: int, feather: float) -> None:
    """Alpha blending with the edge feathered *inward*: alpha becomes min(alpha, blur(alpha)),
    so nothing outside the object's mask is revealed and its extent is unchanged while the
    transition to the background softens."""
    rgba = patch.rgba
    if feather > 0:
        alpha = np.ascontiguousarray(rgba[..., 3])
        rgba = rgba.copy()
        rgba[..., 3] = cv2.min(alpha, cv2.GaussianBlur(alpha, (0, 0), feather, borderType=cv2.BORDER_CONSTANT))
    blend_alpha(canvas, rgba, x0, y0)


def motion_kernel(length: int, degrees: float) -> np.ndarray:
    """A normalised line kernel of ``length`` px at ``degrees``, for linear motion blur."""
    size = length if length % 2 == 1 else length + 1
    kernel = np.zeros((size, size), dtype=np.float32)
    centre = (size - 1) / 2.0
    dx, dy = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    half = (length - 1) / 2.0
    p0 = (int(round(centre - dx * half)), int(round(centre - dy * half)))
    p1 = (int(round(centre + dx * half)), int(round(centre + dy * half)))
    cv2.line(kernel, p0, p1, 1.0, thickness=1, lineType=cv2.LINE_AA)
    return kernel / kernel.sum()


def blend_motion(canvas: np.ndarray, patch: ObjectPatch, x0: int, y0: int, length: int, degrees: float) -> None:
    """The object moves: its colour and alpha are smeared along a line, then alpha-blended.
    The patch grows by the kernel radius (transparent, in the edge colours) so the smear is not
    cut off."""
    kernel = motion_kernel(length, degrees)
    pad = kernel.shape[0] // 2
    grown = cv2.copyMakeBorder(patch.rgba, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    if pad:
        grown[:pad, :, 3] = grown[-pad:, :, 3] = 0
        grown[:, :pad, 3] = grown[:, -pad:, 3] = 0
    smeared = cv2.filter2D(grown, -1, kernel, borderType=cv2.BORDER_CONSTANT)
    blend_alpha(canvas, smeared, x0 - pad, y0 - pad)


def blend_poisson(canvas: np.ndarray, patch: ObjectPatch, x0: int, y0: int) -> bool:
    """OpenCV seamless cloning (Poisson blending) of the object's mask into the canvas.

    Returns False, having changed nothing, when the mask touches the canvas border: OpenCV's
    solver needs a one-pixel margin around the region; the caller then blends another way.
    """
    canvas_h, canvas_w = canvas.shape[:2]
    ex0, ey0, ex1, ey1 = patch.extent
    left, top, right, bottom = x0 + ex0, y0 + ey0, x0 + ex1 - 1, y0 + ey1 - 1
    if top < 1 or left < 1 or bottom > canvas_h - 2 or right > canvas_w - 2:
        return False
    src = np.ascontiguousarray(patch.rgba[..., :3])
    mask = patch.mask.astype(np.uint8) * 255
    # Pad by one pixel so the mask never touches the source border (OpenCV erodes that ring).
    src = cv2.copyMakeBorder(src, 1, 1, 1, 1, cv2.BORDER_REPLICATE)
    mask = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    # seamlessClone puts the centre of the mask's bounding rectangle at `centre`; pick the centre
    # so that the rectangle's top-left lands exactly at (left, top).
    rect_w, rect_h = right - left + 1, bottom - top + 1
    centre = (int(left + rect_w // 2), int(top + rect_h // 2))
    bgr = cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)
    cloned = cv2.seamlessClone(cv2.cvtColor(src, cv2.COLOR_RGB2BGR), bgr, mask, centre, cv2.NORMAL_CLONE)
    canvas[...] = cv2.cvtColor(cloned, cv2.COLOR_BGR2RGB)
    return True
