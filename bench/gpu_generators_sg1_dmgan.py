"""Images per second of synthgen's StyleGAN (v1) and DM-GAN networks on a GPU, fp32 and fp16
autocast, over batch sizes; random weights at the released models' settings (StyleGAN v1 FFHQ
1024 px and cars 512 px: fmap_base 8192, fmap_max 512, 8 mapping layers; DM-GAN birds
``eval_bird.yml``: GF_DIM 64, 256-d text, 5,450 words, 3 stages to 256 px).

One JSON line per (model, precision, batch): ``images_per_s`` (median of ``--reps`` timed calls
after a warm-up, CUDA synchronised), ``max_abs_diff_vs_fp32`` for fp16 on the same latents, and
the peak memory. With ``--device cpu --tiny`` it runs small versions in fp32 as a smoke test.

Run on the GPU machine:
    PYTHONPATH=. python bench/gpu_generators_sg1_dmgan.py --device cuda --batches 1,8,32,64
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

import numpy as np
import torch

from synthgen.generators.dmgan import DMGANGenerator, GNet, RNNEncoder, Vocabulary, fuse_batchnorm
from synthgen.generators.stylegan1 import StyleGAN1Generator


def _randomize(module: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=gen) * (0.1 if t.ndim > 1 and "mapping" not in name else 1.0))


def models(tiny: bool) -> dict:
    if tiny:
        sg = {"stylegan1-64px-tiny": dict(resolution=64, z_dim=16, w_dim=16, mapping_layers=2, mapping_fmaps=16,
                                          fmap_base=64, fmap_max=8)}
        dm = dict(ngf=2, nef=16, ncf=6, z_dim=8, words=40)
    else:
        sg = {"stylegan1-ffhq-1024": dict(resolution=1024), "stylegan1-cars-512": dict(resolution=512)}
        dm = dict(ngf=64, nef=256, ncf=100, z_dim=100, words=5450)
    out = {}
    for name, kwargs in sg.items():
        out[name] = lambda kwargs=kwargs: StyleGAN1Generator(**kwargs)

    def dmgan():
        G = GNet(ngf=dm["ngf"], nef=dm["nef"], ncf=dm["ncf"], z_dim=dm["z_dim"])
        encoder = RNNEncoder(dm["words"], 300, dm["nef"] // 2)
        vocabulary = Vocabulary({f"w{i}": i for i in range(dm["words"])}, [], [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]], "bench")
        return DMGANGenerator(G, encoder, vocabulary, z_dim=dm["z_dim"], ncf=dm["ncf"])

    out["dmgan-birds-256" + ("-tiny" if tiny else "")] = dmgan
    return out


def measure(model, batch: int, device: str, fp16: bool, reps: int, reference=None):
    z = torch.from_numpy(np.random.default_rng(batch).standard_normal((batch, model.z_dim)).astype(np.float32)).to(device)
    autocast = torch.autocast(device_type="cuda", dtype=torch.float16) if fp16 and device == "cuda" \
        else contextlib.nullcontext()

    def run():
        with autocast:
            out = model.sample(z)
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    out = run()  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    diff = None if reference is None else float((out.float() - reference).abs().max())
    return out.float(), batch / statistics.median(times), times, diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batches", default="1,8,32,64")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="small models (CPU smoke test)")
    args = parser.parse_args()
    for name, make in models(args.tiny).items():
        model = make()
        _randomize(model, 0)
        if isinstance(model, DMGANGenerator):
            fuse_batchnorm(model.G.eval())  # as the loader does
        model = model.to(args.device).eval().requires_grad_(False)
        for batch in (int(b) for b in args.batches.split(",")):
            try:
                reference = None
                for fp16 in (False, True) if args.device == "cuda" else (False,):
                    if args.device == "cuda":
                        torch.cuda.reset_peak_memory_stats()
                    out, rate, times, diff = measure(model, batch, args.device, fp16, args.reps, reference)
                    reference = out if not fp16 else reference
                    peak = torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda" else None
                    print(json.dumps({"model": name, "device": args.device, "precision": "fp16-autocast" if fp16 else "fp32",
                                      "batch": batch, "images_per_s": round(rate, 2),
                                      "seconds": [round(t, 4) for t in times], "max_abs_diff_vs_fp32": diff,
                                      "peak_mib": None if peak is None else round(peak)}), flush=True)
            except torch.cuda.OutOfMemoryError:
                print(json.dumps({"model": name, "batch": batch, "error": "out of memory"}), flush=True)
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
