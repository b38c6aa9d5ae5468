"""Object-pool segmentation with 1..N worker processes on a folder of object images.

Usage: python bench/segment_workers.py [--objects ../shared/data/faces_caltech] [--limit 400] [--workers 1,2]
         [--segmenter grabcut] [--repeats 1]

Builds the pool from the first ``--limit`` images (sorted names) with each worker count, checks
that every pool is byte-identical to the one-worker pool, and prints one JSON line per count
(objects/s, seconds). The machine's load is printed too: on shared cores it bounds the speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from synthgen.pool import build_pool
from synthgen.segmenters import MaskQuality, make_segmenter
from synthgen.sources import FolderSource


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=Path, default=here.parent / "shared" / "data" / "faces_caltech")
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--segmenter", default="grabcut")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    source = FolderSource(args.objects)
    source.items = source.items[: args.limit]
    scratch = Path(tempfile.mkdtemp(prefix="segbench-"))
    reference = None
    try:
        for workers in (int(w) for w in args.workers.split(",")):
            for repeat in range(args.repeats):
                out = scratch / f"pool-{workers}-{repeat}"
                load = os.getloadavg()[0]
                started = time.perf_counter()
                build_pool(source, make_segmenter(args.segmenter), out, MaskQuality(), progress=False, workers=workers)
                seconds = time.perf_counter() - started
                pixels = (out / "pixels.bin").read_bytes()
                reference = reference or pixels
                print(json.dumps({
                    "objects": len(source.items), "segmenter": args.segmenter, "workers": workers, "repeat": repeat,
                    "seconds": round(seconds, 2), "objects_per_s": round(len(source.items) / seconds, 1),
                    "identical_to_1_worker": pixels == reference, "load_before": round(load, 2), "cpus": os.cpu_count(),
                }), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
