"""CPU time per sample of `synthgen paste --workers 2`, split between the main process and the
workers: the companion of ``paste_throughput.py`` for its two-worker target (at least 1.8x the
one-worker rate on two cores). Every CPU microsecond the main process (receiving and committing
samples) or the hand-over between processes adds is taken from rendering, so these columns,
not the rate alone, show what a change to that path does.

Each cell runs twice, with a few samples and with ``--n`` samples, from the same prepared
inputs; the difference divided by the difference in samples removes the fixed costs (starting
the workers, the last shard's fsync). CPU times are ``getrusage`` of the main process and of its
(joined) children.

Run (needs ../shared/data); ``--out-dir`` picks the file system written to:
    .venv/bin/python bench/paste_worker_cpu.py --objects ../shared/data/faces_caltech --backgrounds ../shared/data/scenes
"""

from __future__ import annotations

import resource
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
from paste_throughput import TMPFS, add_cell_options, cases, input_parser

from synthgen.engine import PasteSpec, RunOptions, prepare, run_paste

cv2.setNumThreads(1)


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def measure(spec: PasteSpec, fmt: str, n: int, out_dir: Path) -> tuple[float, float, float]:
    """(main CPU seconds, workers' CPU seconds, samples/s) of one two-worker run of ``n`` samples."""
    out = Path(tempfile.mkdtemp(prefix="bench-cpu-", dir=out_dir))
    try:
        main0, children0 = cpu_seconds(resource.RUSAGE_SELF), cpu_seconds(resource.RUSAGE_CHILDREN)
        summary = run_paste(spec, RunOptions(out=out / "o", format=fmt, n=n, workers=2, progress=False))
        return cpu_seconds(resource.RUSAGE_SELF) - main0, cpu_seconds(resource.RUSAGE_CHILDREN) - children0, summary.rate
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = input_parser(__doc__)
    parser.add_argument("--n", type=int, default=4000, help="samples of the long run")
    parser.add_argument("--few", type=int, default=64, help="samples of the short run (fixed costs)")
    parser.add_argument("--repeats", type=int, default=3)
    add_cell_options(parser, sizes="320x320", counts="1,10", formats="wds,coco", out_dir=TMPFS)
    args = parser.parse_args()
    print("| size | objects | format | main process (us/sample) | workers (us/sample) | samples/s |")
    print("|---|---|---|---|---|---|")
    for size, count, spec in cases(args):
        prepare(spec, progress=False)  # build or load the cached pools before timing anything
        for fmt in args.formats.split(","):
            main_us, workers_us, rates = [], [], []
            for _ in range(args.repeats):
                few_main, few_workers, _ = measure(spec, fmt, args.few, args.out_dir)
                long_main, long_workers, rate = measure(spec, fmt, args.n, args.out_dir)
                main_us.append(1e6 * (long_main - few_main) / (args.n - args.few))
                workers_us.append(1e6 * (long_workers - few_workers) / (args.n - args.few))
                rates.append(rate)
            print(f"| {size} | {count} | {fmt} | {np.median(main_us):.0f} | {np.median(workers_us):.0f} | {np.median(rates):.0f} |", flush=True)


if __name__ == "__main__":
    main()
