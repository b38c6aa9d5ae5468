"""ReDO speed: masks/s of synthgen's mask network against ReDO's official ``_netEncM`` on the same
checkpoint file, in the same process, and training steps/s of ``synthgen train redo``.

    PYTHONPATH=$PWD /work/venv/bin/python bench/redo_speed.py --official /path/to/mickaelChen/ReDO \
        --threads 2 --rounds 12 --out docs/redo_speed.json

Official code: https://github.com/mickaelChen/ReDO at commit d6542528ca97c5c533694c4095ba003cb7a95d4c
(``models.py`` imported from ``--official``). The checkpoint is the released architecture (128 px,
nf 64, 3 residual blocks, 2 masks) with the official module's own random orthogonal weights, saved
in the official layout; the official side loads it as ``example_load_pretrained.py`` does, synthgen
with ``load_redo``. Each round times both networks on the same input, alternating, inside
``torch.inference_mode``; the median over rounds is reported with min and max (the machine is
shared, so single numbers are noisy). ``segment_batch`` adds synthgen's whole path (uint8 resize
in, mask resize out) on 200x100 crops.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _seconds_per_image(fn, x: torch.Tensor, min_images: int) -> float:
    repeats = max(1, -(-min_images // len(x)))
    started = time.perf_counter()
    with torch.inference_mode():
        for _ in range(repeats):
            fn(x)
    return (time.perf_counter() - started) / (repeats * len(x))


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2), "max": round(max(values), 2)}


def mask_speed(official_dir: Path, batches: list[int], rounds: int, min_images: int) -> list[dict]:
    sys.path.insert(0, str(official_dir))
    import models  # the official models.py

    from synthgen.segmenters.redo import load_redo

    options = argparse.Namespace(sizex=128, nx=3, nMasks=2, nResM=3, nf=64, nfM=64, temperature=1.0, device="cuda:0")
    torch.manual_seed(0)
    net = models._netEncM(sizex=128, nIn=3, nMasks=2, nRes=3, nf=64, temperature=1.0)
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.orthogonal_(m.weight, 0.8)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "netM_state.pth"
        torch.save({"netEncM": net.state_dict(), "options": options}, path, _use_new_zipfile_serialization=False)
        states = torch.load(path, map_location={"cuda:0": "cpu"}, weights_only=False)  # as the official example
        opt = states["options"]
        official = models._netEncM(sizex=opt.sizex, nIn=opt.nx, nMasks=opt.nMasks, nRes=opt.nResM, nf=opt.nfM, temperature=opt.temperature)
        official.load_state_dict(states["netEncM"])
        official.eval()
        segmenter = load_redo(path, fg_channel=0, batch_size=64)
        crops = [np.random.default_rng(i).integers(0, 256, (200, 100, 3), dtype=np.uint8) for i in range(64)]
        for batch in batches:
            x = torch.rand(batch, 3, 128, 128, generator=torch.Generator().manual_seed(batch)) * 2 - 1
            with torch.inference_mode():
                diff = float((official(x) - segmenter(x)).abs().max())
                official(x), segmenter(x)  # warm-up
            # Paired, alternating timings (official then synthgen, then the other order): on a
            # shared machine both members of a pair see about the same load, so the ratio per
            # pair is steadier than either rate; the best rate is the least disturbed one.
            ours, theirs, whole = [], [], []
            for r in range(rounds):
                pair = [(official, theirs), (segmenter.net, ours)]
                for fn, times in (pair if r % 2 == 0 else pair[::-1]):
                    times.append(_seconds_per_image(fn, x, min_images))
                whole.append(_seconds_per_image(lambda _: segmenter.segment_batch(crops[:batch], [None] * batch), x, min_images))
            rows.append({
                "batch": batch,
                "official_masks_per_s": _summary([1 / t for t in theirs]),
                "synthgen_masks_per_s": _summary([1 / t for t in ours]),
                "speedup_of_medians": round(statistics.median(theirs) / statistics.median(ours), 3),
                "speedup_of_best": round(min(theirs) / min(ours), 3),
                "speedup_per_pair": _summary([a / b for a, b in zip(theirs, ours)]),
                "synthgen_segment_batch_per_s": _summary([1 / t for t in whole]), "max_abs_diff": diff,
            })
            print(json.dumps(rows[-1]), flush=True)
    return rows


def train_speed(settings: list[tuple[int, int, int]], steps: int) -> list[dict]:
    """Steps/s of train_step at (size, nf, batch), after one warm-up step."""
    from synthgen.segmenters.redo_train import RedoTrainConfig, _Nets, train_step

    rows = []
    for size, nf, batch in settings:
        config = RedoTrainConfig(images=Path("."), out=Path("."), size=size, nf=nf, batch_size=batch)
        nets = _Nets.build(config, torch.device("cpu"), (0, 0, 0))
        g = torch.Generator().manual_seed(0)
        x, real = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1 for _ in range(2))
        z = torch.randn(batch, 2, config.nz, 1, 1, generator=g)
        train_step(nets, config, x, real, z)
        started = time.perf_counter()
        for _ in range(steps):
            train_step(nets, config, x, real, z)
        rate = steps / (time.perf_counter() - started)
        rows.append({"size": size, "nf": nf, "batch": batch, "steps": steps, "steps_per_s": round(rate, 3),
                     "images_per_s": round(rate * batch, 1)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, required=True, help="a checkout of mickaelChen/ReDO")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", default="1,4,16,64")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--min-images", type=int, default=16, help="images per timing (small batches repeated)")
    parser.add_argument("--train", default="64:16:8,128:16:8,128:64:4", help="size:nf:batch settings for steps/s")
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {
        "torch": torch.__version__, "threads": args.threads, "rounds": args.rounds,
        "masks": mask_speed(args.official, [int(b) for b in args.batches.split(",")], args.rounds, args.min_images),
        "training": train_speed([tuple(int(v) for v in s.split(":")) for s in args.train.split(",")], args.train_steps),
    }
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
