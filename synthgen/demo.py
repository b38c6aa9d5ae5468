"""The embedded demo data: what ``synthgen paste`` uses when given no objects and no backgrounds.

No dependency ships usable photos, so synthgen paints them, deterministically (fixed seeds),
once, into ``cache_root()/"demo"/"v1"``:

- ``objects/{balloon,leaf,star}/*.png``: 60 RGBA cut-outs per class, 96-160 px, shaded (lit
  3-D shapes with highlights), textured, with soft anti-aliased alpha edges, so the ``alpha``
  segmenter applies and the pasted objects look like objects rather than flat clip-art;
- ``backgrounds/*.jpg``: 40 640x480 outdoor "scenes" (sky, clouds, hills, textured ground,
  clutter such as trees, rocks, buildings, poles) in muted colours, unlike the objects.

The layout is the one a folder object source reads: one subfolder per class.
"""

from __future__ import annotations

import colorsys
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PIL import Image

from synthgen.cache import atomic_directory, cache_root
from synthgen.errors import WriteError
from synthgen.imageio import encode_jpeg

# Bump (v2, ...) whenever the painting changes: the folder name is the cache key.
DEMO_VERSION = "v1"
DEMO_CLASSES = ("balloon", "leaf", "star")
OBJECTS_PER_CLASS = 60
NUM_BACKGROUNDS = 40
BACKGROUND_SIZE = (640, 480)  # width, height
_SEED = 20170425  # any fixed number: the demo must be the same everywhere
_SUPERSAMPLE = 4  # shapes are drawn 4x larger and shrunk, for anti-aliased edges


@dataclass(frozen=True)
class DemoData:
    objects_dir: Path  # one subfolder of RGBA PNGs per class
    backgrounds_dir: Path  # JPEG scenes


def ensure_demo_data() -> DemoData:
    """Return the demo data, painting it first if this machine has not yet (a few seconds)."""
    root = cache_root() / "demo" / DEMO_VERSION
    if not root.is_dir():
        try:
            with atomic_directory(root) as tmp:
                write_demo_data(tmp)
        except OSError as err:
            raise WriteError(f"could not write the demo data to {root}: {err}; set SYNTHGEN_CACHE to a writable folder") from err
    return DemoData(objects_dir=root / "objects", backgrounds_dir=root / "backgrounds")


def write_demo_data(dest: Path) -> None:
    """Paint the demo objects and backgrounds into ``dest`` (byte-identical on every call)."""
    painters: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
        "balloon": paint_balloon,
        "leaf": paint_leaf,
        "star": paint_star,
    }
    for class_index, name in enumerate(DEMO_CLASSES):
        folder = dest / "objects" / name
        folder.mkdir(parents=True)
        for i in range(OBJECTS_PER_CLASS):
            rgba = painters[name](np.random.default_rng([_SEED, 1, class_index, i]))
            buf = io.BytesIO()
            Image.fromarray(rgba, "RGBA").save(buf, format="PNG", compress_level=1)
            (folder / f"{name}_{i:03d}.png").write_bytes(buf.getvalue())
    folder = dest / "backgrounds"
    folder.mkdir(parents=True)
    for i in range(NUM_BACKGROUNDS):
        scene = paint_scene(np.random.default_rng([_SEED, 2, i]), *BACKGROUND_SIZE)
        (folder / f"scene_{i:03d}.jpg").write_bytes(encode_jpeg(scene, 90))


# --- shared painting helpers --------------------------------------------------------------


def _noise(rng: np.random.Generator, h: int, w: int, cells: tuple[int, ...], falloff: float = 0.9) -> np.ndarray:
    """Smooth multi-scale value noise, float32 (h, w), zero mean, unit std. ``cells`` are the
    sizes in pixels of the random lattices that are interpolated and summed (large first);
    an octave of cell size ``c`` weighs ``c ** falloff``."""
    total = np.zeros((h, w), np.float32)
    for cell in cells:
        grid = rng.standard_normal((h // cell + 3, w // cell + 3), dtype=np.float32)
        up = cv2.resize(grid, (grid.shape[1] * cell, grid.shape[0] * cell), interpolation=cv2.INTER_CUBIC)
        oy, ox = rng.integers(0, cell, size=2)
        total += up[oy : oy + h, ox : ox + w] * cell**falloff
    total -= total.mean()
    return total / (total.std() + 1e-6)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """An RGB colour as float32 [0, 255] from hue in turns, saturation and value in [0, 1]."""
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32) * 255


def _polygon_alpha(h: int, w: int, polygons: list[np.ndarray], lines: list[tuple[np.ndarray, float]] = ()) -> np.ndarray:
    """Coverage in [0, 1] of filled ``polygons`` and stroked ``(polyline, thickness)`` pairs
    (pixel coordinates), anti-aliased by supersampling, with a slightly soft edge."""
    ss = _SUPERSAMPLE
    canvas = np.zeros((h * ss, w * ss), np.uint8)
    for poly in polygons:
        cv2.fillPoly(canvas, [np.round(poly * ss).astype(np.int32)], 255, lineType=cv2.LINE_8)
    for line, thickness in lines:
        pts = np.round(line * ss).astype(np.int32)
        cv2.polylines(canvas, [pts], False, 255, thickness=max(1, round(thickness * ss)), lineType=cv2.LINE_8)
    alpha = cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    return cv2.GaussianBlur(alpha, (0, 0), 0.6)


def _lit(normal_x: np.ndarray, normal_y: np.ndarray, normal_z: np.ndarray, light: np.ndarray, shininess: float):
    """Lambert diffuse and Blinn-Phong specular terms for per-pixel normals (viewer at +z)."""
    norm = np.sqrt(normal_x**2 + normal_y**2 + normal_z**2) + 1e-6
    nx, ny, nz = normal_x / norm, normal_y / norm, normal_z / norm
    diffuse = np.clip(nx * light[0] + ny * light[1] + nz * light[2], 0, 1)
    half = light + np.array([0, 0, 1], np.float32)
    half /= np.linalg.norm(half)
    specular = np.clip(nx * half[0] + ny * half[1] + nz * half[2], 0, 1) ** shininess
    return diffuse, specular


def _light(rng: np.random.Generator) -> np.ndarray:
    """A light from the upper left-ish, varying per object."""
    angle = rng.uniform(math.radians(200), math.radians(250))  # image y points down
    light = np.array([math.cos(angle), math.sin(angle), rng.uniform(0.9, 1.4)], np.float32)
    return light / np.linalg.norm(light)


def _finish(rgb: np.ndarray, alpha: np.ndarray, rng: np.random.Generator, grain: float) -> np.ndarray:
    """Add fine grain, quantise to RGBA uint8 and make pixels outside the shape black."""
    h, w = alpha.shape
    rgb = rgb + rng.standard_normal((h, w, 1), dtype=np.float32) * grain
    rgba = np.empty((h, w, 4), np.uint8)
    a = np.clip(alpha * 255 + 0.5, 0, 255)
    rgba[..., :3] = np.clip(rgb, 0, 255).astype(np.uint8) * (a[..., None] > 0)
    rgba[..., 3] = a.astype(np.uint8)
    return rgba


def _rotate(points: np.ndarray, angle: float, center: tuple[float, float]) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    cx, cy = center
    x, y = points[:, 0] - cx, points[:, 1] - cy
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


# --- objects ------------------------------------------------------------------------------


def paint_balloon(rng: np.random.Generator) -> np.ndarray:
    """A glossy party balloon with a knot and a wavy string."""
    height = int(rng.integers(110, 161))
    body_h = height * rng.uniform(0.6, 0.68)
    body_w = body_h * rng.uniform(0.74, 0.9)
    width = int(math.ceil(body_w + 12))
    cx, cy = width / 2, body_h / 2 + 4
    rx, ry = body_w / 2, body_h / 2
    t = np.linspace(0, 2 * math.pi, 180, endpoint=False)
    taper = 1 - rng.uniform(0.08, 0.18) * np.clip(np.sin(t), 0, None) ** 2  # narrower towards the knot
    body = np.stack([cx + rx * np.cos(t) * taper, cy + ry * np.sin(t)], axis=1)
    knot_y = cy + ry
    knot = np.array([[cx - 4, knot_y + 5], [cx + 4, knot_y + 5], [cx + 1.5, knot_y - 2], [cx - 1.5, knot_y - 2]])
    ys = np.linspace(knot_y + 4, height - 3, 40)
    phase, wiggle = rng.uniform(0, 2 * math.pi), rng.uniform(2, 5)
    string = np.stack([cx + wiggle * np.sin(phase + (ys - ys[0]) / 9), ys], axis=1)
    alpha = _polygon_alpha(height, width, [body, knot], [(string, 1.3)])

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = (xx - cx) / rx, (yy - cy) / ry
    nz = np.sqrt(np.clip(1 - u**2 - v**2, 0.0, 1.0))
    diffuse, specular = _lit(u, v, nz, _light(rng), shininess=rng.uniform(25, 60))
    base = _hsv(rng.random(), rng.uniform(0.55, 0.95), rng.uniform(0.7, 0.95))
    texture = 1 + 0.04 * _noise(rng, height, width, (16, 6))[..., None]
    rgb = base * (0.28 + 0.8 * diffuse[..., None]) * texture + 255 * 0.85 * specular[..., None]
    inside_body = (u**2 + v**2 < 1.05)[..., None]
    string_rgb = np.full(3, rng.uniform(60, 120), np.float32)
    rgb = np.where(inside_body | (yy[..., None] < knot_y + 6), rgb, string_rgb)
    return _finish(rgb, alpha, rng, grain=2.0)


def paint_star(rng: np.random.Generator) -> np.ndarray:
    """A faceted, bevelled five- (sometimes six-) pointed star."""
    size = int(rng.integers(96, 151))
    points = 5 if rng.random() < 0.8 else 6
    outer = size / 2 - 4
    inner = outer * rng.uniform(0.4, 0.55)
    spin = rng.uniform(-0.35, 0.35) - math.pi / 2
    angles = spin + np.arange(2 * points) * math.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    c = size / 2
    star = np.stack([c + radii * np.cos(angles), c + radii * np.sin(angles)], axis=1)
    alpha = _polygon_alpha(size, size, [star])

    # The distance to the edge is a roof over the shape whose ridges run along the arms' spines:
    # lit, it gives every arm a bright and a dark facet.
    solid = (alpha > 0.5).astype(np.uint8)
    height_map = cv2.distanceTransform(solid, cv2.DIST_L2, 5)
    height_map = cv2.GaussianBlur(height_map, (0, 0), 0.8)
    gx = cv2.Sobel(height_map, cv2.CV_32F, 1, 0, ksize=3) / 8
    gy = cv2.Sobel(height_map, cv2.CV_32F, 0, 1, ksize=3) / 8
    slope = rng.uniform(1.2, 2.0)
    diffuse, specular = _lit(-gx * slope, -gy * slope, np.ones_like(gx), _light(rng), shininess=rng.uniform(15, 35))
    hue = rng.choice([rng.uniform(0.11, 0.16), rng.random()], p=[0.6, 0.4])  # mostly gold
    base = _hsv(hue, rng.uniform(0.6, 1.0), rng.uniform(0.75, 1.0))
    texture = 1 + 0.05 * _noise(rng, size, size, (12, 4))[..., None]
    rgb = base * (0.25 + 0.85 * diffuse[..., None]) * texture + 255 * 0.6 * specular[..., None]
    return _finish(rgb, alpha, rng, grain=2.5)


def paint_leaf(rng: np.random.Generator) -> np.ndarray:
    """A veined leaf on a short stem, green or autumn-coloured, folded along its midrib."""
    size = int(rng.integers(100, 161))
    length = size * 0.78
    half_width = length * rng.uniform(0.2, 0.34)
    peak = rng.uniform(0.6, 1.0)  # < 1 moves the widest point towards the tip
    bend = rng.uniform(-0.12, 0.12) * length
    serration = rng.uniform(0, 0.05) if rng.random() < 0.5 else 0.0
    t = np.linspace(0, 1, 120)
    profile = np.sin(math.pi * t**peak) ** 0.9 * half_width * (1 + serration * np.sin(t * 70))
    axis_x = bend * np.sin(math.pi * t)
    top = size * 0.06
    axis_y = top + length * (1 - t)  # t = 0 at the base (bottom), 1 at the tip
    centre_x = size / 2
    left = np.stack([centre_x + axis_x - profile, axis_y], axis=1)
    right = np.stack([centre_x + axis_x + profile, axis_y], axis=1)
    outline = np.concatenate([left, right[::-1]])
    midrib = np.stack([centre_x + axis_x, axis_y], axis=1)
    stem = np.array([[centre_x, axis_y[0]], [centre_x - bend * 0.1, min(size - 3.0, axis_y[0] + size * 0.14)]])
    angle = rng.uniform(-0.6, 0.6)
    centre = (size / 2, size / 2)
    outline, midrib, stem = (_rotate(p, angle, centre) for p in (outline, midrib, stem))
    alpha = _polygon_alpha(size, size, [outline], [(stem, 2.2)])

    veins = np.zeros((size * _SUPERSAMPLE, size * _SUPERSAMPLE), np.uint8)
    ss = _SUPERSAMPLE
    cv2.polylines(veins, [np.round(midrib * ss).astype(np.int32)], False, 255, thickness=2 * ss)
    for k in range(8, 110, int(rng.integers(11, 16))):
        for side in (-1, 1):
            # Side veins leave the midrib towards the tip and stop short of the edge.
            end_t = min(1.0, t[k] + 0.12)
            start = np.array([centre_x + axis_x[k], axis_y[k]])
            end = np.array([centre_x + axis_x[k] + side * 0.85 * profile[k], top + length * (1 - end_t)])
            seg = _rotate(np.stack([start, end]), angle, centre)
            cv2.line(veins, tuple(np.round(seg[0] * ss).astype(int)), tuple(np.round(seg[1] * ss).astype(int)), 255, ss)
    vein = cv2.resize(veins, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255

    # Which side of the midrib a pixel is on, for the fold: the two halves face different ways.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c, s = math.cos(-angle), math.sin(-angle)
    lx = c * (xx - centre[0]) - s * (yy - centre[1]) + centre[0]
    ly = s * (xx - centre[0]) + c * (yy - centre[1]) + centre[1]
    tt = np.clip((top + length - ly) / length, 0, 1)
    across = (lx - centre_x - bend * np.sin(math.pi * tt)) / (half_width + 1e-6)
    fold = rng.uniform(0.4, 0.8)
    diffuse, specular = _lit(
        np.tanh(across * 2) * fold * math.cos(angle), np.tanh(across * 2) * fold * math.sin(angle),
        np.ones_like(across), _light(rng), shininess=12,
    )
    autumn = rng.random() < 0.3
    hue = rng.uniform(0.0, 0.12) if autumn else rng.uniform(0.2, 0.36)
    base = _hsv(hue, rng.uniform(0.55, 0.9), rng.uniform(0.45, 0.8))
    blotch = _noise(rng, size, size, (24, 8, 3))
    rgb = base * (0.35 + 0.75 * diffuse[..., None]) * (1 + 0.1 * blotch[..., None])
    rgb = rgb * (1 - 0.35 * vein[..., None]) + _hsv(hue + 0.04, 0.35, 0.9) * 0.35 * vein[..., None]
    rgb += 255 * 0.15 * specular[..., None]
    return _finish(rgb, alpha, rng, grain=2.5)


# --- backgrounds --------------------------------------------------------------------------


_GROUNDS = (  # (hue, saturation, value, roughness) of the ground
    (0.25, 0.45, 0.45, 1.0),  # grass
    (0.17, 0.35, 0.6, 0.9),  # dry grass
    (0.08, 0.4, 0.4, 1.0),  # soil
    (0.11, 0.25, 0.75, 0.6),  # sand
    (0.0, 0.0, 0.45, 0.5),  # asphalt
    (0.58, 0.08, 0.9, 0.3),  # snow
)


def paint_scene(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """An outdoor scene: sky with clouds, a hazy far ridge, textured ground and scattered
    clutter. The smooth layers are painted at half size and enlarged (this runs 40 times);
    fine ground grain, clutter and sensor noise are added at full size."""
    w, h = width // 2, height // 2
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None]  # (h, 1)
    horizon = rng.uniform(0.3, 0.6)
    mood = rng.choice(["day", "dusk", "overcast"], p=[0.55, 0.2, 0.25])
    if mood == "day":
        zenith, low = _hsv(rng.uniform(0.55, 0.62), rng.uniform(0.45, 0.75), rng.uniform(0.6, 0.9)), _hsv(0.57, 0.15, 0.95)
    elif mood == "dusk":
        zenith, low = _hsv(rng.uniform(0.62, 0.75), 0.5, 0.45), _hsv(rng.uniform(0.02, 0.1), 0.55, 0.95)
    else:
        zenith, low = _hsv(0.6, 0.05, rng.uniform(0.55, 0.75)), _hsv(0.6, 0.03, rng.uniform(0.75, 0.9))
    mix = (np.clip(y / horizon, 0, 1) ** 0.8)[..., None]
    sky = zenith * (1 - mix) + low * mix  # (h, 1, 3)
    clouds = _noise(rng, h, w, (80, 32, 12, 4), falloff=1.0)
    cover = (np.clip((clouds - rng.uniform(0.0, 1.2)) * 0.8, 0, 1) * 0.85)[..., None]
    cloud_rgb = np.float32(235 if mood != "overcast" else 200)
    image = sky + (cloud_rgb - sky) * cover

    ground_hsv = _GROUNDS[rng.integers(len(_GROUNDS))]
    ground = _hsv(ground_hsv[0] + rng.uniform(-0.02, 0.02), ground_hsv[1], ground_hsv[2] * rng.uniform(0.85, 1.15))
    haze = low * 0.6 + ground * 0.4

    def ridge_mask(level: float, amplitude: float) -> np.ndarray:
        profile = _noise(rng, 1, w + 32, (64, 16))[0, :w]
        ridge = (level + amplitude * profile) * h
        below = (np.arange(h, dtype=np.float32)[:, None] >= ridge[None, :]).astype(np.float32)
        return cv2.GaussianBlur(below, (0, 0), 0.6)

    far = ridge_mask(horizon - 0.03, rng.uniform(0.02, 0.06))[..., None]
    far_rgb = (haze * 0.85 + zenith * 0.15) * (1 + 0.06 * _noise(rng, h, w, (24, 6)))[..., None]
    image += (far_rgb - image) * far

    # Ground: coarse patches, stronger and darker towards the viewer. Painted twice as tall and
    # squeezed, the patches look flat, as if lying on the ground.
    depth = np.clip((y - horizon) / (1 - horizon), 0, 1)  # (h, 1)
    texture = cv2.resize(_noise(rng, 2 * h, w, (48, 16, 4), falloff=0.6), (w, h), interpolation=cv2.INTER_AREA)
    texture *= ground_hsv[3]
    tint = _hsv(ground_hsv[0] + rng.uniform(-0.05, 0.05), ground_hsv[1] * 0.8, 1.0) / 255
    shade = (1 + (0.08 + 0.18 * depth) * texture) * (1.05 - 0.25 * depth)
    ground_rgb = (ground * tint * 0.95) * shade[..., None] + (haze * 0.15) * (1 - depth)[..., None]
    near = ridge_mask(horizon + 0.01, 0.015)
    image += (ground_rgb - image) * near[..., None]

    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    near = cv2.resize(near, (width, height), interpolation=cv2.INTER_LINEAR)
    grain = _noise(rng, height, width, (6, 2), falloff=0.5)
    image *= (1 + 0.08 * ground_hsv[3] * near * grain)[..., None]
    image = _clutter(rng, image, horizon, ground)
    image = cv2.GaussianBlur(image, (0, 0), 0.6)
    image += rng.standard_normal(image.shape, dtype=np.float32) * 2.5
    yy = np.linspace(-0.5, 0.5, height, dtype=np.float32)[:, None]
    xx = np.linspace(-0.5, 0.5, width, dtype=np.float32)[None, :]
    image *= (1 - 0.35 * (xx**2 + yy**2))[..., None]  # vignette
    return np.clip(image, 0, 255).astype(np.uint8)


def _clutter(rng: np.random.Generator, image: np.ndarray, horizon: float, ground: np.ndarray) -> np.ndarray:
    """Scatter muted trees, rocks, buildings, poles and wires, farther ones smaller."""
    height, width = image.shape[:2]
    canvas = image.copy()
    items = rng.choice(["tree", "rock", "building", "pole", "wire", "bush"], size=int(rng.integers(3, 11)))
    # Draw far (small y) items first so near ones overlap them.
    bases = np.sort(rng.uniform(horizon, 1.0, size=len(items))) * height
    for kind, base_y in zip(items, bases):
        scale = 0.25 + 1.6 * (base_y / height - horizon) / (1 - horizon)
        x = float(rng.uniform(0, width))
        dark = ground * rng.uniform(0.35, 0.7)
        if kind == "tree":
            trunk_h, crown = 60 * scale, 34 * scale
            trunk = tuple(_hsv(0.07, 0.4, rng.uniform(0.2, 0.35)).tolist())
            cv2.rectangle(canvas, (int(x - 4 * scale), int(base_y - trunk_h)), (int(x + 4 * scale), int(base_y)), trunk, -1, cv2.LINE_AA)
            leaves = tuple(_hsv(rng.uniform(0.22, 0.33), 0.45, rng.uniform(0.25, 0.45)).tolist())
            for _ in range(4):
                offset = rng.normal(0, crown * 0.35, 2)
                cv2.ellipse(canvas, (int(x + offset[0]), int(base_y - trunk_h + offset[1])), (int(crown * 0.8), int(crown * 0.7)), 0, 0, 360, leaves, -1, cv2.LINE_AA)
        elif kind == "rock":
            axes = (int(22 * scale * rng.uniform(0.7, 1.4)), int(12 * scale * rng.uniform(0.7, 1.3)))
            cv2.ellipse(canvas, (int(x), int(base_y)), axes, float(rng.uniform(-15, 15)), 180, 360, tuple(dark.tolist()), -1, cv2.LINE_AA)
        elif kind == "bush":
            colour = tuple((_hsv(rng.uniform(0.2, 0.32), 0.4, rng.uniform(0.2, 0.4))).tolist())
            cv2.ellipse(canvas, (int(x), int(base_y)), (int(30 * scale), int(18 * scale)), 0, 180, 360, colour, -1, cv2.LINE_AA)
        elif kind == "building":
            bw, bh = 70 * scale * rng.uniform(0.7, 1.5), 60 * scale * rng.uniform(0.8, 2.0)
            wall = _hsv(rng.uniform(0.0, 0.15), rng.uniform(0.05, 0.3), rng.uniform(0.4, 0.75))
            x0, y0 = int(x - bw / 2), int(base_y - bh)
            cv2.rectangle(canvas, (x0, y0), (int(x + bw / 2), int(base_y)), tuple(wall.tolist()), -1, cv2.LINE_AA)
            window = tuple((wall * 0.45).tolist())
            step = max(6, int(16 * scale))
            for wy in range(y0 + step // 2, int(base_y) - step, step):
                for wx in range(x0 + step // 2, int(x + bw / 2) - step // 2, step):
                    cv2.rectangle(canvas, (wx, wy), (wx + step // 2, wy + step // 2), window, -1)
        elif kind == "pole":
            top = base_y - 150 * scale
            cv2.line(canvas, (int(x), int(base_y)), (int(x), int(top)), (50.0, 45.0, 40.0), max(1, int(3 * scale)), cv2.LINE_AA)
        else:  # a wire or fence rail across the image
            y0, y1 = base_y - rng.uniform(40, 120) * scale, base_y - rng.uniform(40, 120) * scale
            cv2.line(canvas, (0, int(y0)), (width - 1, int(y1)), (40.0, 40.0, 40.0), 1, cv2.LINE_AA)
    # Clutter is slightly transparent and soft, like objects a little out of focus and in haze.
    return cv2.addWeighted(cv2.GaussianBlur(canvas, (0, 0), 0.8), 0.9, image, 0.1, 0)
