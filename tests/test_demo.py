"""The embedded demo data that `synthgen paste` uses without --objects/--backgrounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from synthgen.backgrounds import resolve_backgrounds
from synthgen.demo import (
    DEMO_CLASSES,
    NUM_BACKGROUNDS,
    OBJECTS_PER_CLASS,
    DemoData,
    ensure_demo_data,
    write_demo_data,
)
from synthgen.imageio import read_image


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SYNTHGEN_CACHE", str(tmp_path_factory.mktemp("cache")))
        return ensure_demo_data()


def test_layout_is_one_folder_per_class(demo: DemoData) -> None:
    assert sorted(p.name for p in demo.objects_dir.iterdir()) == sorted(DEMO_CLASSES)
    for name in DEMO_CLASSES:
        files = sorted((demo.objects_dir / name).iterdir())
        assert len(files) == OBJECTS_PER_CLASS and all(f.suffix == ".png" for f in files)
    assert len(list(demo.backgrounds_dir.glob("*.jpg"))) == NUM_BACKGROUNDS


def test_objects_are_rgba_cutouts_with_soft_edges(demo: DemoData) -> None:
    for name in DEMO_CLASSES:
        for path in sorted((demo.objects_dir / name).iterdir())[::12]:
            image = read_image(path, keep_alpha=True)
            assert image is not None and image.shape[2] == 4, path
            assert 96 <= max(image.shape[:2]) <= 160, path
            alpha = image[..., 3]
            assert (alpha == 0).mean() > 0.1 and (alpha == 255).mean() > 0.05, path
            assert ((alpha > 0) & (alpha < 255)).any(), f"{path}: hard alpha edge"
            opaque = image[alpha == 255, :3].astype(np.float32)
            assert opaque.std(axis=0).max() > 10, f"{path}: flat colour, no shading"


def test_backgrounds_are_640x480_scenes(demo: DemoData) -> None:
    source = resolve_backgrounds(str(demo.backgrounds_dir), [])
    assert len(source) == NUM_BACKGROUNDS
    means = []
    for path in source.paths[::8]:
        image = read_image(path)
        assert image is not None and image.shape == (480, 640, 3)
        assert image.std() > 15  # not a flat fill
        means.append(image.mean(axis=(0, 1)))
    assert np.ptp(np.array(means), axis=0).max() > 10  # scenes differ from each other


def test_demo_is_deterministic(demo: DemoData, tmp_path: Path) -> None:
    again = tmp_path / "again"
    write_demo_data(again)
    root = demo.objects_dir.parent
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((root / f).read_bytes() == (again / f).read_bytes() for f in files)


def test_demo_is_painted_once(demo: DemoData, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNTHGEN_CACHE", str(demo.objects_dir.parent.parent.parent))

    def no_repaint(dest: Path) -> None:
        raise AssertionError("the demo data was painted again")

    monkeypatch.setattr("synthgen.demo.write_demo_data", no_repaint)
    assert ensure_demo_data() == demo
