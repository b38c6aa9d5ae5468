"""``synthgen train redo``: train ReDO's unsupervised segmenter on a folder of object images.

A thin typer function over :func:`synthgen.segmenters.redo_train.train_redo`; torch is imported
inside the command only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape

from synthgen.cli.common import out_console


def redo(
    images: Path = typer.Option(..., "--images", help="Folder of object-centric images (one object per image; subfolders are read too)."),
    out: Path = typer.Option(..., "--out", help="Run folder: last.pth (ReDO's checkpoint layout), best.pth, log.jsonl, sheets/."),
    size: int = typer.Option(128, "--size", help="Training and segmentation size: 64 or 128 (the released models: 128)."),
    steps: int = typer.Option(20000, "--steps", help="Training iterations (the paper: 20k-40k)."),
    batch_size: int = typer.Option(20, "--batch-size", help="Images per step."),
    nf: int = typer.Option(64, "--nf", help="Base width of the four networks (ReDO's --nf; 64 as released, smaller is faster)."),
    every: int = typer.Option(500, "--every", help="Every K steps: collapse check, checkpoint, sheet, validation IoU."),
    val_masks: Optional[Path] = typer.Option(None, "--val-masks", help="Masks named like some of the images (<name>.png or <name>_mask.png): validation IoU, best.pth, and the object's mask channel."),
    auto_restart: float = typer.Option(0.1, "--auto-restart", help="Restart with new weights when a region shrinks below this fraction of the image before step 7000 (ReDO's collapse check; 0: never)."),
    lr_m: float = typer.Option(1e-5, "--lr-m", help="Learning rate of the mask network (ReDO: 1e-5)."),
    lr: float = typer.Option(1e-4, "--lr", help="Learning rate of the generator, discriminator and latent encoder (ReDO: 1e-4)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the weights, batches and codes."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ..."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last.pth."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Train ReDO (mask network, region generator, discriminator, latent encoder) on your images;
    segment with --segmenter redo:RUN/last.pth (or best.pth)."""
    from synthgen.segmenters.redo_train import RedoTrainConfig, train_redo

    config = RedoTrainConfig(
        images=images, out=out, size=size, steps=steps, batch_size=batch_size, nf=nf, every=every,
        val_masks=val_masks, auto_restart=auto_restart, lr_m=lr_m, lr_g=lr, lr_d=lr, lr_z=lr, seed=seed,
        device=device, resume=resume, progress=not quiet,
    )

    def show(record: dict[str, Any]) -> None:
        if record.get("collapsed"):
            out_console.print(
                f"step {record['step']}: collapsed (smallest region {record['smallest_region']:.1%} of the image); "
                "restarting with new weights"
            )
            return
        line = (f"step {record['step']}: loss G {record['loss_g']:+.3f}, Z {record['loss_z']:.3f}, D {record['loss_d']:.3f}, "
                f"smallest region {record['smallest_region']:.1%}, {record['steps_per_s']:.2f} steps/s")
        if "val_iou" in record:
            line += f", val IoU {record['val_iou']:.3f} (channel {record['fg_channel']})"
        out_console.print(line)

    result = train_redo(config, on_check=show)
    best = f" (best by validation IoU: {escape(result['best'])})" if result.get("best") else ""
    out_console.print(f"ReDO run in {escape(result['out'])}: segment with --segmenter redo:{escape(result['last'])}{best}")
