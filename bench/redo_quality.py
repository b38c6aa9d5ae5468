"""ReDO mask quality on real ground truth: held-out Penn-Fudan people, against GrabCut, the box
and a centred ellipse.

    PYTHONPATH=$PWD /work/venv/bin/python bench/redo_quality.py --data /work/shared/data --work /tmp/redo_quality \
        --size 64 --nf 16 --batch-size 8 --lr-m 1e-4 --lr 2e-4 --steps 1500 --out docs/redo_quality.json \
        --sheet docs/img/redo_pennfudan.png

Data (``--data``, default ``../shared/data``): Penn-Fudan's 100 photos are split by photo with
``--seed`` into 50 train / 50 test. Every person is cropped with its box grown by ``--margin`` of
its size on each side (clipped to the photo): the "classification-style" object image a user
would give synthgen.
- ReDO trains (unsupervised) on the person crops of coco128 (train2017 + val2017, boxes at least
  64 px high and 24 px wide, not crowds) and of the Penn-Fudan train photos; the train crops'
  instance masks are its ``--val-masks`` (they pick best.pth and the object's channel, as a user
  with a few masks would). The run lives in ``--work/run`` and resumes: run the command again
  with a larger ``--steps`` to train on. ``--redo-checkpoint PATH`` scores that checkpoint
  instead of training (a copy of best.pth taken mid-run, or a run trained elsewhere).
- Scored on the test crops: each method's soft mask goes through synthgen's mask cleaning
  (threshold, largest component, holes filled) and quality bounds (``MaskQuality()``, as in a
  pool). IoU with the person's instance mask in the crop, for every crop (a rejected mask keeps
  its IoU) and over the accepted ones; the fraction rejected, and why.
- Methods: ``redo`` (this run's best.pth), ``grabcut`` (synthgen's default GrabCut), ``none`` (the
  whole crop, i.e. the box with its margin) and ``ellipse`` (the ellipse inscribed in the box).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np


def crop_box(box: list[float], shape: tuple[int, int], margin: float) -> tuple[int, int, int, int]:
    x, y, w, h = box
    x0, y0 = int(max(0, np.floor(x - margin * w))), int(max(0, np.floor(y - margin * h)))
    x1, y1 = int(min(shape[1], np.ceil(x + w + margin * w))), int(min(shape[0], np.ceil(y + h + margin * h)))
    return x0, y0, x1, y1


def pennfudan_crops(data: Path, margin: float, seed: int) -> dict[str, list[dict]]:
    """Person crops (RGB, instance mask, box inside the crop) of the train and test photos."""
    from pycocotools import mask as rle

    from synthgen.imageio import read_image

    root = data / "pennfudan"
    coco = json.loads((root / "annotations.json").read_text())
    order = np.random.default_rng(seed).permutation(len(coco["images"]))
    test_ids = {coco["images"][i]["id"] for i in order[len(order) // 2:]}
    by_image: dict[int, list[dict]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    splits: dict[str, list[dict]] = {"train": [], "test": []}
    for image in coco["images"]:
        rgb = read_image(root / image["file_name"])
        for ann in by_image.get(image["id"], []):
            x0, y0, x1, y1 = crop_box(ann["bbox"], rgb.shape[:2], margin)
            mask = rle.decode(ann["segmentation"]).astype(bool)
            bx, by, bw, bh = ann["bbox"]
            splits["test" if image["id"] in test_ids else "train"].append({
                "name": f"pf_{Path(image['file_name']).stem}_{ann['id']}", "rgb": rgb[y0:y1, x0:x1],
                "mask": mask[y0:y1, x0:x1], "box": (bx - x0, by - y0, bw, bh),
            })
    return splits


def coco_person_crops(data: Path, margin: float) -> list[dict]:
    from synthgen.imageio import read_image

    crops = []
    for split in ("train2017", "val2017"):
        coco = json.loads((data / "coco128" / f"{split}.json").read_text())
        files = {image["id"]: image["file_name"] for image in coco["images"]}
        for ann in coco["annotations"]:
            w, h = ann["bbox"][2:]
            if ann["category_id"] != 1 or ann.get("iscrowd") or h < 64 or w < 24:
                continue
            rgb = read_image(data / "coco128" / files[ann["image_id"]])
            x0, y0, x1, y1 = crop_box(ann["bbox"], rgb.shape[:2], margin)
            crops.append({"name": f"coco_{split}_{ann['id']}", "rgb": rgb[y0:y1, x0:x1]})
    return crops


def write_training_folder(work: Path, coco: list[dict], train: list[dict]) -> tuple[Path, Path]:
    images, masks = work / "train_images", work / "train_masks"
    if not images.is_dir():
        images.mkdir(parents=True)
        masks.mkdir(parents=True)
        for crop in coco + train:
            cv2.imwrite(str(images / f"{crop['name']}.png"), cv2.cvtColor(crop["rgb"], cv2.COLOR_RGB2BGR))
        for crop in train:
            cv2.imwrite(str(masks / f"{crop['name']}.png"), crop["mask"].astype(np.uint8) * 255)
    return images, masks


def ellipse_mask(shape: tuple[int, ...], box: tuple[float, float, float, float]) -> np.ndarray:
    mask = np.zeros(shape[:2], np.uint8)
    x, y, w, h = box
    cv2.ellipse(mask, (int(round(x + w / 2)), int(round(y + h / 2))), (int(round(w / 2)), int(round(h / 2))), 0, 0, 360, 1, -1)
    return mask.astype(np.float32)


def score(method: str, softs: list[np.ndarray], crops: list[dict], threshold: float) -> tuple[dict, list[np.ndarray]]:
    from synthgen.segmenters import MaskQuality, clean_mask
    from synthgen.segmenters.redo_train import mask_iou

    quality = MaskQuality()
    cleaned = [clean_mask(soft, threshold) for soft in softs]
    ious = np.array([float(mask_iou(c[None], crop["mask"][None])[0]) for c, crop in zip(cleaned, crops)])
    checked = None if method == "none" else quality  # the pool does not judge the none segmenter
    reasons = [None if checked is None else checked.check(c) for c in cleaned]
    rejected = np.array([reason is not None for reason in reasons])
    accepted = ious[~rejected]
    return {
        "crops": len(crops), "mean_iou": round(float(ious.mean()), 4), "iou_std": round(float(ious.std()), 4),
        "rejected_fraction": round(float(rejected.mean()), 4),
        "mean_iou_accepted": round(float(accepted.mean()), 4) if len(accepted) else None,
        "rejected_because": dict(Counter(reason for reason in reasons if reason is not None)),
    }, cleaned


def write_sheet(path: Path, crops: list[dict], masks: dict[str, list[np.ndarray]], columns: int = 10, tile: tuple[int, int] = (64, 144)) -> None:
    """One row per method (the crop, the ground truth, then each method's cleaned mask as the
    cut-out on grey), one column per test crop (evenly spaced through the test set)."""
    picked = np.linspace(0, len(crops) - 1, columns).astype(int)
    names = ["crop", "truth", *masks]
    label_width = 70
    rows = []
    for name in names:
        tiles = []
        for i in picked:
            rgb = crops[i]["rgb"]
            m = None if name == "crop" else crops[i]["mask"] if name == "truth" else masks[name][i]
            shown = rgb if m is None else np.where(m[..., None], rgb, 128).astype(np.uint8)
            tiles.append(np.pad(cv2.resize(shown, tile, interpolation=cv2.INTER_AREA), ((2, 2), (2, 2), (0, 0)), constant_values=255))
        label = np.full((tiles[0].shape[0], label_width, 3), 255, np.uint8)
        cv2.putText(label, name, (4, tiles[0].shape[0] // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        rows.append(np.concatenate([label, *tiles], axis=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows), cv2.COLOR_RGB2BGR))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
    parser.add_argument("--work", type=Path, required=True, help="crops and the ReDO run (resumed when present)")
    parser.add_argument("--margin", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--nf", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr-m", type=float, default=1e-5, help="mask network's learning rate (ReDO: 1e-5)")
    parser.add_argument("--lr", type=float, default=1e-4, help="generator's, discriminator's and latent encoder's (ReDO: 1e-4)")
    parser.add_argument("--steps", type=int, default=1000, help="total training steps of the run")
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--methods", default="redo,grabcut,none,ellipse")
    parser.add_argument("--redo-checkpoint", type=Path,
                        help="score this ReDO checkpoint (e.g. a copy of a run's best.pth mid-training, or a GPU run's) "
                        "instead of training the run in --work")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--sheet", type=Path)
    args = parser.parse_args()

    from synthgen.segmenters import make_segmenter
    from synthgen.segmenters.redo import load_redo
    from synthgen.segmenters.redo_train import RedoTrainConfig, train_redo

    splits = pennfudan_crops(args.data, args.margin, args.seed)
    test = splits["test"]
    methods = args.methods.split(",")
    result: dict = {"seed": args.seed, "margin": args.margin, "test_crops": len(test), "methods": {}}
    masks: dict[str, list[np.ndarray]] = {}
    checkpoint = args.redo_checkpoint or args.work / "run" / "best.pth"
    if args.redo_checkpoint is not None:
        result["redo_checkpoint"] = str(args.redo_checkpoint)
    elif "redo" in methods:
        coco = coco_person_crops(args.data, args.margin)
        images, val_masks = write_training_folder(args.work, coco, splits["train"])
        result["train_images"] = {"coco128": len(coco), "pennfudan_train": len(splits["train"])}
        run = args.work / "run"
        config = RedoTrainConfig(images=images, out=run, size=args.size, steps=args.steps, batch_size=args.batch_size,
                                 nf=args.nf, every=args.every, lr_m=args.lr_m, lr_g=args.lr, lr_d=args.lr, lr_z=args.lr, seed=args.seed, device=args.device,
                                 val_masks=val_masks, resume=(run / "last.pth").is_file())
        started = time.perf_counter()
        record = train_redo(config, on_check=lambda r: print(json.dumps(r), flush=True))
        result["redo_training"] = {**{k: v for k, v in record.items() if k not in ("out", "last", "best")},
                                   "size": args.size, "nf": args.nf, "batch_size": args.batch_size, "lr_m": args.lr_m, "lr": args.lr,
                                   "device": args.device, "seconds_this_call": round(time.perf_counter() - started, 1)}
    for method in methods:
        started = time.perf_counter()
        if method == "redo":
            segmenter = load_redo(checkpoint, threshold=args.threshold, device=args.device)
            softs = segmenter.segment_batch([c["rgb"] for c in test], [None] * len(test))
            extra = {"fg_channel": segmenter.chosen}
        elif method == "ellipse":
            softs, extra = [ellipse_mask(c["rgb"].shape, c["box"]) for c in test], {}
        else:
            segmenter = make_segmenter(method)
            softs, extra = [segmenter.segment(c["rgb"], None) for c in test], {}
        scores, masks[method] = score(method, softs, test, args.threshold)
        result["methods"][method] = {**scores, **extra, "seconds": round(time.perf_counter() - started, 2)}
        print(method, json.dumps(result["methods"][method]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    if args.sheet:
        write_sheet(args.sheet, test, masks)


if __name__ == "__main__":
    main()
