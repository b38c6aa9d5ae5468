"""Throughput of `synthgen paste` from a cached pool, against a bare alpha-blend + JPEG loop.

Targets (issue: synthgen paste): with one worker, at least 0.8x the bare loop on one core; with
two workers, at least 1.8x our own one-worker rate. The bare loop is measured in the same run,
interleaved with ours, so machine noise hits both alike. The bare loop and the one-worker run are
pinned to one CPU (``sched_setaffinity``), so that no helper thread of either borrows a second
core; the two-worker run gets every core.

Where the output goes matters for COCO and YOLO, which create one file per image: on some file
systems creating a file costs more CPU than rendering the image. ``--out-dir`` picks the file
system; each row also reports what creating one empty file costs there, measured in the same run.

The bare loop is what a user would write by hand: backgrounds already decoded at the output
size, objects already cut out (the same pool), each resized to a random size from the same
scale range (a paste loop has to scale objects), a numpy alpha blend at a random place, and the
same libjpeg-turbo encoder (OpenCV) at the same quality. No augmentation (flip, colour jitter),
no occlusion rule or box bookkeeping, no writer.

Run (needs ../shared/data):
    .venv/bin/python bench/paste_throughput.py --objects ../shared/data/faces_caltech --backgrounds ../shared/data/scenes
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from synthgen.compositor import CompositeConfig
from synthgen.engine import PasteSpec, RunOptions, prepare, run_paste

cv2.setNumThreads(1)


def bare_loop(backgrounds: list[np.ndarray], objects: list[np.ndarray], spec: PasteSpec, n: int) -> float:
    """Samples per second of the hand-written baseline."""
    cfg = spec.composite
    count = cfg.objects_per_image[0]
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for i in range(n):
        canvas = backgrounds[i % len(backgrounds)].copy()
        h, w = canvas.shape[:2]
        for _ in range(count):
            cut = objects[int(rng.integers(len(objects)))]
            side = rng.uniform(*cfg.scale) * min(w, h)
            aspect = cut.shape[1] / cut.shape[0]
            ow, oh = min(w - 1, max(1, int(side * np.sqrt(aspect)))), min(h - 1, max(1, int(side / np.sqrt(aspect))))
            obj = cv2.resize(cut, (ow, oh), interpolation=cv2.INTER_AREA if ow < cut.shape[1] else cv2.INTER_LINEAR)
            y, x = int(rng.integers(0, h - oh + 1)), int(rng.integers(0, w - ow + 1))
            alpha = obj[..., 3:4].astype(np.float32) / 255.0
            region = canvas[y : y + oh, x : x + ow].astype(np.float32)
            canvas[y : y + oh, x : x + ow] = (obj[..., :3] * alpha + region * (1.0 - alpha)).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, spec.jpeg_quality])
        assert ok and len(buf) > 0
    return n / (time.perf_counter() - started)


def baseline_inputs(spec: PasteSpec, count: int = 300) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Backgrounds cropped to the output size and cut-outs, from the same pools our run uses."""
    comp = prepare(spec, progress=False).compositor
    cfg = spec.composite
    backgrounds = [np.ascontiguousarray(comp.backgrounds[k][: cfg.height, : cfg.width]) for k in range(min(count, len(comp.backgrounds)))]
    objects = [np.array(comp.objects[k].rgba) for k in range(min(count, len(comp.objects)))]
    return backgrounds, objects


def input_parser(doc: str) -> argparse.ArgumentParser:
    """The argument parser of a paste benchmark (described by the first paragraph of ``doc``),
    with the inputs every one of them takes: objects, backgrounds and segmenter."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--objects", required=True, help="object images folder (or a pool)")
    parser.add_argument("--backgrounds", required=True)
    parser.add_argument("--segmenter", default="grabcut")
    return parser


#: Where the stage benchmarks write by default: tmpfs, which leaves the disk's costs out.
TMPFS = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(".")


def add_cell_options(parser: argparse.ArgumentParser, *, sizes: str, counts: str, formats: str, out_dir: Path) -> None:
    """The options that pick a paste benchmark's cells (read by :func:`cases`, and the formats)
    and the folder its runs write to, with this benchmark's defaults."""
    parser.add_argument("--sizes", default=sizes)
    parser.add_argument("--counts", default=counts)
    parser.add_argument("--formats", default=formats)
    parser.add_argument("--out-dir", type=Path, default=out_dir, help="where the runs write (its file system matters for coco)")


def cases(args: argparse.Namespace) -> Iterator[tuple[str, int, PasteSpec]]:
    """The benchmark's cells, (size, objects per image, spec), from ``--sizes``, ``--counts`` and
    the object/background/segmenter options: the same specs for every paste benchmark."""
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.split("x"))
        for count in (int(c) for c in args.counts.split(",")):
            composite = CompositeConfig(width=width, height=height, objects_per_image=(count, count), scale=(0.1, 0.4))
            yield size, count, PasteSpec(
                objects=args.objects, backgrounds=args.backgrounds, segmenter=args.segmenter, composite=composite, jpeg_quality=90
            )


def ours(spec: PasteSpec, fmt: str, workers: int, n: int, out_dir: Path) -> float:
    out = Path(tempfile.mkdtemp(prefix="bench-paste-", dir=out_dir))
    try:
        summary = run_paste(spec, RunOptions(out=out / "o", format=fmt, n=n, workers=workers, progress=False))
        return summary.rate
    finally:
        shutil.rmtree(out, ignore_errors=True)


def file_create_us(out_dir: Path, n: int = 300) -> float:
    """Microseconds to create (and close) one empty file in a fresh folder under ``out_dir``."""
    folder = Path(tempfile.mkdtemp(prefix="bench-create-", dir=out_dir))
    try:
        started = time.perf_counter()
        for i in range(n):
            os.close(os.open(folder / f"{i:010d}.jpg", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666))
        return (time.perf_counter() - started) / n * 1e6
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def pinned(cpus: set[int]):
    """Run the wrapped measurement with this process restricted to ``cpus``."""
    def wrap(measure):
        def run(*args):
            everything = os.sched_getaffinity(0)
            os.sched_setaffinity(0, cpus)
            try:
                return measure(*args)
            finally:
                os.sched_setaffinity(0, everything)
        return run
    return wrap


def main() -> None:
    parser = input_parser(__doc__)
    parser.add_argument("--n", type=int, default=600, help="samples per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions; the median is reported")
    add_cell_options(parser, sizes="320x320,640x480", counts="1,5,10", formats="coco,wds", out_dir=Path("."))
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--markdown", type=Path, help="also write the results as a markdown table here")
    args = parser.parse_args()
    one_core = {min(os.sched_getaffinity(0))}
    bare_on_one_core, ours_on_one_core = pinned(one_core)(bare_loop), pinned(one_core)(ours)

    rows = []
    for size, count, spec in cases(args):
        backgrounds, objects = baseline_inputs(spec)
        for fmt in args.formats.split(","):
            bare, one, two, create = [], [], [], []
            for _ in range(args.repeats):
                bare.append(bare_on_one_core(backgrounds, objects, spec, args.n))
                one.append(ours_on_one_core(spec, fmt, 1, args.n, args.out_dir))
                two.append(ours(spec, fmt, 2, 2 * args.n, args.out_dir))
                create.append(file_create_us(args.out_dir))
            row = {
                "size": size, "objects": count, "format": fmt,
                "bare": float(np.median(bare)), "one_worker": float(np.median(one)), "two_workers": float(np.median(two)),
                "file_create_us": float(np.median(create)),
            }
            row["ours_vs_bare"] = row["one_worker"] / row["bare"]
            row["two_vs_one"] = row["two_workers"] / row["one_worker"]
            rows.append(row)
            print(
                f"{size:>8} {count:>2} obj {fmt:>4}: bare {row['bare']:7.1f}/s  ours(1) {row['one_worker']:7.1f}/s "
                f"[{row['ours_vs_bare']:.2f}x bare]  ours(2) {row['two_workers']:7.1f}/s [{row['two_vs_one']:.2f}x]  "
                f"file create {row['file_create_us']:.0f} us",
                flush=True,
            )
    print(f"\noutput in {args.out_dir.resolve()}; cores: {os.cpu_count()}; min ours/bare {min(r['ours_vs_bare'] for r in rows):.2f} (target >= 0.8); "
          f"min 2w/1w {min(r['two_vs_one'] for r in rows):.2f} (target >= 1.8)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.markdown:
        args.markdown.write_text(markdown_table(rows))


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| size | objects | format | bare loop (samples/s) | synthgen, 1 worker | ratio to bare (target >= 0.8) "
        "| synthgen, 2 workers | 2 workers / 1 worker (target >= 1.8) | creating one file (us) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']} | {r['objects']} | {r['format']} | {r['bare']:.0f} | {r['one_worker']:.0f} | "
            f"{r['ours_vs_bare']:.2f} | {r['two_workers']:.0f} | {r['two_vs_one']:.2f} | {r['file_create_us']:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
