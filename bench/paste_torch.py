"""The torch compositor on the CPU against the NumPy/OpenCV compositor, in one run, on one core.

For each cell (output size, objects per image) both compositors make samples 0..n-1 of the same
spec; each rendered image is JPEG-encoded by the same OpenCV encoder. Reported per sample (us):
the NumPy path's render and encode; the torch path's plan (the CPU renderer's draws, placements
and boxes, alpha only), draw (``TorchCompositor.draw``, batches of ``--batch``) and encode; both
paths' samples/s and their ratio (each repeat times both: median, min and max of the per-repeat
ratios); and the agreement: identical labels, the largest box difference (px; the torch path's
boxes are made from its own drawn masks), and the mean / max absolute pixel difference. Pinned
to one CPU, one torch thread. Median of ``--repeats``.

Inputs: synthgen's built-in demo objects (RGBA cut-outs with soft edges) and scenes unless
``--objects`` / ``--backgrounds`` are given (any ``synthgen paste`` inputs).

Run:
    .venv/bin/python bench/paste_torch.py
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from paste_throughput import add_cell_options, cases

from synthgen.compositor.torch_render import TorchCompositor, encode_images
from synthgen.engine import prepare
from synthgen.imageio import encode_jpeg

cv2.setNumThreads(1)
torch.set_num_threads(1)


def measure(spec, n: int, batch: int) -> dict:
    compositor = prepare(spec, progress=False).compositor
    drawer = TorchCompositor.from_compositor(compositor, "cpu")
    t = dict.fromkeys(("numpy_render", "numpy_encode", "plan", "draw", "encode"), 0.0)
    references = []
    for i in range(n):
        t0 = time.perf_counter()
        sample = compositor.render(spec.seed, i)
        t1 = time.perf_counter()
        encode_jpeg(sample.image, spec.jpeg_quality)
        t2 = time.perf_counter()
        t["numpy_render"] += t1 - t0
        t["numpy_encode"] += t2 - t1
        references.append(sample)
    differences, box_error, same_labels = [], 0.0, True
    for start in range(0, n, batch):
        indices = range(start, min(start + batch, n))
        t0 = time.perf_counter()
        planned = [drawer.planner.render(spec.seed, i) for i in indices]
        t1 = time.perf_counter()
        images = drawer.draw(planned)
        t2 = time.perf_counter()
        encode_images(images, spec.jpeg_quality)
        t3 = time.perf_counter()
        t["plan"] += t1 - t0
        t["draw"] += t2 - t1
        t["encode"] += t3 - t2
        for i, sample, image in zip(indices, planned, images.numpy()):
            reference = references[i]
            same_labels &= [a.category_id for a in sample.annotations] == [a.category_id for a in reference.annotations]
            if sample.annotations:
                box_error = max(box_error, float(np.abs(np.array([a.bbox for a in sample.annotations])
                                                         - np.array([a.bbox for a in reference.annotations])).max()))
            d = np.abs(image.astype(np.int16) - reference.image.astype(np.int16))
            differences.append((float(d.mean()), int(d.max())))
    row = {name: 1e6 * seconds / n for name, seconds in t.items()}
    row["numpy_per_s"] = 1e6 / (row["numpy_render"] + row["numpy_encode"])
    row["torch_per_s"] = 1e6 / (row["plan"] + row["draw"] + row["encode"])
    row["same_labels"] = same_labels
    row["max_box_px"] = box_error
    row["pixel_mean_abs"] = float(np.mean([d[0] for d in differences]))
    row["pixel_max_abs"] = max(d[1] for d in differences)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", help="object images folder or pool (default: the demo objects)")
    parser.add_argument("--backgrounds", help="default: the demo scenes")
    parser.add_argument("--segmenter", default="auto")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path)
    add_cell_options(parser, sizes="320x320", counts="1,5,10", formats="wds", out_dir=Path("."))
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    rows = []
    print("| size | objects | NumPy render + encode (us) | torch plan + draw + encode (us) | NumPy samples/s | torch samples/s | torch / NumPy (median; min-max over repeats) | labels identical | max box diff (px) | pixel mean abs diff | pixel max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for size, count, spec in cases(args):
        runs = [measure(spec, args.n, args.batch) for _ in range(args.repeats)]
        row = {key: (float(np.median([r[key] for r in runs])) if isinstance(runs[0][key], float) else runs[-1][key]) for key in runs[0]}
        ratios = [r["torch_per_s"] / r["numpy_per_s"] for r in runs]  # each repeat times both paths
        row.update(size=size, objects=count, same_labels=all(r["same_labels"] for r in runs), ratio=float(np.median(ratios)),
                   ratio_min=min(ratios), ratio_max=max(ratios))
        rows.append(row)
        print(f"| {size} | {count} | {row['numpy_render']:.0f} + {row['numpy_encode']:.0f} | {row['plan']:.0f} + {row['draw']:.0f} + {row['encode']:.0f} "
              f"| {row['numpy_per_s']:.0f} | {row['torch_per_s']:.0f} | {row['ratio']:.3f}; {row['ratio_min']:.3f}-{row['ratio_max']:.3f} | {row['same_labels']} "
              f"| {row['max_box_px']:.0f} | {row['pixel_mean_abs']:.3f} | {row['pixel_max_abs']} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
