"""``synthgen train mtgan`` (trains SOD-MTGAN on a baseline detector's regions) and ``synthgen
refine`` (refines a detector's detections on a folder of images): thin typer functions over
:mod:`synthgen.refine`. ``synthgen evaluate --refine`` lives with evaluate in :mod:`.train`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from synthgen.cli.common import console, friendly_errors, out_console

# Kept here, not imported from synthgen.refine, so that the CLI starts without torch;
# tests/test_refine.py checks them against the library.
TRUNK_NAMES = ("mobilenet_v2", "resnet18", "resnet50")
SCORE_NAMES = ("discriminator", "product")

RefineTop = Annotated[int, typer.Option("--refine-top", help="Refine the baseline's N best detections per image (the rest are dropped).")]
RefineScore = Annotated[
    str,
    typer.Option("--refine-score", help="discriminator: D's class probability on the super-resolved region (the paper's); "
                 "product: its geometric mean with the baseline's score."),
]


def set_threads(threads: Optional[int]) -> None:
    """``--threads``: torch's CPU threads (None: its default)."""
    if threads is None:
        return
    from synthgen.errors import InputError

    if threads < 1:
        raise InputError(f"--threads {threads}: give at least 1")
    import torch

    torch.set_num_threads(threads)


@friendly_errors
def mtgan(
    detector: Annotated[Optional[Path], typer.Option("--detector", help="The baseline: a synthgen detector checkpoint (best.pt / last.pt). Required.")] = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="Training images with boxes: a COCO JSON with small objects. Required.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Run folder: last.pt, regions.pt, metrics.csv, samples/, training_curves.png. Required.")] = None,
    images_root: Annotated[Optional[Path], typer.Option("--images-root", help="Folder the COCO file names are relative to (default: its folder).")] = None,
    hr_size: Annotated[int, typer.Option("--hr-size", help="High-resolution region side in pixels (a multiple of 4); G's input is a quarter of it.")] = 64,
    context: Annotated[float, typer.Option("--context", help="A region is its box grown by this fraction of its side on each side.")] = 0.25,
    proposals: Annotated[int, typer.Option("--proposals", help="The baseline's best boxes per image taken as training regions (with the true boxes).")] = 16,
    proposal_score: Annotated[float, typer.Option("--proposal-score", help="... scoring at least this.")] = 0.05,
    channels: Annotated[int, typer.Option("--channels", help="Generator width.")] = 64,
    blocks: Annotated[int, typer.Option("--blocks", help="Generator residual blocks before the 4x de-convolution up-sampling.")] = 4,
    refine_blocks: Annotated[int, typer.Option("--refine-blocks", help="Generator residual refinement blocks after it.")] = 2,
    trunk: Annotated[str, typer.Option("--trunk", help=f"Discriminator trunk: {', '.join(TRUNK_NAMES)} (the paper: a ResNet).")] = "mobilenet_v2",
    pretrained_trunk: Annotated[bool, typer.Option("--pretrained-trunk/--no-pretrained-trunk", help="Start the trunk from ImageNet weights (needs the file in torch's cache).")] = True,
    regression: Annotated[bool, typer.Option("--regression/--no-regression", help="Train D's box-offset branch (and G through it); without it refinement keeps the baseline's boxes.")] = True,
    pretrain_steps: Annotated[int, typer.Option("--pretrain-steps", help="Steps of the generator alone with the pixel (MSE) loss first.")] = 500,
    steps: Annotated[int, typer.Option("--steps", help="Steps of G and D in turn after pretraining.")] = 1000,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Regions per step.")] = 16,
    positive_fraction: Annotated[float, typer.Option("--positive-fraction", help="Share of object (not background) regions in a batch.")] = 0.5,
    lr_g: Annotated[float, typer.Option("--lr-g", help="Adam learning rate of the generator.")] = 1e-4,
    lr_d: Annotated[float, typer.Option("--lr-d", help="SGD (momentum 0.9) learning rate of the discriminator.")] = 1e-3,
    w_mse: Annotated[float, typer.Option("--w-mse", help="Weight of the pixel loss in G's objective.")] = 1.0,
    w_adv: Annotated[float, typer.Option("--w-adv", help="Weight of the adversarial loss (0: none, and D's real/fake head is not trained).")] = 1e-3,
    w_cls: Annotated[float, typer.Option("--w-cls", help="Weight of D's classification loss in G's objective.")] = 1e-2,
    w_reg: Annotated[float, typer.Option("--w-reg", help="Weight of D's regression loss in G's objective.")] = 1e-2,
    sample_every: Annotated[int, typer.Option("--sample-every", help="Write a sheet of LR / SR / HR regions every N steps.")] = 100,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", help="Save last.pt every N steps.")] = 100,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the run.")] = 0,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    threads: Annotated[Optional[int], typer.Option("--threads", help="CPU threads for torch (default: its own).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last.pt.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress: a live bar on a terminal, a plain line every few steps in a log.")] = True,
) -> None:
    """Train SOD-MTGAN for `synthgen evaluate --refine` / `synthgen refine`: super-resolve a detector's small regions, re-score and re-box them."""
    from synthgen.cli.common import require

    require("train mtgan", detector=detector, data=data, out=out)
    set_threads(threads)
    from synthgen.refine.train import MtganTrainConfig, train_mtgan

    config = MtganTrainConfig(
        out=out, detector=detector, data=data, images_root=images_root, hr_size=hr_size, context=context,
        proposals=proposals, proposal_score=proposal_score, channels=channels, blocks=blocks, refine_blocks=refine_blocks,
        trunk=trunk, pretrained_trunk=pretrained_trunk, regression=regression, pretrain_steps=pretrain_steps, steps=steps,
        batch_size=batch_size, positive_fraction=positive_fraction, lr_g=lr_g, lr_d=lr_d, w_mse=w_mse, w_adv=w_adv,
        w_cls=w_cls, w_reg=w_reg, sample_every=sample_every, checkpoint_every=checkpoint_every, seed=seed, device=device,
        resume=resume, progress=progress,
    )
    result = train_mtgan(config)
    out_console.print(
        f"trained {result.steps} steps on {result.regions:,} regions in {result.seconds / 60:.1f} min\n"
        f"run: {escape(str(out))} (synthgen evaluate --checkpoint {escape(str(detector))} --refine {escape(str(out))} --data COCO.json)\n"
        f"log: {escape(str(out / 'metrics.csv'))}, sheets: {escape(str(out / 'samples'))}, curves: {escape(str(out / 'training_curves.png'))}"
    )


@friendly_errors
def refine(
    images: Annotated[Path, typer.Argument(help="Folder of images (searched recursively).")],
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="The detector whose detections are refined (a synthgen checkpoint). Required.")] = None,
    refine_run: Annotated[Optional[Path], typer.Option("--refine", help="A run of `synthgen train mtgan` for that detector. Required.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Detections file to write (JSON, as evaluate's detections.json, with file_name). Required.")] = None,
    score_threshold: Annotated[float, typer.Option("--score-threshold", help="The baseline's detections scoring at least this are refined.")] = 0.001,
    refine_top: RefineTop = 100,
    refine_score: RefineScore = "discriminator",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per detector batch.")] = 4,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    threads: Annotated[Optional[int], typer.Option("--threads", help="CPU threads for torch (default: its own).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Detect objects in a folder of images and refine the detections with SOD-MTGAN."""
    from synthgen.cli.common import require
    from synthgen.errors import InputError

    require("refine", checkpoint=checkpoint, refine=refine_run, out=out)
    if refine_score not in SCORE_NAMES:
        raise InputError(f"--refine-score {refine_score!r}: choose one of {', '.join(SCORE_NAMES)}")
    set_threads(threads)
    from synthgen.refine.apply import refine_folder

    detections = refine_folder(
        checkpoint, refine_run, images, out, score_threshold=score_threshold, top=refine_top, score=refine_score,
        device=device, batch_size=batch_size, show_progress=not quiet,
    )
    images_with = len({d["image_id"] for d in detections})
    console.print(f"wrote {len(detections):,} refined detections on {images_with:,} images to {escape(str(out))}")
