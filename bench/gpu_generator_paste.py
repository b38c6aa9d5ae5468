"""GPU check of generator sources: `synthgen paste --objects GENERATOR --device cuda`.

For a random-weight StyleGAN2 (synthgen's own network, --resolution px, as in
paste_generator_memory.py), on each device: the time to build one block of --pool-size objects
(generation + segmentation + pool file), images/s of the generator alone at --batch, and a paste
run of --n samples with --workers (CUDA initialised in the main process before the workers are
forked: they must not touch it). Then how far the CUDA objects are from the CPU ones (max abs
difference in grey levels of the uint8 objects, and the share of equal pixels).

Prints one JSON line. CPU-testable: --devices cpu --resolution 32 --n 40.
    python bench/gpu_generator_paste.py --backgrounds ../shared/data/scenes
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from paste_generator_memory import random_generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backgrounds", required=True)
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

        spec = PasteSpec(objects=str(fake), backgrounds=args.backgrounds, segmenter=args.segmenter, generator=settings,
                         composite=CompositeConfig(width=320, height=320))
        started = time.perf_counter()
        summary = run_paste(spec, RunOptions(out=work / f"out-{device.replace(':', '')}", format="wds", n=args.n,
                                             workers=args.workers, device=device, generator_batch=args.batch, progress=False))
        paste_s = time.perf_counter() - started
        results[device] = {
            "generator_images_per_s": round(len(z) / generate_s, 1),
            "block_seconds": round(block_s, 3),
            "paste_samples_per_s": round(summary.written / paste_s, 1),
            "written": summary.written,
        }
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
