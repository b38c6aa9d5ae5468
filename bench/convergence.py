"""Does synthetic pretraining beat the same compute spent on the real images, at convergence?

Issue 18, item 1, at a budget a CPU can run. For one task and one real-set size, each seed trains
two arms to convergence, both with early stopping on the real validation split (the best
checkpoint by validation VOC AP@0.5 is kept and scored):

* ``real``: the ImageNet-backbone detector trained on the real images only, for at most
  ``--real-max-steps`` steps (default: the pretrained arm's two maxima together, so it is never
  given less room than pretraining + finetuning).
* ``pretrained``: pretraining on the live paste stream (``reproduce_paper.paste_spec`` of
  ``--condition``) with early stopping, then finetuning from its best checkpoint on the same real
  images with early stopping.

Compute per arm: optimizer steps, images seen (steps x batch), pixels seen (images x side^2) and
wall time, training and validation together; the pretrained arm counts its pretraining in full.
The test split is scored once per arm, on the checkpoint validation chose. The pretraining run is
per seed (``--pretrain-per-seed``, default) or one run (seed 0) shared by every seed, its compute
then counted in full in each.

Item 2's levers, one at a time (``--lever``, on the ``pretrained`` arm; the finetuning ones on
``real`` too, where they need no pretraining): ``scale-from-real`` (the paste scale and objects
per image measured on the seed's few real boxes, ``synthgen paste --scale-from``),
``distractors`` (COCO128 objects of the other classes pasted without labels), ``real-crops`` (the
objects are the seed's own real boxes, ``--objects coco:REAL.json``: box crops with a tenth of the
box around them, cut out by GrabCut, in place of the condition's source: objects from the target
domain, and no more supervision than the real-only arm has), ``add-real-crops`` (the same crops
added to the condition's objects: alpha cut-outs such as the polygons kept as they are, every box
crop cut out by GrabCut), ``augment-paste:F``
(a share F of the finetuning samples are the paste stream's objects pasted onto the few real
images, their own boxes kept: ``synthgen finetune --augment-paste F``), ``mix:F`` (a share F of the
finetuning samples from the pretraining's paste stream). A lever's runs go to
``runs/ARM-LEVER/``; a finetuning lever reuses the plain pretraining of the same ``--out``.

Validation is the task's validation split (pedestrians: 10 Penn-Fudan images), or with
``--val-pool-rest`` that split together with the pool images the seed does not train on (55 at 5
real pedestrian images, 50 at 10, 35 at 25): a less noisy early stopping, bought with images a
user with so few boxes would not have; the test split is never touched. Such runs go to
``runs/ARM[-LEVER]-valpool/`` and their pretraining to ``pretrain/NAME-valpool-nN``.

Runs are resumable: a finished arm (its ``result.json``) is skipped. ``report`` collects them into
``OUT/convergence.json`` and a plot (test AP50 and AP against pixels seen, one dot per seed)::

    python bench/convergence.py run --out /tmp/conv --task pedestrians --n-real 10 --seeds 0,1,2 \\
        --image-size 192 --threads 1
    python bench/convergence.py report --out /tmp/conv --plot docs/img/convergence_pedestrians.png

``report`` takes several ``--out`` folders (lanes run side by side on the same splits), and
``--n-real N`` where a folder holds several real-set sizes; ``sizes`` plots the ``report`` JSON
files of several sizes (and detectors: a line style each) against the size.

Splits, cut-outs and paste settings are those of ``bench/reproduce_paper.py`` (``prepare`` is
run here once per task and ``OUT``: lanes started together wait for the first to write them);
``--data`` points at the shared data folder.
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import itertools
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reproduce_paper as paper  # noqa: E402  (the splits, paste specs and test scoring are shared)

ARMS = ("real", "pretrained")
ARM_COLOURS = {"real": "#777777", "pretrained": "#8e5ae4"}  # the same in every plot
LEVER_COLOURS = ("#e4775a", "#3a9e6e", "#d4a21c", "#3a7fd0", "#b04fa0", "#5ab4c4", "#8c6d31")  # lever groups, in name order
DETECTOR_STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"))  # (line, marker) per detector in `sizes`, in name order
PRETRAIN_LEVERS = ("scale-from-real", "distractors", "real-crops", "add-real-crops")  # change what the pretraining pastes
FINETUNE_LEVERS = ("augment-paste", "mix")  # change what the finetuning sees; take a share F


def parse_lever(text: str) -> str:
    """``--lever``: a pretraining lever by name, or a finetuning lever as NAME:F, 0 < F < 1."""
    name, _, value = text.partition(":")
    if name in PRETRAIN_LEVERS and not value:
        return text
    if name in FINETUNE_LEVERS:
        try:
            if 0.0 < float(value) < 1.0:
                return text
        except ValueError:
            pass
        raise argparse.ArgumentTypeError(f"{text!r}: {name} takes the share of the finetuning samples, e.g. {name}:0.5")
    raise argparse.ArgumentTypeError(
        f"{text!r}: expected one of {', '.join(PRETRAIN_LEVERS)} or {', '.join(n + ':F' for n in FINETUNE_LEVERS)}")


def group_name(record: dict[str, Any]) -> str:
    """The arm, with its lever if one was pulled: what ``report`` compares."""
    lever = record.get("settings", {}).get("lever")
    return record["arm"] if not lever else f"{record['arm']} + {lever}"


def _config(args: argparse.Namespace, out: Path, steps: int, eval_every: int, anchors_from: Path | None = None):
    from synthgen.training.loop import TrainConfig

    return TrainConfig(
        out=out, detector=args.detector, steps=steps, batch_size=args.batch_size, lr=args.lr,
        warmup_steps=min(50, steps // 10), image_size=args.image_size, box_scales=args.box_scales,
        anchors_from=anchors_from, eval_every=eval_every, log_every=10, num_workers=0, seed=args.seed_now,
        device="cpu", progress=False, threads=args.threads, early_stop=args.patience,
    )


def real_subset_file(args: argparse.Namespace, seed: int) -> Path:
    """The seed's real training images as a COCO file: what --anchors-from-real fits the anchors
    to (the few real boxes a user has, never the validation or test boxes)."""
    from synthgen.training.coco import load_coco
    from synthgen.training.data import real_subset

    splits = args.out / "splits" / args.task
    path = args.out / "real" / f"n{args.n_real}-s{seed}.json"
    if not path.is_file():
        ids = real_subset(load_coco(splits / "pool.json").image_ids, args.n_real, seed)
        paper._subset_coco(splits / "pool.json", ids, path)
    return path


def validation_file(args: argparse.Namespace, seed: int) -> Path:
    """What early stopping scores for ``seed``: the validation split, or with ``--val-pool-rest``
    a COCO file of it together with the pool images outside the seed's real subset."""
    from synthgen.cache import atomic_write_json
    from synthgen.training.coco import load_coco
    from synthgen.training.data import real_subset

    splits = args.out / "splits" / args.task
    if not args.val_pool_rest:
        return splits / "val.json"
    path = args.out / "val" / f"pool-rest-n{args.n_real}-s{seed}.json"
    if not path.is_file():  # the splits' image and annotation ids are disjoint: the files concatenate
        pool_ids = load_coco(splits / "pool.json").image_ids
        rest = set(pool_ids) - set(real_subset(pool_ids, args.n_real, seed))
        # both splits already name their images by absolute path; written atomically, so that a lane
        # started at the same time never reads half of it
        pool, val = (json.loads((splits / f"{name}.json").read_text()) for name in ("pool", "val"))
        atomic_write_json(path, {**val, "images": val["images"] + [im for im in pool["images"] if im["id"] in rest],
                                 "annotations": val["annotations"] + [a for a in pool["annotations"] if a["image_id"] in rest]})
    return path


def _run_record(result, seconds: float, batch_size: int, image_size: int) -> dict[str, Any]:
    """What one training run cost and where it stopped."""
    best_step = None
    for row in result.history:
        value = row.get("val_voc_ap50")
        if result.best_metric is not None and value not in (None, "") and float(value) == result.best_metric:
            best_step = int(row["step"])
    return {
        "steps": result.steps, "best_step": best_step, "best_val_voc_ap50": result.best_metric,
        "early_stop": result.early_stop, "seconds": seconds, "images": result.steps * batch_size,
        "pixels": result.steps * batch_size * image_size * image_size,
    }


def _train(config, data, val) -> tuple[Any, float]:
    from synthgen.training.loop import train

    started = time.perf_counter()
    paper._fresh(config.out)
    result = train(config, data, val)
    return result, time.perf_counter() - started


def paste_spec(args: argparse.Namespace, seed: int):
    """What the pretraining of ``seed`` pastes: the condition's spec, with a pretraining lever's change."""
    from synthgen.stats import real_box_ranges

    spec = paper.paste_spec(args.out, args.task, args.condition, args.image_size, seed)
    if args.lever == "scale-from-real":
        ranges = real_box_ranges(real_subset_file(args, seed))
        spec = replace(spec, composite=replace(spec.composite, scale=ranges.scale, objects_per_image=ranges.objects_per_image))
    elif args.lever == "distractors":
        folder = args.out / "distractors"
        if not folder.is_dir():  # written whole, then moved: a concurrent lane never sees half of it
            staging = args.out / "distractors.partial"
            paper.write_distractor_cutouts(staging / "object")
            staging.rename(folder)
        spec = replace(spec, distractors=str(folder))
    elif args.lever == "real-crops":
        spec = replace(spec, objects=f"coco:{real_subset_file(args, seed)}", segmenter="grabcut",
                       segmenter_options={"margin": str(paper.GRABCUT_MARGIN)})
    elif args.lever == "add-real-crops":
        spec = replace(spec, objects=str(added_real_crops(args, seed, Path(spec.objects))), segmenter="auto",
                       segmenter_options={"margin": str(paper.GRABCUT_MARGIN)})
    return spec


def added_real_crops(args: argparse.Namespace, seed: int, objects: Path) -> Path:
    """One object folder of links, ``OUT/real-crops-added/nN-sSEED/CLASS/``: every image of the
    condition's ``objects`` (``source-NAME``) and the crops of the seed's real boxes (``real-NAME``)."""
    from synthgen.sources import FolderSource, resolve_objects

    folder = args.out / "real-crops-added" / f"n{args.n_real}-s{seed}"
    if folder.is_dir():
        return folder
    staging = folder.with_name(folder.name + ".partial")
    target = staging / paper.CLASS_NAMES[args.task]
    target.mkdir(parents=True, exist_ok=True)
    for prefix, source in (("source", FolderSource(objects)), ("real", resolve_objects(f"coco:{real_subset_file(args, seed)}"))):
        for item in source.items:
            link = target / f"{prefix}-{item.path.name}"
            if not link.is_symlink():
                link.symlink_to(item.path.resolve())
    staging.rename(folder)
    return folder


def pretrain_folder(args: argparse.Namespace, seed: int) -> Path:
    """Where the pretraining of ``seed`` lives: shared by the plain and finetuning-lever runs."""
    if args.lever == "scale-from-real":  # measured on the seed's real images: one per real-set size
        name = f"scale-from-real-n{args.n_real}-s{seed}"
    elif args.lever == "distractors":
        name = f"distractors-s{seed}"
    elif args.lever in ("real-crops", "add-real-crops"):  # the seed's own boxes: one per real-set size
        name = f"{args.lever}-n{args.n_real}-s{seed}"
    else:
        name = f"s{seed}"
    if args.val_pool_rest:  # early stopping on the seed's own validation images: one per real-set size
        name += f"-valpool-n{args.n_real}"
    return args.out / "pretrain" / name


def pretrain_run(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """The pretraining run of ``seed`` (trained now unless its result exists)."""
    from synthgen.training.coco import load_coco

    run = pretrain_folder(args, seed)
    if (run / "result.json").is_file():
        return json.loads((run / "result.json").read_text())
    source, _ = paper.synthetic_source(paste_spec(args, seed), args.task)
    args.seed_now = seed
    anchors_from = real_subset_file(args, seed) if args.anchors_from_real else None
    config = _config(args, run / "train", args.pretrain_max_steps, args.pretrain_eval_every, anchors_from)
    result, seconds = _train(config, source, load_coco(validation_file(args, seed)))
    record = {"seed": seed, "condition": args.condition, "run": str(run), "checkpoint": str(result.best_checkpoint or result.last_checkpoint),
              **_run_record(result, seconds, args.batch_size, args.image_size)}
    paper._write_json(run / "result.json", record)
    return record


def arm_run(args: argparse.Namespace, arm: str, seed: int) -> dict[str, Any]:
    """Train arm ``arm`` for ``seed`` on the real subset and score it on the test split."""
    from synthgen.training.coco import load_coco
    from synthgen.training.data import CocoSource, MixedSource, augment_paste_source, real_subset

    if arm == "real" and args.lever in PRETRAIN_LEVERS:
        raise SystemExit(f"--lever {args.lever} changes the pretraining: run it with --arms pretrained")
    lever_slug = "-" + args.lever.replace(":", "") if args.lever else ""
    val_slug = "-valpool" if args.val_pool_rest else ""
    run = args.out / "runs" / f"{arm}{lever_slug}{val_slug}" / f"n{args.n_real}-s{seed}"
    if (run / "result.json").is_file():
        return json.loads((run / "result.json").read_text())
    splits = args.out / "splits" / args.task
    pool = load_coco(splits / "pool.json")
    real_ids = real_subset(pool.image_ids, args.n_real, seed)
    real = CocoSource(pool, real_ids, augment=True)
    val = load_coco(validation_file(args, seed))
    args.seed_now = seed
    stages: list[dict[str, Any]] = []
    if arm == "real":
        anchors_from = real_subset_file(args, seed) if args.anchors_from_real else None
        config = _config(args, run / "train", args.real_max_steps, args.finetune_eval_every, anchors_from)
    else:  # the anchors come with the pretrained checkpoint
        pre = pretrain_run(args, seed if args.pretrain_per_seed else 0)
        stages.append({"stage": "pretrain", **{k: v for k, v in pre.items() if k != "checkpoint"}})
        config = replace(_config(args, run / "train", args.finetune_max_steps, args.finetune_eval_every), init=Path(pre["checkpoint"]))
    data = real
    name, _, share = (args.lever or "").partition(":")
    if name in FINETUNE_LEVERS:
        spec = paste_spec(args, seed)  # a finetuning lever's: the plain pretraining's spec
        if name == "augment-paste":
            data = augment_paste_source(real, spec, float(share))
        else:
            data = MixedSource(real, paper.synthetic_source(spec, args.task)[0], float(share))
    result, seconds = _train(config, data, val)
    stages.append({"stage": "finetune" if arm == "pretrained" else "train", **_run_record(result, seconds, args.batch_size, args.image_size)})
    checkpoint = result.best_checkpoint or result.last_checkpoint
    test, _ = paper.score_on_test(checkpoint, splits / "test.json", run / "test")
    record = {
        "task": args.task, "arm": arm, "condition": args.condition if arm == "pretrained" else None,
        "n_real": args.n_real, "seed": seed, "real_image_ids": real_ids, "stages": stages,
        "total": {key: sum(s[key] for s in stages) for key in ("steps", "images", "pixels", "seconds")},
        "test": {k: test[k] for k in ("ap", "ap50", "voc_ap50")},
        "settings": {k: getattr(args, k) for k in ("detector", "image_size", "batch_size", "lr", "patience",
                                                    "pretrain_max_steps", "pretrain_eval_every", "finetune_max_steps",
                                                    "finetune_eval_every", "real_max_steps", "threads", "pretrain_per_seed",
                                                    "anchors_from_real", "lever", "val_pool_rest")},
    }
    paper._write_json(run / "result.json", record)
    t = record["test"]
    print(f"{time.strftime('%H:%M:%S')} {arm} seed {seed}: test AP50 {t['ap50']:.4f} AP {t['ap']:.4f}, "
          f"{record['total']['steps']} steps, {record['total']['seconds'] / 60:.1f} min", flush=True)
    return record


def prepare_once(args: argparse.Namespace) -> None:
    """The task's splits and cut-outs in ``OUT``, written once. Lanes started together queue on a
    lock and the marker is written last, so no lane trains on folders another lane is rewriting."""
    marker = args.out / "splits" / args.task / "prepared"
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / f".prepare-{args.task}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not marker.is_file():
            (paper.prepare_pedestrians if args.task == "pedestrians" else paper.prepare_faces)(args.out)
            marker.write_text("splits and cut-outs complete\n")


def cmd_run(args: argparse.Namespace) -> None:
    paper.DATA = args.data
    prepare_once(args)
    if args.real_max_steps is None:
        args.real_max_steps = args.pretrain_max_steps + args.finetune_max_steps
    for seed in args.seeds:  # seed by seed: an interrupted run leaves whole seeds behind
        for arm in args.arms:
            arm_run(args, arm, seed)


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample sd per group (an arm, or an arm with a lever: :func:`group_name`), and each
    group's paired (same seed, same real images) difference to the real-only arm, ``GROUP_minus_real``."""

    def stats(values: list[float]) -> dict[str, float]:
        return {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, "n": len(values)}

    groups = sorted({group_name(r) for r in records}, key=lambda g: (g not in ARMS, ARMS.index(g) if g in ARMS else 0, g))
    by_group = {g: sorted((r for r in records if group_name(r) == g), key=lambda r: r["seed"]) for g in groups}
    summary: dict[str, Any] = {}
    for group, rows in by_group.items():
        summary[group] = {
            "seeds": [r["seed"] for r in rows],
            **{m: stats([r["test"][m] for r in rows]) for m in ("ap50", "ap")},
            **{c: stats([r["total"][c] for r in rows]) for c in ("steps", "pixels", "seconds")},
        }
    real = {r["seed"]: r for r in by_group.get("real", [])}
    for group in groups:
        paired = [(r, real[r["seed"]]) for r in by_group[group] if group != "real" and r["seed"] in real]
        if paired:
            summary[f"{group}_minus_real"] = {
                "seeds": [p["seed"] for p, _ in paired],
                **{m: {**stats([p["test"][m] - q["test"][m] for p, q in paired]),
                       "per_seed": [p["test"][m] - q["test"][m] for p, q in paired]} for m in ("ap50", "ap")},
            }
    return summary


def differences(summary: dict[str, Any]):
    """(group, its paired difference to real-only) of each group :func:`summarise` paired."""
    for key, value in summary.items():
        if key.endswith("_minus_real"):
            yield key[: -len("_minus_real")], value


def run_key(record: dict[str, Any]) -> tuple[str, int, int]:
    """What makes two records the same run: group, real-set size and seed."""
    return group_name(record), record["n_real"], record["seed"]


def cmd_report(args: argparse.Namespace) -> None:
    paths = [p for out in args.out for p in sorted((out / "runs").glob("*/*/result.json"))]
    found = [(p, json.loads(p.read_text())) for p in paths]
    have = {run_key(r) for _, r in found}
    # runs of earlier reports (their folders gone), unless the same run is in an --out folder or
    # an earlier --add file (reports that share runs can be added together)
    for f in args.add:
        for r in json.loads(Path(f).read_text())["runs"]:
            if run_key(r) not in have:
                found.append((None, r))
                have.add(run_key(r))
    found = [(p, r) for p, r in found if args.n_real is None or r["n_real"] == args.n_real]
    if not found:
        raise SystemExit(f"no finished runs under {', '.join(str(out / 'runs') for out in args.out)}"
                         + (f" with {args.n_real} real images" if args.n_real is not None else ""))
    if len({r["n_real"] for _, r in found}) > 1:
        raise SystemExit("these runs have several real-set sizes; pick one with --n-real")
    if len({r["settings"].get("val_pool_rest", False) for _, r in found}) > 1:
        raise SystemExit("these runs stopped early on different validation images (some with --val-pool-rest); "
                         "report each kind from its own --out folders and --add files")
    paths, records = [p for p, _ in found], [r for _, r in found]
    summary = summarise(records)
    target = args.json or args.out[0] / "convergence.json"
    paper._write_json(Path(target), {"summary": summary, "runs": records})
    for group in (g for g in summary if not g.endswith("_minus_real")):
        s = summary[group]
        print(f"{group:10s} seeds {s['seeds']}: AP50 {100 * s['ap50']['mean']:.1f} ± {100 * s['ap50']['sd']:.1f}, "
              f"AP {100 * s['ap']['mean']:.1f} ± {100 * s['ap']['sd']:.1f}, steps {s['steps']['mean']:.0f}, "
              f"Gpx {s['pixels']['mean'] / 1e9:.2f}, {s['seconds']['mean'] / 60:.1f} min")
    for group, d in differences(summary):
        print(f"{group} - real, paired: AP50 " + " / ".join(f"{100 * v:+.1f}" for v in d["ap50"]["per_seed"])
              + f" (mean {100 * d['ap50']['mean']:+.1f} ± {100 * d['ap50']['sd']:.1f}); AP "
              + " / ".join(f"{100 * v:+.1f}" for v in d["ap"]["per_seed"]) + f" (mean {100 * d['ap']['mean']:+.1f} ± {100 * d['ap']['sd']:.1f})")
    print(f"written {target}")
    if args.plot:
        plot(records, Path(args.plot))
    if args.curves:
        with_folders = [(p, r) for p, r in zip(paths, records) if p is not None]
        plot_curves([p for p, _ in with_folders], [r for _, r in with_folders], Path(args.curves))


def _validation_curve(metrics_csv: Path, step_offset: int) -> tuple[list[int], list[float]]:
    """(step + offset, val VOC AP@0.5 in %) of every validation in a run's metrics.csv."""
    with metrics_csv.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val_voc_ap50")]
    return [int(r["step"]) + step_offset for r in rows], [100 * float(r["val_voc_ap50"]) for r in rows]


def group_colours(records: list[dict[str, Any]]) -> dict[str, str]:
    """A colour per group: the arms' own, then the levers' in name order."""
    groups = sorted({group_name(r) for r in records})
    levers = iter(LEVER_COLOURS * len(groups))
    return {g: ARM_COLOURS[g] if g in ARM_COLOURS else next(levers) for g in groups}


def plot_curves(paths: list[Path], records: list[dict[str, Any]], path: Path) -> None:
    """Validation VOC AP@0.5 against optimizer steps of every run: the real-only runs from step
    0, the pretrained ones as their pretraining (dashed, scored on the same real validation
    images) followed by the finetuning. Shows whether a run had stopped improving at its cap."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    colours = group_colours(records)
    for result, record in zip(paths, records):
        arm, seed, offset, colour = record["arm"], record["seed"], 0, colours[group_name(record)]
        if arm == "pretrained":
            pre = record["stages"][0]
            if "run" in pre:
                pre_csv = Path(pre["run"]) / "train" / "metrics.csv"
            else:  # results written before the pretraining recorded its folder
                pre_seed = seed if record["settings"]["pretrain_per_seed"] else 0
                pre_csv = result.parents[3] / "pretrain" / f"s{pre_seed}" / "train" / "metrics.csv"
            offset = pre["steps"]
            if pre_csv.is_file():
                ax.plot(*_validation_curve(pre_csv, 0), "--", color=colour, alpha=0.7)
        ax.plot(*_validation_curve(result.parent / "train" / "metrics.csv", offset), "-o", markersize=3,
                color=colour, label=f"{group_name(record)}, seed {seed}")
    ax.set_xlabel("optimizer steps (pretraining, dashed, then finetuning)")
    ax.set_ylabel("validation VOC AP@0.5 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(f"{records[0]['task']}, {records[0]['n_real']} real images: validation during training")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def plot(records: list[dict[str, Any]], path: Path) -> None:
    """Test AP50 and AP against the pixels each arm trained on (one dot per seed, pretraining
    included for the pretrained arm)."""
    from matplotlib.figure import Figure

    groups = group_colours(records)
    legend_rows = -(-len(groups) // 3)  # one legend under both panels, three groups a row: it hides no dot
    fig = Figure(figsize=(10, 4 + 0.25 * legend_rows), dpi=100)
    for i, metric in enumerate(("ap50", "ap")):
        ax = fig.add_subplot(1, 2, i + 1)
        for group, colour in groups.items():
            rows = [r for r in records if group_name(r) == group]
            if rows:
                ax.scatter([r["total"]["pixels"] / 1e9 for r in rows], [100 * r["test"][metric] for r in rows],
                           color=colour, label=f"{group} ({len(rows)} seeds)")
                for r in rows:
                    ax.annotate(str(r["seed"]), (r["total"]["pixels"] / 1e9, 100 * r["test"][metric]), fontsize=7,
                                xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("training compute (Gpixels seen, pretraining included)")
        ax.set_ylabel(f"test {metric.upper()} (%)")
        ax.grid(alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=8)
    task, n = records[0]["task"], records[0]["n_real"]
    fig.suptitle(f"{task}, {n} real images, best checkpoint by validation (early stopping)")
    fig.tight_layout(rect=(0, 0.25 * legend_rows / (4 + 0.25 * legend_rows) + 0.02, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def cmd_sizes(args: argparse.Namespace) -> None:
    """Test AP50 and AP against the real-set size, from ``report``'s JSON files (one per size and
    detector): each seed a dot, each group's mean a line, a line style per detector where the
    files hold several. The differences to real-only are printed, per size and detector."""
    from matplotlib.figure import Figure

    records = [r for path in args.json for r in json.loads(Path(path).read_text())["runs"]]
    if len({r["task"] for r in records}) > 1:
        raise SystemExit("these files hold several tasks; give one task's files")
    cells: dict[tuple[int, str], list[dict[str, Any]]] = {}  # (size, detector): its runs
    for r in records:
        cells.setdefault((r["n_real"], r["settings"]["detector"]), []).append(r)
    sizes, colours = sorted({n for n, _ in cells}), group_colours(records)
    styles = dict(zip(sorted({d for _, d in cells}), itertools.cycle(DETECTOR_STYLES)))
    fig = Figure(figsize=(10, 4), dpi=100)
    for i, metric in enumerate(("ap50", "ap")):
        ax = fig.add_subplot(1, 2, i + 1)
        for (group, colour), (detector, (line, marker)) in itertools.product(colours.items(), styles.items()):
            points = [(n, [100 * r["test"][metric] for r in cells.get((n, detector), []) if group_name(r) == group]) for n in sizes]
            points = [(n, v) for n, v in points if v]
            if not points:
                continue
            for n, values in points:
                ax.scatter([n] * len(values), values, color=colour, marker=marker, s=14, alpha=0.6)
            name = f"{detector}: {group}" if len(styles) > 1 else group
            ax.plot([n for n, _ in points], [float(np.mean(v)) for _, v in points], line, color=colour,
                    label=f"{name} (mean of {', '.join(str(len(v)) for _, v in points)} seeds)")
        ax.set_xscale("log")
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.minorticks_off()
        ax.set_xlabel("real training images")
        ax.set_ylabel(f"test {metric.upper()} (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{records[0]['task']}: each arm trained to convergence (early stopping), best checkpoint by validation")
    fig.tight_layout()
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot)
    for (n, detector), runs in sorted(cells.items()):
        for group, d in differences(summarise(runs)):
            print(f"{n:3d} real, {detector}, {group} - real: AP50 {100 * d['ap50']['mean']:+.1f} ± {100 * d['ap50']['sd']:.1f}, "
                  f"AP {100 * d['ap']['mean']:+.1f} ± {100 * d['ap']['sd']:.1f} (seeds {d['seeds']})")
    print(f"written {args.plot}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="stage", required=True)
    run = sub.add_parser("run")
    report = sub.add_parser("report")
    sizes = sub.add_parser("sizes", help="Plot report's JSON files of several real-set sizes side by side.")
    sizes.add_argument("json", nargs="+", help="report --json files, one per real-set size and detector, of one task.")
    sizes.add_argument("--plot", required=True)
    run.add_argument("--out", type=Path, required=True)
    report.add_argument("--out", type=Path, required=True, action="append", help="A run folder (repeatable).")
    report.add_argument("--json", help="Where to write the collected results (default: the first --out's convergence.json).")
    report.add_argument("--plot")
    report.add_argument("--curves", help="Also plot every run's validation curve (PNG path).")
    report.add_argument("--add", action="append", default=[],
                        help="Also the runs of an earlier report's JSON file (repeatable, the first file's run kept where two "
                             "share one; no validation curves for them).")
    report.add_argument("--n-real", type=int, help="Only the runs with this many real images (needed when a folder holds several sizes).")
    run.add_argument("--data", type=Path, default=paper.DATA, help="The shared data folder (wider_face, pennfudan, coco128, ...).")
    run.add_argument("--task", choices=("faces", "pedestrians"), default="pedestrians")
    run.add_argument("--condition", default="polygon", help="Paste condition of reproduce_paper (polygon, grabcut, naive).")
    run.add_argument("--n-real", type=int, default=10)
    run.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1, 2])
    run.add_argument("--detector", default="ssd-mobilenet")
    run.add_argument("--image-size", type=int, default=192)
    run.add_argument("--batch-size", type=int, default=8)
    run.add_argument("--lr", type=float, default=1e-3)
    run.add_argument("--box-scales", type=lambda text: tuple(float(v) for v in text.split(",")), default=None)
    run.add_argument("--patience", type=int, default=4, help="Validations without a new best before a run stops.")
    run.add_argument("--pretrain-max-steps", type=int, default=600)
    run.add_argument("--pretrain-eval-every", type=int, default=50)
    run.add_argument("--finetune-max-steps", type=int, default=400)
    run.add_argument("--finetune-eval-every", type=int, default=25)
    run.add_argument("--real-max-steps", type=int, default=None, help="Default: pretrain + finetune maxima.")
    run.add_argument("--pretrain-per-seed", action=argparse.BooleanOptionalAction, default=True)
    run.add_argument("--threads", type=int, default=1)
    run.add_argument("--anchors-from-real", action="store_true",
                     help="Anchor-based pyramid detectors: fit the anchors to the boxes of the seed's real images "
                          "(the pretraining of a seed too; finetuning keeps its checkpoint's).")
    run.add_argument("--lever", type=parse_lever, default=None,
                     help="One of item 2's levers (see the module docstring): scale-from-real, distractors, real-crops, add-real-crops, "
                          "augment-paste:F or mix:F.")
    run.add_argument("--val-pool-rest", action="store_true",
                     help="Validate on the validation split and the pool images the seed does not train on (see the module docstring).")
    run.add_argument("--arms", type=lambda s: s.split(","), default=list(ARMS),
                     help="Arms to run, e.g. `real` on one lane and `pretrained` on another (same --out only when the "
                          "lanes never share a run folder: a started run is restarted from scratch).")
    args = parser.parse_args()
    if args.stage == "sizes":
        cmd_sizes(args)
    elif args.stage == "run":
        os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
        cmd_run(args)
    else:
        cmd_report(args)


if __name__ == "__main__":
    main()
