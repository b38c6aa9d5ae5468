"""``synthgen paste`` and ``synthgen segment``: the paste side's commands, and the one place where
their options become library settings (:func:`paste_settings`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from synthgen.cli.common import (
    Problems,
    console,
    friendly_errors,
    parse_count,
    parse_list,
    parse_options,
    parse_range,
    parse_size,
)
from synthgen.errors import InputError, Interrupted


# -- paste ------------------------------------------------------------------------------------


@friendly_errors
def paste(
    objects: Optional[str] = typer.Option(None, "--objects", help="Folder of object images (one class, or one subfolder per class), coco:FILE.json (its boxes cut out, a tenth of their size added around them: objects from your own labelled images), an object pool from `synthgen segment`, a generator name (`synthgen models list`) or a generator file. Default: built-in demo objects.", rich_help_panel="Inputs"),
    backgrounds: Optional[str] = typer.Option(None, "--backgrounds", "-b", help="Folder of scene photos, `voc`, `voc:PATH` or `coco:FILE.json`. Default: built-in demo scenes.", rich_help_panel="Inputs"),
    exclude_classes: Optional[str] = typer.Option(None, "--exclude-classes", help="Comma-separated classes: voc/coco backgrounds that contain them are dropped.", rich_help_panel="Inputs"),
    keep_annotations: bool = typer.Option(False, "--keep-annotations", help="With --backgrounds coco:FILE.json or yolo:DIR: keep the images' own boxes and classes, updated where pasted objects cover them (copy-paste augmentation).", rich_help_panel="Inputs"),
    distractors: Optional[str] = typer.Option(None, "--distractors", help="Folder of objects pasted WITHOUT labels (other kinds of things, against false positives); segmented like --objects.", rich_help_panel="Inputs"),
    segmenter: str = typer.Option("auto", "--segmenter", help="none | alpha | mask | grabcut | auto (alpha, else paired mask, else grabcut) | redo-lfw, redo-cub, redo-flowers (ReDO model names) | redo:PATH.pth (a ReDO checkpoint).", rich_help_panel="Inputs"),
    segmenter_options: Optional[str] = typer.Option(None, "--segmenter-options", help="Comma-separated KEY=VALUE options of the segmenter, e.g. margin=0.1,iterations=8 (grabcut) or fg_channel=0,threshold=0.5,device=cuda (redo).", rich_help_panel="Inputs"),
    min_mask_area: float = typer.Option(0.05, help="Reject masks covering less than this fraction of the object image.", rich_help_panel="Inputs"),
    max_mask_area: float = typer.Option(0.95, help="Reject masks covering more than this fraction.", rich_help_panel="Inputs"),
    max_border: float = typer.Option(0.5, help="Reject masks covering more than this fraction of the image border.", rich_help_panel="Inputs"),
    refresh: Optional[int] = typer.Option(None, "--refresh", help="Generator objects: a fresh block of objects every K samples [1000].", rich_help_panel="Generator objects"),
    pool_size: Optional[int] = typer.Option(None, "--pool-size", help="Generator objects: objects generated per block [256].", rich_help_panel="Generator objects"),
    truncation_psi: Optional[float] = typer.Option(None, "--truncation", help="Generator objects: truncation psi (default: the model card's, 0.7 for StyleGAN v1, else 1).", rich_help_panel="Generator objects"),
    object_size: Optional[int] = typer.Option(None, "--object-size", help="Generator objects: longest side they are shrunk to before segmentation; 0 = as generated [256].", rich_help_panel="Generator objects"),
    generator_batch: int = typer.Option(32, "--generator-batch", help="Generator objects: images per generator call (on CPU it does not change them; a GPU may round differently).", rich_help_panel="Generator objects"),
    out: Path = typer.Option(Path("synthgen_out"), "--out", help="Output folder.", rich_help_panel="Output"),
    format: Optional[str] = typer.Option(None, "--format", "-f", help="coco | wds | yolo. \\[default: coco; wds with --n inf]", rich_help_panel="Output"),
    n: str = typer.Option("1000", "--n", "-n", help="Number of samples, or `inf`: WebDataset shards until Ctrl-C/SIGTERM (exit 0; a finite run stopped early exits 130). Under torchrun write -n: torchrun takes --n for its own --nnodes/--nproc-per-node.", rich_help_panel="Output"),
    seed: int = typer.Option(0, help="Same seed, same dataset, byte for byte.", rich_help_panel="Output"),
    jpeg_quality: int = typer.Option(90, help="JPEG quality 1-100.", rich_help_panel="Output"),
    masks: bool = typer.Option(False, "--masks", help="Also write instance masks (COCO RLE) of each object's visible part.", rich_help_panel="Output"),
    visibility: bool = typer.Option(False, "--visibility", help="Also write each object's visible fraction, visible box and amodal (whole-object) box: COCO/WebDataset JSON keys, a YOLO sidecar visibility/<split>/<key>.txt.", rich_help_panel="Output"),
    box: Optional[str] = typer.Option(None, "--box", help="Main box of each object: visible (its visible pixels) | amodal (the whole object, clipped to the image) \\[default: visible].", rich_help_panel="Output"),
    workers: int = typer.Option(1, "--workers", "-j", help="Worker processes, for segmenting the objects and for pasting (output is identical for any number).", rich_help_panel="Output"),
    shard_index: int = typer.Option(0, help="This machine's part when several machines share the work.", rich_help_panel="Output"),
    num_shards: int = typer.Option(1, help="How many machines share the work (machine k makes samples i % num_shards == k).", rich_help_panel="Output"),
    shard_size: int = typer.Option(1000, help="wds: samples per shard.", rich_help_panel="Output"),
    shard_max_bytes: int = typer.Option(1 << 30, help="wds: bytes per shard at most.", rich_help_panel="Output"),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out.", rich_help_panel="Output"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier synthgen output in --out.", rich_help_panel="Output"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar.", rich_help_panel="Output"),
    compositor: Optional[str] = typer.Option(None, "--compositor", help="numpy (OpenCV, one sample at a time) | torch (batched on --device; the same labels, boxes within 1 px, pixels within a few grey levels). Default: torch with a CUDA device, else numpy. Torch draws alpha and gaussian blending on the device, and finds the visible masks and boxes there; a sample with poisson or motion blending is rendered whole on the CPU. Generator objects are generated, shrunk and segmented (--segmenter redo) on the device and drawn from there; only each cut-out's alpha comes from the host, where masks are cleaned; --segmenter grabcut (OpenCV) segments a host copy of the images.", rich_help_panel="Device"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N: where generator objects are generated and segmented, and where the torch compositor draws and encodes (nvJPEG on CUDA).", rich_help_panel="Device"),
    devices: Optional[str] = typer.Option(None, "--devices", help="Comma-separated GPUs (0,1 or cuda:0,cuda:1): one process per device, each writing its share to OUT/part-K (the parts together: one gap-free shard set). Or start paste with torchrun (--nproc-per-node N -m synthgen paste ... -n COUNT --device cuda): each process writes its share into OUT itself, like machines sharing it (--num-shards); check with synthgen verify OUT.", rich_help_panel="Device"),
    batch_size: int = typer.Option(64, "--batch-size", help="Samples per pass of the torch compositor (changes no sample).", rich_help_panel="Device"),
    preset: Optional[str] = typer.Option(None, "--preset", help="faces | birds | cars: the paper authors' ranges; pedestrians: measured on Penn-Fudan (docs/results-detection.md); other flags override.", rich_help_panel="Composition"),
    size: Optional[str] = typer.Option(None, "--size", help="Output WIDTHxHEIGHT. \\[default: 320x320]", rich_help_panel="Composition"),
    background_fit: Optional[str] = typer.Option(None, "--bg-fit", help="crop (keep aspect, random crop) | stretch. \\[default: crop]", rich_help_panel="Composition"),
    objects_per_image: Optional[str] = typer.Option(None, help="MIN,MAX objects per image. \\[default: 1,5]", rich_help_panel="Composition"),
    scale: Optional[str] = typer.Option(None, help="MIN,MAX object size relative to the image's short side. \\[default: 0.1,0.5]", rich_help_panel="Composition"),
    scale_from: Optional[Path] = typer.Option(None, "--scale-from", help="Real annotations (a COCO .json): --scale from the 5th-95th percentile of their box sizes (sqrt(w*h) / the image's short side) and --objects-per-image from their boxes per image; --scale / --objects-per-image given too win.", rich_help_panel="Composition"),
    aspect: Optional[str] = typer.Option(None, help="keep | stretch (w/h drawn from --aspect-range). \\[default: keep]", rich_help_panel="Composition"),
    aspect_range: Optional[str] = typer.Option(None, help="MIN,MAX w/h ratio with --aspect stretch. \\[default: 0.5,2]", rich_help_panel="Composition"),
    flip: Optional[float] = typer.Option(None, help="Horizontal flip probability. \\[default: 0.5]", rich_help_panel="Composition"),
    rotation: Optional[float] = typer.Option(None, help="Max rotation in degrees. \\[default: 0]", rich_help_panel="Composition"),
    brightness: Optional[str] = typer.Option(None, help="MIN,MAX brightness factor. \\[default: 0.8,1.2]", rich_help_panel="Composition"),
    contrast: Optional[str] = typer.Option(None, help="MIN,MAX contrast factor. \\[default: 0.8,1.2]", rich_help_panel="Composition"),
    saturation: Optional[str] = typer.Option(None, help="MIN,MAX saturation factor. \\[default: 0.8,1.2]", rich_help_panel="Composition"),
    blur: Optional[float] = typer.Option(None, help="Blur probability. \\[default: 0]", rich_help_panel="Composition"),
    blur_sigma: Optional[str] = typer.Option(None, help="MIN,MAX blur sigma in px. \\[default: 0.3,1]", rich_help_panel="Composition"),
    noise: Optional[float] = typer.Option(None, help="Noise probability. \\[default: 0]", rich_help_panel="Composition"),
    noise_std: Optional[str] = typer.Option(None, help="MIN,MAX noise std in grey levels. \\[default: 0,8]", rich_help_panel="Composition"),
    blend: Optional[str] = typer.Option(None, help="Comma-separated blend modes drawn per object: alpha, gaussian, poisson, motion. \\[default: alpha]", rich_help_panel="Composition"),
    feather: Optional[float] = typer.Option(None, help="Feather sigma in px for gaussian blending. \\[default: 1.5]", rich_help_panel="Composition"),
    motion_length: Optional[str] = typer.Option(None, help="MIN,MAX motion blur length in px. \\[default: 3,9]", rich_help_panel="Composition"),
    min_visible: Optional[float] = typer.Option(None, help="Keep every object at least this fraction visible (occlusion and truncation); 1 = no occlusion. \\[default: 0.6]", rich_help_panel="Composition"),
    truncation: Optional[float] = typer.Option(None, help="Max fraction of an object outside the image. \\[default: 0]", rich_help_panel="Composition"),
    max_tries: Optional[int] = typer.Option(None, help="Placement attempts per object before it is skipped. \\[default: 20]", rich_help_panel="Composition"),
    class_balance: Optional[str] = typer.Option(None, "--class-balance", help="How often each object class is drawn: source (as many as its cut-outs) | uniform | W1,W2,... (one weight per class) \\[default: source]", rich_help_panel="Composition"),
    distractors_per_image: Optional[str] = typer.Option(None, help="MIN,MAX distractors per image, with --distractors \\[default: 1,3]", rich_help_panel="Composition"),
    distractor_scale: Optional[str] = typer.Option(None, help="MIN,MAX distractor size relative to the image's short side \\[default: 0.1,0.5]", rich_help_panel="Composition"),
    protect: Optional[float] = typer.Option(None, "--protect", help="With --keep-annotations: the largest fraction of an existing object pasted objects may cover \\[default: 1 - min-visible]", rich_help_panel="Composition"),
) -> None:
    """Paste segmented objects onto backgrounds: a COCO dataset, WebDataset shards or a YOLO folder.

    Example: synthgen paste --objects faces/ --backgrounds voc --exclude-classes person --format wds --n inf
    """
    spec, options = paste_settings(**locals())
    from synthgen.engine import run_paste, run_paste_on_devices, torchrun_part

    if devices and "WORLD_SIZE" in os.environ:
        raise InputError("--devices starts one process per device itself: under torchrun leave it out "
                         "(each torchrun process takes cuda:LOCAL_RANK with --device cuda)")
    options = torchrun_part(options, os.environ)

    if format is None and options.n is None:
        console.print(ENDLESS_DEFAULT_NOTE)
    if scale_from is not None:
        console.print(escape(scale_from_note(scale_from, spec.composite, scale is not None, objects_per_image is not None)))

    if devices:
        parts = run_paste_on_devices(spec, options, parse_devices(devices))
        for part in parts:
            _print_paste_summary(part)
        if any(part.interrupted for part in parts) and options.n is not None:
            console.print("[yellow]interrupted[/]: run the same command with --resume to finish every part.")
            raise typer.Exit(130)
        return
    summary = run_paste(spec, options, console=console)
    _print_paste_summary(summary)
    if summary.interrupted and options.n is not None:
        raise Interrupted(
            f"{summary.total:,} of {summary.planned:,} samples are complete in {summary.out}; "
            "run the same command with --resume to finish (exit code 130: the run is not complete)"
        )


def paste_settings(**values: Any):
    """``(PasteSpec, RunOptions)`` from the options of ``synthgen paste`` (all of them, by
    parameter name): the one place where command-line values become library settings.

    Every problem is reported at once (InputError listing them), the inputs' first: what
    ``--objects`` names, then each option. ``--n inf`` without a ``--format`` writes WebDataset
    shards, the one endless format (:data:`ENDLESS_DEFAULT_NOTE` says so to the user).
    """
    from synthgen.compositor import PRESETS, CompositeConfig
    from synthgen.engine import PasteSpec, RunOptions, check_run_options
    from synthgen.sources.generators import GeneratorSettings, is_generator_spec

    v = values
    problems = Problems()
    generator = None
    generator_values = {"refresh": v["refresh"], "pool_size": v["pool_size"], "truncation": v["truncation_psi"], "object_size": v["object_size"]}
    if is_generator_spec(v["objects"]):
        from synthgen.generators.registry import all_cards, resolve_model_files

        generator = GeneratorSettings(**{key: value for key, value in generator_values.items() if value is not None})
        if v["objects"] in all_cards():  # its files are there (a path given is a file already)
            problems.check(resolve_model_files, v["objects"])
    else:
        if v["objects"] is not None:
            from synthgen.sources import resolve_objects

            problems.check(resolve_objects, v["objects"])
        if any(value is not None for value in generator_values.values()):
            problems.errors.append(InputError(
                "--refresh, --pool-size, --truncation and --object-size apply to generator objects (--objects NAME or a generator file)"
            ))
    if v["backgrounds"] is not None:
        from synthgen.backgrounds import resolve_backgrounds

        problems.check(resolve_backgrounds, v["backgrounds"], parse_list(v["exclude_classes"]), v["keep_annotations"])
    width, height = (problems.check(parse_size, v["size"]) or (None, None)) if v["size"] else (None, None)
    preset = problems.check(PRESETS.get, v["preset"]) if v["preset"] else None
    base = preset.config() if preset else CompositeConfig()
    real = None
    if v["scale_from"] is not None:  # measured on the user's real boxes (an input: checked first); explicit flags win
        from synthgen.stats import real_box_ranges

        real = problems.check(real_box_ranges, v["scale_from"])
    scale = problems.check(parse_range, v["scale"], "scale")
    objects_per_image = problems.check(parse_range, v["objects_per_image"], "objects-per-image", int)
    if real is not None:
        scale = real.scale if v["scale"] is None else scale
        objects_per_image = real.objects_per_image if v["objects_per_image"] is None else objects_per_image
    ranges = {
        name: problems.check(parse_range, v[name], name.replace("_", "-"), int if name == "motion_length" else float)
        for name in ("aspect_range", "brightness", "contrast", "saturation", "blur_sigma", "noise_std", "motion_length")
    }
    composite = base.replace(
        width=width,
        height=height,
        background_fit=v["background_fit"],
        objects_per_image=objects_per_image,
        scale=scale,
        aspect=v["aspect"],
        flip=v["flip"],
        rotation=v["rotation"],
        blur=v["blur"],
        noise=v["noise"],
        blend=parse_list(v["blend"]) or None,
        feather=v["feather"],
        min_visible=v["min_visible"],
        truncation=v["truncation"],
        max_tries=v["max_tries"],
        box=v["box"],
        class_balance=problems.check(parse_class_balance, v["class_balance"]),
        distractors_per_image=problems.check(parse_range, v["distractors_per_image"], "distractors-per-image", int),
        distractor_scale=problems.check(parse_range, v["distractor_scale"], "distractor-scale"),
        protect=v["protect"],
        **ranges,
    )
    spec = PasteSpec(
        objects=v["objects"],
        backgrounds=v["backgrounds"],
        exclude_classes=parse_list(v["exclude_classes"]),
        keep_annotations=v["keep_annotations"],
        distractors=v["distractors"],
        segmenter=v["segmenter"],
        segmenter_options=problems.check(parse_options, v["segmenter_options"]) or {},
        min_mask_area=v["min_mask_area"],
        max_mask_area=v["max_mask_area"],
        max_border=v["max_border"],
        composite=composite,
        seed=v["seed"],
        jpeg_quality=v["jpeg_quality"],
        masks=v["masks"],
        generator=generator,
        compositor=v["compositor"] or ("torch" if v["devices"] or v["device"].startswith("cuda") else "numpy"),
        visibility=v["visibility"],
    )
    problems.check(spec.validate)
    n = problems.check(parse_count, v["n"]) if str(v["n"]).strip().lower() not in ENDLESS else None
    options = RunOptions(
        out=Path(v["out"]),
        format=v["format"] or ("wds" if n is None else "coco"),
        n=n,
        workers=v["workers"],
        shard_index=v["shard_index"],
        num_shards=v["num_shards"],
        resume=v["resume"],
        overwrite=v["overwrite"],
        shard_size=v["shard_size"],
        shard_max_bytes=v["shard_max_bytes"],
        progress=not v["quiet"],
        device=v["device"],
        generator_batch=v["generator_batch"],
        batch_size=v["batch_size"],
    )
    from synthgen.segmenters import SEGMENTERS

    problems.check(SEGMENTERS.get, v["segmenter"])
    problems.check(check_run_options, options)
    problems.raise_all()
    return spec, options


def scale_from_note(path: Path, composite, scale_given: bool, count_given: bool) -> str:
    """What ``--scale-from`` derived (and what explicit flags kept), for the run's first lines."""
    from synthgen.stats import real_box_ranges

    real = real_box_ranges(path)
    lo, hi = composite.scale
    fewest, most = composite.objects_per_image
    used = [f"--scale {lo:g},{hi:g}" + (" (given; kept)" if scale_given else ""),
            f"--objects-per-image {fewest},{most}" + (" (given; kept)" if count_given else "")]
    return (f"--scale-from {path}: {real.boxes:,} boxes in {real.images:,} images; 5th-95th percentile box size "
            f"{real.scale[0]:g}-{real.scale[1]:g} of the short side, {real.objects_per_image[0]}-"
            f"{real.objects_per_image[1]} boxes per image: pasting with {' and '.join(used)}")


ENDLESS = ("inf", "infinite", "infinity")
ENDLESS_DEFAULT_NOTE = "--n inf without --format: writing WebDataset shards (--format wds), the one endless format."


def parse_devices(text: str) -> list[str]:
    """``0,1`` or ``cuda:0,cuda:1`` -> ["cuda:0", "cuda:1"]."""
    names = [f"cuda:{d}" if d.isdigit() else d for d in parse_list(text)]
    if not names or len(set(names)) != len(names):
        raise InputError(f"--devices {text!r}: give distinct devices, e.g. 0,1 or cuda:0,cuda:1")
    return names


def parse_class_balance(text: str | None):
    """``--class-balance``: None, "source", "uniform" or a tuple of weights from ``"1,2,1"``."""
    if text is None:
        return None
    text = text.strip()
    if text.lower() in ("source", "uniform"):
        return text.lower()
    try:
        return tuple(float(w) for w in parse_list(text))
    except ValueError:
        raise InputError(f"--class-balance {text!r}: expected source, uniform or comma-separated weights like 1,2,1") from None


def paste_spec_from_config(path: Path | None = None):
    """The PasteSpec that ``synthgen paste`` would run with the ``[paste]`` table of a config
    file (``path``, or ./synthgen.toml): how training streams samples live, with no disk in
    between."""
    import typer.main

    from synthgen.config import default_map, load_config

    sections, source = load_config(path)
    if "paste" not in sections:
        where = source or Path.cwd() / "synthgen.toml"
        raise InputError(f"a live paste stream needs a [paste] table in {where}, describing what `synthgen paste` would make")
    command = typer.main.get_command(_paste_only)
    values = {param.name: param.default for param in command.params}
    values.update(default_map({"paste": sections["paste"]}, {"paste": set(values)}, {}, source)["paste"])
    return paste_settings(**values)[0]


def _print_paste_summary(summary) -> None:
    for note in summary.notes:
        console.print(escape(note), style="bold yellow" if note.startswith("DEMO") else None)
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_row("written", f"{summary.written:,} samples ({summary.format}) to {escape(str(summary.out))}")
    if summary.total != summary.written:
        table.add_row("in folder", f"{summary.total:,} samples (resumed)")
    table.add_row("rate", f"{summary.rate:,.1f} samples/s over {summary.seconds:,.1f} s")
    table.add_row("objects", f"{summary.objects:,} boxes; {summary.skipped_objects:,} objects skipped (no valid place)")
    if summary.empty_images:
        table.add_row("empty", f"{summary.empty_images:,} images without objects")
    if len(summary.per_class) > 1:
        total = max(sum(summary.per_class.values()), 1)
        table.add_row("per class", ", ".join(f"{escape(name)} {count:,} ({100 * count / total:.0f}%)" for name, count in summary.per_class.items()))
    if summary.interrupted:
        table.add_row("stopped", "by signal; every written file is complete")
    console.print(table)


# -- segment ----------------------------------------------------------------------------------


@friendly_errors
def segment(
    objects: Optional[str] = typer.Option(None, "--objects", help="Folder of object images (one class, or one subfolder per class). Required."),
    out: Optional[Path] = typer.Option(None, "--out", help="Pool folder to write; pass it to `synthgen paste --objects`. Required."),
    segmenter: str = typer.Option("auto", "--segmenter", help="none | alpha | mask | grabcut | auto | redo-lfw | redo:PATH.pth."),
    segmenter_options: Optional[str] = typer.Option(None, "--segmenter-options", help="Comma-separated KEY=VALUE options of the segmenter."),
    min_mask_area: float = typer.Option(0.05, help="Reject masks covering less than this fraction of the image."),
    max_mask_area: float = typer.Option(0.95, help="Reject masks covering more than this fraction."),
    max_border: float = typer.Option(0.5, help="Reject masks covering more than this fraction of the image border."),
    workers: int = typer.Option(1, "--workers", "-j", help="Processes that segment in parallel (the pool is identical for any number)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Segment object images once into a reusable object pool (cut-outs with masks)."""
    from synthgen.cli.common import require

    require("segment", objects=objects, out=out)
    from synthgen.pool import build_pool, format_summary
    from synthgen.segmenters import MaskQuality, make_segmenter
    from synthgen.sources import FolderSource, resolve_objects

    resolved = resolve_objects(objects)
    if not isinstance(resolved, FolderSource):
        raise InputError(f"{objects} is already an object pool")
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} is not empty: choose a new folder for the pool")
    quality = MaskQuality(min_area=min_mask_area, max_area=max_mask_area, max_border=max_border)
    if workers < 1:
        raise InputError(f"--workers {workers} must be at least 1")
    pool = build_pool(resolved, make_segmenter(segmenter, parse_options(segmenter_options)), out, quality, progress=not quiet, workers=workers)
    console.print(f"pool written to {escape(str(out))}: {escape(format_summary(pool.summary))}")
    console.print(f"look at the cut-outs and the rejected objects: synthgen preview {escape(str(out))}; sizes: synthgen stats {escape(str(out))}")
    if pool.summary["unreadable"]:
        from synthgen.pool import UNREADABLE_FILE

        console.print(f"every unreadable file, with its reason: {escape(str(out / UNREADABLE_FILE))}")


# A one-command app: click's view of `paste` (its parameters and defaults), for
# paste_spec_from_config, without importing the whole CLI.
_paste_only = typer.Typer()
_paste_only.command()(paste)
