"""The GPU paste path in one short slot: the torch compositor on a device against the CPU path on
all of the machine's cores, measured in the same run, with a correctness check on the device.

For each cell (output size x objects per image) it prints JSON lines (one object per line):

- ``"kind": "device"``, per batch size: images/s of the device drawing alone (``render``), with
  JPEG encoding (``render+encode``: nvJPEG through torchvision on CUDA, OpenCV on the CPU), and
  where the time goes per image (us): ``render``, ``encode``, ``copy`` (the raw image to host
  memory, what a pipeline without device encoding would move), ``write`` (WebDataset stage and
  commit of the encoded sample, to ``--out-dir``). Samples were planned beforehand (``plan``
  below), so these rates are the device's, not the planner's. Every encoded batch is decoded back
  (OpenCV) and compared with the drawn pixels: ``decoded_ok`` counts the images that decoded to
  the right size within ``--max-jpeg-error`` grey levels (mean abs) of what was drawn.
- ``"kind": "cell"``: ``plan_per_s`` (the CPU renderer's draws, placements and boxes with alpha
  only, in ``--workers`` processes: the host's ceiling for the device path); ``end_to_end_per_s``
  (``synthgen paste --compositor torch --device D --workers W --batch-size B --format wds``, the
  whole pipeline, writing to ``--out-dir``); ``cpu_path_per_s`` (``synthgen paste --compositor
  numpy --workers W --format wds``, the same samples on all cores) and the ratios; and the check
  on the first ``--check`` samples: labels identical to the CPU path, the largest box difference
  (px), the mean and max absolute pixel difference to the CPU path.
- a final ``"kind": "summary"`` line.

Inputs: synthgen's built-in demo objects and scenes unless ``--objects`` / ``--backgrounds`` are
given. ``--budget-s`` skips the cells that would start after that many seconds.

On an H200 host (one short slot, about 2-3 minutes):
    python bench/gpu_paste.py --device cuda
Smoke test on the CPU (tiny sizes):
    python bench/gpu_paste.py --device cpu --sizes 96x80 --counts 1,3 --batches 4,8 --n 16 --n-e2e 16 --n-cpu 32 --check 8 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synthgen.compositor import CompositeConfig  # noqa: E402
from synthgen.compositor.torch_render import Planner, TorchCompositor, encode_images  # noqa: E402
from synthgen.engine import PasteSpec, RunOptions, _render_in_workers, encode_sample, prepare, run_paste  # noqa: E402
from synthgen.writers import WriterOptions, make_writer  # noqa: E402

cv2.setNumThreads(1)


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plan_all(compositor, spec: PasteSpec, n: int, workers: int) -> tuple[list, float]:
    """Samples 0..n-1 planned in ``workers`` processes, and the rate (plans/s)."""
    planner = Planner(compositor.config, compositor.objects, compositor.backgrounds)
    started = time.perf_counter()
    planned = list(_render_in_workers(planner, spec, iter(range(n)), workers, stage=None, should_stop=lambda: False))
    return planned, n / (time.perf_counter() - started)


def decoded_within(jpegs: list[bytes], images: np.ndarray, limit: float, pool: ThreadPoolExecutor) -> int:
    def check(k: int) -> bool:
        decoded = cv2.imdecode(np.frombuffer(jpegs[k], np.uint8), cv2.IMREAD_COLOR)
        if decoded is None or decoded.shape != images[k].shape:
            return False
        rgb = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
        return float(np.abs(rgb.astype(np.int16) - images[k].astype(np.int16)).mean()) <= limit
    return sum(pool.map(check, range(len(jpegs))))


def device_cell(drawer: TorchCompositor, planned: list, spec: PasteSpec, batch: int, out_dir: Path, limit: float,
                pool: ThreadPoolExecutor) -> dict:
    device = drawer.device
    drawer.draw(planned[:batch])  # warm-up: kernels, allocator, encoder handles
    encode_images(drawer.draw(planned[: min(batch, 8)]), spec.jpeg_quality)
    sync(device)
    times = dict.fromkeys(("render", "encode", "copy", "write"), 0.0)
    decoded_ok = 0
    out = Path(tempfile.mkdtemp(prefix="gpu-paste-", dir=out_dir))
    try:
        writer = make_writer("wds", out, drawer.categories, WriterOptions())
        writer.open(resume=False)
        stage = writer.stager()
        for start in range(0, len(planned), batch):
            part = planned[start : start + batch]
            t0 = time.perf_counter()
            images = drawer.draw(part)
            sync(device)
            t1 = time.perf_counter()
            jpegs = encode_images(images, spec.jpeg_quality)
            t2 = time.perf_counter()
            host = images.cpu().numpy()
            t3 = time.perf_counter()
            for sample, jpeg in zip(part, jpegs):
                writer.commit(stage(encode_sample(sample, spec.jpeg_quality, False, jpeg=jpeg)))
            t4 = time.perf_counter()
            for name, seconds in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                times[name] += seconds
            decoded_ok += decoded_within(jpegs, host, limit, pool)
        writer.close()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    n = len(planned)
    per_image = {name: 1e6 * seconds / n for name, seconds in times.items()}
    return {
        "batch": batch,
        "render_per_s": 1e6 / per_image["render"],
        "render_encode_per_s": 1e6 / (per_image["render"] + per_image["encode"]),
        "us_per_image": per_image,
        "decoded_ok": decoded_ok,
        "images": n,
    }


def check_against_cpu(compositor, drawer: TorchCompositor, planned: list, spec: PasteSpec) -> dict:
    images = drawer.draw(planned).cpu().numpy()
    same_labels, box_error, means, maxima = True, 0.0, [], []
    for sample, image in zip(planned, images):
        reference = compositor.render(spec.seed, sample.index)
        same_labels &= [a.category_id for a in sample.annotations] == [a.category_id for a in reference.annotations]
        if sample.annotations and len(sample.annotations) == len(reference.annotations):
            box_error = max(box_error, float(np.abs(np.array([a.bbox for a in sample.annotations]) - np.array([a.bbox for a in reference.annotations])).max()))
        d = np.abs(image.astype(np.int16) - reference.image.astype(np.int16))
        means.append(float(d.mean()))
        maxima.append(int(d.max()))
    return {"labels_identical": bool(same_labels), "max_box_diff_px": box_error,
            "pixel_mean_abs_diff": float(np.mean(means)), "pixel_max_abs_diff": max(maxima), "checked": len(planned)}


def paste_rate(spec: PasteSpec, options: RunOptions) -> float:
    out = Path(tempfile.mkdtemp(prefix="gpu-paste-run-", dir=options.out))
    try:
        return run_paste(spec, RunOptions(**{**options.__dict__, "out": out / "o"})).rate
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--objects", help="default: the demo objects")
    parser.add_argument("--backgrounds", help="default: the demo scenes")
    parser.add_argument("--segmenter", default="auto")
    parser.add_argument("--sizes", default="320x320,640x480")
    parser.add_argument("--counts", default="1,5,10")
    parser.add_argument("--batches", default="32,128,512")
    parser.add_argument("--n", type=int, default=2048, help="samples per device measurement")
    parser.add_argument("--n-e2e", type=int, default=4096, help="samples of the end-to-end device run")
    parser.add_argument("--n-cpu", type=int, default=8192, help="samples of the CPU-path run")
    parser.add_argument("--e2e-batch", type=int, default=256)
    parser.add_argument("--check", type=int, default=64, help="samples compared with the CPU path per cell")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--max-jpeg-error", type=float, default=4.0, help="mean abs grey levels a decoded image may differ")
    parser.add_argument("--out-dir", type=Path, default=Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir()))
    parser.add_argument("--budget-s", type=float, default=200.0)
    args = parser.parse_args()

    started = time.perf_counter()
    device = torch.device(args.device)
    emit({"kind": "machine", "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
          "cores": os.cpu_count(), "workers": args.workers, "torch": torch.__version__, "out_dir": str(args.out_dir)})
    summary = {"kind": "summary", "cells": 0, "skipped": [], "all_labels_identical": True, "max_box_diff_px": 0.0,
               "decoded_ok": 0, "encoded": 0}
    with ThreadPoolExecutor(max(1, args.workers)) as pool:
        for size in args.sizes.split(","):
            width, height = (int(v) for v in size.split("x"))
            for count in (int(c) for c in args.counts.split(",")):
                if time.perf_counter() - started > args.budget_s:
                    summary["skipped"].append(f"{size}/{count}")
                    continue
                composite = CompositeConfig(width=width, height=height, objects_per_image=(count, count), scale=(0.1, 0.4))
                spec = PasteSpec(objects=args.objects, backgrounds=args.backgrounds, segmenter=args.segmenter,
                                 composite=composite, jpeg_quality=args.quality)
                compositor = prepare(spec, progress=False).compositor
                planned, plan_rate = plan_all(compositor, spec, args.n, args.workers)
                drawer = TorchCompositor.from_compositor(compositor, device)
                for batch in (int(b) for b in args.batches.split(",")):
                    row = device_cell(drawer, planned, spec, batch, args.out_dir, args.max_jpeg_error, pool)
                    summary["decoded_ok"] += row["decoded_ok"]
                    summary["encoded"] += row["images"]
                    emit({"kind": "device", "size": size, "objects": count, **row})
                check = check_against_cpu(compositor, drawer, planned[: args.check], spec)
                del drawer
                torch_spec = PasteSpec(**{**spec.__dict__, "compositor": "torch"})
                end_to_end = paste_rate(torch_spec, RunOptions(out=args.out_dir, format="wds", n=args.n_e2e, workers=args.workers,
                                                               device=args.device, batch_size=args.e2e_batch, progress=False))
                cpu_path = paste_rate(spec, RunOptions(out=args.out_dir, format="wds", n=args.n_cpu, workers=args.workers, progress=False))
                emit({"kind": "cell", "size": size, "objects": count, "plan_per_s": plan_rate, "end_to_end_per_s": end_to_end,
                      "cpu_path_per_s": cpu_path, "end_to_end_vs_cpu_path": end_to_end / cpu_path, **check})
                summary["cells"] += 1
                summary["all_labels_identical"] &= check["labels_identical"]
                summary["max_box_diff_px"] = max(summary["max_box_diff_px"], check["max_box_diff_px"])
    summary["seconds"] = time.perf_counter() - started
    emit(summary)


if __name__ == "__main__":
    main()
