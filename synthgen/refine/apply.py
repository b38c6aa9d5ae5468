"""Refining a detector's detections with a trained SOD-MTGAN run.

For each image, the baseline's ``top`` best detections (the regions it proposes) are cropped as
in training (:mod:`synthgen.refine.regions`: the box with context, the 4x down-sampled crop),
super-resolved by G, and scored by D's heads: the new score of a detection is D's probability
of the detection's class on the super-resolved crop (``score="discriminator"``, the paper's
rule) or the geometric mean of that and the baseline's score (``score="product"``); the new
box is the proposal moved by D's offsets for that class (runs trained without the regression
branch keep the baseline's box). Class and count are kept: every refined detection is one of
the baseline's, re-scored and re-boxed; the baseline's detections below its ``top`` are dropped
(COCO scores at most 100 per image).

:func:`evaluate_refined` scores the baseline and its refinement on one COCO file
(``synthgen evaluate --refine``); :func:`refine_folder` writes refined detections for a folder
of images (``synthgen refine``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from synthgen.errors import InputError
from synthgen.refine import checkpoint as ckpt
from synthgen.refine.networks import build_networks
from synthgen.refine.regions import BOX_CODER, crop_regions, image_tensor, low_resolution

SCORES = ("discriminator", "product")


class Refiner:
    """A trained run's G and D (evaluation mode) on ``device``; :meth:`refine` re-scores and
    re-boxes one image's detections."""

    def __init__(self, state: dict[str, Any], device: torch.device | str = "cpu", score: str = "discriminator") -> None:
        if score not in SCORES:
            raise InputError(f"unknown refined score {score!r}; choose one of: {', '.join(SCORES)}")
        self.architecture = dict(state["architecture"])
        self.categories = list(state["baseline"]["categories"])
        self.step = int(state["step"])
        self.score = score
        self.device = torch.device(device)
        generator, discriminator = build_networks(self.architecture)
        generator.load_state_dict(state["generator"])
        discriminator.load_state_dict(state["discriminator"])
        self.generator, self.discriminator = generator.to(self.device).eval(), discriminator.to(self.device).eval()

    @classmethod
    def load(cls, run: str | Path, device: torch.device | str = "cpu", score: str = "discriminator") -> Refiner:
        """The refiner of a run folder (or its last.pt)."""
        return cls(ckpt.load(run), device, score)

    def check_detector(self, categories: list[dict[str, Any]], where: str) -> None:
        """InputError unless the detector at ``where`` has the classes this run was trained for."""
        if [c["name"] for c in categories] != [c["name"] for c in self.categories]:
            raise InputError(
                f"the SOD-MTGAN run was trained for a detector of the classes {[c['name'] for c in self.categories]}, "
                f"but {where} detects {[c['name'] for c in categories]}: refine the detector it was trained with"
            )

    @torch.no_grad()
    def refine(
        self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray, batch_size: int = 64
    ) -> tuple[np.ndarray, np.ndarray]:
        """New ``(boxes, scores)`` for the detections ``boxes`` (xyxy pixels, ``(N, 4)``),
        ``labels`` (the detector's labels 1..K) and ``scores`` of the RGB uint8 ``image``; same
        order and count."""
        if len(boxes) == 0:
            return np.zeros((0, 4), dtype=np.float32), np.zeros(0, dtype=np.float32)
        if int(np.min(labels)) < 1 or int(np.max(labels)) > len(self.categories):
            raise InputError(f"detection labels must be 1..{len(self.categories)} (the run's classes), got {sorted(set(labels.tolist()))}")
        pixels = image_tensor(image).to(self.device)
        proposals = torch.as_tensor(boxes, dtype=torch.float32, device=self.device)
        label_t = torch.as_tensor(labels, dtype=torch.int64, device=self.device)
        new_boxes, probabilities = [], []
        for start in range(0, len(proposals), batch_size):
            chunk = proposals[start : start + batch_size]
            chunk_labels = label_t[start : start + batch_size]
            hr = crop_regions(pixels, chunk, int(self.architecture["hr_size"]), float(self.architecture["context"]))
            _, cls, reg = self.discriminator(self.generator(low_resolution(hr)))
            probabilities.append(cls.softmax(1).gather(1, chunk_labels[:, None]).squeeze(1))
            if self.architecture["regression"]:
                deltas = reg[torch.arange(len(chunk), device=self.device), chunk_labels - 1]
                moved = BOX_CODER.decode_single(deltas, chunk)
                height, width = image.shape[:2]
                moved[:, 0::2] = moved[:, 0::2].clamp(0, width)
                moved[:, 1::2] = moved[:, 1::2].clamp(0, height)
                new_boxes.append(moved)
            else:
                new_boxes.append(chunk)
        probability = torch.cat(probabilities).cpu().numpy().astype(np.float32)
        if self.score == "product":
            probability = np.sqrt(probability * np.asarray(scores, dtype=np.float32))
        return torch.cat(new_boxes).cpu().numpy().astype(np.float32), probability


def _by_image(detections: Sequence[dict]) -> dict[int, list[dict]]:
    grouped: dict[int, list[dict]] = {}
    for det in detections:
        grouped.setdefault(int(det["image_id"]), []).append(det)
    return grouped


def refine_coco_detections(
    refiner: Refiner, coco, detections: Sequence[dict], category_to_label: dict[int, int], top: int = 100, progress=None
) -> list[dict]:
    """The COCO-format ``detections`` of the images of ``coco`` (a CocoSet) refined: per image
    its ``top`` best, re-scored and re-boxed, in the same format plus ``baseline_score`` (the
    detection's score before refinement); ``progress`` is called per image."""
    if top < 1:
        raise InputError(f"--refine-top {top}: refine at least 1 detection per image")
    refined: list[dict] = []
    grouped = _by_image(detections)
    for image_id in coco.image_ids:
        best = sorted(grouped.get(image_id, []), key=lambda d: -d["score"])[:top]
        if best:
            boxes = np.array([d["bbox"] for d in best], dtype=np.float32)
            boxes[:, 2:] += boxes[:, :2]
            labels = np.array([category_to_label[int(d["category_id"])] for d in best])
            scores = np.array([d["score"] for d in best], dtype=np.float32)
            new_boxes, new_scores = refiner.refine(coco.read_image(image_id), boxes, labels, scores)
            for det, (x0, y0, x1, y1), score in zip(best, new_boxes.tolist(), new_scores.tolist()):
                refined.append({
                    **{k: v for k, v in det.items() if k not in ("bbox", "score", "baseline_score")},
                    "bbox": [round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
                    "score": round(float(score), 5),
                    "baseline_score": det["score"],
                })
        if progress is not None:
            progress()
    return refined


@dataclass
class RefinedEvaluation:
    """The refined and the baseline's scores on one COCO file, and the time they took."""

    metrics: Any  # synthgen.evaluation.Metrics
    baseline: Any
    images: int
    detect_seconds: float  # the baseline detector, all images
    refine_seconds: float  # G and D over the top regions, all images (image reading included)

    @property
    def refine_seconds_per_image(self) -> float:
        return self.refine_seconds / max(1, self.images)


def evaluate_refined(
    detector: str | Path,
    run: str | Path,
    data: str | Path,
    images_root: str | Path | None = None,
    out_dir: str | Path | None = None,
    *,
    score_threshold: float = 0.001,
    top: int = 100,
    score: str = "discriminator",
    device: str | torch.device = "auto",
    batch_size: int = 4,
    show_progress: bool = False,
) -> RefinedEvaluation:
    """Score the detector at ``detector`` on ``data`` as it is and refined by ``run``.

    With ``out_dir``: ``detections.json`` / ``metrics.json`` (refined), ``baseline/`` (the same for
    the detector alone) and ``comparison.json`` (every score side by side, with the difference).
    """
    from synthgen.cache import atomic_write_json
    from synthgen.detectors import load_detector, resolve_device
    from synthgen.evaluation import compare_metrics, evaluate_detections, match_categories, predict
    from synthgen.progress import progress_bar
    from synthgen.training.coco import load_coco

    dev = resolve_device(device)
    refiner = Refiner.load(run, dev, score)
    model, meta = load_detector(detector)
    refiner.check_detector(meta.categories, str(detector))
    coco = load_coco(data, images_root)
    mapping = match_categories(meta.categories, coco.categories)
    started = time.perf_counter()
    baseline_detections = predict(model, coco, mapping, device=dev, score_threshold=score_threshold, batch_size=batch_size)
    detect_seconds = time.perf_counter() - started
    started = time.perf_counter()
    with progress_bar("images", show_progress) as bar:
        task = bar.add_task("refine", total=len(coco.image_ids))
        refined = refine_coco_detections(
            refiner, coco, baseline_detections, {cat: label for label, cat in mapping.items()}, top,
            progress=lambda: bar.advance(task),
        )
    refine_seconds = time.perf_counter() - started
    metrics = evaluate_detections(coco, refined)
    baseline = evaluate_detections(coco, baseline_detections)
    if out_dir is not None:
        out = Path(out_dir)
        common = {"ground_truth": str(coco.source), "score_threshold": score_threshold, "checkpoint": str(detector)}
        atomic_write_json(out / "baseline" / "detections.json", baseline_detections)
        atomic_write_json(out / "baseline" / "metrics.json", {"metrics": baseline.to_dict(), **common})
        atomic_write_json(out / "detections.json", refined)
        atomic_write_json(out / "metrics.json", {
            "metrics": metrics.to_dict(), **common, "refine": str(run), "refine_step": refiner.step, "refine_top": top,
            "refine_score": score, "detect_seconds": detect_seconds, "refine_seconds": refine_seconds,
            "refine_seconds_per_image": refine_seconds / max(1, len(coco.image_ids)),
        })
        atomic_write_json(out / "comparison.json", {
            "checkpoint": f"{detector} refined by {run}", "baseline": str(detector), "ground_truth": str(coco.source),
            "rows": compare_metrics(metrics.to_dict(), baseline.to_dict()),
        })
    return RefinedEvaluation(metrics, baseline, len(coco.image_ids), detect_seconds, refine_seconds)


def folder_as_coco(folder: Path, categories: list[dict[str, Any]]):
    """The images of ``folder`` (recursively, sorted) as a CocoSet without boxes: ids 1..N."""
    from synthgen.imageio import is_image_path
    from synthgen.training.coco import CocoSet, coco_from_dict

    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; expected a folder of images to detect objects in")
    files = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file() and is_image_path(p))
    if not files:
        raise InputError(f"{folder} holds no image files (.jpg, .png, ...)")
    dataset = {
        "images": [{"id": number, "file_name": str(name)} for number, name in enumerate(files, start=1)],
        "annotations": [],
        "categories": [{"id": int(c["id"]), "name": str(c["name"])} for c in categories],
    }
    return CocoSet(coco_from_dict(dataset), folder, str(folder))


def refine_folder(
    detector: str | Path,
    run: str | Path,
    folder: str | Path,
    out_file: str | Path,
    *,
    score_threshold: float = 0.001,
    top: int = 100,
    score: str = "discriminator",
    device: str | torch.device = "auto",
    batch_size: int = 4,
    show_progress: bool = False,
) -> list[dict]:
    """Detect and refine on every image of ``folder``; write the detections to ``out_file`` as
    ``synthgen evaluate`` writes detections.json (``image_id``, ``category_id`` = the detector's
    category id, ``bbox`` xywh pixels, ``score``), each with the image's ``file_name`` relative to
    ``folder`` (ids number the sorted file names from 1). Returns them."""
    from synthgen.cache import atomic_write_json
    from synthgen.detectors import load_detector, resolve_device
    from synthgen.evaluation import predict
    from synthgen.progress import progress_bar

    dev = resolve_device(device)
    refiner = Refiner.load(run, dev, score)
    model, meta = load_detector(detector)
    refiner.check_detector(meta.categories, str(detector))
    coco = folder_as_coco(Path(folder), meta.categories)
    mapping = {label: int(c["id"]) for label, c in enumerate(meta.categories, start=1)}
    detections = predict(model, coco, mapping, device=dev, score_threshold=score_threshold, batch_size=batch_size)
    with progress_bar("images", show_progress) as bar:
        task = bar.add_task("refine", total=len(coco.image_ids))
        refined = refine_coco_detections(
            refiner, coco, detections, {cat: label for label, cat in mapping.items()}, top, progress=lambda: bar.advance(task)
        )
    for det in refined:
        det["file_name"] = coco.coco.imgs[det["image_id"]]["file_name"]
    atomic_write_json(Path(out_file), refined)
    return refined
