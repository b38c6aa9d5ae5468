"""StyleGAN2 sampling throughput on a GPU: images/s at 256 and 1024 px, float16 vs float32, batch 1-64.

Random-weight generators with the official settings: 256 px as stylegan2-ada-pytorch ``--cfg
paper256`` (channel_base 16384), 1024 px as StyleGAN2 config-f (channel_base 32768); both
channel_max 512, 8 mapping layers, z = w = 512, num_fp16_res 4, conv_clamp 256. "fp16" runs the
four highest resolutions in float16 as the official networks do on CUDA; "fp32" forces float32.
Each cell: warm-up, then timed batches (CUDA-synchronised) until ``--seconds`` have passed; prints one
JSON line per cell, then a summary line with the max abs difference between fp16 and fp32 images.

    python bench/gpu_generators.py                                   # on CUDA, the full grid
    python bench/gpu_generators.py --device cpu --tiny --resolutions 16,32 --batches 1,2   # smoke test
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from synthgen.generators.stylegan2 import StyleGAN2Generator, config_from_init_kwargs


def settings(resolution: int, tiny: bool) -> dict:
    base = 16384 if resolution <= 256 else 32768
    return dict(z_dim=32 if tiny else 512, c_dim=0, w_dim=32 if tiny else 512, img_resolution=resolution,
                img_channels=3, mapping_kwargs=dict(num_layers=2 if tiny else 8),
                synthesis_kwargs=dict(channel_base=256 if tiny else base, channel_max=16 if tiny else 512,
                                      num_fp16_res=4, conv_clamp=256))


def build(resolution: int, tiny: bool, device: str, seed: int) -> StyleGAN2Generator:
    torch.manual_seed(seed)
    G = StyleGAN2Generator(config_from_init_kwargs(settings(resolution, tiny)))
    with torch.no_grad():
        for name, t in list(G.named_parameters()) + list(G.named_buffers()):
            if not name.endswith("resample_filter"):
                t.normal_(0, 0.5 if t.ndim <= 1 else 1.0)
    return G.to(device).eval().requires_grad_(False)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_cell(G, batch: int, device: str, seconds: float) -> dict:
    z = torch.randn(batch, G.z_dim, device=device)
    for _ in range(2):
        G.sample(z)
    sync(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    count, start = 0, time.perf_counter()
    while True:
        G.sample(z)
        count += 1
        sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and count >= 3:
            break
    out = dict(batches=count, seconds=round(elapsed, 3), images_per_s=round(count * batch / elapsed, 2))
    if device.startswith("cuda"):
        out["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--resolutions", default="256,1024")
    parser.add_argument("--batches", default="1,4,16,64")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per cell")
    parser.add_argument("--tiny", action="store_true", help="few channels (CPU smoke test)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    torch.backends.cudnn.benchmark = True
    info = dict(device=args.device, torch=torch.__version__)
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
        info["cudnn_tf32"] = torch.backends.cudnn.allow_tf32  # PyTorch's default: float32 convs in TF32
    summary = dict(info, fp16_vs_fp32_max_abs={})
    for resolution in map(int, args.resolutions.split(",")):
        G = build(resolution, args.tiny, args.device, args.seed)
        z = torch.randn(4, G.z_dim, device=args.device, generator=None)
        G.fp32 = False
        half = G.sample(z)
        G.fp32 = True
        full = G.sample(z)
        summary["fp16_vs_fp32_max_abs"][resolution] = round(float((half - full).abs().max()), 4)
        for precision in ("fp16", "fp32"):
            G.fp32 = precision == "fp32"
            for batch in map(int, args.batches.split(",")):
                try:
                    cell = time_cell(G, batch, args.device, args.seconds)
                except torch.OutOfMemoryError:
                    cell = dict(error="out of memory")
                    torch.cuda.empty_cache()
                # float16 blocks run only on CUDA: on CPU both precisions are float32
                active = "fp16" if precision == "fp16" and args.device.startswith("cuda") else "fp32"
                print(json.dumps(dict(info, resolution=resolution, precision=precision, runs_as=active,
                                      batch=batch, **cell)), flush=True)
        del G
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
