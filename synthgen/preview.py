"""Contact sheets: a grid of dataset samples with their boxes and class names drawn on, to check
by eye that boxes fit the objects."""

from __future__ import annotations

import colorsys
import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from synthgen.errors import InputError, WriteError
from synthgen.readers import Dataset, ReadSample

_BACKGROUND = (32, 32, 32)
_CAPTION = 18  # pixels under each tile for the sample key
_GAP = 4
_CHECKER = (170, 102)  # grey levels of the checkerboard behind cut-outs
_REJECTED_TEXT = (255, 200, 120)  # captions and summary lines about rejected or unreadable objects


def class_colour(label: int) -> tuple[int, int, int]:
    """A bright colour per class; golden-ratio hue steps keep neighbouring labels far apart."""
    r, g, b = colorsys.hsv_to_rgb((label * 0.618033988749895) % 1.0, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def _text_colour(fill: tuple[int, int, int]) -> tuple[int, int, int]:
    luminance = 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def draw_tile(sample: ReadSample, tile: int, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> Image.Image:
    """The sample scaled to fit ``tile`` x ``tile`` (centred on a dark square), each box drawn
    in its class colour with the class name on a filled tag at its top-left corner."""
    image = Image.fromarray(sample.image)
    scale = tile / max(image.width, image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    canvas = Image.new("RGB", (tile, tile), _BACKGROUND)
    left, top = (tile - size[0]) // 2, (tile - size[1]) // 2
    canvas.paste(image.resize(size, Image.Resampling.BILINEAR), (left, top))
    draw = ImageDraw.Draw(canvas)
    line = max(1, tile // 128)
    for box, label, name in zip(sample.boxes_xyxy, sample.labels, sample.names):
        colour = class_colour(int(label))
        x0, y0, x1, y1 = (float(v) * scale for v in box)
        x0, x1 = left + x0, left + x1
        y0, y1 = top + y0, top + y1
        draw.rectangle((x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)), outline=colour, width=line)
        tx0, ty0, tx1, ty1 = draw.textbbox((0, 0), name, font=font)
        tag_w, tag_h = tx1 - tx0 + 4, ty1 - ty0 + 4
        # Tag above the box, or inside it when the box touches the top of the tile.
        tag_x = min(max(x0, 0), tile - tag_w)
        tag_y = y0 - tag_h if y0 - tag_h >= 0 else y0
        draw.rectangle((tag_x, tag_y, tag_x + tag_w, tag_y + tag_h), fill=colour)
        draw.text((tag_x + 2 - tx0, tag_y + 2 - ty0), name, fill=_text_colour(colour), font=font)
    return canvas


_SHEET_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def make_contact_sheet(
    path: str | Path, out_image: str | Path, n: int = 16, columns: int = 4, tile: int = 256, seed: int | None = None
) -> Path:
    """Draw the first ``n`` samples of the dataset at ``path`` (with ``seed``: a seeded random
    ``n``, in every format) into one grid of ``columns`` tiles of ``tile`` pixels, each with its
    sample key underneath, saved as PNG or JPEG by the extension of ``out_image``. An object pool
    folder (written by ``synthgen segment``) gets :func:`make_pool_sheet`. Returns that path."""
    from synthgen.pool import is_pool_dir

    image_format = _sheet_format(Path(out_image), n, columns, tile)
    if is_pool_dir(Path(path)):  # False for a shard pattern too
        return make_pool_sheet(path, out_image, n=n, columns=columns, tile=tile, seed=seed)
    dataset = Dataset(path)
    samples = list(dataset.samples(n, seed=seed))
    if not samples:
        raise InputError(f"{path} holds no samples to preview")
    font = ImageFont.load_default(size=max(10, tile // 20))
    columns = min(columns, len(samples))
    rows = -(-len(samples) // columns)
    cell_w, cell_h = tile + _GAP, tile + _CAPTION + _GAP
    sheet = Image.new("RGB", (columns * cell_w + _GAP, rows * cell_h + _GAP), (0, 0, 0))
    draw = ImageDraw.Draw(sheet)
    caption_font = ImageFont.load_default(size=_CAPTION - 5)
    for i, sample in enumerate(samples):
        x = _GAP + (i % columns) * cell_w
        y = _GAP + (i // columns) * cell_h
        sheet.paste(draw_tile(sample, tile, font), (x, y))
        caption = f"{sample.key}  ({len(sample.labels)} obj)"
        draw.text((x + tile // 2, y + tile + _CAPTION // 2), caption, fill=(230, 230, 230), font=caption_font, anchor="mm")
    return _save_sheet(sheet, Path(out_image), image_format)


def _sheet_format(out: Path, n: int, columns: int, tile: int) -> str:
    """PIL's format name for ``out``, after checking the sheet's settings."""
    image_format = _SHEET_FORMATS.get(out.suffix.lower())
    if image_format is None:
        raise InputError(f"contact sheet {out}: name it .png or .jpg")
    if n < 1 or columns < 1:
        raise InputError(f"a contact sheet needs at least 1 sample and 1 column, got n={n}, columns={columns}")
    if tile < 32:
        raise InputError(f"tiles must be at least 32 pixels wide, got {tile}")
    return image_format


def _save_sheet(sheet: Image.Image, out: Path, image_format: str) -> Path:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(out, format=image_format, **({"quality": 90} if image_format == "JPEG" else {}))
    except OSError as err:
        raise WriteError(f"could not write the contact sheet {out}: {err.strerror or err}") from err
    return out


def checkerboard(height: int, width: int, square: int = 8) -> np.ndarray:
    """An (h, w, 3) uint8 light/dark grey checkerboard: shows what is transparent in a cut-out."""
    rows, cols = np.indices((height, width)) // square
    return np.where(((rows + cols) % 2 == 0)[..., None], _CHECKER[0], _CHECKER[1]).astype(np.uint8)


def cutout_tile(rgba: np.ndarray, tile: int) -> Image.Image:
    """The RGBA cut-out scaled to fit ``tile`` x ``tile``, composited over a checkerboard (alpha
    blended, so soft edges show as they will be pasted), centred on a dark square."""
    h, w = rgba.shape[:2]
    scale = tile / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    scaled = np.asarray(Image.fromarray(np.ascontiguousarray(rgba), "RGBA").resize(size, Image.Resampling.BILINEAR))
    alpha = scaled[..., 3:].astype(np.float32) / 255.0
    board = checkerboard(size[1], size[0], max(4, tile // 16)).astype(np.float32)
    blended = np.rint(scaled[..., :3] * alpha + board * (1.0 - alpha)).astype(np.uint8)
    canvas = Image.new("RGB", (tile, tile), _BACKGROUND)
    canvas.paste(Image.fromarray(blended), ((tile - size[0]) // 2, (tile - size[1]) // 2))
    return canvas


def make_pool_sheet(
    path: str | Path, out_image: str | Path, n: int = 16, columns: int = 4, tile: int = 256, seed: int | None = None
) -> Path:
    """A contact sheet of the object pool at ``path``: its first ``n`` cut-outs (with ``seed``, a
    seeded random ``n``) on a checkerboard, each captioned with its class and size; then the
    rejected objects the pool kept (the first few of each reason, dimmed outside the mask that
    was rejected), each captioned with its reason; and under them the pool's build summary:
    accepted, rejected by reason, unreadable files with examples."""
    from synthgen.pool import REJECTED_SHOWN, ObjectPool, format_summary

    image_format = _sheet_format(Path(out_image), n, columns, tile)
    pool = ObjectPool.load(path)
    picked = list(range(len(pool))) if seed is None else np.random.default_rng(seed).permutation(len(pool)).tolist()
    picked = picked[:n]
    rejected = [(example, pool.rejected_image(example)) for example in pool.rejected_examples]
    rejected = [(example, image) for example, image in rejected if image is not None]
    columns = min(columns, max(len(picked), len(rejected)))
    rows = -(-len(picked) // columns)
    rejected_rows = -(-len(rejected) // columns)
    cell_w, cell_h = tile + _GAP, tile + _CAPTION + _GAP
    caption_font = ImageFont.load_default(size=_CAPTION - 5)
    notes = _wrap(format_summary(pool.summary), max(20, (columns * cell_w) // 8))
    notes_h = (len(notes) + 2) * _CAPTION  # a title line, the notes, a margin
    rejected_h = rejected_rows * cell_h + _CAPTION if rejected else 0  # a title line, the tiles
    sheet = Image.new("RGB", (columns * cell_w + _GAP, rows * cell_h + _GAP + rejected_h + notes_h), (0, 0, 0))
    draw = ImageDraw.Draw(sheet)

    def place(slot: int, top: int, image: Image.Image, caption: str, colour: tuple[int, int, int]) -> None:
        x = _GAP + (slot % columns) * cell_w
        y = top + (slot // columns) * cell_h
        sheet.paste(image, (x, y))
        caption = _fit(draw, caption, tile, caption_font)
        draw.text((x + tile // 2, y + tile + _CAPTION // 2), caption, fill=colour, font=caption_font, anchor="mm")

    for slot, i in enumerate(picked):
        cutout = pool[i]
        h, w = cutout.rgba.shape[:2]
        place(slot, _GAP, cutout_tile(cutout.rgba, tile), f"#{i} {pool.classes[cutout.class_id]}  {w}x{h}", (230, 230, 230))
    y = rows * cell_h + _GAP
    if rejected:
        draw.text((_GAP, y + _CAPTION // 2), f"rejected (the first {REJECTED_SHOWN} of each reason; dimmed: outside the mask):",
                  fill=_REJECTED_TEXT, font=caption_font, anchor="lm")
        y += _CAPTION
        for slot, (example, image) in enumerate(rejected):
            opaque = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
            place(slot, y, cutout_tile(opaque, tile), f"{example['reason']}: {Path(example['source']).name}", _REJECTED_TEXT)
        y += rejected_rows * cell_h
    y += _CAPTION // 2
    draw.text((_GAP, y), f"{pool.path.name}: {len(pool):,} cut-outs", fill=(255, 255, 255), font=caption_font)
    for line in notes:
        y += _CAPTION
        draw.text((_GAP, y), line, fill=_REJECTED_TEXT if "rejected" in line or "unreadable" in line else (230, 230, 230),
                  font=caption_font)
    return _save_sheet(sheet, Path(out_image), image_format)


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int, font) -> str:
    """``text``, shortened in the middle with an ellipsis until it is at most ``width`` pixels wide."""
    if draw.textlength(text, font=font) <= width:
        return text
    keep = len(text)
    while keep > 1:
        keep -= 1
        shortened = text[: (keep + 1) // 2] + "…" + text[len(text) - keep // 2:]
        if draw.textlength(shortened, font=font) <= width:
            return shortened
    return text[:1]


def make_image_sheet(
    tiles: Sequence[np.ndarray], out_image: str | Path, columns: int = 4, captions: Sequence[str] | None = None, tile: int = 128
) -> Path:
    """A grid of RGB uint8 images (e.g. a trainer's input | output | target crops, row by row),
    each scaled to fit ``tile`` x ``tile`` (nearest neighbour: pixels stay visible) with its
    caption underneath, saved as PNG or JPEG by the extension of ``out_image``."""
    image_format = _sheet_format(Path(out_image), len(tiles), columns, tile)
    columns = min(columns, len(tiles))
    rows = -(-len(tiles) // columns)
    cell_w, cell_h = tile + _GAP, tile + _CAPTION + _GAP
    sheet = Image.new("RGB", (columns * cell_w + _GAP, rows * cell_h + _GAP), (0, 0, 0))
    draw = ImageDraw.Draw(sheet)
    caption_font = ImageFont.load_default(size=_CAPTION - 5)
    for i, pixels in enumerate(tiles):
        image = Image.fromarray(np.ascontiguousarray(pixels))
        scale = tile / max(image.width, image.height)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.NEAREST)
        x = _GAP + (i % columns) * cell_w
        y = _GAP + (i // columns) * cell_h
        sheet.paste(image, (x + (tile - image.width) // 2, y + (tile - image.height) // 2))
        if captions is not None:
            draw.text((x + tile // 2, y + tile + _CAPTION // 2), captions[i], fill=(230, 230, 230), font=caption_font, anchor="mm")
    return _save_sheet(sheet, Path(out_image), image_format)


def _wrap(text: str, width: int) -> list[str]:
    return [wrapped for line in text.splitlines() for wrapped in textwrap.wrap(line, width) or [""]]
