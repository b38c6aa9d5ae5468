"""Training an inserter: ``train_inserter(config)`` (``synthgen train detectorgan``).

Phases, counted in one step counter so that a run resumes anywhere:

1. ``pretrain_gan`` steps: the GAN alone (CycleGAN losses with the box mask, the local
   discriminator and the box L1);
2. ``pretrain_detector`` steps (methods with a detector): the detector alone on the real
   labelled images;
3. ``steps`` joint steps: G and G_Y, the three discriminators and the detector in turn.

Per joint step, with x a clean image, b the box to fill (a jittered box of the most similar
labelled image y, whose object o = crop(y, b_y) it was), G = G_X (inserts) and F = G_Y (removes):

* G, F: LSGAN adversarial losses against D_object (global, images with objects), D_clean
  (global, clean images) and D_local (the box crop); cycle ``lambda_cycle * (|F(G(x)) - x| +
  |G(F(y)) - y|)``; box L1 ``lambda_box * |crop(G(x), b) - o|``; with a detector,
  ``lambda_det * L_det(theta; G(x), b)`` (the detection loss of the synthetic image) and for
  DetectorGAN ``lambda_unroll * L_det(theta - eta grad L_det(theta; y + G(x)); y)``, exact
  (see :mod:`synthgen.insert.unroll`);
* D_*: LSGAN on real vs. a history pool of fakes;
* the detector: one Adam step on real (+ synthetic, detached) images.

Written to ``out``: ``last.pt`` (everything, for resume and for ``synthgen insert``),
``metrics.csv`` (each loss, seconds per step; TensorBoard events when installed),
``samples/step-NNNNNN.jpg`` sheets every ``sample_every`` steps (clean | inserted | removed),
``training_curves.png`` and, with a detector, ``detector.pt`` (a synthgen detector checkpoint:
``synthgen evaluate`` reads it).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from synthgen.errors import InputError, OutputExistsError
from synthgen.insert import checkpoint as ckpt
from synthgen.insert.data import InsertionData, LabelledSet, load_clean, load_labelled, to_uint8
from synthgen.insert.methods import METHODS, Method
from synthgen.insert.networks import BoxGenerator, ImagePool, PatchDiscriminator, init_weights
from synthgen.insert.unroll import check_unrollable, detection_loss, detector_weights, twice_differentiable, unrolled_real_loss

LOSS_KEYS = (  # "loss": the generators' total
    "loss", "g_adv", "g_local", "cycle", "box_l1", "det_synthetic", "det_real", "d_object", "d_clean", "d_local", "det_step",
)


@dataclass
class InsertTrainConfig:
    out: Path
    clean: tuple[str, ...]
    labeled: Path
    method: str = "detectorgan"
    category: str | None = None
    exclude_classes: tuple[str, ...] = ()  # clean images from coco/voc: drop those showing these
    size: int = 128
    steps: int = 1000  # joint steps
    pretrain_gan: int = 0
    pretrain_detector: int = 0
    batch_size: int = 1
    ngf: int = 64
    ndf: int = 64
    n_blocks: int | None = None  # None: 9 at 256 px and above, else 6 (CycleGAN)
    margin: float = 0.25  # G's output blends into the image up to this x the box side around it
    crop: int | None = None  # local discriminator / box L1 crop side; None: size // 2
    detector: str = "ssd-mobilenet"
    pretrained_backbone: bool = True
    lr: float = 2e-4
    detector_lr: float = 1e-4
    unroll_lr: float = 1e-3  # eta of the virtual SGD step (0.01 overshoots: see docs/results-detectorgan.md)
    lambda_cycle: float = 10.0
    lambda_box: float = 10.0
    lambda_local: float = 1.0
    lambda_det: float = 0.1  # its gradient at G is ~100x the adversarial one
    lambda_unroll: float = 1.0
    pool_size: int = 50
    log_every: int = 10
    sample_every: int = 100
    checkpoint_every: int = 100
    seed: int = 0
    device: str = "auto"
    resume: bool = False
    #: Start from another run's networks, optimizers and step: e.g. one shared pretraining
    #: (a run with ``steps=0``) that several methods then continue jointly.
    init: Path | None = None
    progress: bool = True

    @property
    def total_steps(self) -> int:
        return self.pretrain_gan + (self.pretrain_detector if METHODS.get(self.method).detector else 0) + self.steps

    def check(self) -> Method:
        method = METHODS.get(self.method)
        if self.size % 4 or self.size < 64:
            raise InputError(f"--size {self.size}: the generator needs a multiple of 4, at least 64 (the detectors' minimum)")
        if min(self.batch_size, self.ngf, self.ndf, self.log_every, self.sample_every, self.checkpoint_every) < 1:
            raise InputError("batch size, ngf, ndf and the log/sample/checkpoint intervals must be at least 1")
        if self.pretrain_gan < 0 or self.pretrain_detector < 0 or self.steps < 0 or self.total_steps < 1:
            raise InputError("steps cannot be negative, and a run needs at least one (joint or pretraining) step")
        if self.resume and self.init is not None:
            raise InputError("--resume continues this run's own checkpoint; --init starts a new run from another's: choose one")
        if not (self.lr > 0 and self.detector_lr > 0 and self.unroll_lr > 0):
            raise InputError("learning rates must be positive")
        if method.detector:
            from synthgen.detectors import DETECTORS

            DETECTORS.get(self.detector)
            if method.unroll:
                check_unrollable(self.detector)
        return method

    def settings(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


# Settings that must not change when a run resumes.
FIXED_ON_RESUME = (
    "method", "category", "size", "batch_size", "ngf", "ndf", "n_blocks", "margin", "crop", "detector",
    "pretrained_backbone", "pretrain_gan", "pretrain_detector", "seed",
)


@dataclass
class InsertTrainResult:
    out: Path
    checkpoint: Path
    steps: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list, repr=False)


def _lsgan(scores: torch.Tensor, real: bool) -> torch.Tensor:
    return F.mse_loss(scores, torch.full_like(scores, 1.0 if real else 0.0))


def crops(images: torch.Tensor, boxes: list[torch.Tensor], side: int) -> torch.Tensor:
    """The box crops of ``images`` resampled to ``side x side`` (one box per image)."""
    return roi_align(images, [b[:1] for b in boxes], output_size=side, spatial_scale=1.0, sampling_ratio=2, aligned=True)


def detector_input(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images as the [0, 1] tensors torchvision detectors normalise themselves."""
    return (images + 1) / 2


def targets(boxes: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    return [{"boxes": b, "labels": torch.ones(len(b), dtype=torch.int64, device=b.device)} for b in boxes]


class Inserter(nn.Module):
    """All networks of one run; the detector is None for methods without one."""

    def __init__(self, config: InsertTrainConfig, method: Method) -> None:
        super().__init__()
        c = config
        self.insert = BoxGenerator(c.size, c.ngf, c.n_blocks, c.margin)  # G_X: clean -> with object
        self.remove = BoxGenerator(c.size, c.ngf, c.n_blocks, c.margin)  # G_Y: with object -> clean
        self.d_object = PatchDiscriminator(3, c.ndf)
        self.d_clean = PatchDiscriminator(3, c.ndf)
        self.d_local = PatchDiscriminator(3, c.ndf)
        for net in (self.insert, self.remove, self.d_object, self.d_clean, self.d_local):
            init_weights(net)
        self.detector: nn.Module | None = None
        if method.detector:
            from synthgen.detectors import build_detector

            detector = build_detector(c.detector, 1, c.size, c.pretrained_backbone)
            self.detector = twice_differentiable(detector) if method.unroll else detector
            freeze_batch_norm(self.detector)


def calibrate_batch_norm(model: nn.Module, images: torch.Tensor) -> None:
    """Set the running statistics of the batch norms that never saw data (still mean 0,
    variance 1: a from-scratch backbone, SSD's extra layers and heads) to those of ``images``
    (``N x 3 x H x W`` in [0, 1]; one no-grad forward pass). Frozen at their initial values,
    such layers would not normalise anything, and activations shrink layer after layer until
    the detector's output hardly depends on its input."""
    fresh = [
        m for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        and bool((m.running_mean == 0).all()) and bool((m.running_var == 1).all())
    ]
    if not fresh:
        return
    momenta = [m.momentum for m in fresh]
    model.eval()
    for m in fresh:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: this one batch sets the statistics
        m.train()
    with torch.no_grad():
        model(list(images))
    for m, momentum in zip(fresh, momenta):
        m.momentum = momentum


def freeze_batch_norm(model: nn.Module) -> None:
    """Training mode with every batch norm on its running statistics (its affine weights still
    train): batches of a few images cannot estimate statistics (at 64 px SSD's last maps are
    1x1 and batch norm fails outright on one image), and the unrolled inner loss then does not
    mix the statistics of real and synthetic images."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


class _Trainer:
    def __init__(self, config: InsertTrainConfig, method: Method, data: InsertionData, device: torch.device) -> None:
        self.c, self.method, self.data, self.device = config, method, data, device
        torch.manual_seed(config.seed)
        self.nets = Inserter(config, method).to(device)
        n = self.nets
        betas = (0.5, 0.999)  # CycleGAN's Adam
        self.opt_g = torch.optim.Adam([*n.insert.parameters(), *n.remove.parameters()], lr=config.lr, betas=betas)
        self.opt_d = torch.optim.Adam(
            [*n.d_object.parameters(), *n.d_clean.parameters(), *n.d_local.parameters()], lr=config.lr, betas=betas
        )
        self.opt_det = (
            torch.optim.Adam([p for p in n.detector.parameters() if p.requires_grad], lr=config.detector_lr)
            if n.detector is not None
            else None
        )
        self.pools = {name: ImagePool(config.pool_size, seed=config.seed * 1000 + k) for k, name in enumerate(("object", "clean", "local"))}
        if n.detector is not None:
            labelled = torch.from_numpy(np.array(data.labelled.images[:16])).permute(0, 3, 1, 2).float() / 255
            calibrate_batch_norm(n.detector, labelled.to(device))
            freeze_batch_norm(n.detector)
        self.crop = config.crop or config.size // 2
        self.step = 0

    # -- phases -----------------------------------------------------------------------------
    def phase(self, step: int) -> str:
        c = self.c
        if step < c.pretrain_gan:
            return "gan"
        if self.method.detector and step < c.pretrain_gan + c.pretrain_detector:
            return "detector"
        return "joint"

    def train_step(self) -> dict[str, float]:
        batch = self.data.batch(self.c.seed, self.step, self.c.batch_size).to(self.device)
        phase = self.phase(self.step)
        losses: dict[str, float] = {}
        if phase != "detector":
            losses.update(self._gan_step(batch, joint=phase == "joint" and self.method.detector))
        if self.method.detector and phase != "gan":
            losses["det_step"] = self._detector_step(batch, None if phase == "detector" else self._last_fake)
        self.step += 1
        return losses

    def _gan_step(self, batch, joint: bool) -> dict[str, float]:
        n, c = self.nets, self.c
        x, y = batch.clean, batch.labelled
        for d in (n.d_object, n.d_clean, n.d_local):
            d.requires_grad_(False)
        fake_y = n.insert(x, batch.insert_boxes)
        rec_x = n.remove(fake_y, batch.insert_boxes)
        fake_x = n.remove(y, batch.labelled_boxes)
        rec_y = n.insert(fake_x, batch.labelled_boxes)
        fake_crop = crops(fake_y, batch.insert_boxes, self.crop)
        real_crop = crops(y, batch.source_boxes, self.crop)
        parts = {
            "g_adv": _lsgan(n.d_object(fake_y), True) + _lsgan(n.d_clean(fake_x), True),
            "g_local": _lsgan(n.d_local(fake_crop), True),
            "cycle": F.l1_loss(rec_x, x) + F.l1_loss(rec_y, y),
            "box_l1": F.l1_loss(fake_crop, real_crop),
        }
        total = parts["g_adv"] + c.lambda_local * parts["g_local"] + c.lambda_cycle * parts["cycle"] + c.lambda_box * parts["box_l1"]
        if joint:
            det = n.detector
            synthetic, synthetic_targets = detector_input(fake_y), targets(batch.insert_boxes)
            real, real_targets = detector_input(y), targets(batch.labelled_boxes)
            params, buffers = detector_weights(det)
            if self.method.synthetic_loss:
                # The detector's statistics move only in its own step.
                parts["det_synthetic"] = detection_loss(det, params, {k: b.clone() for k, b in buffers.items()}, synthetic, synthetic_targets)
                total = total + c.lambda_det * parts["det_synthetic"]
            if self.method.unroll:
                parts["det_real"] = unrolled_real_loss(det, real, real_targets, synthetic, synthetic_targets, c.unroll_lr)
                total = total + c.lambda_unroll * parts["det_real"]
        g_params = [*n.insert.parameters(), *n.remove.parameters()]
        grads = torch.autograd.grad(total, g_params)
        self.opt_g.zero_grad(set_to_none=True)
        for p, g in zip(g_params, grads):
            p.grad = g
        self.opt_g.step()
        parts["loss"] = total

        for d in (n.d_object, n.d_clean, n.d_local):
            d.requires_grad_(True)
        d_parts = {
            "d_object": 0.5 * (_lsgan(n.d_object(y), True) + _lsgan(n.d_object(self.pools["object"].query(fake_y)), False)),
            "d_clean": 0.5 * (_lsgan(n.d_clean(x), True) + _lsgan(n.d_clean(self.pools["clean"].query(fake_x)), False)),
            "d_local": 0.5 * (_lsgan(n.d_local(real_crop), True) + _lsgan(n.d_local(self.pools["local"].query(fake_crop)), False)),
        }
        self.opt_d.zero_grad(set_to_none=True)
        sum(d_parts.values()).backward()
        self.opt_d.step()
        self._last_fake = fake_y.detach()
        return {k: float(v.detach()) for k, v in {**parts, **d_parts}.items()}

    def _detector_step(self, batch, fake_y: torch.Tensor | None) -> float:
        det = self.nets.detector
        images, boxes = detector_input(batch.labelled), list(batch.labelled_boxes)
        if fake_y is not None and self.method.detector_sees_synthetic:
            images = torch.cat([images, detector_input(fake_y)])
            boxes += list(batch.insert_boxes)
        loss = sum(det(list(images), targets(boxes)).values())
        if not torch.isfinite(loss):
            raise InputError(f"the detector's loss became {float(loss)} at step {self.step}; lower --detector-lr")
        self.opt_det.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_det.step()
        return float(loss.detach())

    # -- state --------------------------------------------------------------------------------
    def state(self, labelled: LabelledSet) -> dict[str, Any]:
        n = self.nets
        nets = {name: getattr(n, name).state_dict() for name in ("insert", "remove", "d_object", "d_clean", "d_local")}
        state: dict[str, Any] = {
            "method": self.c.method,
            "step": self.step,
            "settings": self.c.settings(),
            "category": labelled.category,
            "architecture": {"size": self.c.size, "ngf": self.c.ngf, "n_blocks": self._n_blocks(), "margin": self.c.margin},
            "boxes": labelled.box_model().to_state(),
            "nets": nets,
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "pools": {k: p.state_dict() for k, p in self.pools.items()},
        }
        if n.detector is not None:
            state["detector"] = {"name": self.c.detector, "pretrained_backbone": self.c.pretrained_backbone, "model": n.detector.state_dict()}
            state["opt_det"] = self.opt_det.state_dict()
        return state

    def _n_blocks(self) -> int:
        from synthgen.insert.networks import ResidualBlock

        return sum(isinstance(m, ResidualBlock) for m in self.nets.insert.net.model)

    def load(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (this run's, or with ``init`` another run's; a detector the
        checkpoint has and this method does not use is left out)."""
        n = self.nets
        for name, sd in state["nets"].items():
            getattr(n, name).load_state_dict(sd)
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        for k, p in self.pools.items():
            p.load_state_dict(state["pools"][k])
        if n.detector is not None:
            n.detector.load_state_dict(state["detector"]["model"])
            self.opt_det.load_state_dict(state["opt_det"])
        self.step = int(state["step"])


def _load_init(config: InsertTrainConfig, method: Method) -> dict[str, Any]:
    """The checkpoint of ``config.init``, checked to fit this run."""
    state = ckpt.load(config.init)
    saved, current = state["settings"], config.settings()
    shared = [k for k in FIXED_ON_RESUME if k not in ("method", "seed")]
    if not method.detector:
        shared = [k for k in shared if k not in ("detector", "pretrained_backbone", "pretrain_detector")]
    changed = [f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in shared if saved.get(k) != current[k]]
    if changed:
        raise InputError(f"cannot start from {config.init}: it was trained with other settings ({'; '.join(changed)})")
    if method.detector and "detector" not in state:
        raise InputError(f"cannot start a {config.method} run from {config.init}: it has no detector ({saved['method']} run)")
    step = int(state["step"])
    if not method.detector:  # this run has no detector phase: the init's does not count
        step -= min(max(0, step - int(saved["pretrain_gan"])), int(saved.get("pretrain_detector") or 0))
    if step > config.total_steps:
        raise InputError(f"{config.init} is at step {state['step']}, beyond this run's {config.total_steps} steps")
    return {**state, "step": step}


def _prepare_out(config: InsertTrainConfig) -> dict[str, Any] | None:
    path = config.out / ckpt.FILE
    if config.resume:
        if not path.is_file():
            raise InputError(f"cannot resume: {path} does not exist (start without --resume)")
        state = ckpt.load(path)
        saved = state["settings"]
        changed = [f"{k}: {saved.get(k)!r} -> {config.settings()[k]!r}" for k in FIXED_ON_RESUME if saved.get(k) != config.settings()[k]]
        if changed:
            raise InputError(f"cannot resume {config.out} with other settings ({'; '.join(changed)}); keep them, or start a new --out")
        return state
    if path.exists():
        raise OutputExistsError(f"{config.out} already holds an inserter run; pass --resume to continue it or choose another --out")
    return None


def _sample_sheet(trainer: _Trainer, path: Path) -> None:
    """A fixed set of clean images (rows): clean with its box | inserted | the matched labelled
    image | its object removed. The same draw at every step."""
    import cv2

    from synthgen.cache import atomic_write_bytes
    from synthgen.imageio import encode_jpeg

    n = trainer.nets
    batch = trainer.data.batch(trainer.c.seed, 0, 4, stream=1).to(trainer.device)
    with torch.no_grad():
        inserted = n.insert(batch.clean, batch.insert_boxes)
        removed = n.remove(batch.labelled, batch.labelled_boxes)
    columns = [to_uint8(t) for t in (batch.clean, inserted, batch.labelled, removed)]
    rows = []
    for r in range(len(batch.clean)):
        tiles = []
        for k, column in enumerate(columns):
            tile = np.ascontiguousarray(column[r])
            boxes = batch.insert_boxes[r] if k < 2 else batch.labelled_boxes[r]
            for x0, y0, x1, y1 in boxes.round().int().tolist():
                cv2.rectangle(tile, (x0, y0), (x1 - 1, y1 - 1), (255, 64, 0), 1)
            tiles.append(tile)
        rows.append(np.concatenate(tiles, axis=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, encode_jpeg(np.concatenate(rows, axis=0), 92))


def train_inserter(config: InsertTrainConfig, data: InsertionData | None = None, labelled: LabelledSet | None = None) -> InsertTrainResult:
    """Train (or resume) an inserter; see the module docstring. ``data``/``labelled`` skip
    loading ``config.clean``/``config.labeled`` (tests, benches)."""
    from synthgen.detectors import resolve_device, save_checkpoint
    from synthgen.progress import progress_bar
    from synthgen.training.loop import LossWindow, _RunLog, plot_curves

    method = config.check()
    started = time.perf_counter()
    state = _prepare_out(config)
    if state is None and config.init is not None:
        state = _load_init(config, method)
    if labelled is None:
        labelled = load_labelled(config.labeled, config.size, config.category)
    if data is None:
        data = InsertionData(load_clean(config.clean, config.size, config.exclude_classes, config.progress), labelled)
    device = resolve_device(config.device)
    trainer = _Trainer(config, method, data, device)
    if state is not None:
        trainer.load(state)
        if trainer.step >= config.total_steps:
            raise InputError(f"{config.out} already reached step {trainer.step}; raise --steps to train longer")
    config.out.mkdir(parents=True, exist_ok=True)
    runlog = _RunLog(config.out, trainer.step)
    total = config.total_steps
    window = LossWindow(LOSS_KEYS)

    def save() -> None:
        ckpt.save(config.out / ckpt.FILE, trainer.state(labelled))

    from rich.progress import TextColumn

    progress = progress_bar("steps", config.progress, extra=(TextColumn("{task.fields[losses]}"),))
    with progress:
        task = progress.add_task(f"train {config.method}", total=total, completed=trainer.step, losses="")
        while trainer.step < total:
            phase = trainer.phase(trainer.step)
            losses = trainer.train_step()
            window.add(losses)
            step = trainer.step
            last = step == total
            if step % config.log_every == 0 or last:
                shown = window.flush(step, config.lr, runlog)
                progress.update(task, losses=f"[{phase}] {shown}")
            if step % config.sample_every == 0 or last:
                _sample_sheet(trainer, config.out / "samples" / f"step-{step:06d}.jpg")
            if step % config.checkpoint_every == 0 or last:
                save()
            progress.advance(task)
    runlog.close()
    plot_curves(runlog.rows, config.out / "training_curves.png")
    if trainer.nets.detector is not None:
        save_checkpoint(
            config.out / "detector.pt",
            trainer.nets.detector,
            detector=config.detector,
            categories=[{"id": 1, "name": labelled.category}],
            image_size=config.size,
            pretrained_backbone=config.pretrained_backbone,
            step=trainer.step,
            metrics={},
        )
    return InsertTrainResult(config.out, config.out / ckpt.FILE, trainer.step, time.perf_counter() - started, runlog.rows)
