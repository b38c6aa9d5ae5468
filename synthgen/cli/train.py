"""Typer commands for the training side: ``pretrain``, ``finetune``, ``evaluate``.

Plain functions, mounted by :mod:`synthgen.cli` as ``synthgen pretrain|finetune|evaluate`` and
under ``synthgen train``. They parse options, call
:mod:`synthgen.training` / :mod:`synthgen.evaluation`, and print a summary; bad input raises
``synthgen.errors.*`` for the caller's error handler. Defaults from ``synthgen.toml`` reach them
through click's ``default_map``, so they read no configuration themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from synthgen.cli.common import console, out_console
from synthgen.cli.refine import SCORE_NAMES, RefineScore, RefineTop

# The CLI imports this module at start-up: it must not import torch (via synthgen.detectors), or
# every `synthgen paste` would pay seconds and hundreds of MB for it. tests/test_cli.py checks
# that this list matches the detector registry.
DETECTOR_NAMES = (
    "ssd-mobilenet", "ssdlite-mbv3", "retinanet-r50", "fasterrcnn-mbv3", "retinanet-mbv2", "fcos-mbv2", "fasterrcnn-mbv2",
)


# -- options shared by pretrain and finetune ----------------------------------------------------
Out = Annotated[
    Optional[Path],
    typer.Option("--out", help="Run folder: checkpoints (best.pt, last.pt), metrics.csv, plots. Required (here or in synthgen.toml)."),
]
Val = Annotated[
    Optional[Path], typer.Option("--val", help="Real validation set (COCO JSON): best.pt is chosen by its VOC AP@0.5.")
]
Detector = Annotated[
    Optional[str],
    typer.Option("--detector", help=f"One of: {', '.join(DETECTOR_NAMES)} (default: ssd-mobilenet; with --resume, the run's)."),
]
FinetuneDetector = Annotated[
    Optional[str],
    typer.Option(
        "--detector",
        help=f"One of: {', '.join(DETECTOR_NAMES)} (default: the --init checkpoint's, else ssd-mobilenet).",
    ),
]
Steps = Annotated[int, typer.Option("--steps", help="Optimizer steps.")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Images per step (per GPU process).")]
Lr = Annotated[float, typer.Option("--lr", help="Peak learning rate.")]
Optim = Annotated[str, typer.Option("--optimizer", help="adam or sgd (momentum 0.9).")]
Schedule = Annotated[str, typer.Option("--schedule", help="cosine, step or constant, after a linear warmup.")]
Warmup = Annotated[int, typer.Option("--warmup", help="Warmup steps.")]
WeightDecay = Annotated[float, typer.Option("--weight-decay", help="Weight decay on weights (not biases or norms).")]
ImageSize = Annotated[
    int,
    typer.Option(
        "--image-size",
        help="Training and inference size in pixels, a square (the R-CNN-style *-mbv3/-r50 detectors keep the aspect "
        "at inference). Small objects need more: 640 for WIDER-like faces.",
    ),
]
AnchorsFrom = Annotated[
    Optional[Path],
    typer.Option(
        "--anchors-from",
        metavar="REAL.json",
        help="retinanet-mbv2 / fasterrcnn-mbv2: fit the anchors to the boxes of this COCO file (e.g. the real training "
        "set) at --image-size: sizes spanning their 2nd-98th percentile, aspect ratios their 10/50/90th. Stored in the "
        "checkpoint; finetuning and resuming keep the checkpoint's.",
    ),
]
BoxScalesOpt = Annotated[
    Optional[str],
    typer.Option(
        "--box-scales",
        help="SSD detectors: smallest,largest default box as fractions of the input side (default 0.2,0.95; "
        "small objects need less, e.g. 0.04,0.5). Finetuning and resuming keep the checkpoint's.",
    ),
]
EvalEvery = Annotated[int, typer.Option("--eval-every", help="Validate and checkpoint every N steps.")]
EarlyStop = Annotated[
    Optional[int],
    typer.Option(
        "--early-stop",
        metavar="PATIENCE",
        help="Stop by itself once PATIENCE validations in a row (one every --eval-every steps) have not raised "
        "the best validation VOC AP@0.5 (best.pt keeps the best). Needs --val. A resumed run keeps the count.",
    ),
]
Workers = Annotated[int, typer.Option("--num-workers", help="Data-loading worker processes.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the run (and of the real subset unless --subset-seed).")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last.pt.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
Amp = Annotated[bool, typer.Option("--amp", help="Mixed precision (CUDA only).")]
NReal = Annotated[Optional[int], typer.Option("--n-real", help="Train on a seeded subset of this many real images.")]
SubsetSeed = Annotated[Optional[int], typer.Option("--subset-seed", help="Seed of the real subset (default: --seed).")]
Progress = Annotated[
    bool, typer.Option("--progress/--no-progress", help="Show progress: a live bar on a terminal, a plain line every few steps in a log.")
]
Threads = Annotated[
    Optional[int],
    typer.Option(
        "--threads",
        help="CPU threads for the model's operators in the main process (default: torch's, i.e. $OMP_NUM_THREADS or all cores). "
        "Data workers use one each.",
    ),
]
AugmentPaste = Annotated[
    float,
    typer.Option(
        "--augment-paste",
        help="Copy-paste augmentation of the real images: this share of them (0-1) get objects pasted on, their "
        "own boxes kept and updated, as the \\[paste] table of synthgen.toml (or --paste-config) describes. 0: off.",
    ),
]
PasteConfig = Annotated[Optional[Path], typer.Option("--paste-config", help="TOML file whose \\[paste] table --augment-paste uses (default: ./synthgen.toml).")]


def _augmented(source, augment_paste: float, paste_config: Path | None):
    """``source`` (real COCO images) with --augment-paste applied, or as it is when 0."""
    if not augment_paste:
        return source
    from synthgen.cli.paste import paste_spec_from_config
    from synthgen.errors import InputError
    from synthgen.training.data import CocoSource, augment_paste_source

    if not isinstance(source, CocoSource):
        raise InputError("--augment-paste pastes onto real COCO images: give the real data as a COCO file")
    return augment_paste_source(source, paste_spec_from_config(paste_config), augment_paste)


def _config(**options: Any):
    """The TrainConfig of a command's options (its ``locals()``: other names are ignored)."""
    from synthgen.cli.common import parse_range
    from synthgen.training.loop import TrainConfig

    return TrainConfig(
        out=options["out"],
        detector=options["detector"],
        steps=options["steps"],
        batch_size=options["batch_size"],
        lr=options["lr"],
        optimizer=options["optimizer"],
        schedule=options["schedule"],
        warmup_steps=options["warmup"],
        weight_decay=options["weight_decay"],
        image_size=options["image_size"],
        box_scales=parse_range(options["box_scales"], "box-scales"),
        anchors_from=options["anchors_from"],
        amp=options["amp"],
        eval_every=options["eval_every"],
        num_workers=options["num_workers"],
        seed=options["seed"],
        resume=options["resume"],
        device=options["device"],
        pretrained_backbone=options.get("pretrained_backbone", True),
        progress=options["progress"],
        threads=options["threads"],
        early_stop=options["early_stop"],
    )


def _load_val(val: Path | None):
    if val is None:
        return None
    from synthgen.training.coco import load_coco

    return load_coco(val)


def _report(result) -> None:
    best = "-" if result.best_metric is None else f"{result.best_metric:.4f}"
    stopped = f"{escape(result.early_stop)}\n" if result.early_stop else ""
    out_console.print(
        f"trained {result.steps} steps in {result.seconds / 60:.1f} min; best validation {best}\n"
        f"{stopped}"
        f"best checkpoint: {escape(str(result.best_checkpoint or '-'))}\n"
        f"last checkpoint: {escape(str(result.last_checkpoint))}\n"
        f"log: {escape(str(result.out / 'metrics.csv'))}, curves: {escape(str(result.out / 'training_curves.png'))}"
    )


def _paste_stream_device(spec, device: str):
    """``(spec, device)`` for the live paste stream: on a CUDA training device the torch
    compositor draws the batches there (unless the settings need the numpy compositor, said on
    stderr); a [paste] table that asks for the torch compositor draws on the training device."""
    import dataclasses

    from synthgen.compositor.torch_render import check_supported
    from synthgen.detectors import resolve_device
    from synthgen.errors import InputError

    train_device = resolve_device(device)
    if spec.compositor == "numpy" and train_device.type == "cuda":
        try:
            check_supported(spec.composite)
        except InputError as err:
            console.print(f"the live paste stream stays on the CPU: {escape(str(err))}")
            return spec, None
        spec = dataclasses.replace(spec, compositor="torch")
    return spec, (train_device if spec.compositor == "torch" else None)


def pretrain(
    data: Annotated[
        Optional[str],
        typer.Option(
            "--data",
            help="Synthetic data: WebDataset shards (folder, glob, {000000..000009} or URL), a COCO file/folder, "
            "or `paste` / `paste:FILE.toml`: a live stream of what the \\[paste] table of synthgen.toml (or FILE) "
            "describes, rendered by the loader workers with nothing written to disk. Required (here or in synthgen.toml).",
        ),
    ] = None,
    out: Out = None,
    val: Val = None,
    real: Annotated[Optional[Path], typer.Option("--real", help="Real COCO JSON to interleave with the synthetic data.")] = None,
    synthetic_fraction: Annotated[
        float, typer.Option("--synthetic-fraction", help="With --real: share of synthetic samples in the mix.")
    ] = 0.5,
    n_real: NReal = None,
    subset_seed: SubsetSeed = None,
    categories: Annotated[
        Optional[Path], typer.Option("--categories", help="categories.json of remote shards (local ones have it beside them).")
    ] = None,
    detector: Detector = None,
    steps: Steps = 1000,
    batch_size: BatchSize = 16,
    lr: Lr = 1e-4,
    optimizer: Optim = "adam",
    schedule: Schedule = "cosine",
    warmup: Warmup = 50,
    weight_decay: WeightDecay = 0.0,
    image_size: ImageSize = 320,
    box_scales: BoxScalesOpt = None,
    anchors_from: AnchorsFrom = None,
    eval_every: EvalEvery = 250,
    early_stop: EarlyStop = None,
    num_workers: Workers = 2,
    seed: Seed = 0,
    resume: Resume = False,
    device: Device = "auto",
    amp: Amp = False,
    pretrained_backbone: Annotated[
        bool, typer.Option("--pretrained-backbone/--no-pretrained-backbone", help="ImageNet backbone weights, or from scratch.")
    ] = True,
    progress: Progress = True,
    augment_paste: AugmentPaste = 0.0,
    paste_config: PasteConfig = None,
    threads: Threads = None,
) -> None:
    """Pretrain a detector on synthetic data (optionally interleaved with real images)."""
    from synthgen.cli.common import Problems, require
    from synthgen.errors import InputError

    require("pretrain", data=data, out=out)
    from synthgen.training.data import open_source
    from synthgen.training.loop import pretrain as run_pretrain

    # Every problem of the command at once, most fundamental first: the data, then the flags.
    problems = Problems()
    live = data == "paste" or data.startswith("paste:")
    spec = synthetic = None
    if live:
        from synthgen.cli.paste import paste_spec_from_config

        spec = problems.check(paste_spec_from_config, Path(data[len("paste:"):]) if data.startswith("paste:") else None)
        synthetic_sizes: Any = None if spec is None else spec.composite.scale
    else:
        synthetic = problems.check(open_source, data, real=False, categories=categories)
        synthetic_sizes = None if "://" in data or data.startswith("pipe:") else data  # remote shards: not read twice
    real_source = None
    if real is not None:
        real_source = problems.check(
            open_source, str(real), real=True, n_images=n_real, seed=seed if subset_seed is None else subset_seed
        )
    elif n_real is not None:
        problems.add(InputError("--n-real selects real images for --real; give --real too"))
    if augment_paste and real is None:
        problems.add(InputError("--augment-paste pastes onto the real images of --real; give --real too"))
    val_data = problems.check(_load_val, val)
    config = _config(**locals())
    problems.check(config.check)
    problems.raise_all()
    if live:  # builds the object and background pools: only once everything else is right
        synthetic = _live_paste(spec, device)
    if real_source is not None:
        real_source = _augmented(real_source, augment_paste, paste_config)
    if val_data is not None and synthetic_sizes is not None:
        from synthgen.stats import box_size_overlap_note

        try:
            note = box_size_overlap_note(synthetic_sizes, val)
        except InputError:  # data the reader cannot measure: the warning is a courtesy, never a stop
            note = None
        if note:
            console.print(f"warning: {escape(note)}")
    result = run_pretrain(config, synthetic, val_data, real=real_source, synthetic_fraction=synthetic_fraction)
    _report(result)


def _live_paste(spec, device: str):
    """The live paste stream of ``spec`` for training on ``device``."""
    from synthgen.training.data import live_paste_source

    return live_paste_source(*_paste_stream_device(spec, device))


def finetune(
    data: Annotated[
        Optional[Path],
        typer.Option("--data", help="Real training data: a COCO JSON (file names relative to its folder). Required (here or in synthgen.toml)."),
    ] = None,
    out: Out = None,
    init: Annotated[Optional[Path], typer.Option("--init", help="Start from this checkpoint (e.g. OUT/best.pt of pretrain).")] = None,
    val: Val = None,
    n_real: NReal = None,
    subset_seed: SubsetSeed = None,
    detector: FinetuneDetector = None,
    steps: Steps = 500,
    batch_size: BatchSize = 16,
    lr: Lr = 1e-4,
    optimizer: Optim = "adam",
    schedule: Schedule = "cosine",
    warmup: Warmup = 50,
    weight_decay: WeightDecay = 0.0,
    image_size: ImageSize = 320,
    box_scales: BoxScalesOpt = None,
    anchors_from: AnchorsFrom = None,
    eval_every: EvalEvery = 50,
    early_stop: EarlyStop = None,
    num_workers: Workers = 2,
    seed: Seed = 0,
    resume: Resume = False,
    device: Device = "auto",
    amp: Amp = False,
    pretrained_backbone: Annotated[
        bool,
        typer.Option(
            "--pretrained-backbone/--no-pretrained-backbone",
            help="Without --init: ImageNet backbone or from scratch (the real-only baseline).",
        ),
    ] = True,
    progress: Progress = True,
    augment_paste: AugmentPaste = 0.0,
    paste_config: PasteConfig = None,
    threads: Threads = None,
) -> None:
    """Finetune on real images (a seeded --n-real subset for few-shot runs), from --init or, without
    it, from an ImageNet backbone (the baseline without synthetic pretraining)."""
    from synthgen.checkpoints import check_checkpoint_file
    from synthgen.cli.common import Problems, require
    from synthgen.detectors import DETECTOR_CHECKPOINT
    from synthgen.training.data import open_source
    from synthgen.training.loop import finetune as run_finetune
    from synthgen.training.loop import train

    require("finetune", data=data, out=out)
    # Every problem of the command at once, most fundamental first: the data, then the flags.
    problems = Problems()
    source = problems.check(open_source, str(data), real=True, n_images=n_real, seed=seed if subset_seed is None else subset_seed)
    if init is not None:
        problems.check(check_checkpoint_file, init, DETECTOR_CHECKPOINT)
    val_data = problems.check(_load_val, val)
    config = _config(**locals())
    problems.check(config.check)
    problems.raise_all()
    source = _augmented(source, augment_paste, paste_config)
    if init is None:
        result = train(config, source, val_data)
    else:
        result = run_finetune(config, init, source, val_data)
    _report(result)


def _print_comparison(
    checkpoint: Path, baseline: Path, data: Path, metrics, base_metrics, out: Path,
    names: tuple[str, str] = ("checkpoint", "baseline"), title: str | None = None, write: bool = True,
) -> None:
    """Two detectors' scores side by side with the difference, printed and (``write``) in
    OUT/comparison.json; ``names`` head the two columns."""
    from synthgen.cache import atomic_write_json
    from synthgen.evaluation import compare_metrics

    rows = compare_metrics(metrics.to_dict(), base_metrics.to_dict())
    if write:
        atomic_write_json(
            out / "comparison.json", {"checkpoint": str(checkpoint), "baseline": str(baseline), "ground_truth": str(data), "rows": rows}
        )
    shown = lambda v: "-" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
    # The title is its own unwrapped line: as a table title rich wraps it to the table's width, mid-path.
    out_console.print(title or f"{escape(str(checkpoint))} against {escape(str(baseline))} on {escape(str(data))}", soft_wrap=True)
    table = Table()
    for column in ("metric", *names, "difference"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for row in rows:
        diff = row["difference"]
        signed = "-" if diff is None else (f"{diff:+.4f}" if isinstance(diff, float) else f"{diff:+d}")
        table.add_row(escape(row["metric"]), shown(row["value"]), shown(row["baseline"]), signed)
    out_console.print(table)
    for what, m in zip(names, (metrics, base_metrics)):
        if m.skipped:
            console.print(f"[yellow]{what}: skipped {len(m.skipped)} unreadable ground-truth image(s)[/] (--skip-unreadable)")
    out_console.print(f"detections and metrics in {escape(str(out))} and {escape(str(out / 'baseline'))}; comparison.json in {escape(str(out))}")


def _expand_checkpoints(paths: list[Path] | None, option: str) -> list[Path]:
    """The files of a repeatable checkpoint option, a quoted glob (``'runs/s*/best.pt'``)
    expanded in sorted order; a pattern that matches nothing is an InputError."""
    import glob

    from synthgen.errors import InputError

    found: list[Path] = []
    for path in paths or []:
        text = str(path)
        if any(ch in text for ch in "*?[") and not path.exists():
            matches = sorted(glob.glob(text))
            if not matches:
                raise InputError(f"{option} {text}: no file matches this pattern; check the path (quote it so the shell leaves it to synthgen)")
            found += [Path(m) for m in matches]
        else:
            found.append(path)
    return found


def _print_sets(checkpoints: list[Path], baselines: list[Path], data: Path, all_metrics, base_metrics, out: Path) -> None:
    """Mean ± sd of each score over several checkpoints (and baselines, with the difference),
    printed and written to OUT/comparison.json."""
    from synthgen.cache import atomic_write_json
    from synthgen.evaluation import compare_metric_sets

    dicts = [m.to_dict() for m in all_metrics]
    base_dicts = [m.to_dict() for m in base_metrics]
    rows = compare_metric_sets(dicts, base_dicts or dicts)
    atomic_write_json(out / "comparison.json", {
        "checkpoints": [str(p) for p in checkpoints], "baselines": [str(p) for p in baselines], "ground_truth": str(data),
        "metrics": dicts, "baseline_metrics": base_dicts, "rows": rows,
    })  # fmt: skip

    def spread(mean, sd, signed=False) -> str:
        if mean is None:
            return "-"
        text = f"{mean:+.4f}" if signed else f"{mean:.4f}"
        return text if sd is None else f"{text} ± {sd:.4f}"

    title = f"{len(checkpoints)} checkpoint(s)" + (f" against {len(baselines)} baseline(s)" if baselines else "") + f" on {escape(str(data))}"
    out_console.print(title, soft_wrap=True)
    table = Table()
    columns = ["metric", "checkpoints (mean ± sd)"] + (["baselines (mean ± sd)", "difference (mean ± sd)"] if baselines else [])
    for column in columns:
        table.add_column(column, justify="left" if column == "metric" else "right")
    for row in rows:
        cells = [escape(row["metric"]), spread(row["value_mean"], row["value_sd"])]
        if baselines:
            cells += [spread(row["baseline_mean"], row["baseline_sd"]), spread(row["difference_mean"], row["difference_sd"], signed=True)]
        table.add_row(*cells)
    out_console.print(table)
    if baselines:
        how = (
            f"paired: checkpoint i against baseline i, in the order given ({len(checkpoints)} pairs); sd of the pair differences"
            if len(checkpoints) == len(baselines)
            else f"unpaired ({len(checkpoints)} against {len(baselines)}): difference of the means, ± its standard error"
        )
        out_console.print(f"difference = checkpoints - baselines, {how}")
    skipped = sum(bool(m.skipped) for m in [*all_metrics, *base_metrics])
    if skipped:
        console.print(f"[yellow]{skipped} evaluation(s) skipped unreadable ground-truth images[/] (--skip-unreadable)")
    out_console.print(f"each run's detections and metrics in {escape(str(out))}/checkpoint-N and baseline-N; comparison.json in {escape(str(out))}")


def evaluate(
    checkpoint: Annotated[
        Optional[list[Path]],
        typer.Option(
            "--checkpoint",
            help="A synthgen checkpoint (best.pt / last.pt). Required. Repeat it, or give a quoted glob, for several "
            "(e.g. one per training seed): each is scored and the mean ± sd reported.",
        ),
    ] = None,
    baseline: Annotated[
        Optional[list[Path]],
        typer.Option(
            "--baseline",
            help="A second checkpoint scored on the same data (results in OUT/baseline): the two side by side, with "
            "the difference (checkpoint - baseline), also in OUT/comparison.json. Repeatable (or a quoted glob): with "
            "several checkpoints and baselines, mean ± sd of each side and of the difference (paired by order when "
            "the counts match).",
        ),
    ] = None,
    data: Annotated[
        Optional[Path], typer.Option("--data", help="Ground truth: a COCO JSON (file names relative to its folder). Required.")
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option("--out", help="Where to write detections, metrics and plots (default: beside the checkpoint).")
    ] = None,
    images_root: Annotated[
        Optional[Path], typer.Option("--images-root", help="Folder the COCO file names are relative to (default: its folder).")
    ] = None,
    score_threshold: Annotated[float, typer.Option("--score-threshold", help="Keep detections scoring at least this.")] = 0.001,
    batch_size: BatchSize = 4,
    device: Device = "auto",
    threads: Threads = None,
    preview: Annotated[
        int, typer.Option("--preview", help="Draw predictions beside ground truth for the first N images (preview.png, a grid).")
    ] = 0,
    preview_min_score: Annotated[
        float, typer.Option("--preview-min-score", help="Preview: draw predictions scoring at least this.")
    ] = 0.3,
    preview_max_boxes: Annotated[
        int, typer.Option("--preview-max-boxes", help="Preview: draw at most this many predictions per image (best first).")
    ] = 10,
    preview_columns: Annotated[int, typer.Option("--preview-columns", help="Preview: image pairs per row.")] = 2,
    skip_unreadable: Annotated[
        bool,
        typer.Option(
            "--skip-unreadable",
            help="Leave ground-truth images whose files do not decode out of the scores (counted and listed in "
            "metrics.json) instead of stopping.",
        ),
    ] = False,
    refine: Annotated[
        Optional[Path],
        typer.Option(
            "--refine",
            help="A SOD-MTGAN run (`synthgen train mtgan`) for this checkpoint: its top regions are super-resolved and "
            "re-scored / re-boxed; the scores beside the checkpoint's alone (OUT/baseline), also in OUT/comparison.json.",
        ),
    ] = None,
    refine_top: RefineTop = 100,
    refine_score: RefineScore = "discriminator",
    image_size: Annotated[
        Optional[int],
        typer.Option(
            "--image-size",
            help="Inference size in pixels (default: the checkpoint's training size). Above it, small objects grow into "
            "the anchors: a retinanet-mbv2 trained at 640 px on 100 WIDER photos scores 35.8 AP50 at 640, 43.7 at 960 "
            "(docs/results-detection.md).",
        ),
    ] = None,
) -> None:
    """Evaluate a checkpoint on a COCO file: COCO AP/AR and VOC AP@0.5 per class (beside a --baseline
    checkpoint's, or beside its own refined by a --refine run, with the difference, when given)."""
    from synthgen.cli.common import require
    from synthgen.errors import InputError
    from synthgen.evaluation import evaluate as run_evaluate

    from synthgen.checkpoints import check_checkpoint_file
    from synthgen.cli.common import Problems
    from synthgen.detectors import DETECTOR_CHECKPOINT, MIN_IMAGE_SIZE

    require("evaluate", checkpoint=checkpoint or None, data=data)
    checkpoints = _expand_checkpoints(checkpoint, "--checkpoint")
    baselines = _expand_checkpoints(baseline, "--baseline")
    # Every problem of the command at once, most fundamental first: the files, then the flags.
    problems = Problems()
    for path in (*checkpoints, *baselines):
        problems.check(check_checkpoint_file, path, DETECTOR_CHECKPOINT)
    if not data.is_file():
        problems.add(InputError(f"{data} {'is a folder' if data.is_dir() else 'does not exist'}; --data takes the ground truth as a COCO .json file"))
    if threads is not None and threads < 1:
        problems.add(InputError(f"--threads {threads}: give at least 1"))
    if preview_max_boxes < 1 or preview_columns < 1 or not 0 <= preview_min_score <= 1:
        problems.add(InputError("--preview-max-boxes and --preview-columns must be >= 1, --preview-min-score in [0, 1]"))
    if image_size is not None and image_size < MIN_IMAGE_SIZE:
        problems.add(InputError(f"--image-size {image_size} is too small for the detectors' strides; use at least {MIN_IMAGE_SIZE}"))
    problems.raise_all()
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    out = out or checkpoints[0].parent / (f"eval-{data.stem}" + (f"-refined-{Path(refine).name}" if refine is not None else ""))
    if refine is not None:
        if baselines or len(checkpoints) > 1 or skip_unreadable or preview or image_size is not None:
            raise InputError("--refine compares one checkpoint with its own refinement: it cannot be combined with --baseline, "
                             "several --checkpoint, --skip-unreadable, --preview or --image-size")
        checkpoint = checkpoints[0]
        if refine_score not in SCORE_NAMES:
            raise InputError(f"--refine-score {refine_score!r}: choose one of {', '.join(SCORE_NAMES)}")
        from synthgen.refine.apply import evaluate_refined

        result = evaluate_refined(
            checkpoint, refine, data, images_root, out, score_threshold=score_threshold, top=refine_top,
            score=refine_score, device=device, batch_size=batch_size, show_progress=True,
        )
        _print_comparison(
            checkpoint, checkpoint, data, result.metrics, result.baseline, out,
            names=("refined", "baseline"), title=f"{escape(str(checkpoint))} refined by {escape(str(refine))} on {escape(str(data))}",
            write=False,
        )
        console.print(
            f"baseline detection {result.detect_seconds / max(1, result.images):.3f} s/image, refinement "
            f"{result.refine_seconds_per_image:.3f} s/image (top {refine_top} regions) over {result.images} images"
        )
        return
    if len(checkpoints) > 1 or len(baselines) > 1:
        scored = {
            side: [
                run_evaluate(path, data, images_root, score_threshold, out / f"{side}-{i}", device=device, batch_size=batch_size,
                             skip_unreadable=skip_unreadable, image_size=image_size)
                for i, path in enumerate(paths, 1)
            ]
            for side, paths in (("checkpoint", checkpoints), ("baseline", baselines))
        }  # fmt: skip
        _print_sets(checkpoints, baselines, data, scored["checkpoint"], scored["baseline"], out)
        return
    checkpoint = checkpoints[0]
    baseline = baselines[0] if baselines else None
    metrics = run_evaluate(
        checkpoint, data, images_root, score_threshold, out, device=device, batch_size=batch_size, preview=preview,
        preview_min_score=preview_min_score, preview_max_boxes=preview_max_boxes, preview_columns=preview_columns,
        skip_unreadable=skip_unreadable, image_size=image_size,
    )
    if baseline is not None:
        base_metrics = run_evaluate(
            baseline, data, images_root, score_threshold, out / "baseline", device=device, batch_size=batch_size,
            skip_unreadable=skip_unreadable, image_size=image_size,
        )
        _print_comparison(checkpoint, baseline, data, metrics, base_metrics, out)
        return
    out_console.print(f"{escape(str(checkpoint))} on {escape(str(data))}", soft_wrap=True)
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.to_dict().items():
        if name == "voc_ap50_per_class":
            for cls, ap in value.items():
                table.add_row(f"voc_ap50: {escape(cls)}", "-" if ap is None else f"{ap:.4f}")
        else:
            table.add_row(name, "-" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value)))
    out_console.print(table)
    if metrics.skipped:
        console.print(
            f"[yellow]skipped {len(metrics.skipped)} unreadable ground-truth image(s)[/] (--skip-unreadable), e.g. "
            f"{escape(metrics.skipped[0])}; all are listed in metrics.json. The scores are over the other {metrics.num_images}."
        )
    out_console.print(f"detections, metrics.json and pr_curve.png in {escape(str(out))}")
