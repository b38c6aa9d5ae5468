"""Training SOD-MTGAN: ``train_mtgan(config)`` (``synthgen train mtgan``).

1. **Regions.** The baseline detector (any synthgen detector checkpoint) runs on every image of
   the COCO data; its ``proposals`` best boxes per image and the true boxes become regions
   (:mod:`synthgen.refine.regions`): high-resolution crops, their class (0 = background) and
   box offsets. Saved once in ``RUN/regions.pt``.
2. **Generator pretraining** (``pretrain_steps``): G alone, pixel loss ``MSE(G(LR), HR)``.
3. **Adversarial training** (``steps``), per step on one batch (``positive_fraction`` of it
   object regions, the rest background):

   * D (SGD with momentum): ``BCE(D_gan(HR), 1) + BCE(D_gan(SR), 0)`` (without it when
     ``w_adv`` is 0), the cross-entropy of ``D_cls`` on HR and SR, and, with ``regression``,
     the smooth-L1 loss of ``D_reg`` (the true class's offsets) on the object regions of both;
   * G (Adam): ``w_mse * MSE(SR, HR) + w_adv * BCE(D_gan(SR), 1) + w_cls * CE(D_cls(SR), y) +
     w_reg * smoothL1(D_reg(SR), t)``, D in evaluation mode (its batch norm on running
     statistics, as at test time) and frozen: the classification and regression losses reach G
     through D.

   With ``SR = G(LR)`` and ``LR`` the 4x bicubic down-sampling of ``HR``.

The paper's ablations are settings: ``regression=False`` (no regression branch: D learns no
offsets, G gets no regression loss, refinement keeps the baseline's boxes), ``w_adv=0`` (no
adversarial loss), ``w_adv = w_cls = w_reg = 0`` (the generator alone: D still learns to score
its output, but nothing of D reaches G).

Every step draws its batch from a generator seeded by ``(seed, step)``, and the checkpoint holds
the networks and optimizers, so a resumed run continues bit for bit as an uninterrupted one.

Written to ``out``: ``last.pt``, ``regions.pt``, ``metrics.csv`` (every loss, steps/s),
``samples/step-NNNNNN.png`` (rows of regions: LR | SR | HR, with D's class probability) and
``training_curves.png``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from synthgen.errors import InputError, Interrupted, OutputExistsError
from synthgen.refine import checkpoint as ckpt
from synthgen.refine.networks import TRUNKS, build_networks
from synthgen.refine.regions import SMALL_AREA, RegionSet, low_resolution, mine_regions

LOSS_KEYS = ("loss", "mse", "g_adv", "g_cls", "g_reg", "d_loss", "d_adv", "d_cls", "d_reg", "d_accuracy")
SHEET_ROWS = 6


@dataclass
class MtganTrainConfig:
    out: Path
    detector: Path
    data: Path
    images_root: Path | None = None
    hr_size: int = 64  # high-resolution crop side; G's input is hr_size / 4
    context: float = 0.25  # a region is its box grown by this x its side on each side
    proposals: int = 16  # the detector's best boxes per image taken as regions
    proposal_score: float = 0.05  # ... scoring at least this
    channels: int = 64
    blocks: int = 4  # G's residual blocks at the low resolution
    refine_blocks: int = 2  # and after the up-sampling
    trunk: str = "mobilenet_v2"
    pretrained_trunk: bool = True
    regression: bool = True
    pretrain_steps: int = 500
    steps: int = 1000
    batch_size: int = 16
    positive_fraction: float = 0.5
    lr_g: float = 1e-4  # Adam
    lr_d: float = 1e-3  # SGD, momentum 0.9
    w_mse: float = 1.0
    w_adv: float = 1e-3
    w_cls: float = 1e-2
    w_reg: float = 1e-2
    log_every: int = 10
    sample_every: int = 100
    checkpoint_every: int = 100
    seed: int = 0
    device: str = "auto"
    detector_batch_size: int = 4
    resume: bool = False
    progress: bool = True

    @property
    def total_steps(self) -> int:
        return self.pretrain_steps + self.steps

    def check(self) -> None:
        if self.hr_size % 4 or self.hr_size < 32:
            raise InputError(f"--hr-size {self.hr_size}: the crops must be a multiple of 4 pixels, at least 32 (G's input is a quarter)")
        if self.trunk not in TRUNKS:
            raise InputError(f"unknown --trunk {self.trunk!r}; choose one of: {', '.join(TRUNKS)}")
        if self.pretrain_steps < 0 or self.steps < 0 or self.total_steps < 1:
            raise InputError("steps cannot be negative, and a run needs at least one (pretraining or adversarial) step")
        if min(self.batch_size, self.proposals, self.channels, self.blocks, self.refine_blocks,
               self.log_every, self.sample_every, self.checkpoint_every, self.detector_batch_size) < 1:
            raise InputError("batch size, proposals, channels, blocks and the log/sample/checkpoint intervals must be at least 1")
        if self.batch_size < 2:
            raise InputError("--batch-size must be at least 2: each batch holds object and background regions")
        if not 0 < self.positive_fraction < 1:
            raise InputError(f"--positive-fraction {self.positive_fraction}: give a fraction between 0 and 1 (exclusive)")
        if self.context < 0 or not 0 <= self.proposal_score <= 1:
            raise InputError("--context cannot be negative, and --proposal-score is a score in [0, 1]")
        if not (self.lr_g > 0 and self.lr_d > 0):
            raise InputError("learning rates must be positive")
        if min(self.w_mse, self.w_adv, self.w_cls, self.w_reg) < 0:
            raise InputError("loss weights cannot be negative")

    def settings(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


# Settings that must not change when a run resumes (the data and the networks).
FIXED_ON_RESUME = (
    "hr_size", "context", "proposals", "proposal_score", "channels", "blocks", "refine_blocks", "trunk",
    "pretrained_trunk", "regression", "pretrain_steps", "batch_size", "positive_fraction", "w_mse", "w_adv",
    "w_cls", "w_reg", "lr_g", "lr_d", "seed",
)
# What the mined regions depend on: regions.pt is reused (e.g. after an interrupt before the
# first checkpoint) only when these are unchanged.
REGION_SETTINGS = ("detector", "data", "images_root", "hr_size", "context", "proposals", "proposal_score")


@dataclass
class MtganTrainResult:
    out: Path
    checkpoint: Path
    steps: int
    seconds: float
    regions: int
    history: list[dict[str, Any]] = field(default_factory=list, repr=False)


def small_object_count(coco, category_ids: set[int]) -> tuple[int, int]:
    """(small, all) non-crowd boxes of the given categories (small: area under 32x32 pixels)."""
    anns = [a for a in coco.coco.dataset["annotations"] if not a.get("iscrowd", 0) and int(a["category_id"]) in category_ids]
    small = sum(1 for a in anns if float(a["bbox"][2]) * float(a["bbox"][3]) < SMALL_AREA)
    return small, len(anns)


def prepare_regions(config: MtganTrainConfig, device: torch.device, on_progress=None) -> tuple[RegionSet, Any]:
    """Run the baseline on ``config.data`` and crop the training regions; returns them and the
    detector's description. InputError when the data has no small objects of the detector's
    classes, or no object regions at all."""
    from synthgen.detectors import load_detector
    from synthgen.evaluation import match_categories, predict
    from synthgen.training.coco import load_coco

    model, meta = load_detector(config.detector)
    coco = load_coco(config.data, config.images_root)
    label_of = {cat: label for label, cat in match_categories(meta.categories, coco.categories).items()}
    small, total = small_object_count(coco, set(label_of))
    if small == 0:
        raise InputError(
            f"{config.data} has no small objects of the detector's classes ({total} boxes, none under 32x32 pixels, "
            "crowd regions aside): SOD-MTGAN super-resolves small objects and learns from them. Train it on data "
            "with small objects (e.g. WIDER FACE), or use the detector as it is"
        )
    detections = predict(
        model, coco, {label: cat for cat, label in label_of.items()}, device=device,
        score_threshold=config.proposal_score, batch_size=config.detector_batch_size,
    )
    by_image: dict[int, list[dict]] = {}
    for det in detections:
        by_image.setdefault(det["image_id"], []).append(det)

    def proposals_of(image_id: int) -> torch.Tensor:
        best = sorted(by_image.get(image_id, []), key=lambda d: -d["score"])[: config.proposals]
        boxes = torch.tensor([d["bbox"] for d in best], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        return boxes

    def truth_of(image_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        t = coco.targets(image_id)
        known = np.array([int(c) in label_of for c in t.category_ids], dtype=bool)
        labels = torch.tensor([label_of.get(int(c), 0) for c in t.category_ids], dtype=torch.int64)[torch.from_numpy(known)]
        return torch.from_numpy(t.xyxy[known]), labels, torch.from_numpy(t.iscrowd[known])

    regions = mine_regions(
        coco.image_ids, coco.read_image, truth_of, proposals_of, hr_size=config.hr_size, context=config.context,
        on_image=on_progress,
    )
    if len(regions.positives) == 0:
        raise InputError(f"{config.data} gave no object regions: none of its boxes is of the detector's classes")
    return regions, meta


def _adv(logits: torch.Tensor, real: bool) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, 1.0 if real else 0.0))


def _reg(deltas: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Smooth-L1 of the true class's offsets over the object regions, summed and divided by the
    batch size (Fast R-CNN)."""
    objects = labels > 0
    if not bool(objects.any()):
        return deltas.sum() * 0.0
    chosen = deltas[objects, labels[objects] - 1]
    return F.smooth_l1_loss(chosen, targets[objects], beta=1 / 9, reduction="sum") / len(labels)


class _Trainer:
    def __init__(self, config: MtganTrainConfig, regions: RegionSet, num_classes: int, device: torch.device) -> None:
        self.c, self.regions, self.device = config, regions, device
        torch.manual_seed(config.seed)
        self.architecture = {
            "hr_size": config.hr_size, "context": config.context, "channels": config.channels, "blocks": config.blocks,
            "refine_blocks": config.refine_blocks, "trunk": config.trunk, "num_classes": num_classes,
            "regression": config.regression,
        }
        generator, discriminator = build_networks(self.architecture, config.pretrained_trunk)
        self.g, self.d = generator.to(device), discriminator.to(device)
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=config.lr_g, betas=(0.9, 0.999))
        self.opt_d = torch.optim.SGD(self.d.parameters(), lr=config.lr_d, momentum=0.9, weight_decay=1e-4)
        self.positives, self.negatives = regions.positives, regions.negatives
        self.step = 0

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(LR, HR, labels, offsets) of ``step``'s batch: drawn by a generator seeded with
        (seed, step), so any step's batch is the same in a resumed run."""
        generator = torch.Generator().manual_seed(self.c.seed * 1_000_003 + step)
        n_pos = max(1, round(self.c.batch_size * self.c.positive_fraction))
        pools = [(self.positives, n_pos), (self.negatives if len(self.negatives) else self.positives, self.c.batch_size - n_pos)]
        index = torch.cat([pool[torch.randint(len(pool), (n,), generator=generator)] for pool, n in pools])
        hr = self.regions.hr[index].float().div_(255.0).to(self.device)
        return low_resolution(hr), hr, self.regions.labels[index].to(self.device), self.regions.deltas[index].to(self.device)

    def phase(self, step: int) -> str:
        return "pretrain" if step < self.c.pretrain_steps else "adversarial"

    def train_step(self) -> dict[str, float]:
        lr, hr, labels, deltas = self.batch(self.step)
        losses = self._pretrain_step(lr, hr) if self.phase(self.step) == "pretrain" else self._adversarial_step(lr, hr, labels, deltas)
        self.step += 1
        return losses

    def _pretrain_step(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, float]:
        self.g.train()
        mse = F.mse_loss(self.g(lr), hr)
        self.opt_g.zero_grad(set_to_none=True)
        mse.backward()
        self.opt_g.step()
        return {"loss": float(mse.detach()), "mse": float(mse.detach())}

    def _adversarial_step(self, lr, hr, labels, deltas) -> dict[str, float]:
        c, g, d = self.c, self.g, self.d
        g.train()
        # D: real HR and G's SR crops in one batch (one set of batch-norm statistics).
        with torch.no_grad():
            sr = g(lr)
        d.train()
        d.requires_grad_(True)
        gan, cls, reg = d(torch.cat([hr, sr]))
        n = len(hr)
        both = torch.cat([labels, labels])
        parts = {"d_cls": F.cross_entropy(cls, both)}
        if c.w_adv > 0:
            parts["d_adv"] = _adv(gan[:n], True) + _adv(gan[n:], False)
        if c.regression:
            parts["d_reg"] = _reg(reg, both, torch.cat([deltas, deltas]))
        d_loss = sum(parts.values())
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        out = {k: float(v.detach()) for k, v in parts.items()}
        out["d_loss"] = float(d_loss.detach())
        out["d_accuracy"] = float((cls.detach().argmax(1) == both).float().mean())

        # G: through the frozen D, as D scores at test time.
        d.eval()
        d.requires_grad_(False)
        sr = g(lr)
        gan, cls, reg = d(sr)
        g_parts = {"mse": F.mse_loss(sr, hr), "g_cls": F.cross_entropy(cls, labels)}
        total = c.w_mse * g_parts["mse"] + c.w_cls * g_parts["g_cls"]
        if c.w_adv > 0:
            g_parts["g_adv"] = _adv(gan, True)
            total = total + c.w_adv * g_parts["g_adv"]
        if c.regression:
            g_parts["g_reg"] = _reg(reg, labels, deltas)
            total = total + c.w_reg * g_parts["g_reg"]
        self.opt_g.zero_grad(set_to_none=True)
        total.backward()
        self.opt_g.step()
        d.requires_grad_(True)
        out.update({k: float(v.detach()) for k, v in g_parts.items()})
        out["loss"] = float(total.detach())
        return out

    def state(self, meta: Any) -> dict[str, Any]:
        return {
            "step": self.step,
            "settings": self.c.settings(),
            "architecture": dict(self.architecture),
            "baseline": {
                "path": str(self.c.detector), "detector": meta.detector, "categories": list(meta.categories),
                "image_size": meta.image_size,
            },
            "generator": self.g.state_dict(),
            "discriminator": self.d.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
        }

    def load(self, state: dict[str, Any]) -> None:
        self.g.load_state_dict(state["generator"])
        self.d.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.step = int(state["step"])


def _prepare_out(config: MtganTrainConfig) -> dict[str, Any] | None:
    path = config.out / ckpt.FILE
    if config.resume:
        if not path.is_file():
            raise InputError(f"cannot resume: {path} does not exist (start without --resume)")
        state = ckpt.load(path)
        saved, current = state["settings"], config.settings()
        changed = [f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in FIXED_ON_RESUME if saved.get(k) != current[k]]
        if changed:
            raise InputError(f"cannot resume {config.out} with other settings ({'; '.join(changed)}); keep them, or start a new --out")
        return state
    if path.exists():
        raise OutputExistsError(f"{config.out} already holds a SOD-MTGAN run; pass --resume to continue it or choose another --out")
    return None


def _sheet_rows(regions: RegionSet) -> torch.Tensor:
    """The regions every sample sheet shows: small object regions first, then background."""
    small_objects = torch.nonzero((regions.labels > 0) & regions.small).flatten()
    objects = small_objects if len(small_objects) else regions.positives
    background = regions.negatives
    n_objects = min(len(objects), SHEET_ROWS - min(2, len(background)))
    return torch.cat([objects[:n_objects], background[: SHEET_ROWS - n_objects]])


def write_sheet(trainer: _Trainer, rows: torch.Tensor, names: list[str], path: Path) -> Path:
    """LR (nearest up-sampled) | SR | HR for the regions ``rows``, captioned with the region's
    class and D's probability of it on the SR crop."""
    from synthgen.preview import make_image_sheet

    hr = trainer.regions.hr[rows].float().div_(255.0).to(trainer.device)
    lr = low_resolution(hr)
    trainer.g.eval()
    trainer.d.eval()
    with torch.no_grad():
        sr = trainer.g(lr).clamp(0, 1)
        probabilities = trainer.d(sr)[1].softmax(1)
    shown_lr = F.interpolate(lr, size=hr.shape[-2:], mode="nearest")
    tiles, captions = [], []
    for r, label in enumerate(trainer.regions.labels[rows].tolist()):
        name = "background" if label == 0 else names[label - 1]
        p = float(probabilities[r, label])
        for title, image in (("LR", shown_lr), ("SR", sr), ("HR", hr)):
            tiles.append((image[r].permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8))
            captions.append(f"{title} {name}" + (f" p={p:.2f}" if title == "SR" else ""))
    return make_image_sheet(tiles, path, columns=3, captions=captions, tile=max(128, trainer.c.hr_size))


def train_mtgan(config: MtganTrainConfig, regions: RegionSet | None = None) -> MtganTrainResult:
    """Train (or resume) SOD-MTGAN; see the module docstring. ``regions`` skips mining (tests:
    the detector checkpoint is still read for its classes)."""
    from rich.progress import TextColumn

    from synthgen.detectors import load_detector, resolve_device
    from synthgen.progress import progress_bar
    from synthgen.training.loop import LossWindow, _RunLog, plot_curves

    config.check()
    started = time.perf_counter()
    state = _prepare_out(config)
    device = resolve_device(config.device)
    regions_path = config.out / ckpt.REGIONS_FILE
    settings = config.settings()
    region_settings = {k: settings[k] for k in REGION_SETTINGS}
    if regions is None and regions_path.is_file():
        saved = ckpt.load(regions_path, ckpt.REGIONS_FORMAT)
        if saved["settings"] == region_settings:
            regions = RegionSet.from_state(saved["regions"])
        elif state is not None:
            raise InputError(f"cannot resume {config.out}: its {ckpt.REGIONS_FILE} was mined with other settings "
                             f"({saved['settings']}); keep them, or start a new --out")
    if regions is None:
        progress = progress_bar("images", config.progress)
        with progress:
            from synthgen.training.coco import load_coco

            task = progress.add_task("regions", total=len(load_coco(config.data, config.images_root).image_ids))
            regions, meta = prepare_regions(config, device, on_progress=lambda: progress.advance(task))
        ckpt.save(regions_path, {"regions": regions.to_state(), "settings": region_settings}, ckpt.REGIONS_FORMAT)
    else:
        _, meta = load_detector(config.detector)
    config.out.mkdir(parents=True, exist_ok=True)
    trainer = _Trainer(config, regions, meta.num_classes, device)
    if state is not None:
        trainer.load(state)
        if trainer.step >= config.total_steps:
            raise InputError(f"{config.out} already reached step {trainer.step}; raise --steps to train longer")
    names = [c["name"] for c in meta.categories]
    sheet_rows = _sheet_rows(regions)
    runlog = _RunLog(config.out, trainer.step)
    total = config.total_steps
    window = LossWindow(LOSS_KEYS)
    saved_step = trainer.step if state is not None else None

    def save() -> None:
        ckpt.save(config.out / ckpt.FILE, trainer.state(meta))

    progress = progress_bar("steps", config.progress, extra=(TextColumn("{task.fields[losses]}"),))
    try:
        with progress:
            task = progress.add_task("train mtgan", total=total, completed=trainer.step, losses="")
            while trainer.step < total:
                phase = trainer.phase(trainer.step)
                losses = trainer.train_step()
                if not np.isfinite(losses["loss"]):
                    raise InputError(f"the loss became {losses['loss']} at step {trainer.step}; lower --lr-g / --lr-d")
                window.add(losses)
                step = trainer.step
                last = step == total
                if step % config.log_every == 0 or last:
                    shown = window.flush(step, config.lr_g, runlog)
                    progress.update(task, losses=f"[{phase}] {shown}")
                if step % config.sample_every == 0 or last:
                    write_sheet(trainer, sheet_rows, names, config.out / "samples" / f"step-{step:06d}.png")
                if step % config.checkpoint_every == 0 or last:
                    save()
                    saved_step = step
                progress.advance(task)
    except KeyboardInterrupt:
        runlog.close()
        kept = (f"{config.out / ckpt.FILE} holds step {saved_step}: run the same command with --resume to continue"
                if saved_step is not None else "no checkpoint was written yet: rerun the same command")
        raise Interrupted(f"training stopped by Ctrl-C at step {trainer.step} of {total}; {kept}") from None
    runlog.close()
    plot_curves(runlog.rows, config.out / "training_curves.png")
    return MtganTrainResult(config.out, config.out / ckpt.FILE, trainer.step, time.perf_counter() - started, len(regions), runlog.rows)
