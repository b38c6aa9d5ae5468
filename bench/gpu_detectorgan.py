"""GPU smoke and timing of DetectorGAN's joint step with the paper's detector (issue 14).

Builds the paper's setting (ResNet generator with 9 blocks at 256 px, ngf 64, three 70x70
PatchGANs, RetinaNet-R50 in the loop) on random images and boxes (no data needed), runs a few
steps of each phase and prints one JSON line: seconds per step of the GAN step, the detector
step, the joint step without and with the unrolled detector step (and the unrolled step's extra
cost; with ``--rounds`` the phases alternate and the ratio unrolled / not unrolled is taken per
round, so that a shared CPU's load changes cancel), peak GPU memory, and whether the
generator's gradient from the unrolled real-image loss is finite and non-zero.

    python bench/gpu_detectorgan.py                          # CUDA, 256 px, RetinaNet
    python bench/gpu_detectorgan.py --device cpu --size 64 --ngf 8 --detector ssd-mobilenet --steps 1   # CPU check
    python bench/gpu_detectorgan.py --device cpu --size 96 --ngf 16 --ndf 16 --detector ssd-mobilenet \\
        --pretrained-backbone --steps 2 --rounds 5   # the CPU bench's setting, interleaved
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from synthgen.insert.data import InsertionData, LabelledSet  # noqa: E402
from synthgen.insert.methods import METHODS  # noqa: E402
from synthgen.insert.train import InsertTrainConfig, _Trainer  # noqa: E402
from synthgen.insert.unroll import unrolled_real_loss  # noqa: E402


def _random_data(size: int, n: int = 8) -> InsertionData:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    boxes = []
    for _ in range(n):
        x0, y0 = rng.uniform(0.05, 0.6), rng.uniform(0.05, 0.3)
        boxes.append(np.array([[x0, y0, x0 + 0.3, y0 + 0.6]]))
    return InsertionData(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), LabelledSet(images, boxes, "person"))


def _time(trainer: _Trainer, steps: int, sync) -> float:
    sync()
    started = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    sync()
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--ngf", type=int, default=64, help="Generator width.")
    parser.add_argument("--ndf", type=int, default=64, help="Discriminator width.")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--detector", default="retinanet-r50")
    parser.add_argument("--pretrained-backbone", action="store_true", help="ImageNet backbone (needs the file in torch's hub cache).")
    parser.add_argument("--steps", type=int, default=3, help="Timed steps per phase and round (after one warm-up step).")
    parser.add_argument("--rounds", type=int, default=1,
                        help="Rounds of the phases, interleaved: on a shared machine the ratios are per round, so load changes cancel.")
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    data = _random_data(args.size)
    result: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "size": args.size,
                    "ngf": args.ngf, "batch_size": args.batch_size, "detector": args.detector, "torch": torch.__version__}
    trainers: dict[str, tuple[_Trainer, InsertTrainConfig]] = {}
    for method, phase_steps in (("cyclegan", {}), ("no-unroll", {"pretrain_detector": 10**6}), ("no-unroll", {}), ("detectorgan", {})):
        config = InsertTrainConfig(
            out=Path("unused"), clean=(), labeled=Path("unused"), method=method, size=args.size, steps=10**6,
            batch_size=args.batch_size, ngf=args.ngf, ndf=args.ndf, detector=args.detector,
            pretrained_backbone=args.pretrained_backbone, device=args.device, **phase_steps,
        )
        name = "detector" if phase_steps else {"cyclegan": "gan", "no-unroll": "joint_no_unroll", "detectorgan": "joint_unrolled"}[method]
        trainers[name] = (_Trainer(config, METHODS.get(method), data, device), config)
        trainers[name][0].train_step()  # warm-up (cuDNN autotuning, allocator)
    rounds: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(args.rounds):
        for name, (trainer, _config) in trainers.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            rounds[name].append(_time(trainer, args.steps, sync))
            if device.type == "cuda":
                result[f"peak_gib_{name}"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    trainer, config = trainers["joint_unrolled"]
    batch = data.batch(0, 0, args.batch_size).to(device)
    fake = (trainer.nets.insert(batch.clean, batch.insert_boxes) + 1) / 2
    to_targets = lambda boxes: [{"boxes": b, "labels": torch.ones(len(b), dtype=torch.int64, device=device)} for b in boxes]  # noqa: E731
    loss = unrolled_real_loss(trainer.nets.detector, (batch.labelled + 1) / 2, to_targets(batch.labelled_boxes), fake,
                              to_targets(batch.insert_boxes), config.unroll_lr)
    grads = torch.autograd.grad(loss, list(trainer.nets.insert.parameters()))
    norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))
    result["unrolled_grad_norm"] = norm
    result["unrolled_grad_ok"] = bool(np.isfinite(norm) and norm > 0)
    seconds = {name: round(float(np.median(v)), 4) for name, v in rounds.items()}
    result["seconds_per_step"] = seconds
    result["seconds_per_step_rounds"] = {name: [round(x, 4) for x in v] for name, v in rounds.items()}
    result["unrolled_extra_seconds"] = round(seconds["joint_unrolled"] - seconds["joint_no_unroll"], 4)
    ratios = np.array(rounds["joint_unrolled"]) / np.array(rounds["joint_no_unroll"])
    result["unrolled_over_no_unroll"] = {"median": round(float(np.median(ratios)), 2), "min": round(float(ratios.min()), 2),
                                         "max": round(float(ratios.max()), 2)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
