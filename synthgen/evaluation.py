"""Detector evaluation on a COCO ground-truth file.

Two views of the same detections:

* COCO (pycocotools ``COCOeval``, bbox): AP@[.5:.95], AP50, AP75, AP small/medium/large,
  AR@1/10/100 (101-point interpolation, at most 100 detections per image; ``-1`` where the
  ground truth has no object of that size, as pycocotools reports it).
* VOC-style AP@0.5 per class with all-point interpolation (area under the precision envelope),
  the paper's metric, matched as COCO matches: in descending score order a detection takes the
  best still-unmatched box of its class with IoU >= 0.5; otherwise, if it covers a crowd
  (``iscrowd=1``) region by >= 0.5 of its own area, it is ignored; otherwise it is a false
  positive. ``voc_ap50`` is the mean over classes that have ground truth.

Detections are kept down to a low score (0.001 by default). The paper's code cut them at 0.5
before computing AP, which truncates the precision-recall curve and underestimates AP.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn

from synthgen.cache import atomic_write_json
from synthgen.detectors import inference_size, load_detector, resolve_device, unwrap
from synthgen.errors import InputError
from synthgen.training.coco import CocoSet, coco_from_dict, load_coco

log = logging.getLogger(__name__)

COCO_STAT_NAMES = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large", "ar1", "ar10", "ar100")


@dataclass
class ClassAP:
    """VOC-style result of one class: ``precision``/``recall`` are the raw curves over the
    detections in descending score order (ignored detections left out)."""

    category_id: int
    name: str
    ap: float  # NaN when the class has no ground truth
    num_gt: int
    num_detections: int
    recall: np.ndarray
    precision: np.ndarray


@dataclass
class Metrics:
    ap: float
    ap50: float
    ap75: float
    ap_small: float
    ap_medium: float
    ap_large: float
    ar1: float
    ar10: float
    ar100: float
    voc_ap50: float  # mean VOC AP@0.5 over classes with ground truth
    voc_ap50_per_class: dict[str, float]
    num_images: int
    num_detections: int
    classes: list[ClassAP] = field(default_factory=list, repr=False)
    skipped: list[str] = field(default_factory=list)  # ground-truth image files left out (unreadable)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (NaN becomes None)."""
        clean = lambda v: None if isinstance(v, float) and math.isnan(v) else v  # noqa: E731
        out = {name: clean(float(getattr(self, name))) for name in COCO_STAT_NAMES}
        out["voc_ap50"] = clean(float(self.voc_ap50))
        out["voc_ap50_per_class"] = {k: clean(float(v)) for k, v in self.voc_ap50_per_class.items()}
        out["num_images"] = self.num_images
        out["num_detections"] = self.num_detections
        return out


def _as_coco(coco_gt: COCO | CocoSet | dict | str | Path) -> COCO:
    if isinstance(coco_gt, COCO):
        return coco_gt
    if isinstance(coco_gt, CocoSet):
        return coco_gt.coco
    if isinstance(coco_gt, dict):
        return coco_from_dict(copy.deepcopy(coco_gt))
    return load_coco(coco_gt, check_images=False).coco


def _iou(box: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU and intersection-over-``box``-area of one xyxy box with many."""
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = float(np.prod(box[2:] - box[:2]))
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    union = area + areas - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0), np.where(area > 0, inter / area, 0.0)


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """All-point interpolated AP: area under the precision envelope (VOC 2010+)."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _xyxy(bbox: Sequence[float]) -> np.ndarray:
    x, y, w, h = bbox
    return np.array([x, y, x + w, y + h], dtype=np.float64)


def voc_ap(coco: COCO, detections: list[dict], iou_threshold: float = 0.5) -> list[ClassAP]:
    """Per-class VOC-style AP of COCO-format ``detections`` (see the module docstring)."""
    results = []
    for cat in sorted(coco.dataset["categories"], key=lambda c: c["id"]):
        cat_id = cat["id"]
        regular: dict[int, list[np.ndarray]] = {}
        crowd: dict[int, list[np.ndarray]] = {}
        for ann in coco.loadAnns(coco.getAnnIds(catIds=[cat_id])):
            (crowd if ann.get("iscrowd", 0) else regular).setdefault(ann["image_id"], []).append(_xyxy(ann["bbox"]))
        gt = {img: np.stack(b) for img, b in regular.items()}
        ignore = {img: np.stack(b) for img, b in crowd.items()}
        taken = {img: np.zeros(len(b), dtype=bool) for img, b in gt.items()}
        num_gt = sum(len(b) for b in gt.values())

        dets = [d for d in detections if d["category_id"] == cat_id]
        dets.sort(key=lambda d: -d["score"])  # stable: ties keep their given order
        hits: list[bool] = []
        for det in dets:
            box = _xyxy(det["bbox"])
            img = det["image_id"]
            if img in gt:
                ious, _ = _iou(box, gt[img])
                ious[taken[img]] = -1.0
                best = int(np.argmax(ious))
                if ious[best] >= iou_threshold:
                    taken[img][best] = True
                    hits.append(True)
                    continue
            if img in ignore and np.any(_iou(box, ignore[img])[1] >= iou_threshold):
                continue  # on a crowd region: neither a hit nor a false positive
            hits.append(False)
        tp = np.cumsum(hits, dtype=np.float64)
        fp = np.cumsum(np.logical_not(hits), dtype=np.float64)
        recall = tp / num_gt if num_gt else np.zeros_like(tp)
        precision = tp / np.maximum(tp + fp, 1e-12)
        ap = average_precision(recall, precision) if num_gt else float("nan")
        results.append(ClassAP(cat_id, str(cat["name"]), ap, num_gt, len(dets), recall, precision))
    return results


def coco_stats(coco: COCO, detections: list[dict]) -> dict[str, float]:
    """pycocotools bbox summary (AP, AP50, ..., AR100); all 0 without detections."""
    if not detections:
        return {name: 0.0 for name in COCO_STAT_NAMES}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = coco.loadRes(copy.deepcopy(detections))  # loadRes writes ids/areas into its input
        evaluator = COCOeval(coco, dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(v) for name, v in zip(COCO_STAT_NAMES, evaluator.stats)}


def evaluate_detections(coco_gt: COCO | CocoSet | dict | str | Path, detections: list[dict]) -> Metrics:
    """Score COCO-format detections (``image_id``, ``category_id``, ``bbox`` xywh, ``score``)
    against ground truth (a pycocotools COCO, a loaded CocoSet, a COCO dict or a file path)."""
    coco = _as_coco(coco_gt)
    known_images = set(coco.getImgIds())
    known_cats = set(coco.getCatIds())
    for det in detections:
        if det.get("image_id") not in known_images or det.get("category_id") not in known_cats:
            raise InputError(
                f"detection {det} names an image or category that the ground truth does not have"
            )
    classes = voc_ap(coco, detections)
    with_gt = [c.ap for c in classes if c.num_gt > 0]
    return Metrics(
        **coco_stats(coco, detections),
        voc_ap50=float(np.mean(with_gt)) if with_gt else float("nan"),
        voc_ap50_per_class={c.name: c.ap for c in classes},
        num_images=len(known_images),
        num_detections=len(detections),
        classes=classes,
    )


def match_categories(model_categories: list[dict], gt_categories: list[dict]) -> dict[int, int]:
    """Detector label (1-based) -> ground-truth category id, by class name.

    A one-class detector on one-class ground truth is matched whatever the names (with a
    warning when they differ); otherwise labels whose name the ground truth lacks are dropped,
    and no common name at all is an InputError.
    """
    if len(model_categories) == 1 and len(gt_categories) == 1:
        if model_categories[0]["name"] != gt_categories[0]["name"]:
            log.warning(
                "detector class %r scored as ground-truth class %r",
                model_categories[0]["name"],
                gt_categories[0]["name"],
            )
        return {1: int(gt_categories[0]["id"])}
    by_name = {c["name"]: int(c["id"]) for c in gt_categories}
    mapping = {k: by_name[c["name"]] for k, c in enumerate(model_categories, start=1) if c["name"] in by_name}
    if not mapping:
        raise InputError(
            f"the detector's classes {[c['name'] for c in model_categories]} share no name with the "
            f"ground truth's {[c['name'] for c in gt_categories]}"
        )
    unmatched = [c["name"] for c in model_categories if c["name"] not in by_name]
    if unmatched:
        log.warning("detector classes %s are not in the ground truth; their detections are dropped", unmatched)
    return mapping


def _set_score_threshold(model: nn.Module, threshold: float) -> None:
    # SSD and RetinaNet keep the threshold on the model, Faster R-CNN on its box head.
    for holder in (model, getattr(model, "roi_heads", None)):
        if holder is not None and hasattr(holder, "score_thresh"):
            holder.score_thresh = threshold


@torch.no_grad()
def predict(
    model: nn.Module,
    coco: CocoSet,
    label_to_category: dict[int, int],
    *,
    device: torch.device,
    score_threshold: float = 0.001,
    batch_size: int = 4,
    image_ids: Sequence[int] | None = None,
) -> list[dict]:
    """COCO-format detections of ``model`` on the images of ``coco`` (boxes in the original
    image's pixels: the model resizes internally and maps its boxes back)."""
    model = unwrap(model)
    was_training = model.training
    model.eval().to(device)
    _set_score_threshold(model, score_threshold)
    ids = list(coco.image_ids if image_ids is None else image_ids)
    detections: list[dict] = []
    try:
        for start in range(0, len(ids), batch_size):
            batch = ids[start : start + batch_size]
            images = [
                torch.from_numpy(coco.read_image(i)).permute(2, 0, 1).to(device, torch.float32).div_(255.0) for i in batch
            ]
            for image_id, out in zip(batch, model(images)):
                boxes = out["boxes"].float().cpu().numpy()
                for (x0, y0, x1, y1), score, label in zip(boxes, out["scores"].tolist(), out["labels"].tolist()):
                    if score < score_threshold or label not in label_to_category:
                        continue
                    xywh = (x0, y0, x1 - x0, y1 - y0)
                    detections.append(
                        {
                            "image_id": int(image_id),
                            "category_id": label_to_category[label],
                            "bbox": [round(float(v), 2) for v in xywh],
                            "score": round(float(score), 5),
                        }
                    )
    finally:
        model.train(was_training)
    return detections


def evaluate(
    model_or_ckpt: nn.Module | str | Path,
    coco_json: str | Path,
    images_root: str | Path | None = None,
    score_threshold: float = 0.001,
    out_dir: str | Path | None = None,
    *,
    categories: list[dict] | None = None,
    device: str | torch.device = "auto",
    batch_size: int = 4,
    preview: int = 0,
    preview_min_score: float = 0.3,
    preview_max_boxes: int = 10,
    preview_columns: int = 2,
    skip_unreadable: bool = False,
    image_size: int | None = None,
) -> Metrics:
    """Evaluate a detector (a module with its ``categories`` in label order, or a checkpoint
    path) on a COCO file, at ``image_size`` (default: the size it was built or trained at; a
    module's own size is restored afterwards).

    Every ground-truth image is scored: an image file that does not decode is an InputError
    naming it, unless ``skip_unreadable``, which leaves such images (and their boxes) out of
    the ground truth and lists them in ``Metrics.skipped`` and metrics.json.

    With ``out_dir``: writes ``detections.json``, ``metrics.json``, ``pr_curve.png`` and, for
    ``preview`` > 0, ``preview.png`` (predictions beside ground truth for that many images, the
    ``preview_max_boxes`` best scoring at least ``preview_min_score`` each).
    """
    if isinstance(model_or_ckpt, nn.Module):
        if categories is None:
            raise InputError("evaluating a model object needs its categories (in label order)")
        model = model_or_ckpt
    else:
        model, meta = load_detector(model_or_ckpt)
        categories = meta.categories
    coco = load_coco(coco_json, images_root)
    skipped: list[str] = []
    if skip_unreadable:
        coco, skipped = without_unreadable(coco)
    mapping = match_categories(categories, coco.categories)
    dev = resolve_device(device)
    try:
        with inference_size(model, image_size):
            detections = predict(model, coco, mapping, device=dev, score_threshold=score_threshold, batch_size=batch_size)
    except InputError as err:
        raise InputError(
            f"{err}. Every ground-truth image is scored, so this one cannot be left out silently: fix or "
            "remove the file, or pass --skip-unreadable to score the others and report how many were skipped"
        ) from None
    metrics = evaluate_detections(coco, detections)
    metrics.skipped = skipped
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "detections.json", detections)
        summary = {
            "metrics": metrics.to_dict(),
            "ground_truth": str(coco.source),
            "score_threshold": score_threshold,
            "image_size": image_size,  # None: the detector's own
            "checkpoint": None if isinstance(model_or_ckpt, nn.Module) else str(model_or_ckpt),
            "skipped_unreadable": skipped,
        }
        atomic_write_json(out / "metrics.json", summary)
        plot_precision_recall(metrics, out / "pr_curve.png")
        if preview > 0:
            names = {c["id"]: c["name"] for c in coco.categories}
            draw_preview(
                coco, detections, out / "preview.png", count=preview, names=names,
                min_score=preview_min_score, max_boxes=preview_max_boxes, columns=preview_columns,
            )
    return metrics


def compare_metrics(metrics: dict[str, Any], baseline: dict[str, Any]) -> list[dict[str, Any]]:
    """Two detectors' scores (``Metrics.to_dict()`` of each, on the same ground truth) side by
    side: one row per score (per-class VOC AP@0.5 as ``voc_ap50: NAME``) with ``metric``,
    ``value``, ``baseline`` and ``difference`` (value - baseline; None where either is None)."""

    a, b = _flat_metrics(metrics), _flat_metrics(baseline)
    rows = []
    for name in [*a, *(k for k in b if k not in a)]:
        value, base = a.get(name), b.get(name)
        numeric = isinstance(value, (int, float)) and isinstance(base, (int, float))
        rows.append({"metric": name, "value": value, "baseline": base, "difference": value - base if numeric else None})
    return rows


def _flat_metrics(d: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in d.items() if k != "voc_ap50_per_class"}
    out.update({f"voc_ap50: {name}": ap for name, ap in d.get("voc_ap50_per_class", {}).items()})
    return out


def mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof 1) of ``values``; sd None for a single value, both
    None for none."""
    if not values:
        return None, None
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else None


def compare_metric_sets(metrics: Sequence[dict[str, Any]], baselines: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Several runs of two detectors (``Metrics.to_dict()`` of each, on the same ground truth),
    e.g. one checkpoint per training seed on each side: one row per score with the mean and
    sample standard deviation of each side (``value_mean``, ``value_sd``, ``baseline_mean``,
    ``baseline_sd``; sd None for a single run) and of the difference.

    With as many runs on both sides the difference is **paired**, run i against baseline run i
    (give them in the same seed order: same real images, same seed), and ``difference_sd`` is the
    sd of the per-pair differences (``differences`` lists them). Otherwise it is the difference
    of the means, with its standard error ``sqrt(sd_a^2/n_a + sd_b^2/n_b)`` as
    ``difference_sd`` (None when a side has one run). Runs lacking a score (None) are left out
    of that score's statistics; ``n`` and ``n_baseline`` count those used.
    """
    if not metrics or not baselines:
        raise InputError("comparing needs at least one run on each side")
    a, b = [_flat_metrics(m) for m in metrics], [_flat_metrics(m) for m in baselines]
    names: list[str] = []
    for d in (*a, *b):
        names += [k for k in d if k not in names]
    paired = len(a) == len(b)
    rows = []
    for name in names:
        number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
        values = [d[name] for d in a if number(d.get(name))]
        base = [d[name] for d in b if number(d.get(name))]
        value_mean, value_sd = mean_sd(values)
        base_mean, base_sd = mean_sd(base)
        row = {"metric": name, "n": len(values), "value_mean": value_mean, "value_sd": value_sd,
               "n_baseline": len(base), "baseline_mean": base_mean, "baseline_sd": base_sd, "paired": paired,
               "difference_mean": None, "difference_sd": None}
        if paired:
            diffs = [x[name] - y[name] for x, y in zip(a, b) if number(x.get(name)) and number(y.get(name))]
            row["differences"] = diffs
            row["difference_mean"], row["difference_sd"] = mean_sd(diffs)
        elif values and base:
            row["difference_mean"] = value_mean - base_mean
            if value_sd is not None and base_sd is not None:
                row["difference_sd"] = math.sqrt(value_sd**2 / len(values) + base_sd**2 / len(base))
        rows.append(row)
    return rows


def without_unreadable(coco: CocoSet) -> tuple[CocoSet, list[str]]:
    """``coco`` without the images whose files do not decode (and without their boxes), and the
    paths of those files."""
    from synthgen.imageio import read_image

    bad = {i for i in coco.image_ids if read_image(coco.image_path(i)) is None}
    if not bad:
        return coco, []
    skipped = [str(coco.image_path(i)) for i in sorted(bad)]
    if len(bad) == len(coco.image_ids):
        raise InputError(f"none of the {len(bad)} images of {coco.source} decodes, e.g. {skipped[0]}: nothing to evaluate")
    dataset = copy.copy(coco.coco.dataset)
    dataset["images"] = [im for im in dataset["images"] if int(im["id"]) not in bad]
    dataset["annotations"] = [a for a in dataset["annotations"] if int(a["image_id"]) not in bad]
    for image_path in skipped[:5]:
        log.warning("skipped unreadable ground-truth image %s", image_path)
    return CocoSet(coco_from_dict(dataset), coco.images_root, coco.source), skipped


def plot_precision_recall(metrics: Metrics, path: Path) -> None:
    """One precision-recall curve per class (VOC matching at IoU 0.5), with its envelope."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    fig = Figure(figsize=(6, 5), dpi=100)
    ax = fig.add_subplot()
    for cls in metrics.classes:
        if cls.num_gt == 0 or len(cls.recall) == 0:
            continue
        envelope = np.maximum.accumulate(cls.precision[::-1])[::-1]
        (line,) = ax.plot(cls.recall, envelope, label=f"{cls.name}: AP50 {cls.ap:.3f}")
        ax.plot(cls.recall, cls.precision, color=line.get_color(), alpha=0.3, linewidth=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"IoU 0.5: mean AP {metrics.voc_ap50:.3f} (VOC) / {metrics.ap50:.3f} (COCO)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", fontsize="small")
    ax.grid(alpha=0.3)
    fig.savefig(path)


def draw_preview(
    coco: CocoSet,
    detections: list[dict],
    path: Path,
    *,
    count: int = 4,
    names: dict[int, str],
    min_score: float = 0.3,
    max_boxes: int = 10,
    columns: int = 2,
) -> None:
    """Ground truth beside predictions (the ``max_boxes`` best scoring at least ``min_score``)
    for the first ``count`` images, as a grid of ``columns`` image pairs per row."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    ids = coco.image_ids[:count]
    by_image: dict[int, list[dict]] = {}
    for det in detections:
        if det["score"] >= min_score:
            by_image.setdefault(det["image_id"], []).append(det)
    columns = max(1, min(columns, len(ids)))
    rows = math.ceil(len(ids) / columns)
    fig = Figure(figsize=(5 * 2 * columns, 4.5 * rows), dpi=80)
    for number, image_id in enumerate(ids):
        image = coco.read_image(image_id)
        truth = [
            (a["bbox"], names.get(a["category_id"], "?"), "grey" if a.get("iscrowd") else "lime")
            for a in coco.coco.imgToAnns.get(image_id, [])
        ]
        best = sorted(by_image.get(image_id, []), key=lambda d: -d["score"])[:max_boxes]
        predicted = [(d["bbox"], f"{names.get(d['category_id'], '?')} {d['score']:.2f}", "red") for d in best]
        panels = (("ground truth", truth), (f"top {max_boxes} predictions >= {min_score:g}", predicted))
        for col, (title, boxes) in enumerate(panels):
            ax = fig.add_subplot(rows, 2 * columns, 2 * number + col + 1)
            ax.imshow(image)
            for (x, y, w, h), text, colour in boxes:
                ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=colour, linewidth=1.5))
                ax.text(x, y, text, color=colour, fontsize=7, va="bottom")
            ax.set_title(f"image {image_id}: {title}", fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
