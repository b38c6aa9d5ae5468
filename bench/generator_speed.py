"""Sampling speed of synthgen's StyleGAN2 against the official implementation, same file, same batch.

Builds a random-weight generator with NVlabs stylegan2-ada-pytorch's own code and its 256 px
settings (``--cfg paper256``: channel_base 16384, channel_max 512, 8 mapping layers, z = w = 512,
num_fp16_res 4, conv_clamp 256), pickles it with NVlabs' persistence (a genuine network pickle, in a
temporary folder, never committed), then loads that one file twice: with NVlabs' ``legacy._LegacyUnpickler``
(NVlabs' unpickler, which executes the pickled source) and with ``synthgen.generators.load_generator``
(which does not). Both sample the same latents, ``noise_mode='const'``, float32 on CPU (the official
one with ``force_fp32=True``, as CPU requires), in rounds that alternate the two so that load drift on
a shared machine hits both alike. Prints a JSON line: seconds per batch (median, min, max of the
rounds), process CPU seconds (less sensitive to other processes on a shared machine), images/s,
the speed ratios, and the max abs difference of the outputs.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD:<click,requests> python bench/generator_speed.py \\
        --ada /work/ref/h-sg2/ada --batch 4 --rounds 5
"""

from __future__ import annotations

import argparse
import copy
import json
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

PAPER256 = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3,
                mapping_kwargs=dict(num_layers=8),
                synthesis_kwargs=dict(channel_base=16384, channel_max=512, num_fp16_res=4, conv_clamp=256))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ada", type=Path, required=True, help="NVlabs/stylegan2-ada-pytorch checkout")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    sys.path.insert(0, str(args.ada))
    import legacy
    from training import networks

    from synthgen.generators import load_generator

    kwargs = copy.deepcopy(PAPER256)
    kwargs["img_resolution"] = args.resolution
    torch.manual_seed(args.seed)
    G = networks.Generator(**kwargs).eval().requires_grad_(False)
    with torch.no_grad():  # non-zero biases, noise strengths and w_avg, as a trained network has
        for name, t in list(G.named_parameters()) + list(G.named_buffers()):
            if not name.endswith("resample_filter") and (t.ndim <= 1 or name.endswith("noise_const")):
                t.copy_(torch.randn(t.shape) * 0.5)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "paper256-random.pkl"
        with open(path, "wb") as f:
            pickle.dump(dict(G=G, D=None, G_ema=G, augment_pipe=None, training_set_kwargs=None), f)
        del G
        with open(path, "rb") as f:
            # legacy.load_network_pkl's own unpickler (its checks want a D, which this file leaves out)
            official = legacy._LegacyUnpickler(f).load()["G_ema"]
        ours = load_generator(path)
        size = path.stat().st_size

    z = torch.from_numpy(np.random.RandomState(args.seed).randn(args.batch, 512).astype(np.float32))

    def run_official():
        return official(z, None, truncation_psi=1, noise_mode="const", force_fp32=True)

    def run_ours():
        return ours.sample(z, truncation_psi=1.0, noise_mode="const")

    reference = run_official()  # also the warm-up
    diff = float((reference - run_ours()).abs().max())
    times = {"official": [], "synthgen": []}
    cpu = {"official": [], "synthgen": []}  # process CPU time: less sensitive to other processes' load
    for _ in range(args.rounds):
        for name, fn in (("official", run_official), ("synthgen", run_ours)):
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    result = dict(resolution=args.resolution, batch=args.batch, rounds=args.rounds, threads=args.threads,
                  file_bytes=size, max_abs_diff=diff,
                  max_abs_official=round(float(reference.abs().max()), 3), torch=torch.__version__)
    for name, ts in times.items():
        result[name] = dict(median_s=round(statistics.median(ts), 4), min_s=round(min(ts), 4),
                            max_s=round(max(ts), 4), images_per_s=round(args.batch / statistics.median(ts), 3),
                            cpu_median_s=round(statistics.median(cpu[name]), 4))
    result["speedup_median"] = round(statistics.median(times["official"]) / statistics.median(times["synthgen"]), 3)
    result["speedup_paired"] = [round(a / b, 3) for a, b in zip(times["official"], times["synthgen"])]
    result["cpu_speedup_median"] = round(statistics.median(cpu["official"]) / statistics.median(cpu["synthgen"]), 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
