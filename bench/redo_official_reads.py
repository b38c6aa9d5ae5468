"""Check that ReDO's official code reads a checkpoint written by ``synthgen train redo``.

    PYTHONPATH=$PWD /work/venv/bin/python bench/redo_official_reads.py --official /path/to/mickaelChen/ReDO

Official code: https://github.com/mickaelChen/ReDO at commit d6542528ca97c5c533694c4095ba003cb7a95d4c,
imported from ``--official`` (nothing of it is copied here). A 2-step run at 128 px (ReDO's only
generator size) with ``nf=4`` on synthetic images is loaded the way ReDO's train.py and
example_load_pretrained.py do it: ``torch.load`` (with ``weights_only=False``, torch 1.0's
behaviour, which those scripts rely on), networks rebuilt from ``states['options']``, strict
``load_state_dict`` of all four, Adam optimizers rebuilt as train.py does (betas written (0.0, 0.9):
today's torch refuses the int 0 of train.py's (0, 0.9)) and their states loaded.
Prints one JSON line: the max abs difference between the official and synthgen modules' outputs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, required=True, help="a checkout of mickaelChen/ReDO")
    args = parser.parse_args()
    sys.path.insert(0, str(args.official))
    import models  # the official models.py

    from synthgen.segmenters.redo import load_redo
    from synthgen.segmenters.redo_nets import Discriminator, LatentEncoder, RegionGenerator
    from synthgen.segmenters.redo_train import RedoTrainConfig, train_redo

    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        folder = Path(tmp) / "images"
        folder.mkdir()
        for i in range(8):
            cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 256, (80, 80, 3), dtype=np.uint8))
        train_redo(RedoTrainConfig(images=folder, out=Path(tmp) / "run", size=128, steps=2, every=2, nf=4, nz=8,
                                   batch_size=2, progress=False))
        path = Path(tmp) / "run" / "last.pth"
        states = torch.load(path, map_location={"cuda:0": "cpu"}, weights_only=False)
        opt = states["options"]
        netEncM = models._netEncM(sizex=opt.sizex, nIn=opt.nx, nMasks=opt.nMasks, nRes=opt.nResM, nf=opt.nfM, temperature=opt.temperature)
        netGenX = models._netGenX(sizex=opt.sizex, nOut=opt.nx, nc=opt.nz, nf=opt.nfX, nMasks=opt.nMasks, selfAtt=opt.useSelfAttG)
        netDX = models._resDiscriminator128(nIn=opt.nx, nf=opt.nfD, selfAtt=opt.useSelfAttD)
        netRecZ = models._netRecZ(sizex=opt.sizex, nIn=opt.nx, nc=opt.nz, nf=opt.nfZ, nMasks=opt.nMasks)
        official = {"netEncM": netEncM, "netGenX": netGenX, "netDX": netDX, "netRecZ": netRecZ}
        for key, net in official.items():
            net.load_state_dict(states[key])  # strict
            net.eval()
        optimizers = {
            "optimizerEncM": torch.optim.Adam(netEncM.parameters(), lr=opt.lrM, betas=(0.0, 0.9), weight_decay=opt.wdecay),
            "optimizerGenX": torch.optim.Adam(netGenX.parameters(), lr=opt.lrG, betas=(0.0, 0.9)),
            "optimizerDX": torch.optim.Adam(netDX.parameters(), lr=opt.lrD, betas=(0.0, 0.9)),
            "optimizerRecZ": torch.optim.Adam(netRecZ.parameters(), lr=opt.lrZ, betas=(0.0, 0.9)),
        }
        for key, optimizer in optimizers.items():
            optimizer.load_state_dict(states[key])
        # Adam moments sit on the same parameters on both sides (same parameter order).
        moment_shapes_match = all(
            state["exp_avg"].shape == param.shape
            for optimizer in optimizers.values()
            for param, state in ((p, optimizer.state[p]) for group in optimizer.param_groups for p in group["params"])
        )

        ours_m = load_redo(path).net
        ours = {"netGenX": RegionGenerator(opt.sizex, opt.nx, opt.nz, opt.nfX, opt.nMasks),
                "netDX": Discriminator(opt.nx, opt.nfD), "netRecZ": LatentEncoder(opt.nx, opt.nz, opt.nfZ, opt.nMasks)}
        for key, net in ours.items():
            net.load_state_dict(states[key])
            net.eval()
        x = torch.rand(2, 3, opt.sizex, opt.sizex, generator=torch.Generator().manual_seed(0)) * 2 - 1
        z = torch.randn(2, opt.nMasks, opt.nz, 1, 1, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            m = netEncM(x)
            diffs = {
                "netEncM": float((m - ours_m(x)).abs().max()),
                "netGenX": float((netGenX(m, z) - ours["netGenX"](m, z)).abs().max()),
                "netDX": float(((netDX(x) - ours["netDX"](x)).abs() / netDX(x).abs().clamp(min=1)).max()),
                "netRecZ": float(((netRecZ(x) - ours["netRecZ"](x)).abs() / netRecZ(x).abs().clamp(min=1)).max()),
            }
        print(json.dumps({"official_commit": "d6542528ca97c5c533694c4095ba003cb7a95d4c", "torch": torch.__version__,
                          "loaded_strict": list(official), "optimizers_loaded": list(optimizers),
                          "adam_moments_match_parameters": moment_shapes_match,
                          "max_abs_diff (netDX, netRecZ: relative)": diffs, "options_iteration": opt.iteration}))


if __name__ == "__main__":
    main()
