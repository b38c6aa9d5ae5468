"""What the paste features cost when they are off: the per-sample work of one worker (render,
JPEG encode, WebDataset staging of the tar members) under this tree and under another tree
(``--before``: the code before the features), in two long-lived processes pinned to the same
CPU, alternating short blocks of samples.

``bench/paste_features.py`` measures whole runs (one process each, startup and writer
included), whose spread on a shared machine is about +-15%; this one removes what differs
between runs (process start, pool mapping, first use of caches) and pairs blocks measured
seconds apart, so a difference of a few per cent shows. Each block is the same samples
(``--block`` of them, the same indices every round) in both trees; a process's CPU time
(``time.process_time``) is the measure. Both trees render exactly the same samples (their
JPEG bytes are compared once at the start).

Run (needs /work/shared/data):
    python bench/paste_off_cost.py --objects DEMO_OBJECTS --backgrounds /work/shared/data/scenes \\
        --before /tmp/before-src --block 200 --rounds 25 --json docs/paste-off-cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]

# One tree's worker: builds the scene once, then renders, encodes and stages the block of
# samples each command names, answering the CPU seconds it took.
_WORKER = """
import hashlib, json, os, sys, time
from pathlib import Path
os.sched_setaffinity(0, {int(sys.argv[2])})
from synthgen.compositor import CompositeConfig
from synthgen.engine import PasteSpec, new_canvas, prepare, render_encoded
from synthgen.writers import WriterOptions, make_writer
job = json.loads(sys.argv[1])
spec = PasteSpec(composite=CompositeConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in job["composite"].items()}), **job["spec"])
compositor = prepare(spec, progress=False).compositor
stage = make_writer("wds", Path(sys.argv[3]), compositor.categories, WriterOptions()).stager()
canvas = new_canvas(compositor)
digest = hashlib.sha256()
for i in range(job["check"]):  # warm-up, and the bytes both trees must agree on
    staged = stage(render_encoded(compositor, spec, i, canvas))
    digest.update(bytes(staged.payload))
print(digest.hexdigest(), flush=True)
for line in sys.stdin:
    start, n = (int(v) for v in line.split())
    began = time.process_time()
    for i in range(start, start + n):
        stage(render_encoded(compositor, spec, i, canvas))
    print(time.process_time() - began, flush=True)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", required=True)
    parser.add_argument("--backgrounds", required=True)
    parser.add_argument("--segmenter", default="auto")
    parser.add_argument("--before", required=True, help="a copy of the code before the features (git archive COMMIT | tar -x -C DIR)")
    parser.add_argument("--objects-per-image", type=int, default=5)
    parser.add_argument("--block", type=int, default=200, help="samples per block")
    parser.add_argument("--rounds", type=int, default=25, help="blocks per tree, alternating")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cpu = min(os.sched_getaffinity(0))
    job = {"spec": {"objects": args.objects, "backgrounds": args.backgrounds, "segmenter": args.segmenter},
           "composite": {"width": 320, "height": 320, "objects_per_image": [args.objects_per_image] * 2, "scale": [0.1, 0.4]},
           "check": 50}
    trees = {"before": Path(args.before), "off": HERE}
    workers, digests = {}, {}
    for name, tree in trees.items():
        env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1")
        workers[name] = subprocess.Popen([sys.executable, "-c", _WORKER, json.dumps(job), str(cpu), "/dev/null"], env=env,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        digests[name] = workers[name].stdout.readline().strip()
    if len(set(digests.values())) != 1:
        raise SystemExit(f"the trees render different bytes: {digests}")
    seconds: dict[str, list[float]] = {name: [] for name in trees}
    rng = np.random.default_rng(0)
    start = job["check"]
    for _ in range(args.rounds):
        order = list(trees)
        rng.shuffle(order)
        for name in order:
            workers[name].stdin.write(f"{start} {args.block}\n")
            workers[name].stdin.flush()
            seconds[name].append(float(workers[name].stdout.readline()))
    for worker in workers.values():
        worker.stdin.close()
        worker.wait()
    per_sample = {name: [s / args.block * 1e6 for s in values] for name, values in seconds.items()}
    ratios = [a / b for a, b in zip(per_sample["off"], per_sample["before"])]
    q1, median, q3 = np.percentile(ratios, [25, 50, 75])
    for name, values in per_sample.items():
        print(f"{name:>7}: median {np.median(values):7.0f} us per sample (CPU), range {min(values):.0f}-{max(values):.0f}")
    print(f"off / before, paired by round: median {median:.3f}, quartiles {q1:.3f}-{q3:.3f}, range {min(ratios):.3f}-{max(ratios):.3f} "
          f"({args.rounds} rounds of {args.block} samples; identical bytes: {next(iter(digests.values()))[:12]})")
    if args.json:
        args.json.write_text(json.dumps({"block": args.block, "rounds": args.rounds, "objects_per_image": args.objects_per_image,
                                         "us_per_sample": per_sample, "paired_ratios": ratios}, indent=1))


if __name__ == "__main__":
    main()
