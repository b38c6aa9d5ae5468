"""SOD-MTGAN on the small faces of WIDER FACE (issue 16), at a size two shared CPU cores can run.

A baseline face detector (any synthgen detector checkpoint; docs/results-refine.md says which
was used and how it was trained) proposes regions on ``wider_face/train``; the regions are mined
once (``regions`` stage) and shared by every condition, which then trains its own G and D on
them (``train`` stage) with the paper's objective or one of its ablations (the paper's Table 3,
as far as they fit):

* ``full``: adversarial + classification + regression + MSE;
* ``no-regression``: without the regression branch (refinement keeps the baseline's boxes);
* ``no-adversarial``: without the adversarial loss;
* ``generator-alone``: G trained by the pixel loss alone, nothing of D reaches it (D still
  learns to score its output, so there is something to re-score with).

``evaluate`` runs the baseline once on ``wider_face/val`` and refines its detections with every
trained condition: COCO AP, AP50, AP_small / medium / large of each beside the baseline's, and
the refinement's time per image (measured in the same process, after the baseline's).

    python bench/mtgan_wider.py regions --detector CKPT --work DIR
    python bench/mtgan_wider.py train full --work DIR [--steps N --pretrain-steps N --seed S]
    python bench/mtgan_wider.py evaluate --detector CKPT --work DIR [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

WIDER = Path("/work/shared/data/wider_face")
CONDITIONS = {
    "full": {},
    "no-regression": {"regression": False},
    "no-adversarial": {"w_adv": 0.0},
    "generator-alone": {"w_adv": 0.0, "w_cls": 0.0, "w_reg": 0.0},
}


def _config(args, condition: str, **extra):
    from synthgen.refine.train import MtganTrainConfig

    return MtganTrainConfig(
        out=args.work / "runs" / f"{condition}-s{args.seed}", detector=args.detector, data=args.train,
        hr_size=args.hr_size, proposals=args.proposals, pretrain_steps=args.pretrain_steps, steps=args.steps,
        batch_size=args.batch_size, seed=args.seed, device="cpu", sample_every=max(1, args.steps // 2),
        checkpoint_every=50, progress=False, **{**CONDITIONS[condition], **extra},
    )


def regions(args) -> None:
    from synthgen.refine import checkpoint as ckpt
    from synthgen.refine.train import prepare_regions

    started = time.perf_counter()
    found, meta = prepare_regions(_config(args, "full"), torch.device("cpu"))
    settings = _config(args, "full").settings()
    ckpt.save(args.work / "regions.pt", {"regions": found.to_state(), "settings": {"detector": str(args.detector), **{
        k: settings[k] for k in ("data", "hr_size", "context", "proposals", "proposal_score")}}}, ckpt.REGIONS_FORMAT)
    print(json.dumps({"regions": len(found), "objects": len(found.positives), "background": len(found.negatives),
                      "small_objects": int(((found.labels > 0) & found.small).sum()),
                      "seconds": round(time.perf_counter() - started, 1)}))


def train(args) -> None:
    from synthgen.refine import checkpoint as ckpt
    from synthgen.refine.regions import RegionSet
    from synthgen.refine.train import train_mtgan

    found = RegionSet.from_state(ckpt.load(args.work / "regions.pt", ckpt.REGIONS_FORMAT)["regions"])
    config = _config(args, args.condition)
    config.resume = (config.out / ckpt.FILE).is_file()
    result = train_mtgan(config, regions=found)
    last = result.history[-1] if result.history else {}
    print(json.dumps({"condition": args.condition, "seed": args.seed, "steps": result.steps,
                      "minutes": round(result.seconds / 60, 1), "last": last}))


def evaluate(args) -> None:
    from synthgen.detectors import load_detector
    from synthgen.evaluation import evaluate_detections, match_categories, predict
    from synthgen.refine.apply import Refiner, refine_coco_detections
    from synthgen.training.coco import load_coco

    model, meta = load_detector(args.detector)
    coco = load_coco(args.test)
    mapping = match_categories(meta.categories, coco.categories)
    started = time.perf_counter()
    detections = predict(model, coco, mapping, device=torch.device("cpu"), score_threshold=0.001, batch_size=4)
    detect = time.perf_counter() - started
    keys = ("ap", "ap50", "ap_small", "ap_medium", "ap_large", "ar100")
    base = evaluate_detections(coco, detections).to_dict()
    rows = [{"condition": "baseline", **{k: base[k] for k in keys}, "seconds_per_image": detect / len(coco.image_ids)}]
    print(json.dumps(rows[-1]))
    inverse = {cat: label for label, cat in mapping.items()}
    for run in sorted((args.work / "runs").iterdir()):
        if not (run / "last.pt").is_file():
            continue
        for score in args.scores:
            refiner = Refiner.load(run, "cpu", score)
            started = time.perf_counter()
            refined = refine_coco_detections(refiner, coco, detections, inverse, top=args.top)
            seconds = time.perf_counter() - started
            metrics = evaluate_detections(coco, refined).to_dict()
            rows.append({"condition": run.name, "score": score, "step": refiner.step, **{k: metrics[k] for k in keys},
                         "seconds_per_image": seconds / len(coco.image_ids)})
            print(json.dumps(rows[-1]))
    result = {"detector": str(args.detector), "test": str(args.test), "images": len(coco.image_ids), "top": args.top,
              "torch_threads": torch.get_num_threads(), "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=("regions", "train", "evaluate"))
    parser.add_argument("condition", nargs="?", choices=tuple(CONDITIONS), default="full")
    parser.add_argument("--detector", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--train", type=Path, default=WIDER / "train" / "annotations.json")
    parser.add_argument("--test", type=Path, default=WIDER / "val" / "annotations.json")
    parser.add_argument("--hr-size", type=int, default=64)
    parser.add_argument("--proposals", type=int, default=16)
    parser.add_argument("--pretrain-steps", type=int, default=200)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top", type=int, default=100)
    parser.add_argument("--scores", type=lambda s: s.split(","), default=["discriminator", "product"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    {"regions": regions, "train": train, "evaluate": evaluate}[args.stage](args)


if __name__ == "__main__":
    main()
