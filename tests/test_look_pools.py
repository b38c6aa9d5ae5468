"""Looking at object pools (preview, stats), seeded previews of every format, and --scale-from."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from synthgen.cli import app
from synthgen.preview import checkerboard, make_contact_sheet
from synthgen.pool import build_pool
from synthgen.segmenters import MaskQuality, make_segmenter
from synthgen.sources import FolderSource
from synthgen.stats import compute_pool_stats
from tests.test_writers import samples, write

runner = CliRunner()


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNTHGEN_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def pool_dir(tmp_path: Path) -> Path:
    """A pool of two RGBA cut-outs (20x10 and 12x24, half transparent at the left) and one
    rejected plain green RGB image, built with the alpha segmenter."""
    root = tmp_path / "objects" / "cup"
    root.mkdir(parents=True)
    for name, (h, w) in {"a.png": (20, 10), "b.png": (12, 24)}.items():
        rgba = np.zeros((h, w, 4), np.uint8)
        rgba[..., 2] = 255  # pure red in BGR order
        rgba[..., 3] = 255
        rgba[:, : w // 2, 3] = 0  # fully transparent left half: cropped away by the cleaner
        rgba[:, w // 2 :, 3] = 255
        assert cv2.imwrite(str(root / name), rgba)
    assert cv2.imwrite(str(root / "plain.png"), np.full((16, 16, 3), (0, 255, 0), np.uint8))
    build_pool(FolderSource(tmp_path / "objects"), make_segmenter("alpha"), tmp_path / "pool", MaskQuality(max_border=1.0),
               progress=False)
    return tmp_path / "pool"


def test_pool_preview_and_stats_show_the_cut_outs_and_what_was_rejected(pool_dir: Path, tmp_path: Path) -> None:
    stats = compute_pool_stats(pool_dir)
    assert stats.objects == 2 and stats.objects_per_class == {"cup": 2}
    assert sum(stats.width.counts) == 2 and sum(stats.aspect.counts) == 2
    assert stats.percentiles["width"][50] == pytest.approx((5 + 12) / 2)
    assert stats.percentiles["aspect"][5] == pytest.approx(0.25 + 0.05 * (1.0 - 0.25), rel=1e-6)  # 5/20 .. 12/12
    assert stats.rejected == {"no alpha channel": 1}

    result = runner.invoke(app, ["stats", str(pool_dir), "--plot", str(tmp_path / "plot.png")])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # the console wraps at its width
    assert "(object pool)" in text and "no alpha channel │ 1" in text and "aspect ratio" in text
    assert (tmp_path / "plot.png").stat().st_size > 0

    result = runner.invoke(app, ["preview", str(pool_dir), "--tile", "64", "--out", str(tmp_path / "sheet.png")])
    assert result.exit_code == 0, result.output
    sheet = np.asarray(Image.open(tmp_path / "sheet.png").convert("RGB"))
    gap, caption = 4, 18
    assert sheet.shape[1] == 2 * (64 + gap) + gap and sheet.shape[0] > 64 + caption + gap  # two tiles + summary
    # The first cut-out (20 high, 5 wide: only its opaque half is kept) fills the tile's height, red.
    assert tuple(sheet[gap + 32, gap + 32]) == (255, 0, 0)
    # Beside it, the tile's dark background; the checkerboard shows where a cut-out is transparent.
    assert tuple(sheet[gap + 32, gap + 2]) == (32, 32, 32)
    assert set(np.unique(checkerboard(16, 16, 8))) == {102, 170}
    # Under the cut-outs, after a title line, the rejected image itself (green), then the summary.
    rejected_top = gap + (64 + caption + gap) + caption
    assert tuple(sheet[rejected_top + 32, gap + 32]) == (0, 255, 0)
    assert sheet[rejected_top + 64 + caption + gap:].max() > 100


def test_preview_seed_picks_a_repeatable_random_set_in_every_format(tmp_path: Path, pool_dir: Path) -> None:
    for fmt in ("coco", "wds", "yolo"):
        write(fmt, tmp_path / fmt, samples(range(12)))

        def sheet(name: str, seed: int | None, fmt: str = fmt) -> bytes:
            return make_contact_sheet(tmp_path / fmt, tmp_path / f"{fmt}-{name}.png", n=4, tile=64, seed=seed).read_bytes()

        assert sheet("a", 5) == sheet("b", 5), fmt
        assert sheet("c", 5) != sheet("d", None), fmt
        assert sheet("e", 5) != sheet("f", 6), fmt

    def pool_sheet(name: str, seed: int | None) -> bytes:
        return make_contact_sheet(pool_dir, tmp_path / name, n=1, tile=64, seed=seed).read_bytes()

    assert pool_sheet("p.png", 3) == pool_sheet("q.png", 3)
    assert len({pool_sheet(f"p{seed}.png", seed) for seed in range(6)}) == 2  # seeds pick either cut-out


def real_coco(path: Path) -> Path:
    """6 images of 200x100 (short side 100) holding 1..6 square boxes, 21 in all, of sides
    30, 33.5, ..., 100 px: sizes 0.3 + 0.035 k, so the 5th percentile is 0.335 and the 95th 0.965."""
    images, annotations, k = [], [], 0
    for image_id, count in enumerate(range(1, 7), start=1):
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "width": 200, "height": 100})
        for _ in range(count):
            side = 30 + 3.5 * k
            annotations.append({"id": k + 1, "image_id": image_id, "category_id": 1, "bbox": [0, 0, side, side],
                                "area": side * side, "iscrowd": 0})
            k += 1
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "raccoon"}]}))
    return path


def test_scale_from_real_boxes_sets_scale_and_objects_per_image_and_says_so(tmp_path: Path) -> None:
    import typer.main

    from synthgen.cli.paste import _paste_only, paste_settings

    real = real_coco(tmp_path / "real.json")
    values = {param.name: param.default for param in typer.main.get_command(_paste_only).params}
    values.update(scale_from=real, n="4", out=str(tmp_path / "o"))
    spec, _ = paste_settings(**values)
    assert spec.composite.scale == pytest.approx((0.335, 0.965))
    assert spec.composite.objects_per_image == (1, 6)
    values.update(scale="0.2,0.4", preset="birds")  # an explicit --scale wins; the derived count beats the preset's
    spec, _ = paste_settings(**values)
    assert spec.composite.scale == (0.2, 0.4) and spec.composite.objects_per_image == (1, 6)

    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}],
                                 "annotations": [], "categories": [{"id": 1, "name": "x"}]}))
    result = runner.invoke(app, ["paste", "--scale-from", str(empty), "--scale", "0.5,0.1", "--n", "2", "--out", str(tmp_path / "bad")])
    text = " ".join(result.output.split())
    assert result.exit_code != 0 and "holds no boxes" in text and "above MAX" in text  # both problems at once,
    assert text.index("holds no boxes") < text.index("above MAX")  # the input first

    result = runner.invoke(app, ["paste", "--scale-from", str(real), "--n", "2", "--quiet", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    first = " ".join(result.output.split())
    assert "--scale-from" in first and "21 boxes in 6 images" in first and "--scale 0.335,0.965" in first
    assert "--objects-per-image 1,6" in first


def test_a_pool_keeps_thumbnails_of_the_first_rejected_objects_of_each_reason(tmp_path: Path) -> None:
    from synthgen.pool import REJECTED_SHOWN, ObjectPool

    root = tmp_path / "objects" / "cup"
    root.mkdir(parents=True)
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[10:30, 10:30] = (0, 0, 255, 255)  # an opaque red square in the middle: accepted
    assert cv2.imwrite(str(root / "good.png"), rgba)
    tiny = rgba.copy()
    tiny[..., 3] = 0
    tiny[19:21, 19:21, 3] = 255  # a 2x2 mask: 0.25% of the image, too small
    for k in range(REJECTED_SHOWN + 2):
        assert cv2.imwrite(str(root / f"tiny{k}.png"), tiny)
    for k in range(2):
        assert cv2.imwrite(str(root / f"plain{k}.png"), np.full((300, 150, 3), 90, np.uint8))
    pool = build_pool(FolderSource(tmp_path / "objects"), make_segmenter("alpha"), tmp_path / "pool", MaskQuality(),
                      progress=False)
    assert pool.summary["rejected"] == {"too small": REJECTED_SHOWN + 2, "no alpha channel": 2}  # every one counted
    shown = [(e["reason"], e["source"]) for e in pool.rejected_examples]
    assert shown == [("no alpha channel", "cup/plain0.png"), ("no alpha channel", "cup/plain1.png")] + [
        ("too small", f"cup/tiny{k}.png") for k in range(REJECTED_SHOWN)]  # the first of each reason, in source order
    plain = pool.rejected_image(pool.rejected_examples[0])
    assert plain.shape == (128, 64, 3) and (plain == 90).all()  # shrunk to 128 px, whole: no mask to show
    small = pool.rejected_image(pool.rejected_examples[2])
    assert tuple(small[20, 20]) == (255, 0, 0) and tuple(small[15, 15]) == (85, 0, 0)  # a third outside the mask
    assert ObjectPool.load(pool.path).rejected_examples == pool.rejected_examples
