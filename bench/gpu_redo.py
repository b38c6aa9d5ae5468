"""ReDO on a GPU: masks/s of the mask network at several batch sizes, and training steps/s at the
paper's settings. For the lead's GPU slot; CPU-testable with tiny sizes.

    PYTHONPATH=$PWD python bench/gpu_redo.py --device cuda                     # the GPU slot (~1-2 min)
    PYTHONPATH=$PWD python bench/gpu_redo.py --device cpu --batches 1,2 --train 64:4:2 --train-steps 1

Uses the released architecture (128 px, nf 64, 3 residual blocks, 2 masks) with random weights in
ReDO's file layout, loaded by ``load_redo``; the same input's masks on the CPU and on ``--device``
give the device tolerance. With ``--official PATH`` (a mickaelChen/ReDO checkout) the official
``_netEncM`` is timed beside it on the same file. Training: ``train_step`` of ``synthgen train
redo`` at ``size:nf:batch`` (default 128:64:20, ReDO's train.py defaults). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(fn, x: torch.Tensor, device: torch.device, repeats: int) -> float:
    with torch.inference_mode():
        fn(x)
        _sync(device)
        started = time.perf_counter()
        for _ in range(repeats):
            fn(x)
        _sync(device)
    return repeats * len(x) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batches", default="1,4,16,64,256")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--official", type=Path, help="a mickaelChen/ReDO checkout, to time its _netEncM too")
    parser.add_argument("--train", default="128:64:20", help="size:nf:batch settings, comma-separated")
    parser.add_argument("--train-steps", type=int, default=20)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True

    from synthgen.segmenters.redo import load_redo
    from synthgen.segmenters.redo_nets import MaskNet, init_orthogonal
    from synthgen.segmenters.redo_train import RedoTrainConfig, _Nets, train_step

    torch.manual_seed(0)
    net = MaskNet()
    init_orthogonal(net)
    options = __import__("argparse").Namespace(sizex=128, nx=3, nMasks=2, nResM=3, nf=64, nfM=64, temperature=1.0)
    result: dict = {"device": str(device), "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None, "masks": [], "training": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "netM_state.pth"
        torch.save({"netEncM": net.state_dict(), "options": options}, path)
        ours = load_redo(path, fg_channel=0, device=args.device)
        cpu = load_redo(path, fg_channel=0)
        official = None
        if args.official:
            sys.path.insert(0, str(args.official))
            import models

            official = models._netEncM(sizex=128, nIn=3, nMasks=2, nRes=3, nf=64).to(device).eval()
            official.load_state_dict(torch.load(path, map_location="cpu", weights_only=False)["netEncM"])
        x = torch.rand(4, 3, 128, 128, generator=torch.Generator().manual_seed(0)) * 2 - 1
        with torch.inference_mode():
            result["cpu_vs_device_max_abs_diff"] = float((cpu(x) - ours(x.to(device)).cpu()).abs().max())
        for batch in (int(b) for b in args.batches.split(",")):
            xb = (torch.rand(batch, 3, 128, 128, generator=torch.Generator().manual_seed(batch)) * 2 - 1).to(device)
            row = {"batch": batch, "synthgen_masks_per_s": round(_rate(ours.net, xb, device, args.repeats), 1)}
            if official is not None:
                row["official_masks_per_s"] = round(_rate(official, xb, device, args.repeats), 1)
                row["speedup"] = round(row["synthgen_masks_per_s"] / row["official_masks_per_s"], 3)
            result["masks"].append(row)
    for setting in args.train.split(","):
        size, nf, batch = (int(v) for v in setting.split(":"))
        config = RedoTrainConfig(images=Path("."), out=Path("."), size=size, nf=nf, batch_size=batch, device=args.device)
        nets = _Nets.build(config, device, (0, 0, 0))
        g = torch.Generator().manual_seed(0)
        x, real = ((torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device) for _ in range(2))
        z = torch.randn(batch, 2, config.nz, 1, 1, generator=g).to(device)
        for _ in range(2):
            train_step(nets, config, x, real, z)  # warm-up (cudnn autotuning)
        _sync(device)
        started = time.perf_counter()
        for _ in range(args.train_steps):
            train_step(nets, config, x, real, z)
        _sync(device)
        rate = args.train_steps / (time.perf_counter() - started)
        result["training"].append({"size": size, "nf": nf, "batch": batch, "steps_per_s": round(rate, 2),
                                   "hours_for_20k_steps": round(20000 / rate / 3600, 2)})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
