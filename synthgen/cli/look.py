"""Commands that look at what was made: ``preview``, ``stats``; and ``download``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from synthgen.cli.common import friendly_errors, out_console
from synthgen.errors import InputError


@friendly_errors
def preview(
    dataset: Path = typer.Argument(..., help="An output folder (coco, wds or yolo), a COCO json, shards, or an object pool folder."),
    out: Optional[Path] = typer.Option(None, "--out", help="Image to write, .png or .jpg [DATASET/preview.png]."),
    n: int = typer.Option(16, "--n", help="Samples on the sheet."),
    columns: int = typer.Option(4, help="Tiles per row."),
    tile: int = typer.Option(256, help="Tile size in px."),
    seed: Optional[int] = typer.Option(None, help="Pick a seeded random set instead of the first samples."),
) -> None:
    """Write a contact sheet of samples with their boxes and class names drawn (of an object pool:
    its cut-outs on a checkerboard, with what was rejected and why)."""
    from synthgen.preview import make_contact_sheet

    if n < 1 or columns < 1 or tile < 32:
        raise InputError("--n and --columns must be >= 1 and --tile >= 32")
    target = out or (dataset / "preview.png" if dataset.is_dir() else dataset.with_suffix(".preview.png"))
    written = make_contact_sheet(dataset, target, n=n, columns=columns, tile=tile, seed=seed)
    out_console.print(f"preview written to {escape(str(written))}")


@friendly_errors
def stats(
    dataset: Path = typer.Argument(..., help="An output folder (coco, wds or yolo), a COCO json, shards, or an object pool folder."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Also save histograms as a PNG."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Read at most this many samples."),
) -> None:
    """Print counts, objects per image and box-size histograms of a dataset, or the sizes and
    aspect ratios of an object pool's cut-outs (a folder written by `synthgen segment`)."""
    from synthgen.pool import is_pool_dir
    from synthgen.stats import compute_pool_stats, compute_stats, render_pool_rich, render_rich, save_plot, save_pool_plot

    if is_pool_dir(dataset):
        pool_result = compute_pool_stats(dataset)
        out_console.print(render_pool_rich(pool_result))
        if plot:
            save_pool_plot(pool_result, plot)
            out_console.print(f"plot written to {escape(str(plot))}")
        return
    result = compute_stats(dataset, limit=limit)
    out_console.print(render_rich(result))
    if plot:
        save_plot(result, plot)
        out_console.print(f"plot written to {escape(str(plot))}")


@friendly_errors
def download(
    name: str = typer.Argument(..., help="Dataset to fetch, e.g. voc."),
    dest: Optional[Path] = typer.Option(None, "--dest", help="Where to put it (default: synthgen's cache, where `--backgrounds voc` looks)."),
) -> None:
    """Download a dataset from its official location (needs internet)."""
    from synthgen.download import download_dataset

    path = download_dataset(name, dest=dest)
    out_console.print(f"{name} is ready at {escape(str(path))}")
