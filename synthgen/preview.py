"""Contact sheets: a grid of dataset samples with their boxes and class names drawn on, to check
by eye that boxes fit the objects."""

from __future__ import annotations

import colorsys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from synthgen.errors import InputError, WriteError
from synthgen.readers import Dataset, ReadSample

_BACKGROUND = (32, 32, 32)
_CAPTION = 18  # pixels under each tile for the sample key
_GAP = 4


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
    ``n`` for COCO and YOLO; WebDataset shards are streamed, so always their first ``n``) into
    one grid of ``columns`` tiles of ``tile`` pixels, each with its sample key underneath,
    saved as PNG or JPEG by the extension of ``out_image``. Returns that path."""
    out = Path(out_image)
    image_format = _SHEET_FORMATS.get(out.suffix.lower())
    if image_format is None:
        raise InputError(f"contact sheet {out}: name it .png or .jpg")
    if n < 1 or columns < 1:
        raise InputError(f"a contact sheet needs at least 1 sample and 1 column, got n={n}, columns={columns}")
    if tile < 32:
        raise InputError(f"tiles must be at least 32 pixels wide, got {tile}")
    dataset = Dataset(path)
    samples = list(dataset.samples(n, seed=seed if dataset.format != "wds" else None))
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
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(out, format=image_format, **({"quality": 90} if image_format == "JPEG" else {}))
    except OSError as err:
        raise WriteError(f"could not write the contact sheet {out}: {err.strerror or err}") from err
    return out
