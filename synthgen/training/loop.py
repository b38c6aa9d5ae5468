"""The training loop: a plain step loop in the style of torchvision's references/detection.

``train(config, train_data, val_data)`` trains ``config.detector`` on an endless source (see
:mod:`synthgen.training.data`) for ``config.steps`` optimizer steps. Every ``eval_every`` steps
(and at the end) it scores the model on the real validation set (VOC AP@0.5 by default, the
paper's selection metric), keeps the best weights in ``best.pt`` and the full resume state in
``last.pt``. ``OUT/metrics.csv`` logs step, lr, loss and its parts, speed and validation
metrics; TensorBoard events go to ``OUT/tensorboard`` when tensorboard is installed; at the end
``OUT/training_curves.png`` plots the log.

``early_stop=PATIENCE`` (needs validation data) stops the run by itself once PATIENCE
validations in a row have not improved the selection metric (an improvement is a score strictly
above the best so far, the rule that also picks ``best.pt``); the step and the reason are in
``TrainResult.early_stop``, in the ``early_stop`` column of ``metrics.csv`` (beside
``val_evals_since_best``, the count so far) and in ``last.pt``.

``resume=True`` continues from ``OUT/last.pt`` at the same step, optimizer and schedule state
(and early-stopping count).
Runs are seeded: the same config, data, seed and number of workers give the same run.

Several GPUs (DistributedDataParallel; each process reads its own part of the data stream, the
batch size is per process, rank 0 alone evaluates and writes)::

    torchrun --standalone --nproc_per_node=4 -m synthgen pretrain --data shards/ --val val.json --out runs/pre
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from synthgen.detectors import (
    AnchorSpec,
    BackboneInit,
    anchors_from_coco,
    BoxScales,
    DEFAULT_BOX_SCALES,
    DETECTORS,
    build_detector,
    check_anchors,
    check_box_scales,
    checkpoint_anchors,
    checkpoint_box_scales,
    model_from_checkpoint,
    read_checkpoint,
    resolve_device,
    save_checkpoint,
)
from synthgen.errors import InputError, Interrupted, OutputExistsError
from synthgen.evaluation import evaluate_detections, match_categories, predict
from synthgen.training.coco import CocoSet
from synthgen.training.data import MixedSource, Source, make_loader

log = logging.getLogger(__name__)

DEFAULT_DETECTOR = "ssd-mobilenet"
SELECT_METRICS = ("voc_ap50", "ap50", "ap")


@dataclass
class TrainConfig:
    out: Path
    detector: str | None = None  # None: the init checkpoint's detector, else DEFAULT_DETECTOR
    steps: int = 1000
    batch_size: int = 16  # per process
    lr: float = 1e-4
    optimizer: str = "adam"  # adam | sgd (momentum 0.9)
    schedule: str = "cosine"  # cosine | step (x0.1 at 2/3 and 8/9 of the steps) | constant
    warmup_steps: int = 50  # linear ramp from lr/100 to lr
    weight_decay: float = 0.0  # on weights, not on biases or norm layers
    image_size: int = 320
    box_scales: BoxScales | None = None  # SSD default-box range (None: the detector's default, or init's)
    anchors: AnchorSpec | None = None  # pyramid detectors' anchors (None: the detector's default, or init's)
    anchors_from: Path | None = None  # or: fit them to the boxes of this COCO file (anchors_from_coco)
    amp: bool = False  # mixed precision, CUDA only
    eval_every: int = 250
    log_every: int = 10
    num_workers: int = 2
    seed: int = 0
    resume: bool = False
    device: str = "auto"
    pretrained_backbone: bool = True  # ImageNet backbone (ignored with init: its weights are used)
    init: Path | None = None  # start from these weights (finetuning); head re-created if classes differ
    select_metric: str = "voc_ap50"
    progress: bool = True
    threads: int | None = None  # CPU threads of torch's operators in this process (None: torch's default)
    early_stop: int | None = None  # patience: stop after this many validations in a row without a new best

    def check(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.eval_every < 1 or self.log_every < 1:
            raise InputError("steps, batch size, eval-every and log-every must be at least 1")
        if not self.lr > 0:
            raise InputError(f"learning rate must be positive, got {self.lr}")
        if self.optimizer not in ("adam", "sgd"):
            raise InputError(f"unknown optimizer {self.optimizer!r}; use adam or sgd")
        if self.schedule not in ("cosine", "step", "constant"):
            raise InputError(f"unknown schedule {self.schedule!r}; use cosine, step or constant")
        if self.select_metric not in SELECT_METRICS:
            raise InputError(f"unknown selection metric {self.select_metric!r}; use one of {SELECT_METRICS}")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"--threads {self.threads}: give at least 1")
        if self.early_stop is not None and self.early_stop < 1:
            raise InputError(f"--early-stop {self.early_stop}: the patience is a number of validations, give at least 1")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.num_workers < 0:
            raise InputError("warmup steps, weight decay and workers cannot be negative")
        if self.detector is not None:
            DETECTORS.get(self.detector)
            self.anchors = check_anchors(self.detector, self.anchors)
        if self.anchors is not None and self.anchors_from is not None:
            raise InputError("give anchors or a COCO file to fit them to (--anchors-from), not both")
        self.box_scales = check_box_scales(self.box_scales)


@dataclass
class TrainResult:
    out: Path
    last_checkpoint: Path
    best_checkpoint: Path | None  # None without validation data
    steps: int
    best_metric: float | None
    final_metrics: dict[str, Any] | None
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list, repr=False)
    early_stop: str | None = None  # why and when the run stopped before config.steps; None: it ran them all


def lr_factor(step: int, *, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the base learning rate after ``step`` optimizer steps."""
    if warmup and step < warmup:
        return 0.01 + 0.99 * step / warmup
    if schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if schedule == "step":
        return 0.1 ** sum(step >= m for m in (total * 2 // 3, total * 8 // 9))
    return 1.0


@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owned: bool = False  # this loop initialised the process group (and tears it down)

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    owned = not dist.is_initialized()
    if owned:
        use_cuda = torch.cuda.is_available() and device != "cpu"
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), local, owned)


def _device(requested: str, d: _Dist) -> torch.device:
    # Under torchrun each process drives the GPU of its local rank.
    if d.world_size > 1 and torch.cuda.is_available() and requested != "cpu":
        return torch.device("cuda", d.local_rank)
    return resolve_device(requested)


def _barrier(d: _Dist) -> None:
    if d.world_size > 1:
        dist.barrier()


def _optimizer(config: TrainConfig, model: nn.Module) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    # Decay only weight matrices/kernels: decaying biases and norm scales only hurts.
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:  # frozen backbone stages stay out
            (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(groups, lr=config.lr)
    else:
        optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=0.9)
    schedule = partial(lr_factor, total=config.steps, warmup=config.warmup_steps, schedule=config.schedule)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def _load_compatible(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Load the entries of ``state`` that fit ``model``; return the names left as initialised
    (the class-dependent head layers when the number of classes changed)."""
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(fitting, strict=False)
    return sorted(set(own) - set(fitting))


class LossWindow:
    """Mean losses over the steps since the last log line, for the GAN trainers (insert, refine):
    :meth:`add` each step's losses, :meth:`flush` writes one row to a run log and returns the
    text shown beside the progress bar."""

    def __init__(self, loss_keys: tuple[str, ...]) -> None:
        self.loss_keys = loss_keys
        self.totals: dict[str, float] = {}
        self.steps, self.started = 0, time.perf_counter()

    def add(self, losses: dict[str, float]) -> None:
        self.steps += 1
        for k, v in losses.items():
            self.totals[k] = self.totals.get(k, 0.0) + v

    def flush(self, step: int, lr: float, runlog: "_RunLog") -> str:
        elapsed = time.perf_counter() - self.started
        means = {k: self.totals[k] / self.steps for k in self.loss_keys if k in self.totals}
        row: dict[str, Any] = {"step": step, "lr": lr}
        row.update({k: means.get(k) for k in self.loss_keys})
        row["steps_per_s"] = self.steps / elapsed if elapsed > 0 else float("nan")
        runlog.write(row)
        self.totals, self.steps, self.started = {}, 0, time.perf_counter()
        return "  ".join(f"{k} {v:.3f}" for k, v in means.items())


class _RunLog:
    """metrics.csv (+ TensorBoard when installed), written by the main process only."""

    VAL_COLUMNS = ("val_ap", "val_ap50", "val_voc_ap50")
    EARLY_STOP_COLUMNS = ("val_evals_since_best", "early_stop")  # only in runs with early stopping

    def __init__(self, out: Path, start_step: int, early_stop: bool = False) -> None:
        self.path = out / "metrics.csv"
        self.columns: list[str] | None = None
        self.extra_columns = self.EARLY_STOP_COLUMNS if early_stop else ()
        self.rows: list[dict[str, Any]] = []
        if start_step > 0 and self.path.is_file():
            # A resumed run drops what the interrupted run logged after its last checkpoint.
            with self.path.open(newline="") as f:
                reader = csv.DictReader(f)
                self.columns = list(reader.fieldnames or [])
                self.rows = [r for r in reader if int(r["step"]) <= start_step]
            self._rewrite()
        self.tensorboard = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # optional: the CSV is the record
            SummaryWriter = None
        if SummaryWriter is not None:
            self.tensorboard = SummaryWriter(str(out / "tensorboard"), purge_step=start_step + 1)

    def _rewrite(self) -> None:
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.rows)

    def write(self, row: dict[str, Any]) -> None:
        if self.columns is None:
            parts = sorted(set(row) - {"step", "lr", "loss", "steps_per_s", *self.VAL_COLUMNS, *self.EARLY_STOP_COLUMNS})
            self.columns = ["step", "lr", "loss", *parts, "steps_per_s", *self.VAL_COLUMNS, *self.extra_columns]
            self._rewrite()
        self.rows.append(row)
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore").writerow(row)
        if self.tensorboard is not None:
            for key, value in row.items():
                if key not in ("step", "early_stop") and isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(key, value, row["step"])

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def plot_curves(rows: list[dict[str, Any]], path: Path) -> None:
    """Loss (with its parts) and validation metrics against the step."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    def series(key: str) -> tuple[list[float], list[float]]:
        pts = [(float(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig = Figure(figsize=(9, 6), dpi=100)
    ax_loss, ax_val = fig.subplots(2, 1, sharex=True)
    skipped = ("step", "lr", "steps_per_s", *_RunLog.VAL_COLUMNS, *_RunLog.EARLY_STOP_COLUMNS)
    keys = [k for k in (rows[0] if rows else []) if k not in skipped]
    for key in keys:
        ax_loss.plot(*series(key), label=key, linewidth=2 if key == "loss" else 1)
    ax_loss.set_ylabel("training loss")
    ax_loss.set_yscale("log")
    ax_loss.legend(fontsize="small")
    ax_loss.grid(alpha=0.3)
    for key in _RunLog.VAL_COLUMNS:
        xs, ys = series(key)
        if xs:
            ax_val.plot(xs, ys, marker="o", label=key[4:])
    ax_val.set_ylabel("validation")
    ax_val.set_xlabel("step")
    ax_val.grid(alpha=0.3)
    if ax_val.get_legend_handles_labels()[0]:
        ax_val.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)


def _progress(enabled: bool, total: int, done: int, every: int):
    """The live bar of a run (on a terminal), or a plain line every ``every`` steps or 30 s (in
    a log): step, rate, elapsed, ETA, loss and the last validation."""
    from rich.progress import TextColumn

    from synthgen.progress import progress_bar

    progress = progress_bar("steps", enabled, extra=(TextColumn("loss {task.fields[loss]}  {task.fields[val]}"),), every=every)
    task = progress.add_task("train", total=total, completed=done, loss="-", val="")
    return progress, task


def _batches(loader: Any) -> Iterator[Any]:
    # Sources are endless; a finite one (a test iterator) simply starts over.
    while True:
        produced = False
        iterator = iter(loader)
        try:
            for batch in iterator:
                produced = True
                yield batch
        finally:
            close = getattr(iterator, "close", None)  # a generator (the device paste stream): stop it now
            if close is not None:
                close()
        if not produced:
            raise InputError("the training data yielded no samples")


def _score_text(score: float | None) -> str:
    return "none yet" if score is None else f"{score:.4f}"


def _stop_everywhere(stop: bool, d: _Dist, device: torch.device) -> bool:
    """Rank 0's early-stopping decision, on every process (only rank 0 validates)."""
    if d.world_size == 1:
        return stop
    flag = torch.tensor([int(stop)], device=device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def _val_text(metric: str, score: float | None, best: float | None) -> str:
    return "" if score is None or best is None else f"val {metric} {score:.3f} (best {best:.3f})"


def _validate(
    model: nn.Module, val: CocoSet, categories: list[dict], device: torch.device, batch_size: int
) -> dict[str, Any]:
    mapping = match_categories(categories, val.categories)
    detections = predict(model, val, mapping, device=device, batch_size=batch_size)
    return evaluate_detections(val, detections).to_dict()


def _prepare_out(config: TrainConfig) -> Path | None:
    """Check the output folder; the resume checkpoint, if resuming. (A run that stopped before
    its first checkpoint left nothing to keep: a fresh start replaces its log.)"""
    last = config.out / "last.pt"
    if config.resume:
        if not last.is_file():
            raise InputError(f"cannot resume: {last} does not exist (start without --resume)")
        return last
    if last.exists():
        raise OutputExistsError(
            f"{config.out} already holds a training run; pass --resume to continue it or choose another --out"
        )
    return None


@dataclass
class _Model:
    model: nn.Module
    resume_payload: dict | None  # the last.pt being resumed
    detector: str
    imagenet_layout: bool
    box_scales: BoxScales | None
    anchors: AnchorSpec | None


def _requested_anchors(config: TrainConfig, detector: str) -> AnchorSpec | None:
    """The anchors ``config`` asks for, for ``detector``: given, fitted to ``anchors_from``, or None."""
    if config.anchors_from is not None:
        anchors = anchors_from_coco(detector, config.anchors_from, config.image_size)
        log.info("anchors fitted to %s: %s", config.anchors_from, anchors.describe())
        return anchors
    return check_anchors(detector, config.anchors)


def _same_anchors(config: TrainConfig, payload: dict, path: Path, what: str) -> AnchorSpec | None:
    """The checkpoint's anchors; different requested anchors are an error (the head was
    trained to regress from the checkpoint's)."""
    saved = checkpoint_anchors(payload)
    requested = _requested_anchors(config, payload["detector"])
    if requested is not None and requested != saved:
        shown = "its detector's default anchors" if saved is None else saved.describe()
        raise InputError(
            f"cannot {what} {path} with anchors {requested.describe()}: it was trained with {shown}; "
            "leave --anchors-from out to keep them"
        )
    return saved


def _same_boxes(config: TrainConfig, payload: dict, path: Path, what: str) -> BoxScales | None:
    """The checkpoint's default-box range; a different explicit ``config.box_scales`` is an error
    (the head's weights are tied to the boxes they were trained to regress)."""
    saved = checkpoint_box_scales(payload)
    if config.box_scales is not None and config.box_scales != (saved or DEFAULT_BOX_SCALES):
        shown = "the default" if saved is None else f"{saved[0]:g},{saved[1]:g}"
        raise InputError(
            f"cannot {what} {path} with box scales {config.box_scales[0]:g},{config.box_scales[1]:g}: "
            f"it was trained with {shown}; leave --box-scales out to keep them"
        )
    return saved


def _build_model(config: TrainConfig, categories: list[dict], resume_from: Path | None, init: dict | None) -> _Model:
    """The model to train: ``resume_from``'s, else one started from the read ``init`` checkpoint
    (``config.init``), else a fresh ``config.detector``."""
    names = [c["name"] for c in categories]
    if resume_from is not None:
        payload = read_checkpoint(resume_from, config.detector)
        saved = [c["name"] for c in payload["categories"]]
        if saved != names or payload["image_size"] != config.image_size:
            raise InputError(
                f"cannot resume {resume_from}: it was trained on classes {saved} at {payload['image_size']} px, "
                f"this run has classes {names} at {config.image_size} px"
            )
        box_scales = _same_boxes(config, payload, resume_from, "resume")
        anchors = _same_anchors(config, payload, resume_from, "resume")
        model = model_from_checkpoint(payload).train()
        return _Model(model, payload, payload["detector"], bool(payload["pretrained_backbone"]), box_scales, anchors)
    if init is not None:
        payload = init
        box_scales = _same_boxes(config, payload, config.init, "finetune")
        anchors = _same_anchors(config, payload, config.init, "finetune")
        init = BackboneInit(imagenet_layout=bool(payload["pretrained_backbone"]), load_weights=False)
        model = DETECTORS.get(payload["detector"]).build(len(categories), config.image_size, init, box_scales, anchors=anchors)
        fresh = _load_compatible(model, payload["model"])
        if fresh:
            log.info("finetuning from %s: %d tensors re-created for %d classes", config.init, len(fresh), len(categories))
        return _Model(model, None, payload["detector"], init.imagenet_layout, box_scales, anchors)
    detector = config.detector or DEFAULT_DETECTOR
    anchors = _requested_anchors(config, detector)
    model = build_detector(detector, len(categories), config.image_size, config.pretrained_backbone, config.box_scales, anchors)
    return _Model(model, None, detector, config.pretrained_backbone, config.box_scales, anchors)


def checked_settings(config: TrainConfig, categories: list[dict], val_data: CocoSet | None) -> tuple[TrainConfig, list[str]]:
    """``config`` with a warm-up that fits the run, and a warning for every combination of
    settings that would train or select badly without failing (nothing here stops a run)."""
    notes: list[str] = []
    if config.warmup_steps > config.steps // 2:
        warmup = config.steps // 5
        notes.append(
            f"--warmup {config.warmup_steps} is longer than half the run (--steps {config.steps}): the learning rate "
            f"would stay far below --lr {config.lr:g}; warming up over {warmup} steps (a fifth of the run) instead"
        )
        config = replace(config, warmup_steps=warmup)
    if config.eval_every > config.steps:
        notes.append(
            f"--eval-every {config.eval_every} is longer than the run (--steps {config.steps}): validation and "
            "checkpoints happen only at the end, so a stopped run keeps nothing; lower --eval-every to keep some"
        )
    if val_data is not None:
        names = {c["name"] for c in categories}
        shared = [c for c in val_data.categories if c["name"] in names]
        if len(categories) == 1 and len(val_data.categories) == 1:
            shared = val_data.categories
        ids = {c["id"] for c in shared}
        boxes = sum(1 for a in val_data.coco.dataset["annotations"] if a["category_id"] in ids and not a.get("iscrowd"))
        if boxes == 0:
            notes.append(
                f"the validation set {val_data.source} has no boxes of the trained classes {sorted(names)} (its classes: "
                f"{[c['name'] for c in val_data.categories]}): its scores say nothing and best.pt cannot be chosen by them"
            )
    return config, notes


def train(config: TrainConfig, train_data: Source, val_data: CocoSet | None = None) -> TrainResult:
    """Train a detector on ``train_data``; see the module docstring for what is written."""
    config.check()
    if config.early_stop is not None and val_data is None:
        raise InputError(
            f"--early-stop {config.early_stop} stops when the validation score stops improving: give a real validation set (--val)"
        )
    config, notes = checked_settings(config, list(train_data.categories), val_data)
    started = time.perf_counter()
    resume_from = _prepare_out(config)
    # A checkpoint that cannot be used stops the run before the warnings about its settings.
    init = read_checkpoint(config.init, config.detector) if config.init is not None and resume_from is None else None
    for note in notes:
        log.warning("warning: %s", note)
    d = _init_distributed(config.device)
    try:
        return _train(config, train_data, val_data, resume_from, init, d, started)
    finally:
        if d.owned:
            dist.destroy_process_group()


def _train(
    config: TrainConfig, train_data: Source, val_data: CocoSet | None, resume_from: Path | None, init: dict | None,
    d: _Dist, started: float,
) -> TrainResult:
    device = _device(config.device, d)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    use_amp = config.amp and device.type == "cuda"
    if config.amp and not use_amp:
        log.warning("mixed precision needs a CUDA device; training in float32 on %s", device)
    categories = list(train_data.categories)
    torch.manual_seed(config.seed)
    built = _build_model(config, categories, resume_from, init)
    model, payload = built.model, built.resume_payload
    model.to(device)
    if d.world_size > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    optimizer, scheduler = _optimizer(config, model)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    step = 0
    best: float | None = None
    evals_since_best = 0  # validations in a row without a new best (the early-stopping count)
    if payload is not None:
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        if payload["scaler"] and use_amp:  # a float32 run has no scaler state
            scaler.load_state_dict(payload["scaler"])
        step = int(payload["step"])
        best = payload.get("best_metric")
        evals_since_best = int(payload.get("evals_since_best", 0))
        # A resumed run draws fresh augmentation, in a seeded way.
        torch.manual_seed(int(np.random.SeedSequence([config.seed, step]).generate_state(1)[0]))
    if step >= config.steps:
        raise InputError(f"{resume_from} already reached step {step}; raise --steps to train longer")
    if config.early_stop is not None and evals_since_best >= config.early_stop:
        raise InputError(
            f"{resume_from} stopped early at step {step}: {evals_since_best} validations without a new best; "
            f"raise --early-stop (now {config.early_stop}) or leave it out to train on"
        )

    loader = make_loader(
        train_data,
        image_size=config.image_size,
        batch_size=config.batch_size,
        seed=config.seed,
        num_workers=config.num_workers,
        resume_from=step * config.batch_size * d.world_size,
        rank=d.rank,
        world_size=d.world_size,
        pin_memory=device.type == "cuda",
    )
    out = config.out
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
    runlog = _RunLog(out, step, config.early_stop is not None) if d.main else None
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()}
    meta = dict(
        detector=built.detector,
        categories=categories,
        image_size=config.image_size,
        pretrained_backbone=built.imagenet_layout,
        box_scales=built.box_scales,
        anchors=built.anchors,
        settings=settings,  # the run's configuration, for the record
    )
    final_metrics: dict[str, Any] | None = None
    best_path = out / "best.pt" if payload is not None and (out / "best.pt").is_file() else None
    totals: dict[str, float] = {}
    window, window_start = 0, time.perf_counter()
    batches = _batches(loader)
    progress, task = _progress(config.progress and d.main, config.steps, step, every=max(config.log_every, config.steps // 50))
    model.train()
    saved_step = step if payload is not None else None  # the step last.pt holds
    early_stop: str | None = None
    try:
        with progress:
            while step < config.steps:
                images, targets = next(batches)
                images = [im.to(device, non_blocking=True) for im in images]
                targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
                with torch.autocast(device.type, enabled=use_amp):
                    losses = model(images, targets)
                loss = sum(losses.values())
                if not torch.isfinite(loss):
                    raise InputError(
                        f"the training loss became {loss.item()} at step {step + 1}; lower the learning rate "
                        f"(--lr, now {config.lr}) or lengthen the warmup"
                    )
                lr = optimizer.param_groups[0]["lr"]  # the rate this step used
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step += 1
                window += 1
                for key, value in {"loss": loss, **losses}.items():
                    totals[key] = totals.get(key, 0.0) + float(value.detach())

                evaluate_now = step % config.eval_every == 0 or step == config.steps
                if step % config.log_every == 0 or evaluate_now:
                    elapsed = time.perf_counter() - window_start
                    row: dict[str, Any] = {"step": step, "lr": lr}
                    row.update({k: v / window for k, v in totals.items()})
                    row["steps_per_s"] = window / elapsed if elapsed > 0 else float("nan")
                    progress.update(task, loss=f"{row['loss']:.3f}")
                    if evaluate_now and d.main:
                        if val_data is not None:
                            final_metrics = _validate(model, val_data, categories, device, config.batch_size)
                            row.update({f"val_{k}": final_metrics[k] for k in ("ap", "ap50", "voc_ap50")})
                            score = final_metrics[config.select_metric]
                            if score is not None and (best is None or score > best):
                                best, best_path, evals_since_best = score, out / "best.pt", 0
                                save_checkpoint(best_path, model, **meta, step=step, metrics=final_metrics)
                            else:
                                evals_since_best += 1
                            progress.update(task, val=_val_text(config.select_metric, score, best))
                            if config.early_stop is not None:
                                row["val_evals_since_best"] = evals_since_best
                                if evals_since_best >= config.early_stop and step < config.steps:
                                    early_stop = (
                                        f"stopped early at step {step} of {config.steps}: validation {config.select_metric} "
                                        f"did not improve on its best ({_score_text(best)}) for {evals_since_best} "
                                        f"evaluations in a row (--early-stop {config.early_stop}, every {config.eval_every} steps)"
                                    )
                                    row["early_stop"] = early_stop
                        save_checkpoint(
                            out / "last.pt",
                            model,
                            **meta,
                            step=step,
                            metrics=final_metrics or {},
                            best_metric=best,
                            evals_since_best=evals_since_best,
                            early_stop=early_stop,
                            optimizer=optimizer.state_dict(),
                            scheduler=scheduler.state_dict(),
                            scaler=scaler.state_dict(),
                        )
                        saved_step = step
                    if runlog is not None:
                        runlog.write(row)
                    if evaluate_now:
                        _barrier(d)
                        if config.early_stop is not None and _stop_everywhere(early_stop is not None, d, device):
                            progress.advance(task)
                            break
                    totals, window, window_start = {}, 0, time.perf_counter()  # speed excludes validation
                progress.advance(task)
    except KeyboardInterrupt:
        if saved_step is None:
            kept = f"no checkpoint was written yet (the first comes at step {min(config.eval_every, config.steps)}): rerun the same command"
        else:
            kept = f"{out / 'last.pt'} holds step {saved_step}: run the same command with --resume to continue from there"
        raise Interrupted(f"training stopped by Ctrl-C at step {step} of {config.steps}; {kept}") from None
    finally:
        # A device paste stream's planning workers ignore SIGTERM (the stream stops them): left
        # to interpreter exit, multiprocessing would wait for them forever.
        batches.close()

    if early_stop is not None:
        log.info("%s", early_stop)
    history: list[dict[str, Any]] = []
    if runlog is not None:
        runlog.close()
        history = runlog.rows
        plot_curves(history, out / "training_curves.png")
    return TrainResult(
        out=out,
        last_checkpoint=out / "last.pt",
        best_checkpoint=best_path,
        steps=step,
        best_metric=best,
        final_metrics=final_metrics,
        seconds=time.perf_counter() - started,
        history=history,
        early_stop=early_stop,
    )


def pretrain(
    config: TrainConfig,
    synthetic: Source,
    val_data: CocoSet | None = None,
    *,
    real: Source | None = None,
    synthetic_fraction: float = 0.5,
) -> TrainResult:
    """Train on synthetic data, or on real and synthetic data interleaved (``real`` given:
    each sample is synthetic with probability ``synthetic_fraction``)."""
    data = synthetic if real is None else MixedSource(real, synthetic, synthetic_fraction)
    return train(config, data, val_data)


def finetune(config: TrainConfig, init: str | Path, real: Source, val_data: CocoSet | None = None) -> TrainResult:
    """Train on real data starting from the weights of checkpoint ``init`` (the detection head
    is re-created when the number of classes differs)."""
    return train(replace(config, init=Path(init)), real, val_data)
