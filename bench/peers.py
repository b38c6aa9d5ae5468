"""The detectors a user would pick instead of training one, scored like synthgen's (issue 18, item 4).

No training at all, on the test splits of ``bench/reproduce_paper.py``:

* ``hog`` (pedestrians): OpenCV's HOG + linear SVM people detector (Dalal & Triggs), every
  window with an SVM margin above ``--hog-hit-threshold`` kept (no grouping), then non-maximum
  suppression at IoU 0.5; the score is the SVM margin. Its box is the 64x128 detection window,
  margins included, as OpenCV returns it.
* ``haar`` (faces): OpenCV's frontal-face Haar cascade (``haarcascade_frontalface_default.xml``
  of the opencv-python 4.x wheel), ``detectMultiScale3`` with reject levels: the score is the
  last stage's weight, so the whole precision-recall curve is scored.
* ``mtcnn`` (faces, only where ``facenet-pytorch`` imports): MTCNN with the weights bundled in
  that package (trained on WIDER FACE train and CelebA: far more real faces than any few-shot
  set here), default thresholds and 20-px minimum face, every face kept; the score is ONet's
  probability.

Scoring is :func:`synthgen.evaluation.evaluate_detections` (pycocotools AP, AP50 and VOC AP@0.5),
the same as ``synthgen evaluate``. ``OUT/peers.json`` holds the metrics, the settings and the
wall time per detector; ``OUT/<detector>/detections.json`` the detections::

    python bench/peers.py --out /tmp/peers --data ../shared/data --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reproduce_paper as paper  # noqa: E402  (the same test splits)

Detector = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # BGR image -> (N x 4 xyxy boxes, N scores)


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> tuple[np.ndarray, np.ndarray]:
    import torch
    from torchvision.ops import nms

    if len(boxes) == 0:
        return boxes.reshape(0, 4), scores
    keep = nms(torch.as_tensor(boxes, dtype=torch.float32), torch.as_tensor(scores, dtype=torch.float32), iou).numpy()
    return boxes[keep], scores[keep]


def hog_detector(hit_threshold: float) -> Detector:
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def detect(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rects, weights = hog.detectMultiScale(
            image, hitThreshold=hit_threshold, winStride=(8, 8), padding=(8, 8), scale=1.05, groupThreshold=0
        )
        if len(rects) == 0:
            return np.zeros((0, 4)), np.zeros(0)
        boxes = np.asarray(rects, dtype=np.float64)
        boxes[:, 2:] += boxes[:, :2]
        return _nms(boxes, np.asarray(weights, dtype=np.float64).reshape(-1), 0.5)

    return detect


def haar_detector(min_neighbors: int) -> Detector:
    path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise SystemExit(f"OpenCV's Haar cascade {path} is missing: opencv-python 4.x wheels ship it, OpenCV 5 does not")

    def detect(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        rects, _, weights = cascade.detectMultiScale3(
            grey, scaleFactor=1.1, minNeighbors=min_neighbors, minSize=(8, 8), outputRejectLevels=True
        )
        if len(rects) == 0:
            return np.zeros((0, 4)), np.zeros(0)
        boxes = np.asarray(rects, dtype=np.float64)
        boxes[:, 2:] += boxes[:, :2]
        return boxes, np.asarray(weights, dtype=np.float64).reshape(-1)

    return detect


def mtcnn_detector() -> Detector | None:
    try:
        from facenet_pytorch import MTCNN
    except ImportError:
        return None
    mtcnn = MTCNN(keep_all=True, device="cpu")

    def detect(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from PIL import Image

        boxes, probs = mtcnn.detect(Image.fromarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)))
        if boxes is None:
            return np.zeros((0, 4)), np.zeros(0)
        return np.asarray(boxes, dtype=np.float64), np.asarray(probs, dtype=np.float64)

    return detect


def run(name: str, detect: Detector, test: Path, out: Path) -> dict:
    from synthgen.evaluation import evaluate_detections

    data = json.loads(test.read_text())
    category = data["categories"][0]["id"]
    detections = []
    started = time.perf_counter()
    for im in data["images"]:
        image = cv2.imread(str(test.parent / im["file_name"]), cv2.IMREAD_COLOR)
        if image is None:
            raise SystemExit(f"cannot read {im['file_name']} of {test}")
        boxes, scores = detect(image)
        for (x0, y0, x1, y1), score in zip(boxes.tolist(), scores.tolist()):
            detections.append({"image_id": im["id"], "category_id": category, "bbox": [x0, y0, x1 - x0, y1 - y0], "score": score})
    seconds = time.perf_counter() - started
    metrics = evaluate_detections(data, detections).to_dict()
    (out / name).mkdir(parents=True, exist_ok=True)
    (out / name / "detections.json").write_text(json.dumps(detections))
    print(f"{name} on {test}: AP50 {metrics['ap50']:.4f}, AP {metrics['ap']:.4f}, VOC AP@0.5 {metrics['voc_ap50']:.4f} "
          f"({len(data['images'])} images, {seconds:.0f} s)", flush=True)
    return {"test": str(test), "images": len(data["images"]), "detections": len(detections), "seconds": seconds,
            "metrics": {k: metrics[k] for k in ("ap", "ap50", "ap75", "voc_ap50", "ar100")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=paper.DATA, help="The shared data folder.")
    parser.add_argument("--detectors", default="hog,haar,mtcnn")
    parser.add_argument("--hog-hit-threshold", type=float, default=-0.5, help="Lowest SVM margin kept (OpenCV's default: 0).")
    parser.add_argument("--haar-min-neighbors", type=int, default=3, help="OpenCV's default: 3.")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    paper.DATA = args.data
    if not (args.out / "splits" / "pedestrians" / "test.json").is_file():
        paper.prepare_pedestrians(args.out)
    faces_test = args.data / "wider_face" / "val" / "annotations.json"  # reproduce_paper's face test split
    record = args.out / "peers.json"  # detectors run earlier (another --detectors) are kept
    results: dict[str, dict] = json.loads(record.read_text()) if record.is_file() else {}
    wanted = args.detectors.split(",")
    if "hog" in wanted:
        results["hog"] = run("hog", hog_detector(args.hog_hit_threshold), args.out / "splits" / "pedestrians" / "test.json", args.out)
        results["hog"]["settings"] = {"hit_threshold": args.hog_hit_threshold, "win_stride": 8, "scale": 1.05, "nms_iou": 0.5}
    if "haar" in wanted:
        results["haar"] = run("haar", haar_detector(args.haar_min_neighbors), faces_test, args.out)
        results["haar"]["settings"] = {"min_neighbors": args.haar_min_neighbors, "scale_factor": 1.1, "min_size": 8}
    if "mtcnn" in wanted:
        detect = mtcnn_detector()
        if detect is None:
            print("mtcnn: facenet-pytorch is not installed (pip install --no-deps facenet-pytorch==2.6.0, plus requests and tqdm); skipped")
        else:
            results["mtcnn"] = run("mtcnn", detect, faces_test, args.out)
            results["mtcnn"]["settings"] = {"package": "facenet-pytorch 2.6.0", "min_face_size": 20, "thresholds": [0.6, 0.7, 0.7]}
    record.write_text(json.dumps(results, indent=2))
    print(f"written {record}")


if __name__ == "__main__":
    main()
