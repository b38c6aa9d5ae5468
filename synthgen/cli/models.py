"""``synthgen models list|info|pull|verify|path|sample``: the published trained models synthgen
knows by name (cards in ``models/``), their files on this machine, and a look at a generator."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from synthgen.cli.common import console, friendly_errors, out_console
from synthgen.errors import InputError, NotAvailableError

app = typer.Typer(help="Published trained models: list, inspect, download, verify, locate, sample.", no_args_is_help=True)


def _size(entry) -> str:
    return f"{entry.size / 1e6:,.1f} MB ({entry.size:,} bytes)" if entry.size else "not published"


def _hash_state(entry, pins: dict) -> str:
    if entry.sha256:
        return f"{entry.sha256} (published)"
    pin = pins.get(entry.file)
    if pin:
        return f"{pin['sha256']} (not published; pinned on this machine {pin.get('pinned', '')})"
    return "not known yet: pinned here when the file is first verified (`synthgen models verify`)"


@app.command("list")
@friendly_errors
def list_models() -> None:
    """Every model synthgen knows, and whether its files are on this machine."""
    from synthgen.generators.registry import all_cards, find_file, models_dir

    table = Table(box=None, padding=(0, 1), header_style="bold")
    for column in ("name", "kind", "classes", "here"):
        table.add_column(column, no_wrap=True)
    table.add_column("title")
    for card in all_cards().values():
        present = [find_file(entry) is not None for entry in card.files]
        here = "yes" if all(present) else ("partly" if any(present) else "no")
        table.add_row(card.name, card.kind, ", ".join(card.classes), here, escape(card.title))
    out_console.print(table)
    out_console.print(f"models folder: {escape(str(models_dir()))} ($SYNTHGEN_MODELS)")


@app.command()
@friendly_errors
def info(name: str = typer.Argument(..., help="A model name (see `synthgen models list`).")) -> None:
    """Everything the card says, and where the files are (or go) on this machine."""
    from synthgen.generators.download import read_pins
    from synthgen.generators.registry import find_file, get_card, models_dir

    card = get_card(name)
    pins = read_pins(models_dir())
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")  # URLs and paths in full, never cut short
    for key, value in (("name", card.name), ("kind", card.kind), ("family", card.family), ("title", card.title),
                       ("classes", ", ".join(card.classes)), ("licence", card.licence), ("published", card.published),
                       ("card", str(card.path))):
        table.add_row(key, escape(value))
    for key, value in card.architecture.items():
        table.add_row(f"architecture.{key}", escape(str(value)))
    for key, value in card.postprocess.items():
        table.add_row(f"postprocess.{key}", escape(str(value)))
    if not card.postprocess:
        table.add_row("postprocess", "none")
    for entry in card.files:
        prefix = "file" if entry.role == "model" else f"{entry.role} file"
        found = find_file(entry)
        table.add_row(prefix, escape(entry.file + (f" (also named {', '.join(entry.also_named)})" if entry.also_named else "")))
        if entry.format:
            table.add_row("  format", escape(entry.format))
        for source in entry.sources():
            table.add_row("  from", escape(source))
        if entry.archive:
            table.add_row("  inside", escape(f"{entry.archive}, member {entry.member}"))
        table.add_row("  size", _size(entry))
        table.add_row("  sha256", escape(_hash_state(entry, pins)))
        table.add_row("  here", escape(str(found)) if found else escape(f"missing: goes to {models_dir() / entry.file}"))
    out_console.print(table)


@app.command()
@friendly_errors
def pull(
    names: list[str] = typer.Argument(..., help="Model names to download (files already here are only checked)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Download models into the models folder: a progress bar, a broken download resumed, the
    sha256 checked (or pinned when not published)."""
    from synthgen.generators.download import pull as pull_model

    for name in names:
        for check in pull_model(name, progress=not quiet):
            out_console.print(f"{name}: {escape(check.describe())}")


@app.command()
@friendly_errors
def verify(names: Optional[list[str]] = typer.Argument(None, help="Models to check \\[default: every model with files here].")) -> None:
    """Check the files of models on this machine against their published size and sha256 (or the
    hash pinned here when they were first verified)."""
    from synthgen.generators.download import verify as verify_model
    from synthgen.generators.registry import all_cards, find_file

    if not names:
        names = [card.name for card in all_cards().values() if all(find_file(entry) for entry in card.files)]
        if not names:
            raise NotAvailableError("no model has its files on this machine yet: see `synthgen models list` and `synthgen models pull NAME`")
    for name in names:
        for check in verify_model(name):
            out_console.print(f"{name}: {escape(check.describe())}")


@app.command()
@friendly_errors
def path(
    name: Optional[str] = typer.Argument(None, help="A model name \\[default: print the models folder]."),
    role: str = typer.Option("model", "--role", help="Which file of a model with several (dmgan-birds: text_encoder, captions)."),
) -> None:
    """Print where a model's file is (exit 3, saying where to put it, when it is missing)."""
    from synthgen.generators.registry import models_dir, resolve_model_file

    if name is None:
        print(models_dir())
        return
    print(resolve_model_file(name, role=role)[1])


@app.command()
@friendly_errors
def sample(
    model: str = typer.Argument(..., help="A generator name or a generator file."),
    out: Path = typer.Option(..., "--out", help="Folder for seed<NNNN>.png and sheet.png."),
    seeds: str = typer.Option("0-15", "--seeds", help="Seeds (NVIDIA's generate.py latents), e.g. 0-15 or 0-99,200."),
    z_file: Optional[Path] = typer.Option(None, "--z", help="Latents instead of seeds: a .npy array N x z_dim."),
    truncation: Optional[float] = typer.Option(None, "--truncation", help="Truncation psi (default: the model card's, 0.7 for StyleGAN v1, else 1)."),
    noise_mode: str = typer.Option("const", "--noise-mode", help="const | random | none."),
    batch_size: int = typer.Option(8, "--batch-size", help="Images per generator call."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ..."),
    class_name: Optional[str] = typer.Option(None, "--class", help="Conditional models: the class (name or number)."),
    caption: Optional[str] = typer.Option(None, "--caption", help="Text-to-image models (dmgan-birds): one caption for every image."),
    captions: Optional[Path] = typer.Option(None, "--captions", help="Text-to-image models: a text file, one caption a line, drawn per image \\[default: the dataset's test captions]."),
    crop: bool = typer.Option(True, "--crop/--no-crop", help="Apply the card's crop (the car models' black bands)."),
) -> None:
    """Write images of a generator and a sheet of them, to look at it before pasting it."""
    from synthgen.generators import load_generator
    from synthgen.generators.sampling import (
        SampleSettings,
        class_labels,
        load_latents,
        parse_seeds,
        read_captions,
        render,
        seed_latents,
        write_images,
    )
    from synthgen.sources.generators import GeneratorSettings, GeneratorSource

    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size} must be at least 1")
    if noise_mode not in ("const", "random", "none"):
        raise InputError(f"--noise-mode {noise_mode!r}: expected const, random or none")
    source = GeneratorSource.resolve(model)
    generator = load_generator(model, device=device)
    if z_file is not None:
        z = load_latents(z_file, generator.z_dim)
        names = [f"z{k:04d}" for k in range(len(z))]
    else:
        chosen = parse_seeds(seeds)
        z, names = seed_latents(chosen, generator.z_dim), [f"seed{s:04d}" for s in chosen]
    settings = SampleSettings(
        truncation=source.truncation(GeneratorSettings(truncation=truncation)),
        noise_mode=noise_mode, batch_size=batch_size, crop=generator.crop if crop else None,
    )
    conditions = class_labels(generator, class_name, len(z))
    if caption is not None or captions is not None:
        if not hasattr(generator, "use_captions"):
            raise InputError(f"--caption and --captions are for text-to-image generators (dmgan-birds); {model} is a {generator.family} generator")
        if caption is not None and captions is not None:
            raise InputError("give --caption (one for all images) or --captions FILE (drawn per image), not both")
        if caption is not None:
            conditions = [caption] * len(z)
        else:
            generator.use_captions(read_captions(captions))
    images = render(generator, z, conditions, settings, device)
    sheet = write_images(images, names, out)
    console.print(f"{len(images)} images of {escape(model)} (truncation {settings.truncation}, noise {noise_mode}) in {escape(str(out))}")
    out_console.print(f"sheet written to {escape(str(sheet))}")
