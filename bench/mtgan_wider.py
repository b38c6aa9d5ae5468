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

``baseline`` runs the baseline once on ``wider_face/val`` and keeps its detections; ``refine``
refines them with one trained condition (one process per condition, so they can run side by
side); ``report`` puts COCO AP, AP50, AP_small / medium / large and AR100 of each beside the
baseline's, with the time per image of the baseline (detection) and of each refinement (G and D
over the top regions, image reading included).

    python bench/mtgan_wider.py regions --detector CKPT --work DIR
    python bench/mtgan_wider.py train full --detector CKPT --work DIR [--steps N --pretrain-steps N --seed S]
    python bench/mtgan_wider.py baseline --detector CKPT --work DIR
    python bench/mtgan_wider.py refine full --detector CKPT --work DIR
    python bench/mtgan_wider.py report --work DIR --json OUT.json
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

import numpy as np  # noqa: E402
import torch  # noqa: E402

WIDER = Path("/work/shared/data/wider_face")
KEYS = ("ap", "ap50", "ap_small", "ap_medium", "ap_large", "ar100")
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
        hr_size=args.hr_size, channels=args.channels, blocks=args.blocks, refine_blocks=args.refine_blocks, proposals=args.proposals, pretrain_steps=args.pretrain_steps, steps=args.steps,
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


def baseline(args) -> None:
    """The baseline's detections on the test set (kept for the refinements) and its scores."""
    from synthgen.cache import atomic_write_json
    from synthgen.detectors import load_detector
    from synthgen.evaluation import evaluate_detections, match_categories, predict
    from synthgen.training.coco import load_coco

    model, meta = load_detector(args.detector)
    coco = load_coco(args.test)
    mapping = match_categories(meta.categories, coco.categories)
    started = time.perf_counter()
    detections = predict(model, coco, mapping, device=torch.device("cpu"), score_threshold=0.001, batch_size=4)
    seconds = time.perf_counter() - started
    metrics = evaluate_detections(coco, detections).to_dict()
    atomic_write_json(args.work / "baseline_detections.json", detections)
    row = {"condition": "baseline", "detector": str(args.detector), **{k: metrics[k] for k in KEYS},
           "seconds_per_image": seconds / len(coco.image_ids), "images": len(coco.image_ids)}
    atomic_write_json(args.work / "results" / "baseline.json", row)
    print(json.dumps(row))
    # The refinement keeps each image's --top best detections: the baseline cut the same way.
    by_image: dict[int, list[dict]] = {}
    for det in detections:
        by_image.setdefault(det["image_id"], []).append(det)
    kept = [d for dets in by_image.values() for d in sorted(dets, key=lambda d: -d["score"])[: args.top]]
    metrics = evaluate_detections(coco, kept).to_dict()
    row = {"condition": f"baseline-top{args.top}", **{k: metrics[k] for k in KEYS}, "seconds_per_image": row["seconds_per_image"]}
    atomic_write_json(args.work / "results" / f"baseline-top{args.top}.json", row)
    print(json.dumps(row))


def refine(args) -> None:
    """One trained condition's refinement of the baseline's test detections, scored."""
    from synthgen.cache import atomic_write_json
    from synthgen.detectors import load_detector
    from synthgen.evaluation import evaluate_detections, match_categories
    from synthgen.refine.apply import Refiner, refine_coco_detections
    from synthgen.training.coco import load_coco

    _, meta = load_detector(args.detector)
    coco = load_coco(args.test)
    mapping = match_categories(meta.categories, coco.categories)
    detections = json.loads((args.work / "baseline_detections.json").read_text())
    run = args.work / "runs" / f"{args.condition}-s{args.seed}"
    refiner = Refiner.load(run, "cpu", "discriminator")
    refiner.check_detector(meta.categories, str(args.detector))
    started = time.perf_counter()
    refined = refine_coco_detections(refiner, coco, detections, {cat: label for label, cat in mapping.items()}, top=args.top)
    seconds = time.perf_counter() - started
    # Both score rules from one pass: refine(score="product") is sqrt(discriminator x baseline).
    scored = {
        "discriminator": refined,
        "product": [{**d, "score": round(float(np.sqrt(d["score"] * d["baseline_score"])), 5)} for d in refined],
    }
    for score, found in scored.items():
        metrics = evaluate_detections(coco, found).to_dict()
        row = {"condition": args.condition, "seed": args.seed, "score": score, "step": refiner.step, "top": args.top,
               **{k: metrics[k] for k in KEYS}, "seconds_per_image": seconds / len(coco.image_ids)}
        atomic_write_json(args.work / "results" / f"{args.condition}-s{args.seed}-{score}.json", row)
        print(json.dumps(row))


def report(args) -> None:
    """Every result of ``--work`` in one JSON (``--json``) and a markdown table on stdout: one row
    per condition and score rule, mean +- sd over the seeds that were run (their count shown)."""
    from synthgen.evaluation import mean_sd

    rows = [json.loads(p.read_text()) for p in sorted((args.work / "results").glob("*.json"))]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["condition"], r.get("score", "-")), []).append(r)
    order = sorted(groups, key=lambda key: (not key[0].startswith("baseline"), key[0], key[1]))
    summary = []
    for condition, score in order:
        group = groups[(condition, score)]
        seeds = sorted(r.get("seed", 0) for r in group)
        cell = {"condition": condition, "score": score, "seeds": seeds,
                "seconds_per_image": float(np.mean([r["seconds_per_image"] for r in group]))}
        for k in KEYS:
            values = [r[k] for r in group if r[k] is not None and r[k] >= 0]
            cell[k] = list(mean_sd(values)) if values else None
        summary.append(cell)
    if args.json:
        args.json.write_text(json.dumps({"test": str(args.test), "torch_threads": 1, "summary": summary, "rows": rows}, indent=1))

    def fmt(value) -> str:
        if value is None:
            return "-"
        mean, sd = value
        return f"{100 * mean:.1f}" if sd is None else f"{100 * mean:.1f} ± {100 * sd:.1f}"

    print("| condition | refined score | seeds | AP | AP50 | AP_small | AP_medium | AP_large | AR100 | s/image |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for cell in summary:
        values = " | ".join(fmt(cell[k]) for k in KEYS)
        seeds = ",".join(map(str, cell["seeds"])) if not cell["condition"].startswith("baseline") else "-"
        print(f"| {cell['condition']} | {cell['score']} | {seeds} | {values} | {cell['seconds_per_image']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=("regions", "train", "baseline", "refine", "report"))
    parser.add_argument("condition", nargs="?", choices=tuple(CONDITIONS), default="full")
    parser.add_argument("--detector", type=Path)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--train", type=Path, default=WIDER / "train" / "annotations.json")
    parser.add_argument("--test", type=Path, default=WIDER / "val" / "annotations.json")
    parser.add_argument("--hr-size", type=int, default=48)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--refine-blocks", type=int, default=1)
    parser.add_argument("--proposals", type=int, default=16)
    parser.add_argument("--pretrain-steps", type=int, default=100)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    {"regions": regions, "train": train, "baseline": baseline, "refine": refine, "report": report}[args.stage](args)


if __name__ == "__main__":
    main()
