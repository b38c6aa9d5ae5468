"""Where a one-worker `synthgen paste` sample spends its time, beside the bare loop of
``paste_throughput.py`` measured in the same run: the companion of that benchmark, for finding
what to speed up (its ratios are the targets; these are the parts).

Runs the one-worker path by hand (render into a reused canvas, JPEG encode and annotation
conversion, the writer's stage and commit), timing each stage per sample, pinned to one CPU like
the throughput benchmark. Microseconds per sample, median of the repeats.

Run (needs ../shared/data):
    .venv/bin/python bench/paste_stages.py --objects ../shared/data/faces_caltech --backgrounds ../shared/data/scenes
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from paste_throughput import TMPFS, add_cell_options, bare_loop, baseline_inputs, cases, input_parser

from synthgen.engine import PasteSpec, _StopFlag, encode_sample, new_canvas, prepare
from synthgen.writers import WriterOptions, make_writer

cv2.setNumThreads(1)


def stage_times(spec: PasteSpec, fmt: str, n: int, out_dir: Path) -> dict[str, float]:
    """Microseconds per sample in each stage of the one-worker path, over samples 0..n-1."""
    compositor = prepare(spec, progress=False).compositor
    canvas = new_canvas(compositor)
    out = Path(tempfile.mkdtemp(prefix="bench-stages-", dir=out_dir))
    totals = dict.fromkeys(("render", "encode", "stage", "commit"), 0.0)
    try:
        # Under the stop-flag handler a real run installs: writers skip swapping the signal
        # handlers around each write under it (about 18 us a write otherwise).
        with _StopFlag():
            writer = make_writer(fmt, out / "o", compositor.categories, WriterOptions())
            writer.open(resume=False)
            stage = writer.stager()
            for index in range(n):
                t0 = time.perf_counter()
                sample = compositor.render(spec.seed, index, out=canvas)
                t1 = time.perf_counter()
                encoded = encode_sample(sample, spec.jpeg_quality, spec.masks)
                t2 = time.perf_counter()
                staged = stage(encoded)
                t3 = time.perf_counter()
                writer.commit(staged)
                t4 = time.perf_counter()
                for name, seconds in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                    totals[name] += seconds
            writer.close()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {name: 1e6 * seconds / n for name, seconds in totals.items()}


def main() -> None:
    parser = input_parser(__doc__)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    add_cell_options(parser, sizes="320x320", counts="1,5,10", formats="wds,coco", out_dir=TMPFS)
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print("| size | objects | format | bare loop | render | JPEG + annotations | writer stage | writer commit | ours, total | bare / ours |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size, count, spec in cases(args):
        backgrounds, objects = baseline_inputs(spec)
        for fmt in args.formats.split(","):
            bare, parts = [], []
            for _ in range(args.repeats):
                bare.append(1e6 / bare_loop(backgrounds, objects, spec, args.n))
                parts.append(stage_times(spec, fmt, args.n, args.out_dir))
            row = {name: float(np.median([p[name] for p in parts])) for name in parts[0]}
            total = sum(row.values())
            b = float(np.median(bare))
            print(f"| {size} | {count} | {fmt} | {b:.0f} | {row['render']:.0f} | {row['encode']:.0f} | {row['stage']:.0f} "
                  f"| {row['commit']:.0f} | {total:.0f} | {b / total:.2f} |", flush=True)


if __name__ == "__main__":
    main()
