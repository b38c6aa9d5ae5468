"""Shared fixtures: tiny object and background folders made on the fly, a private cache,
Ctrl-C that reaches the tests, and synthgen runs started in the background that never outlive
their test."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

# One compute thread for torch (read when torch is first imported). The test models are tiny, so a
# second thread buys little; and on a machine whose cores are busy, OpenMP threads that wait for
# each other made the training tests 30x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True, scope="session")
def ctrl_c_reaches_the_tests():
    """Python's Ctrl-C handler for the whole session. Tests send SIGINT to themselves and to the
    synthgen processes they start; a suite started as a background job of a non-interactive shell
    inherits SIGINT ignored, passes that on to its children, and those tests would fail there."""
    inherited_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, inherited_handler)


@pytest.fixture
def spawn():
    """``subprocess.Popen`` for a test that starts a run and stops it itself. Whatever still runs at
    teardown (the test failed before stopping it) is killed, its whole process group when it was
    started in a session of its own, so a failed test leaves no endless run behind."""
    started: list[tuple[subprocess.Popen, bool]] = []

    def start(*args, **kwargs) -> subprocess.Popen:
        process = subprocess.Popen(*args, **kwargs)
        started.append((process, kwargs.get("start_new_session", False)))
        return process

    yield start
    for process, own_group in started:
        if own_group:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # its workers too
            except ProcessLookupError:
                pass
        elif process.poll() is None:
            process.kill()
        process.communicate()


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own synthgen cache, so nothing leaks between tests or from the user."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("SYNTHGEN_CACHE", str(cache))
    return cache


def write_rgba_objects(root: Path, classes=("cat", "dog"), per_class: int = 4, size: int = 48) -> Path:
    """Class subfolders of RGBA PNGs: a shaded ellipse with a soft alpha edge on a transparent frame."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            h, w = size, int(size * (0.7 + 0.2 * k))
            bgra = np.zeros((h, w, 4), np.uint8)
            colour = [int(v) for v in rng.integers(30, 230, 3)]
            cv2.ellipse(bgra, (w // 2, h // 2), (w // 2 - 3, h // 2 - 3), 0, 0, 360, (*colour, 255), -1, cv2.LINE_AA)
            bgra[..., :3] = np.clip(bgra[..., :3].astype(int) + rng.integers(-20, 20, (h, w, 1)), 0, 255).astype(np.uint8)
            cv2.imwrite(str(folder / f"{name}_{k}.png"), bgra)
    return root


def write_backgrounds(root: Path, n: int = 3, size=(200, 260)) -> Path:
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        img = cv2.GaussianBlur(rng.integers(0, 255, (*size, 3), dtype=np.uint8), (0, 0), 3)
        cv2.imwrite(str(root / f"scene_{k}.jpg"), img)
    return root


@pytest.fixture
def objects_dir(tmp_path) -> Path:
    return write_rgba_objects(tmp_path / "objects")


@pytest.fixture
def backgrounds_dir(tmp_path) -> Path:
    return write_backgrounds(tmp_path / "backgrounds")
