"""Memory of an endless run: `synthgen paste --n inf --format wds`, resident memory of the whole
process tree (main process and workers) after 5,000 and after 50,000 samples.

Target (issue: synthgen paste): RSS after 50,000 within 10% of RSS after 5,000, i.e. nothing
grows with the number of samples written.

Run (needs ../shared/data):
    .venv/bin/python bench/paste_memory.py --objects ../shared/data/faces_caltech --backgrounds ../shared/data/scenes
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from paste_throughput import input_parser


def tree_rss_kib(pid: int) -> dict[int, int]:
    """VmRSS in KiB of ``pid`` and all its descendants."""
    found: dict[int, int] = {}
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except FileNotFoundError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                found[current] = int(line.split()[1])
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            pending += [int(c) for c in task.read_text().split()]
    return found


def samples_written(out: Path) -> int:
    journal = out / ".synthgen" / "wds.jsonl"
    if not journal.exists():
        return 0
    total = 0
    for line in journal.read_text().splitlines():
        try:
            total += json.loads(line)["count"]
        except (ValueError, KeyError):
            pass
    return total


def main() -> None:
    parser = input_parser(__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--checkpoints", default="5000,50000")
    parser.add_argument("--size", default="320x320")
    args = parser.parse_args()
    checkpoints = [int(c) for c in args.checkpoints.split(",")]

    out = Path(tempfile.mkdtemp(prefix="bench-mem-")) / "stream"
    cmd = [
        sys.executable, "-m", "synthgen", "paste", "--objects", args.objects, "--backgrounds", args.backgrounds,
        "--segmenter", args.segmenter, "--size", args.size, "--format", "wds", "--n", "inf",
        "--shard-size", "500", "--workers", str(args.workers), "--quiet", "--out", str(out),
    ]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    started = time.time()
    results = []
    try:
        for target in checkpoints:
            while samples_written(out) < target:
                if proc.poll() is not None:
                    raise SystemExit(f"synthgen stopped early:\n{proc.stderr.read().decode()}")
                time.sleep(0.5)
            rss = tree_rss_kib(proc.pid)
            done = samples_written(out)
            results.append({"samples": done, "rss_mib": sum(rss.values()) / 1024, "processes": len(rss),
                            "seconds": time.time() - started})
            print(f"{done:>7} samples  RSS {sum(rss.values()) / 1024:8.1f} MiB over {len(rss)} processes "
                  f"({', '.join(f'{v / 1024:.0f}' for v in rss.values())} MiB)  {time.time() - started:6.0f} s", flush=True)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
        shutil.rmtree(out.parent, ignore_errors=True)
    first, last = results[0]["rss_mib"], results[-1]["rss_mib"]
    print(f"\nRSS at {results[-1]['samples']:,} / at {results[0]['samples']:,} samples: {last / first:.3f} (target <= 1.10); "
          f"exit code after SIGINT {proc.returncode}")


if __name__ == "__main__":
    main()
