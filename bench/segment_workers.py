"""Object-pool segmentation with 1..N worker processes on a folder of object images.

Usage: python bench/segment_workers.py [--objects ../shared/data/faces_caltech] [--limit 400] [--workers 1,2]
         [--segmenter grabcut] [--repeats 3]

Builds the pool from the first ``--limit`` images (sorted names) with each worker count, the
counts interleaved within each repeat (1, 2, 1, 2, ...) so that a change in the machine's load
hits them alike; checks that every pool is byte-identical to the first one, and prints one JSON
line per build (objects/s, seconds, CPU seconds of all its processes) and a last line with the speed-up of each count over the
first in every repeat (median, min, max). The machine's load is printed too: on shared cores it
bounds the speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from synthgen.pool import build_pool
from synthgen.segmenters import MaskQuality, make_segmenter
from synthgen.sources import FolderSource


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its reaped children."""
    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=Path, default=here.parent / "shared" / "data" / "faces_caltech")
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--segmenter", default="grabcut")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    source = FolderSource(args.objects)
    source.items = source.items[: args.limit]
    scratch = Path(tempfile.mkdtemp(prefix="segbench-"))
    reference = None
    try:
        counts = [int(w) for w in args.workers.split(",")]
        seconds_of: dict[tuple[int, int], float] = {}
        for repeat in range(args.repeats):
            for workers in counts:
                out = scratch / f"pool-{workers}-{repeat}"
                load = os.getloadavg()[0]
                cpu_before = _cpu_seconds()
                started = time.perf_counter()
                build_pool(source, make_segmenter(args.segmenter), out, MaskQuality(), progress=False, workers=workers)
                seconds = time.perf_counter() - started
                cpu = _cpu_seconds() - cpu_before  # worker processes included (reaped when the build ends)
                seconds_of[workers, repeat] = seconds
                pixels = (out / "pixels.bin").read_bytes()
                reference = reference or pixels
                shutil.rmtree(out)
                print(json.dumps({
                    "objects": len(source.items), "segmenter": args.segmenter, "workers": workers, "repeat": repeat,
                    "seconds": round(seconds, 2), "objects_per_s": round(len(source.items) / seconds, 1),
                    "cpu_seconds": round(cpu, 2), "cpu_ms_per_object": round(1000 * cpu / len(source.items), 1),
                    "identical_to_first": pixels == reference, "load_before": round(load, 2), "cpus": os.cpu_count(),
                }), flush=True)
        speedups = {
            str(w): sorted(seconds_of[counts[0], r] / seconds_of[w, r] for r in range(args.repeats)) for w in counts[1:]
        }
        print(json.dumps({"speedup_over_workers": counts[0], "per_repeat": {w: [round(x, 2) for x in v] for w, v in speedups.items()},
                          "median": {w: round(statistics.median(v), 2) for w, v in speedups.items()}}), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
