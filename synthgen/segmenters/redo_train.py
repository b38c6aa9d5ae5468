"""Training ReDO on a folder of object-centric images (``synthgen train redo``).

ReDO learns masks without labels: the mask network splits an image into regions, a generator
redraws one region at a time from a random code, and a discriminator must not tell the redrawn
image from a real one. Redrawing is only plausible when the regions are objects, so the masks
become objects. A latent encoder must recover the codes from the redrawn image (the paper's
information-conservation term), which keeps the generator from ignoring them.

Each step is the official ``train.py`` step:
- generator step: ``m = M(x)``, every region ``k`` redrawn as ``G_k(m_k, z_k) + (1 - m_k) x``;
  ``loss_g = -mean D(redrawn) + w_z * mse(z, Z(sum_k G_k))``; Adam steps for M, G and Z;
- discriminator step (another real batch): hinge loss, ``relu(1 - D(real)) + relu(1 + D(redrawn))``.
Adam with betas (0, 0.9), lr 1e-5 for M (weight decay 1e-4), 1e-4 for G, D and Z; orthogonal
initialisation with gain 0.8. Every ``every`` steps: a collapse check (a region smaller than
``auto_restart`` of the image on average, before step ``restart_until``, restarts the run with
new weights, as ``--autoRestart`` does, at most ``max_restarts`` times), a checkpoint, a sheet, and the validation IoU when
masks are given.

The run folder ``out``:
- ``last.pth``: ReDO's own checkpoint layout (``netEncM``, ``netGenX``, ``netDX``, ``netRecZ``,
  the four optimizer states, ``options`` as an ``argparse.Namespace`` with train.py's field
  names), plus ``synthgen`` (step, restarts, seed) for resuming; ``best.pth`` (best validation
  IoU, with ``options.fgChannel``, the mask channel that is the object);
- ``log.jsonl``: one line of mean losses, region sizes and validation IoU per check;
- ``sheets/step_NNNNNN.png``: per probe image, the image, its soft and binary foreground mask,
  and each region redrawn.

Runs are seeded: each step's batches and codes are functions of (seed, restart, step), so a
resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from synthgen.errors import InputError, OutputExistsError
from synthgen.imageio import is_image_path, read_image, read_mask

SHEET_ROWS = 6
PROBE_IMAGES = 64


@dataclass
class RedoTrainConfig:
    """What ``synthgen train redo`` takes; defaults are the official train.py's, except
    ``auto_restart`` (0.1, the README's advice, instead of off)."""

    images: Path
    out: Path
    size: int = 128
    steps: int = 20000
    batch_size: int = 20
    nf: int = 64
    nz: int = 32
    n_masks: int = 2
    n_res: int = 3
    lr_m: float = 1e-5
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    lr_z: float = 1e-4
    weight_decay: float = 1e-4
    w_rec_z: float = 5.0
    temperature: float = 1.0
    init_gain: float = 0.8
    auto_restart: float = 0.1
    restart_until: int = 7000
    max_restarts: int = 10
    every: int = 500
    seed: int = 0
    device: str = "cpu"
    val_masks: Path | None = None
    resume: bool = False
    progress: bool = True

    def check(self) -> None:
        from synthgen.segmenters.redo_nets import SIZES

        if self.size not in SIZES:
            raise InputError(f"--size must be one of {', '.join(map(str, SIZES))}, got {self.size}")
        for name in ("steps", "batch_size", "nf", "nz", "every"):
            if getattr(self, name) < 1:
                raise InputError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.n_masks != 2:
            raise InputError("ReDO trains two regions (object and background); n_masks must be 2")
        if not 0.0 <= self.auto_restart < 0.5:
            raise InputError(f"auto-restart is a region fraction in [0, 0.5), got {self.auto_restart}")

    def options(self) -> argparse.Namespace:
        """The run's settings under ReDO train.py's option names (so ReDO's own code can rebuild
        the networks from a checkpoint), plus ``fgChannel`` once validation masks decide it."""
        return argparse.Namespace(
            dataset="folder", dataroot=str(self.images), nx=3, sizex=self.size, nz=self.nz, nMasks=self.n_masks,
            nResM=self.n_res, nf=self.nf, nfD=self.nf, nfX=self.nf, nfM=self.nf, nfZ=self.nf,
            useSelfAttD=False, useSelfAttG=False, workers=0, batchSize=self.batch_size, nTest=SHEET_ROWS,
            nIteration=self.steps, initOrthoGain=self.init_gain, lrG=self.lr_g, lrM=self.lr_m, lrD=self.lr_d,
            lrZ=self.lr_z, gStepFreq=1, dStepFreq=1, temperature=self.temperature, wdecay=self.weight_decay,
            wrecZ=self.w_rec_z, outf=str(self.out), checkpointFreq=self.every, iteration=0, manualSeed=self.seed,
            resume=self.resume, clean=True, silent=not self.progress, autoRestart=self.auto_restart,
            bestValIoU=0.0, device=self.device,
        )


# --- data --------------------------------------------------------------------------------------

def load_images(folder: Path, size: int) -> tuple[np.ndarray, list[str]]:
    """Every readable image under ``folder`` (sorted paths), resized whole to ``size`` x ``size``
    (as the redo segmenter feeds them), as ``uint8`` ``(N, 3, size, size)``, and their relative
    paths without suffix."""
    if not folder.is_dir():
        raise InputError(f"--images {folder} is not a folder of images")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_path(p))
    images, names = [], []
    for path in paths:
        image = read_image(path)
        if image is None:
            continue
        images.append(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA).transpose(2, 0, 1))
        names.append(str(path.relative_to(folder).with_suffix("")))
    if len(images) < 2:
        raise InputError(f"--images {folder} holds {len(images)} readable images; ReDO needs many (hundreds or more)")
    return np.stack(images), names


def load_val_masks(folder: Path, names: list[str], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Masks in ``folder`` named like images (``<name>.png`` or ``<name>_mask.png``, any image
    type): the indices of those images and the masks at ``size`` (``bool`` ``(M, size, size)``)."""
    if not folder.is_dir():
        raise InputError(f"--val-masks {folder} is not a folder of masks")
    found = {}
    for path in folder.rglob("*"):
        if path.is_file() and is_image_path(path):
            stem = str(path.relative_to(folder).with_suffix(""))
            found[stem[:-5] if stem.endswith("_mask") else stem] = path
    indices, masks = [], []
    for i, name in enumerate(names):
        if name in found and (mask := read_mask(found[name])) is not None:
            indices.append(i)
            masks.append(cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST) >= 0.5)
    if not indices:
        raise InputError(
            f"--val-masks {folder}: no mask is named like an image of --images (expected <name>.png or "
            f"<name>_mask.png, e.g. {names[0]}.png)"
        )
    return np.array(indices), np.stack(masks)


def _generator(*parts: int) -> Any:
    import torch

    seed = int(np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint64)[0] >> 1)
    return torch.Generator().manual_seed(seed)


class _Batches:
    """Epochs of shuffled indices (the last incomplete batch dropped, as ReDO's loader does),
    as a pure function of (seed, restart, stream, step)."""

    def __init__(self, count: int, batch_size: int, seed: int, restart: int, stream: int) -> None:
        self.count, self.batch_size = count, min(batch_size, count)
        self.per_epoch = count // self.batch_size
        self.key = (seed, restart, stream)
        self._epoch, self._order = -1, None

    def __call__(self, step: int) -> Any:
        import torch

        epoch, position = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._order = epoch, torch.randperm(self.count, generator=_generator(*self.key, epoch))
        assert self._order is not None
        return self._order[position * self.batch_size:(position + 1) * self.batch_size]


# --- the networks and one step ---------------------------------------------------------------------

@dataclass
class _Nets:
    m: Any
    g: Any
    d: Any
    z: Any
    opt_m: Any
    opt_g: Any
    opt_d: Any
    opt_z: Any

    @classmethod
    def build(cls, config: RedoTrainConfig, device: Any, seed_parts: tuple[int, ...]) -> _Nets:
        import torch

        from synthgen.segmenters.redo_nets import Discriminator, LatentEncoder, MaskNet, RegionGenerator, init_orthogonal

        torch.manual_seed(int(_generator(*seed_parts).initial_seed()))
        m = MaskNet(config.size, 3, config.n_masks, config.n_res, config.nf, config.temperature)
        g = RegionGenerator(config.size, 3, config.nz, config.nf, config.n_masks)
        d = Discriminator(3, config.nf)
        z = LatentEncoder(3, config.nz, config.nf, config.n_masks)
        for net in (m, g, d, z):
            init_orthogonal(net, config.init_gain)
            net.to(device)
        adam = dict(betas=(0.0, 0.9))
        return cls(
            m, g, d, z,
            torch.optim.Adam(m.parameters(), lr=config.lr_m, weight_decay=config.weight_decay, **adam),
            torch.optim.Adam(g.parameters(), lr=config.lr_g, **adam),
            torch.optim.Adam(d.parameters(), lr=config.lr_d, **adam),
            torch.optim.Adam(z.parameters(), lr=config.lr_z, **adam),
        )

    def state(self) -> dict[str, Any]:
        return {
            "netEncM": self.m.state_dict(), "netGenX": self.g.state_dict(), "netDX": self.d.state_dict(),
            "optimizerEncM": self.opt_m.state_dict(), "optimizerGenX": self.opt_g.state_dict(),
            "optimizerDX": self.opt_d.state_dict(), "netRecZ": self.z.state_dict(),
            "optimizerRecZ": self.opt_z.state_dict(),
        }

    def load(self, payload: dict[str, Any]) -> None:
        for net, key in ((self.m, "netEncM"), (self.g, "netGenX"), (self.d, "netDX"), (self.z, "netRecZ")):
            net.load_state_dict(payload[key])
        for opt, key in ((self.opt_m, "optimizerEncM"), (self.opt_g, "optimizerGenX"), (self.opt_d, "optimizerDX"), (self.opt_z, "optimizerRecZ")):
            opt.load_state_dict(payload[key])

    def train(self, mode: bool) -> None:
        for net in (self.m, self.g, self.d, self.z):
            net.train(mode)


def _redraw(nets: _Nets, x: Any, z: Any) -> tuple[Any, Any, Any]:
    """Masks, redrawn regions ``(N, K, 3, S, S)`` and the ``N*K`` images with one region redrawn."""
    masks = nets.m(x)
    regions = nets.g(masks, z)
    composed = regions + (1 - masks.unsqueeze(2)) * x.unsqueeze(1)
    return masks, regions, composed.flatten(0, 1)


def train_step(nets: _Nets, config: RedoTrainConfig, x: Any, real: Any, z: Any) -> dict[str, float]:
    """One ReDO iteration (generator step, then discriminator step); the losses."""
    import torch
    import torch.nn.functional as F

    nets.train(True)
    for opt in (nets.opt_m, nets.opt_g, nets.opt_d, nets.opt_z):
        opt.zero_grad(set_to_none=True)
    masks, regions, fakes = _redraw(nets, x, z)
    loss_adv = -nets.d(fakes).mean()
    loss_z = F.mse_loss(nets.z(regions.sum(1)), z)
    (loss_adv + config.w_rec_z * loss_z).backward()
    for opt in (nets.opt_m, nets.opt_g, nets.opt_z):
        opt.step()
    nets.opt_d.zero_grad(set_to_none=True)
    with torch.no_grad():
        _, _, fakes = _redraw(nets, x, z)
    loss_d = F.relu(1 - nets.d(real)).mean() + F.relu(1 + nets.d(fakes)).mean()
    loss_d.backward()
    nets.opt_d.step()
    return {
        "loss_g": loss_adv.item(), "loss_z": loss_z.item(), "loss_d": loss_d.item(),
        "region": masks[:, 0].mean().item(),
    }


# --- checks, sheets, checkpoints -----------------------------------------------------------------

def _to_input(images: np.ndarray, device: Any) -> Any:
    import torch

    return torch.from_numpy(images).to(device).float().div(127.5).sub(1.0)


def _masks_of(nets: _Nets, images: np.ndarray, device: Any, batch: int = 64) -> np.ndarray:
    import torch

    nets.train(False)
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            out.append(nets.m(_to_input(images[start:start + batch], device)).float().cpu().numpy())
    return np.concatenate(out)


def mask_iou(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-image IoU of ``bool`` masks ``(N, H, W)`` (1 when both are empty)."""
    inter = (predicted & truth).sum((1, 2))
    union = (predicted | truth).sum((1, 2))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def validation_iou(masks: np.ndarray, truth: np.ndarray) -> tuple[float, int]:
    """Mean IoU of the best single channel (binarised at 0.5) over the validation images, and
    that channel: ReDO's channels are unordered, so the object is the one that matches."""
    scores = [float(mask_iou(masks[:, k] >= 0.5, truth).mean()) for k in range(masks.shape[1])]
    best = int(np.argmax(scores))
    return scores[best], best


def _save(payload: dict[str, Any], path: Path) -> None:
    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _write_sheet(nets: _Nets, images: np.ndarray, z: Any, device: Any, path: Path) -> None:
    """Rows of: image | soft mask (channel 0) | binary mask | image with region k redrawn, each k."""
    import torch

    nets.train(False)
    with torch.no_grad():
        x = _to_input(images, device)
        masks, _, composed = _redraw(nets, x, z[: len(images)])
    size = images.shape[-1]
    composed = composed.view(len(images), -1, 3, size, size).clamp(-1, 1).add(1).mul(127.5).byte().cpu().numpy()
    soft = masks[:, 0].mul(255).byte().cpu().numpy()
    rows = []
    for i in range(len(images)):
        grey = [np.repeat(m[..., None], 3, axis=2) for m in (soft[i], np.where(soft[i] >= 128, 255, 0).astype(np.uint8))]
        tiles = [images[i].transpose(1, 2, 0), *grey, *(c.transpose(1, 2, 0) for c in composed[i])]
        rows.append(np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in tiles], axis=1))
    sheet = np.concatenate(rows, axis=0)
    scale = max(1, 128 // size)
    sheet = cv2.resize(sheet, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))


def _device(name: str) -> Any:
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"--device {name!r} is not a torch device (cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return device


@dataclass
class _Run:
    """The mutable state of a run: what resuming restores."""

    step: int = 0
    restarts: int = 0
    best_iou: float = 0.0
    fg_channel: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def _prepare_out(config: RedoTrainConfig) -> dict[str, Any] | None:
    from synthgen.segmenters.redo import read_checkpoint

    last = config.out / "last.pth"
    if config.resume:
        if not last.is_file():
            raise InputError(f"cannot resume: {last} does not exist (start without --resume)")
        payload = read_checkpoint(last)
        if not isinstance(payload, dict) or "synthgen" not in payload:
            raise InputError(f"cannot resume {last}: it was not written by synthgen train redo")
        return payload
    if last.exists():
        raise OutputExistsError(f"{config.out} already holds a ReDO run; pass --resume to continue it or choose another --out")
    config.out.mkdir(parents=True, exist_ok=True)
    return None


def _restore_config(config: RedoTrainConfig, options: argparse.Namespace) -> RedoTrainConfig:
    """A resumed run keeps its architecture and optimiser settings; --steps, --every, --device
    and --val-masks may change."""
    o = vars(options)
    return RedoTrainConfig(
        images=config.images, out=config.out, size=o["sizex"], steps=config.steps, batch_size=o["batchSize"],
        nf=o["nfM"], nz=o["nz"], n_masks=o["nMasks"], n_res=o["nResM"], lr_m=o["lrM"], lr_g=o["lrG"],
        lr_d=o["lrD"], lr_z=o["lrZ"], weight_decay=o["wdecay"], w_rec_z=o["wrecZ"], temperature=o["temperature"],
        init_gain=o["initOrthoGain"], auto_restart=o["autoRestart"], restart_until=config.restart_until,
        max_restarts=config.max_restarts,
        every=config.every, seed=o["manualSeed"], device=config.device, val_masks=config.val_masks,
        resume=True, progress=config.progress,
    )


def train_redo(config: RedoTrainConfig, on_check: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train (or, with ``config.resume``, continue) a ReDO run; returns the last check's record
    plus the run's paths. ``on_check`` receives each check's record (the CLI prints it)."""
    import torch

    from synthgen.progress import progress_bar

    config.check()
    resumed = _prepare_out(config)
    if resumed is not None:
        config = _restore_config(config, resumed["options"])
        config.check()
    device = _device(config.device)
    images, names = load_images(config.images, config.size)
    val = load_val_masks(config.val_masks, names, config.size) if config.val_masks is not None else None
    run = _Run()
    if resumed is not None:
        saved = resumed["synthgen"]
        run = _Run(step=int(saved["step"]), restarts=int(saved["restarts"]), best_iou=float(saved["best_iou"]),
                   fg_channel=saved.get("fg_channel"), history=list(saved.get("history", [])))
    nets = _Nets.build(config, device, (config.seed, run.restarts, 0))
    if resumed is not None:
        nets.load(resumed)
    probe = np.sort(torch.randperm(len(images), generator=_generator(config.seed, 1)).numpy()[:PROBE_IMAGES])
    sheet_z = torch.randn((SHEET_ROWS, config.n_masks, config.nz, 1, 1), generator=_generator(config.seed, 2)).to(device)
    log_path = config.out / "log.jsonl"
    if resumed is not None and log_path.is_file():  # drop what was logged after the checkpoint
        kept = [line for line in log_path.read_text().splitlines() if line and json.loads(line)["step"] <= run.step]
        log_path.write_text("".join(line + "\n" for line in kept))
    elif resumed is None:
        log_path.write_text("")

    def checkpoint() -> dict[str, Any]:
        options = config.options()
        options.iteration, options.bestValIoU = run.step, run.best_iou
        if run.fg_channel is not None:
            options.fgChannel = run.fg_channel
        payload = {**nets.state(), "options": options, "synthgen": {
            "step": run.step, "restarts": run.restarts, "best_iou": run.best_iou, "fg_channel": run.fg_channel,
            "history": run.history,
        }}
        _save(payload, config.out / "last.pth")
        return payload

    def check(losses: list[dict[str, float]], started: float) -> dict[str, Any] | None:
        """The record of this check, or None when the run collapsed and restarted."""
        masks = _masks_of(nets, images[probe], device)
        region = float(min(masks[:, k].mean() for k in range(masks.shape[1])))
        record: dict[str, Any] = {"step": run.step, "restarts": run.restarts, "smallest_region": round(region, 4)}
        record.update({k: round(float(np.mean([l[k] for l in losses])), 5) for k in ("loss_g", "loss_z", "loss_d")})
        record["steps_per_s"] = round(len(losses) / max(time.perf_counter() - started, 1e-9), 3)
        if region < config.auto_restart and run.step <= config.restart_until and run.restarts < config.max_restarts:
            record["collapsed"] = True
            return record
        if val is not None:
            iou, channel = validation_iou(_masks_of(nets, images[val[0]], device), val[1])
            record.update(val_iou=round(iou, 4), fg_channel=channel)
        return record

    bar = progress_bar("steps", enabled=config.progress)
    record: dict[str, Any] = {}
    with bar:
        task = bar.add_task(f"ReDO {config.size}px", total=config.steps, completed=run.step)
        gen = _Batches(len(images), config.batch_size, config.seed, run.restarts, 0)
        dis = _Batches(len(images), config.batch_size, config.seed, run.restarts, 1)
        losses: list[dict[str, float]] = []
        started = time.perf_counter()
        try:
            while run.step < config.steps:
                x = _to_input(images[gen(run.step).numpy()], device)
                real = _to_input(images[dis(run.step).numpy()], device)
                z = torch.randn((len(x), config.n_masks, config.nz, 1, 1), generator=_generator(config.seed, run.restarts, 3, run.step)).to(device)
                losses.append(train_step(nets, config, x, real, z))
                run.step += 1
                bar.update(task, completed=run.step, description=(
                    f"ReDO {config.size}px  G {losses[-1]['loss_g']:+.3f}  Z {losses[-1]['loss_z']:.3f}  D {losses[-1]['loss_d']:.3f}"
                ))
                if run.step % config.every and run.step < config.steps:
                    continue
                record = check(losses, started)
                losses, started = [], time.perf_counter()
                if record.get("collapsed"):
                    run.history.append(record)
                    if on_check:
                        on_check(record)
                    run.restarts += 1
                    run.step = 0
                    nets = _Nets.build(config, device, (config.seed, run.restarts, 0))
                    gen = _Batches(len(images), config.batch_size, config.seed, run.restarts, 0)
                    dis = _Batches(len(images), config.batch_size, config.seed, run.restarts, 1)
                    bar.update(task, completed=0)
                    continue
                run.history.append(record)
                improved = val is not None and record["val_iou"] > run.best_iou
                if improved:
                    run.best_iou, run.fg_channel = record["val_iou"], record["fg_channel"]
                payload = checkpoint()
                if improved:
                    _save(payload, config.out / "best.pth")
                with log_path.open("a") as log:
                    log.write(json.dumps(record) + "\n")
                _write_sheet(nets, images[probe[:SHEET_ROWS]], sheet_z, device, config.out / "sheets" / f"step_{run.step:06d}.png")
                if on_check:
                    on_check(record)
        except KeyboardInterrupt:
            if run.step % config.every:  # keep the steps done since the last check
                checkpoint()
            raise
    return {**record, "out": str(config.out), "last": str(config.out / "last.pth"),
            "best": str(config.out / "best.pth") if val is not None else None}
