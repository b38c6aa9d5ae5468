"""Feeding training from the device paste stream: does ``pretrain --data paste --device D`` wait
for its data, or does the detector bound it?

Three measurements of the same paste settings (a ``[paste]`` table written to a temporary
``synthgen.toml``: the demo objects and scenes unless ``--objects`` / ``--backgrounds`` are
given, the torch compositor) and the same training settings, in one run, printed as JSON lines:

- ``"kind": "feed"``: the live stream alone (``live_paste_source(spec, device)``, the
  :class:`~synthgen.training.data.DevicePasteSource` that pretrain uses: planning in
  ``--workers`` processes, drawing on the device, resized to ``--image-size``), training
  batches/s and samples/s, device synchronised before the clock stops;
- ``"kind": "train"``: the training loop alone (``synthgen.training.loop.train``), fed one
  pre-drawn batch over and over (no data cost): steps/s and the samples/s it consumes;
- ``"kind": "pretrain"``: the command itself, ``python -m synthgen pretrain --data paste:TOML
  --device D ...``, steps/s from its ``metrics.csv`` (first logging window left out: model
  build, first kernels) and samples/s;
- ``"kind": "summary"``: ``feed_over_train`` (> 1: the stream is faster than the detector
  trains, so the feed is not the bound) and ``pretrain_over_train`` (how much of the data-free
  step rate the real run keeps).

Rates are medians over the logging windows (``train``, ``pretrain``) or over ``--repeats``
timed stretches (``feed``), with min and max.

On a GPU host (about 2 minutes):
    python bench/gpu_train_feed.py --device cuda
On the CPU (tiny, proves the script; CPU numbers are not GPU numbers):
    OMP_NUM_THREADS=1 python bench/gpu_train_feed.py --device cpu --size 96x96 --image-size 96 --batch 4 --steps 12 --log-every 4 --feed-batches 6 --workers 1 --threads 1
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synthgen.cli.paste import paste_spec_from_config  # noqa: E402
from synthgen.training.data import DevicePasteSource, live_paste_source, make_loader  # noqa: E402
from synthgen.training.loop import TrainConfig, train  # noqa: E402


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def spread(values: list[float]) -> dict:
    return {"median": float(np.median(values)), "min": float(min(values)), "max": float(max(values)), "n": len(values)}


class OneBatchOverAndOver(DevicePasteSource):
    """The paste stream's first training batch, yielded forever: the training loop with no data cost."""

    def batches(self, **kwargs):
        first = next(super().batches(**kwargs))
        while True:
            yield first


def write_config(path: Path, args) -> None:
    lines = ["[paste]", f'size = "{args.size}"', f'objects-per-image = "{args.objects_per_image}"',
             'compositor = "torch"', "quiet = true"]
    for key in ("objects", "backgrounds"):
        if getattr(args, key):
            lines.append(f'{key} = "{getattr(args, key)}"')
    path.write_text("\n".join(lines) + "\n")


def measure_feed(spec, device: torch.device, args) -> dict:
    source = live_paste_source(spec, device)
    batches = make_loader(source, image_size=args.image_size, batch_size=args.batch, seed=0, num_workers=args.workers)
    next(batches)  # planning workers started, pools on the device, first kernels
    rates = []
    for _ in range(args.repeats):
        sync(device)
        started = time.perf_counter()
        for _ in range(args.feed_batches):
            images, _ = next(batches)
        sync(device)
        rates.append(args.feed_batches * args.batch / (time.perf_counter() - started))
    return {"kind": "feed", "samples_per_s": spread(rates), "batch": args.batch, "workers": args.workers}


def window_rates(rows: list[dict]) -> list[float]:
    """steps/s of the logging windows, the first (model build, first kernels) left out."""
    rates = [float(r["steps_per_s"]) for r in rows if r.get("steps_per_s") not in (None, "", "nan")]
    return rates[1:] if len(rates) > 1 else rates


def train_config(out: Path, args) -> TrainConfig:
    return TrainConfig(out=out, detector=args.detector, steps=args.steps, batch_size=args.batch, image_size=args.image_size,
                       eval_every=args.steps, log_every=args.log_every, num_workers=args.workers, device=args.device,
                       pretrained_backbone=False, progress=False, amp=args.amp, warmup_steps=1, threads=args.threads)


def measure_train(spec, device: torch.device, out: Path, args) -> dict:
    stream = live_paste_source(spec, device)
    source = OneBatchOverAndOver(stream.compositor, stream.spec, stream.device, stream)
    result = train(train_config(out, args), source)
    rates = window_rates(result.history)
    return {"kind": "train", "steps_per_s": spread(rates), "samples_per_s": spread([r * args.batch for r in rates]),
            "detector": args.detector, "image_size": args.image_size, "amp": args.amp}


def measure_pretrain(config: Path, out: Path, args) -> dict:
    command = [sys.executable, "-m", "synthgen", "pretrain", "--data", f"paste:{config}", "--device", args.device,
               "--steps", str(args.steps), "--batch-size", str(args.batch), "--image-size", str(args.image_size),
               "--detector", args.detector, "--eval-every", str(args.steps), "--num-workers", str(args.workers),
               "--warmup", "1", "--no-pretrained-backbone", "--no-progress", "--out", str(out)]
    if args.amp:
        command.append("--amp")
    if args.threads:
        command += ["--threads", str(args.threads)]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.pretrain_timeout_s)
    except subprocess.TimeoutExpired:
        return {"kind": "pretrain", "error": f"did not finish in {args.pretrain_timeout_s} s", "command": " ".join(command)}
    if done.returncode != 0:
        return {"kind": "pretrain", "error": (done.stdout + done.stderr)[-2000:], "command": " ".join(command)}
    with open(out / "metrics.csv") as f:
        rates = window_rates(list(csv.DictReader(f)))
    return {"kind": "pretrain", "steps_per_s": spread(rates), "samples_per_s": spread([r * args.batch for r in rates]),
            "wall_s": time.perf_counter() - started, "command": " ".join(command)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--objects", help="default: the demo objects")
    parser.add_argument("--backgrounds", help="default: the demo scenes")
    parser.add_argument("--size", default="320x320", help="pasted image size WxH")
    parser.add_argument("--objects-per-image", default="1,5")
    parser.add_argument("--detector", default="ssdlite-mbv3")
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--feed-batches", type=int, default=20, help="batches per timed stretch of the feed alone")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="planning processes (pretrain --num-workers)")
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--pretrain-timeout-s", type=float, default=600.0)
    parser.add_argument("--threads", type=int, help="torch CPU threads of the training process (default: torch's)")
    args = parser.parse_args()

    device = torch.device(args.device)
    emit({"kind": "machine", "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
          "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads()})
    with tempfile.TemporaryDirectory(prefix="train-feed-") as tmp:
        tmp = Path(tmp)
        config = tmp / "synthgen.toml"
        write_config(config, args)
        spec = paste_spec_from_config(config)
        feed = measure_feed(spec, device, args)
        emit(feed)
        trained = measure_train(spec, device, tmp / "train", args)
        emit(trained)
        pretrain = measure_pretrain(config, tmp / "pretrain", args)
        emit(pretrain)
    summary = {"kind": "summary", "feed_over_train": feed["samples_per_s"]["median"] / trained["samples_per_s"]["median"]}
    if "samples_per_s" in pretrain:
        summary["pretrain_over_train"] = pretrain["samples_per_s"]["median"] / trained["samples_per_s"]["median"]
    emit(summary)


if __name__ == "__main__":
    main()
