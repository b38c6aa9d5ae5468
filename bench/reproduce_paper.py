"""The paper's result on real held-out images: does pretraining on pasted cut-outs improve a
few-shot SSD-MobileNetV2, and does segmented pasting beat naive pasting?

Two tasks, each a set of *conditions* trained with the same finetune schedule:

* ``faces``: finetune on ``--n-real`` images drawn from ``wider_face/train``; test on
  ``wider_face/val``. Conditions: ``none`` (ImageNet backbone, finetune only), ``naive``
  (pretrain on ``faces_caltech`` crops pasted as whole squares, ``--segmenter none``, over
  ``scenes``, then finetune), ``grabcut`` (the same crops cut out by GrabCut), ``mixed``
  (real and GrabCut-pasted samples interleaved 1:1 for the same number of steps, no finetune).
* ``pedestrians``: finetune on ``--n-real`` Penn-Fudan images; test on held-out Penn-Fudan
  images. Conditions: ``none``, ``polygon`` (pretrain on COCO128 person cut-outs, their
  polygon masks as alpha, pasted over COCO128 images that show no person, then finetune),
  ``grabcut`` (the same persons as plain box crops, cut out by GrabCut) and ``naive`` (those
  box crops pasted whole, ``--segmenter none``: the box is the crop); ``redo`` (those box crops
  cut out by a ReDO mask network trained with ``synthgen train redo``, ``--redo PATH.pth``, e.g.
  the run of ``bench/redo_quality.py``; not in ``plan``'s defaults).

Splits (written as COCO files with absolute file names under ``OUT/splits``, so the
``synthgen`` CLI reads them as well):

* faces: ``val`` = 50 ``wider_face/train`` images drawn with split seed 0; ``pool`` = the other
  250; a run of seed ``s`` trains on ``real_subset(pool, n, s)`` (the CLI's ``--n-real n --seed
  s``). Validation (checkpoint selection) never sees a test image or a training image.
* pedestrians: Penn-Fudan shuffled with split seed 0: 50 ``pool``, 10 ``val``, 40 ``test``.

Pretraining draws samples live from :func:`synthgen.engine.iter_samples` through
:class:`synthgen.training.data.IteratorSource` (no files in between) and keeps its best
checkpoint by VOC AP@0.5 on the real validation split; the finetune starts from it. Test
scores come from :func:`synthgen.evaluation.evaluate` (COCO AP/AP50 and VOC AP@0.5, score
threshold 0.001).

Stages, so that independent runs can go to different cores (``plan`` runs them all, in order
of importance, on ``--jobs`` lanes of one thread each, and resumes by skipping finished jobs)::

    python bench/reproduce_paper.py prepare  --out /tmp/repro
    python bench/reproduce_paper.py plan     --out /tmp/repro --jobs 2 --seeds 0,1
    python bench/reproduce_paper.py report   --out /tmp/repro --plot docs/img/detection_ap50.png

or one stage at a time::

    python bench/reproduce_paper.py pretrain --out /tmp/repro --task faces --condition grabcut --steps 300
    python bench/reproduce_paper.py finetune --out /tmp/repro --task faces --condition grabcut --n-real 100 --seed 0 --steps 150

Results and the commands of the reported run: ``docs/results-detection.md``. Needs
``../shared/data`` and the ImageNet MobileNetV2 file in torch's hub cache.

Every pretraining run also scores its best checkpoint on the test split before seeing a real
image (the synthetic-only detector; ``score-pretrained`` does it for runs made without it).
Every finetune writes ``OUT/runs/<task>/<condition>/n<N>-s<seed>/result.json`` (test metrics,
settings, wall time); ``report`` collects them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data beside the checkout

SPLIT_SEED = 0
FACE_VAL_IMAGES = 50
PED_SPLIT = (50, 10, 40)  # pool, val, test

LARGE_SIDE = 32.0  # COCO's small/medium boundary (32x32 px)
FACE_CONDITIONS = ("none", "naive", "grabcut", "mixed")
PED_CONDITIONS = ("none", "naive", "polygon", "grabcut")  # "redo" needs --redo, so it is asked for by name
#: Person box crops for GrabCut are the box grown by this fraction of its size on each side;
#: GrabCut's rectangle is then inset by about the same (GRABCUT_MARGIN of the crop's side).
CROP_PAD = 0.1
GRABCUT_MARGIN = 0.08


# -- splits and cut-outs ----------------------------------------------------------------------


def _subset_coco(src: Path, image_ids: list[int], dst: Path) -> None:
    """A COCO file with only ``image_ids`` of ``src``, file names made absolute; written whole
    (temporary file and rename), as lanes side by side read what another lane writes."""
    from synthgen.cache import atomic_write_bytes

    data = json.loads(src.read_text())
    keep = set(image_ids)
    images = [dict(im, file_name=str((src.parent / im["file_name"]).resolve())) for im in data["images"] if im["id"] in keep]
    anns = [a for a in data["annotations"] if a["image_id"] in keep]
    atomic_write_bytes(dst, json.dumps({"images": images, "annotations": anns, "categories": data["categories"]}).encode())


def prepare_faces(out: Path) -> None:
    src = DATA / "wider_face" / "train" / "annotations.json"
    ids = sorted(im["id"] for im in json.loads(src.read_text())["images"])
    order = np.random.default_rng(SPLIT_SEED).permutation(len(ids))
    val = [ids[i] for i in order[:FACE_VAL_IMAGES]]
    pool = [ids[i] for i in order[FACE_VAL_IMAGES:]]
    splits = out / "splits" / "faces"
    _subset_coco(src, val, splits / "val.json")
    _subset_coco(src, pool, splits / "pool.json")
    test = DATA / "wider_face" / "val" / "annotations.json"
    _subset_coco(test, [im["id"] for im in json.loads(test.read_text())["images"]], splits / "test.json")


def grey_scenes(out: Path) -> Path:
    """Grey copies of the face backgrounds (``out/scenes_grey``, written once): Caltech WebFaces
    are grey, so on colour scenes a pasted face is the only grey region, a cue that no real
    face carries; grey backgrounds take it away."""
    dst = out / "scenes_grey"
    if not dst.is_dir():
        staging = out / "scenes_grey.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for src in sorted((DATA / "scenes").iterdir()):
            image = cv2.imread(str(src), cv2.IMREAD_GRAYSCALE)
            if image is not None:
                cv2.imwrite(str(staging / f"{src.stem}.png"), image)
        staging.rename(dst)
    return dst


def prepare_pedestrians(out: Path) -> None:
    src = DATA / "pennfudan" / "annotations.json"
    ids = sorted(im["id"] for im in json.loads(src.read_text())["images"])
    order = np.random.default_rng(SPLIT_SEED).permutation(len(ids))
    n_pool, n_val, n_test = PED_SPLIT
    splits = out / "splits" / "pedestrians"
    _subset_coco(src, [ids[i] for i in order[:n_pool]], splits / "pool.json")
    _subset_coco(src, [ids[i] for i in order[n_pool : n_pool + n_val]], splits / "val.json")
    _subset_coco(src, [ids[i] for i in order[n_pool + n_val : n_pool + n_val + n_test]], splits / "test.json")
    write_person_cutouts(out / "persons" / "person", out / "person_crops" / "person")
    write_person_free_backgrounds(out / "person_free")


def coco128_polygons():
    """Every COCO128 instance polygon, image by image (train2017 then val2017, label files in
    name order): ``(name, thing_id, image, mask, (x0, y0, x1, y1))`` with ``image`` the BGR
    photo, ``mask`` its filled polygon (uint8 0/255, the photo's size) and the polygon's box;
    ``name`` is ``split_stem_k`` (k: the polygon's line in the label file). Empty polygons are
    left out. Thing ids follow ``instance_segmentation/config.yaml`` (1 = person)."""
    root = DATA / "coco128"
    for split in ("train2017", "val2017"):
        for label in sorted((root / "instance_segmentation" / "labels" / split).glob("*.txt")):
            image = cv2.imread(str(root / "images" / split / f"{label.stem}.jpg"), cv2.IMREAD_COLOR)
            if image is None:
                continue
            h, w = image.shape[:2]
            for k, line in enumerate(label.read_text().splitlines()):
                values = line.split()
                if not values:
                    continue
                xy = (np.array(values[1:], dtype=np.float64).reshape(-1, 2) * [w, h]).round().astype(np.int32)
                mask = np.zeros((h, w), np.uint8)
                cv2.fillPoly(mask, [xy], 255)
                ys, xs = np.nonzero(mask)
                if len(ys) == 0:
                    continue
                box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
                yield f"{split}_{label.stem}_{k:02d}", int(values[0]), image, mask, box


def write_person_cutouts(dst: Path, crops_dst: Path, min_height: int = 64, min_fill: float = 0.2, min_tallness: float = 1.2) -> int:
    """COCO128 persons as RGBA PNGs cropped to their polygon's box, the filled polygon as alpha,
    in ``dst``; and the same persons as plain box crops (the polygon's box grown by
    ``CROP_PAD`` of its size on each side, no mask: classification-level images) in ``crops_dst``.
    Left out: persons shorter than ``min_height`` px, covering less than ``min_fill`` of their
    box (mostly hidden ones), or whose box is less than ``min_tallness`` times as high as wide
    (crowd regions, sitting or lying people: pedestrians stand upright)."""
    for folder in (dst, crops_dst):
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
    written = 0
    for name, thing, image, mask, (x0, y0, x1, y1) in coco128_polygons():
        if thing != 1:  # person
            continue
        if y1 - y0 < min_height or y1 - y0 < min_tallness * (x1 - x0) or mask[y0:y1, x0:x1].mean() / 255 < min_fill:
            continue
        rgba = np.dstack([image[y0:y1, x0:x1], mask[y0:y1, x0:x1]])
        cv2.imwrite(str(dst / f"{name}.png"), rgba)
        pad_x, pad_y = round(CROP_PAD * (x1 - x0)), round(CROP_PAD * (y1 - y0))
        crop = image[max(0, y0 - pad_y) : y1 + pad_y, max(0, x0 - pad_x) : x1 + pad_x]
        cv2.imwrite(str(crops_dst / f"{name}.jpg"), crop, [cv2.IMWRITE_JPEG_QUALITY, 95])
        written += 1
    return written


def write_distractor_cutouts(dst: Path, min_side: int = 32, min_fill: float = 0.2) -> int:
    """COCO128 objects of every class but person as RGBA PNGs (polygon as alpha, cropped to its
    box) in ``dst``, for pasting without labels (Cut-Paste-Learn's distractors). Left out:
    objects under ``min_side`` px on a side or covering less than ``min_fill`` of their box."""
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    written = 0
    for name, thing, image, mask, (x0, y0, x1, y1) in coco128_polygons():
        if thing == 1 or min(x1 - x0, y1 - y0) < min_side or mask[y0:y1, x0:x1].mean() / 255 < min_fill:
            continue
        cv2.imwrite(str(dst / f"{name}.png"), np.dstack([image[y0:y1, x0:x1], mask[y0:y1, x0:x1]]))
        written += 1
    return written


def write_person_free_backgrounds(dst: Path) -> int:
    """Links to the COCO128 images (train and val) with no person box."""
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    n = 0
    for split in ("train2017", "val2017"):
        data = json.loads((DATA / "coco128" / f"{split}.json").read_text())
        person_ids = {c["id"] for c in data["categories"] if c["name"] == "person"}
        with_person = {a["image_id"] for a in data["annotations"] if a["category_id"] in person_ids}
        for im in data["images"]:
            if im["id"] not in with_person:
                (dst / f"{split}_{Path(im['file_name']).name}").symlink_to(DATA / "coco128" / im["file_name"])
                n += 1
    return n


# -- paste specs --------------------------------------------------------------------------------


def paste_spec(out: Path, task: str, condition: str, image_size: int, seed: int, grey_backgrounds: bool = False,
               redo: Path | None = None):
    from synthgen.compositor.config import PRESETS
    from synthgen.engine import PasteSpec

    if task == "faces":
        # The paper's face preset, with the object scale matched to the face sizes of the real
        # training pool (5th-95th percentile 0.023-0.33 of the image side), not the test set.
        composite = PRESETS.get("faces").config(width=image_size, height=image_size, scale=(0.03, 0.4))
        segmenter = "none" if condition == "naive" else "grabcut"
        backgrounds = grey_scenes(out) if grey_backgrounds else DATA / "scenes"
        return PasteSpec(
            objects=str(DATA / "faces_caltech"), backgrounds=str(backgrounds), segmenter=segmenter,
            composite=composite, seed=seed,
        )
    if grey_backgrounds:
        raise SystemExit("--grey-backgrounds is for the faces (grey cut-outs) only")
    composite = PRESETS.get("pedestrians").config(width=image_size, height=image_size)
    if condition == "naive":  # the same box crops as GrabCut's, pasted whole (box = crop)
        return PasteSpec(
            objects=str(out / "person_crops"), backgrounds=str(out / "person_free"), segmenter="none",
            composite=composite, seed=seed,
        )
    if condition == "grabcut":  # box crops, cut out by GrabCut
        return PasteSpec(
            objects=str(out / "person_crops"), backgrounds=str(out / "person_free"), segmenter="grabcut",
            segmenter_options={"margin": str(GRABCUT_MARGIN)}, composite=composite, seed=seed,
        )
    if condition == "redo":  # box crops, cut out by a trained ReDO mask network
        if redo is None:
            raise SystemExit("the redo condition needs --redo PATH.pth (a checkpoint of synthgen train redo)")
        return PasteSpec(
            objects=str(out / "person_crops"), backgrounds=str(out / "person_free"), segmenter=f"redo:{redo.resolve()}",
            composite=composite, seed=seed,
        )
    if condition != "polygon":
        raise SystemExit(f"unknown pedestrian condition {condition!r}: one of {', '.join(PED_CONDITIONS)}, redo")
    return PasteSpec(
        objects=str(out / "persons"), backgrounds=str(out / "person_free"), segmenter="alpha",
        composite=composite, seed=seed,
    )


CLASS_NAMES = {"faces": "face", "pedestrians": "person"}  # the real data's class names


def synthetic_source(spec, task: str) -> Any:
    from synthgen.engine import iter_samples, prepare
    from synthgen.training.data import IteratorSource

    scene = prepare(spec, progress=False)  # builds (or loads) the cached pools once, here
    # One object class, named after its folder (faces_caltech); it is the real data's class,
    # and a real + synthetic mix matches classes by name.
    assert len(scene.compositor.categories) == 1
    categories = [{"id": 1, "name": CLASS_NAMES[task]}]
    return IteratorSource(partial(iter_samples, spec), categories), scene.notes


# -- training -----------------------------------------------------------------------------------


def _config(args: argparse.Namespace, out: Path, steps: int, eval_every: int):
    from synthgen.training.loop import TrainConfig

    return TrainConfig(
        out=out, detector="ssd-mobilenet", steps=steps, batch_size=args.batch_size, lr=args.lr,
        warmup_steps=min(50, steps // 10), image_size=args.image_size, box_scales=args.box_scales, eval_every=eval_every,
        log_every=10, num_workers=args.num_workers, seed=args.seed, device="cpu", progress=False,
    )


def _fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    return path


def cmd_pretrain(args: argparse.Namespace) -> None:
    from synthgen.training.coco import load_coco
    from synthgen.training.loop import pretrain

    out = _fresh(args.out / "pretrain" / args.task / args.condition / f"s{args.seed}")
    spec = paste_spec(args.out, args.task, args.condition, args.image_size, args.seed, args.grey_backgrounds, args.redo)
    source, notes = synthetic_source(spec, args.task)
    print("\n".join(notes), flush=True)
    val = load_coco(args.out / "splits" / args.task / "val.json")
    started = time.perf_counter()
    result = pretrain(_config(args, out, args.steps, args.eval_every), source, val)
    _write_json(out / "result.json", {
        "task": args.task, "condition": args.condition, "seed": args.seed, "steps": args.steps,
        "batch_size": args.batch_size, "image_size": args.image_size, "lr": args.lr, "box_scales": args.box_scales,
        "best_val_voc_ap50": result.best_metric, "seconds": time.perf_counter() - started,
        "paste_spec": spec.to_dict(), "notes": notes,
    })
    print(f"pretrain {args.task}/{args.condition}: best val VOC AP50 {result.best_metric}", flush=True)
    score_pretrained(args.out, out)


def score_pretrained(out: Path, run: Path) -> dict:
    """Test scores of pretraining run ``run``'s best checkpoint, before any real image (the
    synthetic-only detector, "0 real images"), added to its ``result.json`` as ``test`` and
    ``test_large``; a run already scored is left as it is."""
    result = json.loads((run / "result.json").read_text())
    if "test" not in result:
        result["test"], result["test_large"] = score_on_test(run / "best.pt", out / "splits" / result["task"] / "test.json", run / "test")
        _write_json(run / "result.json", result)
    return result


def score_on_test(checkpoint: Path, test: Path, out_dir: Path) -> tuple[dict, dict]:
    """``checkpoint``'s metrics on the COCO file ``test`` (detections and plots written to
    ``out_dir``): on every object, and with objects under LARGE_SIDE turned into ignore regions."""
    from synthgen.evaluation import evaluate, evaluate_detections

    metrics = evaluate(checkpoint, test, out_dir=out_dir, device="cpu", batch_size=8)
    detections = json.loads((out_dir / "detections.json").read_text())
    return metrics.to_dict(), evaluate_detections(ignore_small(test, LARGE_SIDE), detections).to_dict()


def cmd_score_pretrained(args: argparse.Namespace) -> None:
    """Score every pretraining run under ``--out`` on the test split (see score_pretrained)."""
    for run in sorted((args.out / "pretrain").glob("*/*/s*")):
        if (run / "result.json").is_file():
            r = score_pretrained(args.out, run)
            print(f"{r['task']}/{r['condition']} seed {r['seed']}, 0 real images: test AP50 {100 * r['test']['ap50']:.1f}", flush=True)


def cmd_finetune(args: argparse.Namespace) -> None:
    from synthgen.detectors import read_checkpoint
    from synthgen.training.coco import load_coco
    from synthgen.training.data import CocoSource, real_subset
    from synthgen.training.loop import finetune, pretrain, train

    splits = args.out / "splits" / args.task
    label = args.label or args.condition
    run = _fresh(args.out / "runs" / args.task / label / f"n{args.n_real}-s{args.seed}")
    pool = load_coco(splits / "pool.json")
    real_ids = real_subset(pool.image_ids, args.n_real, args.seed)
    real = CocoSource(pool, real_ids, augment=True)
    val = load_coco(splits / "val.json")
    config = _config(args, run / "train", args.steps, args.eval_every)
    started = time.perf_counter()
    init = None
    pretrain_seconds = 0.0
    if args.condition == "none":
        result = train(config, real, val)
    elif args.condition == "mixed":
        spec = paste_spec(args.out, args.task, "grabcut", args.image_size, args.seed)
        synthetic, _ = synthetic_source(spec, args.task)
        result = pretrain(config, synthetic, val, real=real, synthetic_fraction=0.5)
    else:
        pre = args.out / "pretrain" / args.task / args.condition / f"s{args.pretrain_seed}"
        init = pre / f"{args.pretrain_checkpoint}.pt"
        if not init.is_file():
            raise SystemExit(f"no pretrained checkpoint {init}: run the pretrain stage first")
        pretrain_seconds = float(json.loads((pre / "result.json").read_text())["seconds"])
        result = finetune(config, init, real, val)
    finetune_seconds = time.perf_counter() - started
    ckpt = result.best_checkpoint or result.last_checkpoint
    test, test_large = score_on_test(ckpt, splits / "test.json", run / "test")
    summary = {
        "task": args.task, "condition": label, "n_real": args.n_real, "seed": args.seed,
        "steps": args.steps, "batch_size": args.batch_size, "image_size": args.image_size, "lr": args.lr,
        "box_scales": read_checkpoint(ckpt)["box_scales"],
        "init": None if init is None else str(init), "pretrain_seed": None if init is None else args.pretrain_seed,
        "best_val_voc_ap50": result.best_metric,
        "selected_step": _selected_step(result), "test": test, "test_large": test_large,
        "finetune_seconds": finetune_seconds, "pretrain_seconds": pretrain_seconds,
        "real_image_ids": real_ids,
    }
    _write_json(run / "result.json", summary)
    t = summary["test"]
    print(f"{args.task}/{args.condition} n={args.n_real} seed={args.seed}: test AP50 {t['ap50']:.4f} "
          f"VOC AP50 {t['voc_ap50']:.4f} AP {t['ap']:.4f}", flush=True)


def ignore_small(path: Path, side: float) -> dict:
    """The ground truth of ``path`` with objects smaller than ``side``x``side`` px (box area,
    original image pixels) turned into ignore regions: a secondary score on the objects an
    SSD at 320 px can resolve. A detection on an ignored object is neither hit nor miss."""
    data = json.loads(path.read_text())
    for ann in data["annotations"]:
        if ann["bbox"][2] * ann["bbox"][3] < side * side:
            ann["iscrowd"] = 1
    return data


def _selected_step(result) -> int | None:
    best = result.best_metric
    for row in result.history:
        value = row.get("val_voc_ap50")
        if best is not None and value not in (None, "") and float(value) == best:
            return int(row["step"])
    return None


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


# -- report -------------------------------------------------------------------------------------


LABELS = {
    ("faces", "none"): "no pretraining (ImageNet backbone)",
    ("faces", "none-long"): "no pretraining, finetune steps = pretrain + finetune (control)",
    ("faces", "naive"): "pretrain: naive pasting (whole crops)",
    ("faces", "grabcut"): "pretrain: segmented pasting (GrabCut)",
    ("faces", "mixed"): "mixed: real + GrabCut pasting 1:1",
    ("pedestrians", "none"): "no pretraining (ImageNet backbone)",
    ("pedestrians", "none-long"): "no pretraining, finetune steps = pretrain + finetune (control)",
    ("pedestrians", "naive"): "pretrain: COCO128 person box crops, naive pasting (whole crops)",
    ("pedestrians", "polygon"): "pretrain: COCO128 person polygons",
    ("pedestrians", "grabcut"): "pretrain: COCO128 person box crops, GrabCut",
    ("pedestrians", "redo"): "pretrain: COCO128 person box crops, ReDO",
}


SHORT = {"none": "no pretraining", "none-long": "no pretraining,\nlonger finetune", "naive": "naive paste", "grabcut": "GrabCut paste", "mixed": "mixed 1:1",
         "polygon": "polygon paste", "redo": "ReDO paste"}
COLOURS = {"none": "#999999", "none-long": "#444444", "naive": "#e49b3c", "grabcut": "#3c7ee4", "mixed": "#5aae61", "polygon": "#8e5ae4", "redo": "#d6404e"}


def collect(out: Path) -> list[dict]:
    rows = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/*/*/result.json"))]
    order = {key: i for i, key in enumerate(LABELS)}
    return sorted(rows, key=lambda r: (r["task"], r["n_real"], order.get((r["task"], r["condition"]), 99), r["seed"]))


def _fmt(values: list[float]) -> str:
    pct = [100 * v for v in values]
    if len(pct) == 1:
        return f"{pct[0]:.1f}"
    return f"{np.mean(pct):.1f} ± {np.std(pct, ddof=1):.1f}"


def _steps(row: dict) -> str:
    if row["init"] is None:
        return f"0 + {row['steps']}" if row["condition"].startswith("none") else f"{row['steps']} (mixed)"
    pre = json.loads((Path(row["init"]).parent / "result.json").read_text())
    return f"{pre['steps']} + {row['steps']}"


def cmd_report(args: argparse.Namespace) -> None:
    rows = collect(args.out)
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["n_real"], r["condition"]), []).append(r)
    lines = [
        "| task | real images | condition | seeds | test AP50 (COCO) | test VOC AP@0.5 | test AP | test AP50, objects >= 32 px | val VOC AP@0.5 (selection) | steps (pretrain + finetune) | wall time (pretrain + finetune) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (task, n, cond), rs in groups.items():
        seeds = ",".join(str(r["seed"]) for r in rs)
        wall = np.mean([r["pretrain_seconds"] + r["finetune_seconds"] for r in rs]) / 60
        lines.append(
            f"| {task} | {n} | {LABELS.get((task, cond), cond)} | {seeds} | {_fmt([r['test']['ap50'] for r in rs])} "
            f"| {_fmt([r['test']['voc_ap50'] for r in rs])} | {_fmt([r['test']['ap'] for r in rs])} "
            f"| {_fmt([r['test_large']['ap50'] for r in rs])} "
            f"| {_fmt([r['best_val_voc_ap50'] or 0.0 for r in rs])} | {_steps(rs[0])} | {wall:.0f} min |"
        )
    table = "\n".join(lines) + "\n"
    pretrained = [json.loads(p.read_text()) for p in sorted((args.out / "pretrain").glob("*/*/s*/result.json"))]
    pretrained = [r for r in pretrained if "test" in r]
    if pretrained:  # the synthetic-only detectors: no real image seen, except for checkpoint selection
        table += (
            "\n| task | condition | real images | seeds (pretraining) | test AP50 (COCO) | test VOC AP@0.5 | test AP "
            "| test AP50, objects >= 32 px | val VOC AP@0.5 (selection) | pretrain steps |\n|---|---|---|---|---|---|---|---|---|---|\n"
        )
        runs: dict[tuple, list[dict]] = {}
        for r in sorted(pretrained, key=lambda r: (r["task"], list(LABELS).index((r["task"], r["condition"])), r["seed"])):
            runs.setdefault((r["task"], r["condition"]), []).append(r)
        for (task, cond), rs in runs.items():
            table += (
                f"| {task} | {LABELS.get((task, cond), cond)} | 0 (synthetic only) | {','.join(str(r['seed']) for r in rs)} "
                f"| {_fmt([r['test']['ap50'] for r in rs])} | {_fmt([r['test']['voc_ap50'] for r in rs])} "
                f"| {_fmt([r['test']['ap'] for r in rs])} | {_fmt([r['test_large']['ap50'] for r in rs])} "
                f"| {_fmt([r['best_val_voc_ap50'] or 0.0 for r in rs])} | {rs[0]['steps']} |\n"
            )
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table)
    if args.plot:
        plot(groups, Path(args.plot))


def plot(groups: dict[tuple, list[dict]], path: Path) -> None:
    """Test AP50 against the number of real images, one line per condition (mean over seeds,
    error bar = sample sd, dots = seeds); a condition run at one size only is a lone marker."""
    from matplotlib.figure import Figure

    tasks = sorted({k[0] for k in groups})
    fig = Figure(figsize=(6 * len(tasks), 4.5), dpi=100)
    for i, task in enumerate(tasks):
        ax = fig.add_subplot(1, len(tasks), i + 1)
        conditions = [c for t, c in LABELS if t == task and any(k[0] == task and k[2] == c for k in groups)]
        for offset, condition in enumerate(conditions):
            keys = sorted((k for k in groups if k[0] == task and k[2] == condition), key=lambda k: k[1])
            sizes = np.array([k[1] for k in keys], dtype=float)
            shift = 1.0 + 0.025 * (offset - (len(conditions) - 1) / 2)  # keep the markers apart
            values = [[100 * r["test"]["ap50"] for r in groups[k]] for k in keys]
            means = [np.mean(v) for v in values]
            errs = [np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in values]
            colour = COLOURS.get(condition, "#777777")
            ax.errorbar(sizes * shift, means, yerr=errs, color=colour, marker="o", capsize=3,
                        label=SHORT.get(condition, condition).replace("\n", " "))
            for size, vals in zip(sizes, values):
                ax.scatter([size * shift] * len(vals), vals, color="black", s=8, zorder=3)
        ax.set_xscale("log")
        all_sizes = sorted({k[1] for k in groups if k[0] == task})
        ax.minorticks_off()
        ax.set_xticks(all_sizes)
        ax.set_xticklabels([str(n) for n in all_sizes])
        ax.set_xlabel("real training images")
        ax.set_ylabel("test AP50 (COCO, %)")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


# -- the whole protocol on parallel lanes ---------------------------------------------------------


@dataclass
class Job:
    name: str
    argv: list[str]
    done: Path  # exists when the job has finished
    deps: list[str] = field(default_factory=list)
    rank: tuple = ()  # jobs run in rank order, as soon as their dependencies are done


def plan_jobs(args: argparse.Namespace) -> list[Job]:
    """Every stage of the protocol, most important first: seed 0 of all conditions at the
    smallest real-set sizes, then further seeds and sizes, then mixed training."""
    out = args.out
    common = ["--out", str(out), "--data", str(args.data), "--batch-size", str(args.batch_size), "--image-size", str(args.image_size),
              "--lr", str(args.lr), "--threads", "1", *(["--box-scales", args.box_scales] if args.box_scales else [])]
    tasks = {
        "faces": (args.face_sizes, args.face_conditions, args.pretrain_steps, args.finetune_steps),
        "pedestrians": (args.ped_sizes, args.ped_conditions, args.ped_pretrain_steps, args.ped_finetune_steps),
    }
    jobs: list[Job] = []

    def pretrain(task: str, condition: str, steps: int) -> str:
        name = f"pre-{task}-{condition}"
        jobs.append(Job(name, ["pretrain", "--task", task, "--condition", condition, "--steps", str(steps),
                               "--eval-every", str(max(1, steps // 4)), *common],
                        out / "pretrain" / task / condition / "s0" / "result.json", rank=(0,)))
        return name

    def finetune(task: str, condition: str, n: int, seed: int, steps: int, deps: list[str]) -> None:
        jobs.append(Job(f"ft-{task}-{condition}-n{n}-s{seed}",
                        ["finetune", "--task", task, "--condition", condition, "--n-real", str(n), "--seed", str(seed),
                         "--steps", str(steps), "--eval-every", str(max(1, steps // 4)), *common],
                        out / "runs" / task / condition / f"n{n}-s{seed}" / "result.json", deps,
                        rank=(1, condition == "mixed", args.seeds.index(seed), steps)))

    pretrained = {}
    for seed_index, seed in enumerate(args.seeds):
        for size_index, _ in enumerate(max(tasks["faces"][0], tasks["pedestrians"][0], key=len)):
            for task, (sizes, conditions, pre_steps, ft_steps) in tasks.items():
                if size_index >= len(sizes):
                    continue
                n = sizes[size_index]
                for condition in conditions:
                    if condition == "mixed":
                        continue
                    deps = []
                    if condition != "none":
                        if (task, condition) not in pretrained:
                            pretrained[task, condition] = pretrain(task, condition, pre_steps)
                        deps = [pretrained[task, condition]]
                    finetune(task, condition, n, seed, ft_steps, deps)
    for seed in args.seeds:
        for n in args.face_sizes:
            if "mixed" in args.face_conditions:
                finetune("faces", "mixed", n, seed, args.finetune_steps, [])
    # Pretraining first (the long end of every dependency chain), then seed by seed, the
    # cheaper runs first, so that an interrupted plan leaves whole seeds behind; mixed last.
    return sorted(jobs, key=lambda job: job.rank)


def cmd_plan(args: argparse.Namespace) -> None:
    """Run the jobs of :func:`plan_jobs` on ``--jobs`` lanes (one torch thread each); finished
    jobs (their result file exists) are skipped, so an interrupted plan resumes."""
    import subprocess
    import sys

    jobs = plan_jobs(args)
    logs = args.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    state = {j.name: ("done" if j.done.is_file() else "external" if j.name in args.external else "todo") for j in jobs}
    running: dict[str, subprocess.Popen] = {}
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    print(f"{len(jobs)} jobs, {sum(v == 'done' for v in state.values())} already done", flush=True)
    while any(v in ("todo", "running", "external") for v in state.values()):
        for job in jobs:  # a job another process runs counts as done once its result exists
            if state[job.name] == "external" and job.done.is_file():
                state[job.name] = "done"
                print(f"{time.strftime('%H:%M:%S')} {job.name}: done (external)", flush=True)
        for name, proc in list(running.items()):
            code = proc.poll()
            if code is not None:
                del running[name]
                state[name] = "done" if code == 0 else "failed"
                print(f"{time.strftime('%H:%M:%S')} {name}: {state[name]}", flush=True)
        for job in jobs:
            if len(running) + sum(v == "external" for v in state.values()) >= args.jobs:
                break
            if state[job.name] != "todo":
                continue
            if any(state[d] == "failed" for d in job.deps):
                state[job.name] = "failed"
                print(f"{job.name}: skipped, a dependency failed", flush=True)
            elif all(state[d] == "done" for d in job.deps):
                log = (logs / f"{job.name}.log").open("w")
                running[job.name] = subprocess.Popen(
                    [sys.executable, __file__, *job.argv], stdout=log, stderr=subprocess.STDOUT, env=env
                )
                state[job.name] = "running"
                print(f"{time.strftime('%H:%M:%S')} {job.name}: started", flush=True)
        time.sleep(2)


# -- command line -------------------------------------------------------------------------------


def main() -> None:
    global DATA  # --data replaces the default for every stage of this process
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="stage", required=True)
    for name in ("prepare", "pretrain", "finetune", "score-pretrained", "report", "plan"):
        p = sub.add_parser(name)
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--data", type=Path, default=DATA, help="The shared data folder (default: ../shared/data beside the checkout).")
        if name in ("pretrain", "finetune"):
            p.add_argument("--task", choices=("faces", "pedestrians"), required=True)
            p.add_argument("--condition", required=True)
            p.add_argument("--steps", type=int, required=True)
            p.add_argument("--seed", type=int, default=0)
            p.add_argument("--batch-size", type=int, default=8)
            p.add_argument("--image-size", type=int, default=320)
            p.add_argument("--lr", type=float, default=1e-3)
            p.add_argument("--eval-every", type=int, default=50)
            p.add_argument("--num-workers", type=int, default=0)
            p.add_argument("--threads", type=int, default=1)
            p.add_argument("--box-scales", type=lambda text: tuple(float(v) for v in text.split(",")),
                           help="SMALLEST,LARGEST default box of the SSD (fractions of the input side); "
                           "finetuning takes the pretrained checkpoint's")
        if name == "pretrain":
            p.add_argument("--grey-backgrounds", action="store_true",
                           help="Faces: paste onto grey copies of the scenes (the face crops are grey).")
            p.add_argument("--redo", type=Path, help="Pedestrians, condition redo: the ReDO checkpoint (.pth) that cuts the crops out.")
        if name == "finetune":
            p.add_argument("--n-real", type=int, required=True)
            p.add_argument("--pretrain-seed", type=int, default=0, help="Start from this pretraining run.")
            p.add_argument("--pretrain-checkpoint", choices=("best", "last"), default="best",
                           help="Start from its best checkpoint (by synthetic-only val AP50) or its last one.")
            p.add_argument("--label", help="Name of the run in the results instead of the condition (e.g. none-long).")
        if name == "plan":
            ints = lambda text: [int(v) for v in text.split(",") if v]  # noqa: E731
            words = lambda text: [v for v in text.split(",") if v]  # noqa: E731
            p.add_argument("--jobs", type=int, default=2, help="Parallel lanes (one CPU thread each).")
            p.add_argument("--external", type=words, default=[], help="Jobs already running in another process: wait for them.")
            p.add_argument("--seeds", type=ints, default=[0, 1])
            p.add_argument("--face-sizes", type=ints, default=[100])
            p.add_argument("--ped-sizes", type=ints, default=[25])
            p.add_argument("--face-conditions", type=words, default=list(FACE_CONDITIONS))
            p.add_argument("--ped-conditions", type=words, default=list(PED_CONDITIONS))
            p.add_argument("--pretrain-steps", type=int, default=400)
            p.add_argument("--finetune-steps", type=int, default=200)
            p.add_argument("--ped-pretrain-steps", type=int, default=300)
            p.add_argument("--ped-finetune-steps", type=int, default=150)
            p.add_argument("--batch-size", type=int, default=8)
            p.add_argument("--image-size", type=int, default=320)
            p.add_argument("--lr", type=float, default=1e-3)
            p.add_argument("--box-scales", help="SMALLEST,LARGEST default box of the SSD, for every run")
        if name == "report":
            p.add_argument("--markdown")
            p.add_argument("--plot")
    args = parser.parse_args()
    DATA = args.data
    if hasattr(args, "threads"):
        import torch

        torch.set_num_threads(args.threads)
        cv2.setNumThreads(1)
    if args.stage == "prepare":
        prepare_faces(args.out)
        prepare_pedestrians(args.out)
        print(f"splits, person cut-outs and backgrounds in {args.out}")
    elif args.stage == "pretrain":
        cmd_pretrain(args)
    elif args.stage == "finetune":
        cmd_finetune(args)
    elif args.stage == "plan":
        cmd_plan(args)
    elif args.stage == "score-pretrained":
        cmd_score_pretrained(args)
    else:
        cmd_report(args)


if __name__ == "__main__":
    main()
