"""What each paste feature of issue 15 costs: one-worker `synthgen paste` rate with a feature on,
against the same run with it off, and the run with every feature off against the code before
the features (``--before``, a copy of the old tree), all measured interleaved in one run.

Variants (same objects, backgrounds, size, object count and seed unless said):
  before        the old code (``--before`` tree), no feature (what "off" must match)
  off           this code, every feature off
  visibility    --visibility (visible fraction, visible and amodal boxes written)
  amodal        --box amodal --visibility
  balance       --class-balance uniform
  distractors   --distractors DIR (1-3 per image, scale 0.1-0.5, pasted after the objects)
  labelled      --backgrounds coco:FILE --keep-annotations  (against "labelled-off": the same
                backgrounds without keeping their annotations)
  protect       the same with --protect 0.2 (against "labelled": the default protect is
                1 - min_visible = 0.4; a tighter one rejects more placements)
  bare          bench/paste_throughput.py's hand-written loop (alpha blend + JPEG, no writer) on
                the same pools, for scale: synthgen's old "0.8x of bare" target
  yolo-off / yolo-visibility   YOLO output, the sidecar file per sample

Each measurement is its own process (the old and new code cannot share one), pinned to one CPU.
The rate reported is samples per second of CPU time (user + system, the process and any child
processes, ``resource.getrusage``) over the whole ``run_paste`` call (rendering, encoding,
writing), after an untimed 2-sample run in the same process that does the lazy imports and
builds or maps the pools: on a machine shared with other jobs, wall-clock rates of the same
variant varied 3x between repetitions, CPU time far less. The wall-clock rate
(RunSummary.rate) is kept in the JSON.

Each repetition runs every variant once, in a fresh random order (seeded by the repetition
number), so a slow spell of the machine does not always hit the same variant. Besides the ratio
of medians, each pair's ratio is computed per repetition (the pair measured minutes apart at
most) and its median and range reported.

Run (needs /work/shared/data):
    python bench/paste_features.py --objects DEMO_OBJECTS --backgrounds /work/shared/data/scenes \
        --labelled /work/shared/data/pennfudan/annotations.json --distractors DEMO_OBJECTS/leaf \
        --before /tmp/before-src --out-dir /dev/shm --n 500 --repeats 7 --json docs/paste-features.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]

# One measurement: build the spec from JSON, run, print the rate. Runs under either tree.
_RUNNER = """
import json, os, sys
os.sched_setaffinity(0, {int(sys.argv[3])})
from pathlib import Path
from synthgen.compositor import CompositeConfig
from synthgen.engine import PasteSpec, RunOptions, run_paste
job = json.loads(sys.argv[1])
composite = CompositeConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in job["composite"].items()})
spec = PasteSpec(composite=composite, **job["spec"])
import resource, time

def cpu_seconds():
    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))

if job.get("bare"):  # the hand-written loop of bench/paste_throughput.py, on the same pools
    sys.path.insert(0, job["bench"])
    from paste_throughput import bare_loop, baseline_inputs
    backgrounds, objects = baseline_inputs(spec)
    started = cpu_seconds()
    wall_rate = bare_loop(backgrounds, objects, spec, job["n"])
    print(json.dumps({"rate": job["n"] / (cpu_seconds() - started), "wall_rate": wall_rate, "objects": 0}))
    sys.exit()
# Untimed: a 2-sample run first, so that the lazy imports (several CPU seconds) and the pools'
# first mapping are not counted; each background's first use (its kept annotations rasterised)
# mostly still is.
run_paste(spec, RunOptions(out=Path(sys.argv[2] + "-warm"), format=job["format"], n=2, workers=1, progress=False))
started = cpu_seconds()
summary = run_paste(spec, RunOptions(out=Path(sys.argv[2]), format=job["format"], n=job["n"], workers=1, progress=False))
cpu = cpu_seconds() - started
print(json.dumps({"rate": job["n"] / cpu, "wall_rate": summary.rate, "objects": summary.objects}))
"""


def variants(args) -> dict[str, tuple[Path, dict]]:
    base_composite = {"width": 320, "height": 320, "objects_per_image": [args.objects_per_image] * 2, "scale": [0.1, 0.4]}
    base = {"spec": {"objects": args.objects, "backgrounds": args.backgrounds, "segmenter": args.segmenter}, "composite": base_composite, "format": args.format}

    def job(spec=None, composite=None, fmt=None, **extra):
        return {"spec": {**base["spec"], **(spec or {})}, "composite": {**base_composite, **(composite or {})}, "format": fmt or args.format,
                **extra}

    runs = {
        "off": (HERE, job()),
        "visibility": (HERE, job({"visibility": True})),
        "amodal": (HERE, job({"visibility": True}, {"box": "amodal"})),
        "balance": (HERE, job(composite={"class_balance": "uniform"})),
        "distractors": (HERE, job({"distractors": args.distractors})),
        "labelled-off": (HERE, job({"backgrounds": f"coco:{args.labelled}"})),
        "labelled": (HERE, job({"backgrounds": f"coco:{args.labelled}", "keep_annotations": True})),
        "protect": (HERE, job({"backgrounds": f"coco:{args.labelled}", "keep_annotations": True}, {"protect": 0.2})),
        "yolo-off": (HERE, job(fmt="yolo")),
        "yolo-visibility": (HERE, job({"visibility": True}, fmt="yolo")),
    }
    if args.before:
        runs = {"before": (Path(args.before), job()), "yolo-before": (Path(args.before), job(fmt="yolo")), **runs}
    return {"bare": (HERE, job(bare=True, bench=str(HERE / "bench"))), **runs}


#: Which variant each is compared with.
PAIRS = {"off": "before", "yolo-off": "yolo-before", "visibility": "off", "amodal": "off", "balance": "off",
         "distractors": "off", "labelled": "labelled-off", "protect": "labelled", "yolo-visibility": "yolo-off",
         "before": "bare", "yolo-before": "bare"}


def measure(tree: Path, job: dict, n: int, out_dir: Path, cpu: int) -> dict:
    out = Path(tempfile.mkdtemp(prefix="bench-features-", dir=out_dir))
    try:
        env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1")
        result = subprocess.run([sys.executable, "-c", _RUNNER, json.dumps({**job, "n": n}), str(out / "o"), str(cpu)],
                                env=env, capture_output=True, text=True, check=False)
        if result.returncode:
            raise RuntimeError(result.stderr[-2000:])
        return json.loads(result.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", required=True)
    parser.add_argument("--backgrounds", required=True)
    parser.add_argument("--labelled", required=True, help="a COCO file whose images and annotations are the labelled backgrounds")
    parser.add_argument("--distractors", required=True)
    parser.add_argument("--segmenter", default="auto")
    parser.add_argument("--before", help="a copy of the code before the features (git archive main | tar -x -C DIR)")
    parser.add_argument("--objects-per-image", type=int, default=5)
    parser.add_argument("--format", default="wds")
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out-dir", type=Path, default=Path("/dev/shm") if Path("/dev/shm").is_dir() else Path("."))
    parser.add_argument("--variants", help="comma-separated variants to run (default: all)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cpu = min(os.sched_getaffinity(0))
    runs = variants(args)
    if args.variants:
        chosen = args.variants.split(",")
        unknown = sorted(set(chosen) - set(runs))
        if unknown:
            parser.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(runs)}")
        runs = {name: runs[name] for name in chosen}
    rates: dict[str, list[float]] = {name: [] for name in runs}
    objects: dict[str, int] = {}
    walls: dict[str, list[float]] = {}
    for repeat in range(args.repeats):
        order = list(runs)
        np.random.default_rng(repeat).shuffle(order)
        for name in order:
            tree, job = runs[name]
            result = measure(tree, job, args.n, args.out_dir, cpu)
            rates[name].append(result["rate"])
            walls.setdefault(name, []).append(result["wall_rate"])
            objects[name] = result["objects"]
            print(f"{name:>16}: {result['rate']:7.1f} samples/s", flush=True)
    rows = []
    for name in runs:
        median = float(np.median(rates[name]))
        row = {"variant": name, "median": median, "rates": rates[name], "wall_rates": walls[name], "boxes": objects[name],
               "against": PAIRS.get(name)}
        if row["against"] in runs:
            row["ratio"] = median / float(np.median(rates[row["against"]]))
            row["paired_ratios"] = [a / b for a, b in zip(rates[name], rates[row["against"]])]
        rows.append(row)
    print(f"\n| variant | samples per CPU second (median of {args.repeats}) | min-max | boxes in the last run | against "
          "| ratio of medians | paired ratio: median (min-max) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = paired = ""
        if "ratio" in r:
            ratio, pr = f"{r['ratio']:.2f}", r["paired_ratios"]
            paired = f"{np.median(pr):.2f} ({min(pr):.2f}-{max(pr):.2f})"
        print(f"| {r['variant']} | {r['median']:.0f} | {min(r['rates']):.0f}-{max(r['rates']):.0f} | {r['boxes']} | {r['against'] or ''} "
              f"| {ratio} | {paired} |")
    if args.json:
        args.json.write_text(json.dumps({"n": args.n, "repeats": args.repeats, "objects_per_image": args.objects_per_image,
                                         "format": args.format, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
