"""GPU check of generator sources: `synthgen paste --objects GENERATOR --device cuda`.

For a random-weight StyleGAN2 (synthgen's own network, --resolution px, as in
paste_generator_memory.py), on each device: the time to build one block of --pool-size objects
(generation + segmentation + pool file), images/s of the generator alone at --batch, and a paste
run of --n samples with --workers per compositor in --compositors (CUDA initialised in the main
process before the workers are forked: they must not touch it; with ``torch`` the generated
cut-outs go to the torch compositor on the device). Then how far the CUDA objects are from the
CPU ones (max abs difference in grey levels of the uint8 objects, and the share of equal
pixels), and per device the torch compositor's run against the numpy compositor's (labels
identical, largest box difference in px, mean abs pixel difference of the decoded images).

Prints one JSON line. CPU-testable: --devices cpu --resolution 32 --n 40 --pool-size 16.
    python bench/gpu_generator_paste.py            # the demo scenes as backgrounds
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from paste_generator_memory import random_generator


def agreement(numpy_out: Path, torch_out: Path) -> dict:
    """Labels, boxes and decoded pixels of two runs' WebDataset samples, sample by sample."""
    import tarfile

    import cv2

    def read(root: Path) -> dict:
        found = {}
        for path in sorted(root.glob("shard-*.tar")):
            with tarfile.open(path) as tar:
                found.update({m.name: tar.extractfile(m).read() for m in tar.getmembers()})
        return found

    a, b = read(numpy_out), read(torch_out)
    same, box, means = a.keys() == b.keys(), 0.0, []
    for name in sorted(set(a) & set(b)):
        if name.endswith(".json"):
            x, y = json.loads(a[name]), json.loads(b[name])
            same &= x["labels"] == y["labels"]
            if x["boxes"] and len(x["boxes"]) == len(y["boxes"]):
                box = max(box, float(np.abs(np.array(x["boxes"]) - np.array(y["boxes"])).max()))
        elif name.endswith(".jpg"):
            decoded = [cv2.imdecode(np.frombuffer(v[name], np.uint8), cv2.IMREAD_COLOR).astype(int) for v in (a, b)]
            means.append(float(np.abs(decoded[0] - decoded[1]).mean()))
    return {"labels_identical": bool(same), "max_box_diff_px": box, "pixel_mean_abs_diff": round(float(np.mean(means)), 4) if means else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backgrounds", help="default: synthgen's demo scenes")
    parser.add_argument("--compositors", default="numpy,torch")
    parser.add_argument("--devices", default="cpu,cuda")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--pool-size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--segmenter", default="none")
    args = parser.parse_args()

    import torch

    import synthgen.generators as generators
    from synthgen.compositor import CompositeConfig
    from synthgen.engine import PasteSpec, RunOptions, run_paste
    from synthgen.generators.latents import latents_for
    from synthgen.segmenters import MaskQuality
    from synthgen.sources.generators import GeneratorSettings, generated_objects

    generators.load_generator = lambda spec, device="cpu": random_generator(args.resolution).to(device)
    work = Path(tempfile.mkdtemp(prefix="gpu-genpaste-"))
    fake = work / "random-sg2.pt"
    fake.write_bytes(b"loaded as random_generator()")
    settings = GeneratorSettings(refresh=args.n // 4 or 1, pool_size=args.pool_size, object_size=0)
    results, objects_by_device = {}, {}
    for device in args.devices.split(","):
        G = random_generator(args.resolution).to(device)
        G.compute_batch = args.batch
        z = latents_for(0, range(args.batch * 4), G.z_dim)
        G.images_from_latents(z[: args.batch])  # warm-up (cuDNN autotuning, allocations)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        G.images_from_latents(z)
        generate_s = time.perf_counter() - started

        objects = generated_objects(str(fake), 0, settings, args.segmenter, {}, MaskQuality(), device=device, batch_size=args.batch)
        objects.attach(work / f"blocks-{device.replace(':', '')}")
        started = time.perf_counter()
        pool = objects.pool_for(0)
        block_s = time.perf_counter() - started
        objects_by_device[device] = [np.array(pool[k].rgba) for k in range(len(pool))]
        objects.close()

        results[device] = {"generator_images_per_s": round(len(z) / generate_s, 1), "block_seconds": round(block_s, 3)}
        for compositor in args.compositors.split(","):
            spec = PasteSpec(objects=str(fake), backgrounds=args.backgrounds, segmenter=args.segmenter, generator=settings,
                             composite=CompositeConfig(width=320, height=320), compositor=compositor)
            out = work / f"out-{device.replace(':', '')}-{compositor}"
            started = time.perf_counter()
            summary = run_paste(spec, RunOptions(out=out, format="wds", n=args.n, workers=args.workers, device=device,
                                                 generator_batch=args.batch, progress=False))
            paste_s = time.perf_counter() - started
            results[device][f"paste_{compositor}_samples_per_s"] = round(summary.written / paste_s, 1)
            results[device][f"written_{compositor}"] = summary.written
        if {"numpy", "torch"} <= set(args.compositors.split(",")):
            results[device]["torch_vs_numpy"] = agreement(work / f"out-{device.replace(':', '')}-numpy",
                                                          work / f"out-{device.replace(':', '')}-torch")
    if len(objects_by_device) == 2:
        a, b = objects_by_device.values()
        diffs = [np.abs(x.astype(int) - y.astype(int)) for x, y in zip(a, b) if x.shape == y.shape]
        results["cpu_vs_cuda"] = {
            "same_shapes": len(diffs) == len(a) == len(b),
            "max_abs_diff": int(max(d.max() for d in diffs)) if diffs else None,
            "equal_fraction": round(float(np.mean([(d == 0).mean() for d in diffs])), 5) if diffs else None,
        }
    print(json.dumps({"bench": "gpu_generator_paste", "settings": vars(args), "results": results}))


if __name__ == "__main__":
    main()
