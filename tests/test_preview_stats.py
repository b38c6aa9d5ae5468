"""Contact sheets and dataset statistics on all three formats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from synthgen.errors import InputError
from synthgen.imageio import encode_jpeg
from synthgen.preview import class_colour, make_contact_sheet
from synthgen.sample import EncodedAnnotation, EncodedSample, sample_key
from synthgen.stats import compute_stats, render_rich, save_plot
from synthgen.writers import WriterOptions
from tests.test_writers import CATEGORIES, FORMATS, samples, write

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools


def grey_sample(index: int, box: list[float], category_id: int) -> EncodedSample:
    image = np.full((100, 100, 3), 128, dtype=np.uint8)
    return EncodedSample(index, sample_key(index), 100, 100, encode_jpeg(image, 95),
                         [EncodedAnnotation(box, category_id, box[2] * box[3])])


@pytest.mark.parametrize("fmt", FORMATS)
def test_contact_sheet_draws_boxes_in_class_colours_where_they_are(tmp_path, fmt):
    items = [grey_sample(0, [20.0, 30.0, 40.0, 50.0], 2)] + samples(range(1, 5))
    write(fmt, tmp_path / "data", items, WriterOptions(shard_size=2))
    png = make_contact_sheet(tmp_path / "data", tmp_path / "sheet.png", n=5, columns=2, tile=100)
    sheet = np.asarray(Image.open(png).convert("RGB"))
    gap, caption = 4, 18
    assert sheet.shape == (3 * (100 + caption + gap) + gap, 2 * (100 + gap) + gap, 3)  # 5 tiles: 3 rows of 2
    # The first tile shows the 100x100 image at scale 1, at (gap, gap): the box's left and
    # right edges (x = 20 and x + w - 1 = 59) are drawn in the colour of class 2.
    assert tuple(sheet[gap + 60, gap + 20]) == class_colour(2)
    assert tuple(sheet[gap + 60, gap + 59]) == class_colour(2)
    assert tuple(sheet[gap + 60, gap + 40]) != class_colour(2)  # inside the box: the image
    assert abs(int(sheet[gap + 60, gap + 40, 0]) - 128) < 8


def test_contact_sheet_seed_picks_a_repeatable_random_set(tmp_path):
    write("coco", tmp_path / "data", samples(range(12)))

    def sheet(name: str, seed: int | None) -> bytes:
        return make_contact_sheet(tmp_path / "data", tmp_path / name, n=4, tile=64, seed=seed).read_bytes()

    assert sheet("a.png", 5) == sheet("b.png", 5)
    assert sheet("c.png", 5) != sheet("d.png", None)
    write("wds", tmp_path / "shards", samples(range(6)))  # shards too (tests/test_look_pools.py: every format)
    assert make_contact_sheet(tmp_path / "shards", tmp_path / "f.png", n=4, tile=64, seed=5).read_bytes() != \
        make_contact_sheet(tmp_path / "shards", tmp_path / "g.png", n=4, tile=64).read_bytes()


def test_contact_sheet_rejects_bad_arguments_and_empty_datasets(tmp_path):
    write("coco", tmp_path / "data", samples(range(2)))
    with pytest.raises(InputError):
        make_contact_sheet(tmp_path / "data", tmp_path / "x.png", n=0)
    with pytest.raises(InputError):
        make_contact_sheet(tmp_path / "data", tmp_path / "x.png", tile=8)
    with pytest.raises(InputError, match=r"\.png or \.jpg"):
        make_contact_sheet(tmp_path / "data", tmp_path / "x.tiff")
    jpeg = make_contact_sheet(tmp_path / "data", tmp_path / "x.jpg", tile=64)
    assert jpeg.read_bytes()[:3] == b"\xff\xd8\xff"  # the extension decides the format
    write("coco", tmp_path / "empty", [])
    with pytest.raises(InputError, match="no samples"):
        make_contact_sheet(tmp_path / "empty", tmp_path / "x.png")
    with pytest.raises(InputError, match="does not exist"):
        make_contact_sheet(tmp_path / "missing", tmp_path / "x.png")


@pytest.mark.parametrize("fmt", FORMATS)
def test_stats_count_images_objects_categories_and_sizes(tmp_path, fmt):
    items = samples(range(9))  # sample i has i % 4 boxes
    write(fmt, tmp_path, items, WriterOptions(shard_size=4))
    stats = compute_stats(tmp_path)
    boxes = [a for s in items for a in s.annotations]
    assert stats.format == fmt
    assert stats.images == 9 and stats.objects == len(boxes) == 12
    assert stats.empty_images == 3
    assert stats.objects_per_image == {0: 3, 1: 2, 2: 2, 3: 2}
    assert stats.objects_per_category == {
        name: sum(a.category_id == k + 1 for a in boxes) for k, name in enumerate(CATEGORIES)
    }
    assert sum(stats.box_width.counts) == sum(stats.box_height.counts) == sum(stats.box_size.counts) == 12
    widths = sorted(round(a.bbox[2]) for a in boxes)
    got = [lo for lo, count in zip(stats.box_width.edges, stats.box_width.counts) for _ in range(count)]
    assert all(lo <= w for lo, w in zip(got, widths))
    assert stats.box_size.edges[0] == 0.0 and stats.box_size.edges[-1] == 1.0
    assert stats.coco_sizes == {"small": 12, "medium": 0, "large": 0}  # all boxes are under 32x32
    assert compute_stats(tmp_path, limit=4).images == 4


def test_stats_render_as_rich_text_and_as_a_plot(tmp_path):
    write("yolo", tmp_path / "data", samples(range(9)))
    stats = compute_stats(tmp_path / "data")
    console = Console(record=True, width=100)
    console.print(render_rich(stats))
    text = console.export_text()
    for expected in ("images", "12", "dog", "objects per image", "box size", "█"):
        assert expected in text
    png = save_plot(stats, tmp_path / "plots" / "stats.png")
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (1200, 800)


def test_stats_of_an_empty_dataset_is_an_input_error(tmp_path):
    write("coco", tmp_path, [])
    assert json.loads((tmp_path / "annotations.json").read_text())["images"] == []
    with pytest.raises(InputError, match="no samples"):
        compute_stats(tmp_path)


def test_stats_and_preview_on_a_foreign_coco_file(tmp_path):
    """A COCO file made elsewhere: file names relative to the json, ids with gaps."""
    write("coco", tmp_path, samples(range(4)))
    doc = json.loads((tmp_path / "annotations.json").read_text())
    for c in doc["categories"]:
        c["id"] += 10
    for a in doc["annotations"]:
        a["category_id"] += 10
    foreign = Path(tmp_path / "other.json")
    foreign.write_text(json.dumps(doc))
    assert compute_stats(foreign).objects_per_category == compute_stats(tmp_path).objects_per_category
    assert make_contact_sheet(foreign, tmp_path / "sheet.png", n=4, tile=64).exists()
