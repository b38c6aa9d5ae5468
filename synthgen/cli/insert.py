"""``synthgen insert`` (a trained inserter fills boxes in clean images) and ``synthgen train
detectorgan`` (trains one): thin typer functions over :mod:`synthgen.insert`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from synthgen.cli.common import console, friendly_errors, out_console, parse_count, parse_list

# Kept here, not imported from synthgen.insert.methods, so that the CLI starts without torch;
# tests/test_insert_cli.py checks it against the registry.
METHOD_NAMES = ("detectorgan", "no-unroll", "acgan", "cyclegan")


@friendly_errors
def insert(
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="Run folder (or its last.pt) of `synthgen train detectorgan`.")] = None,
    backgrounds: Annotated[Optional[str], typer.Option("--backgrounds", "-b", help="Clean images: a folder, `coco:FILE.json` or `voc`, as for paste.")] = None,
    method: Annotated[str, typer.Option("--method", help=f"Inserter kind: {', '.join(METHOD_NAMES)}; must match the checkpoint.")] = "detectorgan",
    boxes: Annotated[str, typer.Option("--boxes", help="Where objects go: match (the paper's rule: a jittered box of the most similar labelled image), learned (a fitted size/position distribution) or file:PATH (COCO JSON, JSON list or CSV of x,y,w,h fractions).")] = "match",
    exclude_classes: Annotated[Optional[str], typer.Option("--exclude-classes", help="coco/voc backgrounds: drop images showing these classes.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("synthgen_insert"),
    format: Annotated[str, typer.Option("--format", "-f", help="coco | wds | yolo.")] = "coco",
    n: Annotated[str, typer.Option("--n", help="Number of samples, or `inf` (wds only).")] = "1000",
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same dataset, byte for byte.")] = 0,
    jpeg_quality: Annotated[int, typer.Option("--jpeg-quality", help="JPEG quality 1-100.")] = 90,
    workers: Annotated[int, typer.Option("--workers", "-j", help="Worker processes (output is identical for any number).")] = 1,
    device: Annotated[str, typer.Option("--device", help="cpu (default), auto, cuda or cuda:N (GPU: one worker).")] = "cpu",
    shard_size: Annotated[int, typer.Option("--shard-size", help="wds: samples per shard.")] = 1000,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run in --out.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier synthgen output in --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Insert objects into clean images with a trained generator: COCO, WebDataset or YOLO, like paste.

    Example: synthgen insert --method detectorgan --checkpoint runs/dgan --backgrounds scenes/ --n 500 --out inserted/
    """
    from synthgen.errors import InputError

    if checkpoint is None:
        raise InputError(
            "--checkpoint is needed: a trained inserter. Train one with: synthgen train detectorgan "
            f"--method {method} --clean CLEAN_DIR --labeled LABELLED.json --out RUN, then pass --checkpoint RUN"
        )
    if backgrounds is None:
        raise InputError("--backgrounds is needed: the clean images to insert objects into (a folder, coco:FILE.json or voc)")
    if method not in METHOD_NAMES:
        raise InputError(f"unknown insertion method {method!r}; choose one of: {', '.join(METHOD_NAMES)}")
    from synthgen.engine import RunOptions
    from synthgen.insert.render import InsertSpec, run_insert

    spec = InsertSpec(str(checkpoint), backgrounds, boxes, parse_list(exclude_classes), seed, jpeg_quality)
    options = RunOptions(
        out=out, format=format, n=parse_count(n), workers=workers, resume=resume, overwrite=overwrite,
        shard_size=shard_size, progress=not quiet,
    )
    summary = run_insert(spec, options, method=method, device=device, console=console)
    for note in summary.notes:
        console.print(escape(note))
    console.print(
        f"written {summary.written:,} samples ({summary.format}) to {escape(str(summary.out))}"
        + (f"; {summary.total:,} in the folder" if summary.total != summary.written else "")
        + f"; {summary.rate:,.1f} samples/s"
    )
    if summary.interrupted and options.n is not None:
        console.print(f"[yellow]interrupted[/]: {summary.total:,} samples are complete; run the same command with --resume to finish.")
        raise typer.Exit(130)


@friendly_errors
def detectorgan(
    clean: Annotated[list[str], typer.Option("--clean", help="Clean images (without the object): a folder, coco:FILE.json (with --exclude-classes) or voc; repeat for several.")],
    labeled: Annotated[Path, typer.Option("--labeled", help="Labelled images: a COCO JSON with boxes of the object.")],
    out: Annotated[Path, typer.Option("--out", help="Run folder: last.pt, metrics.csv, samples/, training_curves.png, detector.pt.")],
    method: Annotated[str, typer.Option("--method", help=f"{', '.join(METHOD_NAMES)}.")] = "detectorgan",
    category: Annotated[Optional[str], typer.Option("--category", help="The labelled class to insert (default: the file's only one).")] = None,
    exclude_classes: Annotated[Optional[str], typer.Option("--exclude-classes", help="coco/voc clean images: drop those showing these classes (plain folders beside them are taken whole).")] = None,
    size: Annotated[int, typer.Option("--size", help="Square image side (multiple of 4; 9 residual blocks at 256+, else 6).")] = 128,
    steps: Annotated[int, typer.Option("--steps", help="Joint training steps (after pretraining; 0: pretrain only, for --init).")] = 1000,
    pretrain_gan: Annotated[int, typer.Option("--pretrain-gan", help="Steps of the GAN alone first.")] = 500,
    pretrain_detector: Annotated[int, typer.Option("--pretrain-detector", help="Steps of the detector alone on the labelled images next.")] = 500,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Clean / labelled image pairs per step.")] = 1,
    ngf: Annotated[int, typer.Option("--ngf", help="Generator width (CycleGAN: 64).")] = 64,
    ndf: Annotated[int, typer.Option("--ndf", help="Discriminator width (CycleGAN: 64).")] = 64,
    detector: Annotated[str, typer.Option("--detector", help="Detector in the loop: ssd-mobilenet (CPU), ssdlite-mbv3, retinanet-r50 (the paper's).")] = "ssd-mobilenet",
    pretrained_backbone: Annotated[bool, typer.Option("--pretrained-backbone/--no-pretrained-backbone", help="ImageNet backbone for the detector.")] = True,
    lr: Annotated[float, typer.Option("--lr", help="Adam rate of generators and discriminators.")] = 2e-4,
    detector_lr: Annotated[float, typer.Option("--detector-lr", help="Adam rate of the detector.")] = 1e-4,
    unroll_lr: Annotated[float, typer.Option("--unroll-lr", help="Step size of the unrolled (virtual) detector SGD step.")] = 1e-3,
    lambda_det: Annotated[float, typer.Option("--lambda-det", help="Weight of the synthetic-image detection loss.")] = 0.1,
    lambda_unroll: Annotated[float, typer.Option("--lambda-unroll", help="Weight of the unrolled real-image detection loss.")] = 1.0,
    sample_every: Annotated[int, typer.Option("--sample-every", help="Write a sample sheet every N steps.")] = 100,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", help="Save last.pt every N steps.")] = 100,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the run.")] = 0,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last.pt.")] = False,
    init: Annotated[Optional[Path], typer.Option("--init", help="Start from another run's networks and step, e.g. a shared pretraining made with --steps 0.")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a live progress bar with each loss.")] = True,
) -> None:
    """Train an inserter (DetectorGAN or a baseline) for `synthgen insert`."""
    from synthgen.insert.train import InsertTrainConfig, train_inserter

    config = InsertTrainConfig(
        out=out, clean=tuple(clean), labeled=labeled, method=method, category=category,
        exclude_classes=parse_list(exclude_classes), size=size, steps=steps, pretrain_gan=pretrain_gan,
        pretrain_detector=pretrain_detector, batch_size=batch_size, ngf=ngf, ndf=ndf, detector=detector,
        pretrained_backbone=pretrained_backbone, lr=lr, detector_lr=detector_lr, unroll_lr=unroll_lr,
        lambda_det=lambda_det, lambda_unroll=lambda_unroll, sample_every=sample_every,
        checkpoint_every=checkpoint_every, seed=seed, device=device, resume=resume, init=init, progress=progress,
    )
    result = train_inserter(config)
    out_console.print(
        f"trained {result.steps} steps in {result.seconds / 60:.1f} min\n"
        f"checkpoint: {escape(str(result.checkpoint))} (synthgen insert --method {method} --checkpoint {escape(str(out))} ...)\n"
        f"log: {escape(str(out / 'metrics.csv'))}, samples: {escape(str(out / 'samples'))}, curves: {escape(str(out / 'training_curves.png'))}"
    )
