"""DetectorGAN on Penn-Fudan pedestrians at a size two shared CPU cores can run (issue 14).

The paper's pedestrian design, small: labelled images are a seeded half of Penn-Fudan (50 of
100 photos), the other half is the test set; clean images are the person-free COCO128 train
images and ``shared/data/scenes``. One shared pretraining (GAN alone, then the detector alone),
then DetectorGAN, ``no-unroll`` and ``cyclegan`` each continue jointly for the same steps; each
generates the same number of images; the same detector (ssd-mobilenet, ImageNet backbone) is
trained on the real images alone, and on the real images interleaved 1:1 with each method's
images or with pasted Penn-Fudan cut-outs (``synthgen paste``), for the same steps; AP50 on the
held-out half.

Stages (each well under the 5-minute budget of a shared-CPU job, except ``joint detectorgan``
with the defaults; every stage skips work already done in ``--work``)::

    python bench/detectorgan.py data
    python bench/detectorgan.py pretrain
    python bench/detectorgan.py joint detectorgan      # and no-unroll, cyclegan
    python bench/detectorgan.py generate               # inserted images per method + pasted cut-outs
    python bench/detectorgan.py detect real 0          # real | detectorgan | no-unroll | cyclegan | paste; seed
    python bench/detectorgan.py report                 # JSON of every number, sample sheets to docs/img/
    python bench/detectorgan.py all --jobs 2           # every stage, two at a time, then the report

The report adds ``WORK/timing.json`` when present: the one-line output of
``bench/gpu_detectorgan.py --device cpu ... --rounds N`` (phases interleaved in one process, the
fair way to compare step times on a shared CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"  # ../shared/data beside the checkout (--data elsewhere)
METHODS = ("detectorgan", "no-unroll", "acgan", "cyclegan")
CONDITIONS = ("real", *METHODS, "paste")


def _data(args) -> None:
    """Seeded Penn-Fudan split, the clean-image folder, Penn-Fudan train cut-outs for pasting."""
    import cv2

    from synthgen.imageio import read_image

    work, shared = args.work, args.data
    pennfudan = shared / "pennfudan"
    if (work / "done-data").exists():
        return
    coco = json.loads((pennfudan / "annotations.json").read_text())
    ids = sorted(im["id"] for im in coco["images"])
    order = np.random.default_rng(args.split_seed).permutation(len(ids))
    train_ids = {ids[i] for i in order[: args.n_train]}
    for name, keep in (("train", lambda i: i in train_ids), ("test", lambda i: i not in train_ids)):
        images = [dict(im, file_name=str(pennfudan / im["file_name"])) for im in coco["images"] if keep(im["id"])]
        chosen = {im["id"] for im in images}
        anns = [{k: v for k, v in a.items() if k != "segmentation"} for a in coco["annotations"] if a["image_id"] in chosen]
        (work / f"{name}.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": coco["categories"]}))

    clean = work / "clean"
    clean.mkdir(exist_ok=True)
    c128 = json.loads((shared / "coco128" / "train2017.json").read_text())
    person = {c["id"] for c in c128["categories"] if c["name"] == "person"}
    with_person = {a["image_id"] for a in c128["annotations"] if a["category_id"] in person}
    for im in c128["images"]:
        if im["id"] not in with_person:
            (clean / f"coco-{Path(im['file_name']).name}").symlink_to(shared / "coco128" / im["file_name"])
    for path in sorted((shared / "scenes").iterdir()):
        (clean / f"scene-{path.name}").symlink_to(path)

    # Cut-outs of the training people (instance masks: pixel value = instance index).
    objects = work / "objects" / "person"
    objects.mkdir(parents=True, exist_ok=True)
    for im in coco["images"]:
        if im["id"] not in train_ids:
            continue
        image = read_image(pennfudan / im["file_name"])
        mask_path = pennfudan / "masks" / (Path(im["file_name"]).stem + "_mask.png")
        mask = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
        for k in sorted(set(np.unique(mask)) - {0}):
            ys, xs = np.nonzero(mask == k)
            y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            rgba = np.dstack([image[y0:y1, x0:x1], (mask[y0:y1, x0:x1] == k).astype(np.uint8) * 255])
            cv2.imwrite(str(objects / f"{Path(im['file_name']).stem}-{k}.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    (work / "done-data").write_text("")
    print(f"train {len(train_ids)} / test {len(ids) - len(train_ids)} images; {len(list(clean.iterdir()))} clean; "
          f"{len(list(objects.iterdir()))} cut-outs")


def _config(args, method: str, out: Path, steps: int, init: Path | None = None):
    from synthgen.insert.train import InsertTrainConfig

    return InsertTrainConfig(
        out=out, clean=(str(args.work / "clean"),), labeled=args.work / "train.json", method=method, size=args.size,
        steps=steps, pretrain_gan=args.pretrain_gan, pretrain_detector=args.pretrain_detector, batch_size=1,
        ngf=args.ngf, ndf=args.ngf, log_every=5, sample_every=50, checkpoint_every=25, seed=args.seed, device="cpu",
        init=init, progress=False,
    )


def _train(config) -> None:
    from synthgen.insert.train import train_inserter

    resume = (config.out / "last.pt").is_file()
    if resume:
        from synthgen.insert.checkpoint import load

        if int(load(config.out)["step"]) >= config.total_steps:
            return
    config.resume, config.init = resume, None if resume else config.init
    started = time.perf_counter()
    train_inserter(config)
    print(f"{config.method}: {time.perf_counter() - started:.0f} s", flush=True)


def _pretrain(args) -> None:
    _train(_config(args, "detectorgan", args.work / "pretrain", 0))


def _joint(args) -> None:
    _train(_config(args, args.method, args.work / "runs" / args.method, args.joint_steps, init=args.work / "pretrain"))


def _generate(args) -> None:
    from dataclasses import replace

    from synthgen.compositor import CompositeConfig
    from synthgen.engine import PasteSpec, RunOptions, run_paste
    from synthgen.insert.render import InsertSpec, run_insert

    for method in METHODS if args.which is None else [m for m in METHODS if m == args.which]:
        out = args.work / "synthetic" / method
        if (out / "annotations.json").is_file():
            continue
        spec = InsertSpec(str(args.work / "runs" / method), str(args.work / "clean"), boxes="match", seed=args.seed)
        started = time.perf_counter()
        run_insert(spec, RunOptions(out=out, n=args.n_synthetic, workers=1, progress=False), method=method)
        print(f"{method}: {args.n_synthetic} images in {time.perf_counter() - started:.0f} s", flush=True)
    out = args.work / "synthetic" / "paste"
    if args.which in (None, "paste") and not (out / "annotations.json").is_file():
        composite = replace(CompositeConfig(), width=args.size, height=args.size, background_fit="stretch",
                            objects_per_image=(1, 1), scale=(0.25, 0.55))
        spec = PasteSpec(objects=str(args.work / "objects"), backgrounds=str(args.work / "clean"), composite=composite, seed=args.seed)
        run_paste(spec, RunOptions(out=out, n=args.n_synthetic, progress=False))


def _detect(args) -> None:
    from synthgen.training.coco import load_coco
    from synthgen.training.data import CocoSource, MixedSource, open_source
    from synthgen.training.loop import TrainConfig, train

    out = args.work / "detect" / f"{args.condition}-{args.det_seed}"
    if (out / "result.json").is_file():
        return
    real = open_source(str(args.work / "train.json"), real=True)
    if args.condition == "real":
        source = real
    else:
        synthetic = CocoSource(load_coco(args.work / "synthetic" / args.condition), augment=False, origin="synthetic")
        source = MixedSource(real, synthetic, 0.5)
    config = TrainConfig(
        out=out, detector="ssd-mobilenet", steps=args.det_steps, batch_size=8, lr=1e-3, warmup_steps=min(50, args.det_steps // 10),
        image_size=args.det_size, eval_every=args.det_steps, num_workers=0, seed=args.det_seed, device="cpu", progress=False,
    )
    started = time.perf_counter()
    result = train(config, source, load_coco(args.work / "test.json"))
    metrics = {k: result.final_metrics[k] for k in ("ap50", "voc_ap50", "ap")}
    (out / "result.json").write_text(json.dumps({**metrics, "seconds": time.perf_counter() - started}))
    print(args.condition, args.det_seed, metrics, flush=True)


def _seconds_per_step(run: Path) -> dict[str, float]:
    """Median seconds per step of each phase, from a run's metrics.csv (5-step windows)."""
    import csv

    from synthgen.insert.train import InsertTrainConfig

    settings = json.loads(json.dumps(__import__("torch").load(run / "last.pt", weights_only=True)["settings"]))
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    pg, pd = settings["pretrain_gan"], settings["pretrain_detector"]
    phases: dict[str, list[float]] = {}
    for row in rows[1:] if rows and int(rows[0]["step"]) <= 5 else rows:  # the first window includes start-up
        step = int(row["step"])
        phase = "gan" if step <= pg else "detector" if step <= pg + pd and settings["method"] != "cyclegan" else "joint"
        phases.setdefault(phase, []).append(1.0 / float(row["steps_per_s"]))
    del InsertTrainConfig
    return {k: round(statistics.median(v), 3) for k, v in phases.items()}


def _locality(args, method: str, n: int = 20) -> dict[str, float]:
    """Where the inserter changed the clean image (before JPEG), over samples 0..n-1: pixels
    changed outside the box's blending margin (should be none), inside the box, in the margin."""
    import torch

    from synthgen.compositor import sample_rng
    from synthgen.insert.networks import insertion_weight
    from synthgen.insert.render import InsertSpec, prepare_insert

    renderer, _, _ = prepare_insert(InsertSpec(str(args.work / "runs" / method), str(args.work / "clean")), progress=False)
    outside = inside = ring = 0.0
    counts = [0, 0, 0]
    for index in range(n):
        sample = renderer.render(args.seed, index)
        rng = sample_rng(args.seed, index)
        background = np.asarray(renderer.backgrounds[int(rng.integers(len(renderer.backgrounds)))]).astype(int)
        x, y, w, h = sample.annotations[0].bbox
        weight = insertion_weight([torch.tensor([[x, y, x + w, y + h]])], args.size, renderer.architecture["margin"])[0, 0].numpy()
        diff = np.abs(sample.image.astype(int) - background).max(axis=2)
        box = np.zeros_like(weight, dtype=bool)
        box[int(y) : int(y + h), int(x) : int(x + w)] = True
        outside += (diff[weight == 0] > 0).sum()
        inside += diff[box].sum()
        ring += diff[(weight > 0) & ~box].sum()
        counts = [counts[0] + (weight == 0).sum(), counts[1] + box.sum(), counts[2] + ((weight > 0) & ~box).sum()]
    return {
        "changed_pixels_outside_margin": int(outside),
        "mean_abs_change_in_box": round(inside / counts[1], 1),
        "mean_abs_change_in_margin": round(ring / max(1, counts[2]), 1),
        "samples": n,
    }


def _report(args) -> None:
    from synthgen.preview import make_contact_sheet

    results: dict = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}}
    results["seconds_per_step"] = {"pretrain": _seconds_per_step(args.work / "pretrain")}
    for method in METHODS:
        run = args.work / "runs" / method
        if (run / "metrics.csv").is_file():
            results["seconds_per_step"][method] = _seconds_per_step(run)
    table: dict = {}
    for condition in CONDITIONS:
        scores = [json.loads(p.read_text()) for p in sorted((args.work / "detect").glob(f"{condition}-*/result.json"))]
        if scores:
            ap50 = [100 * s["ap50"] for s in scores]
            table[condition] = {
                "seeds": [int(p.parent.name.rsplit("-", 1)[1]) for p in sorted((args.work / "detect").glob(f"{condition}-*/result.json"))],
                "ap50": [round(v, 1) for v in ap50],
                "mean": round(statistics.mean(ap50), 1),
                "sd": round(statistics.stdev(ap50), 1) if len(ap50) > 1 else None,
                "voc_ap50": [round(100 * s["voc_ap50"], 1) for s in scores],
                "seconds": [round(s["seconds"]) for s in scores],
            }
    results["ap50_test"] = table
    timing = args.work / "timing.json"  # bench/gpu_detectorgan.py --device cpu ... --rounds N > WORK/timing.json
    if timing.is_file():
        results["interleaved_timing"] = json.loads(timing.read_text())
    results["locality"] = {m: _locality(args, m) for m in METHODS if (args.work / "runs" / m / "last.pt").is_file()}
    img = ROOT / "docs" / "img"
    img.mkdir(parents=True, exist_ok=True)
    for method in (*METHODS, "paste"):
        data = args.work / "synthetic" / method
        if (data / "annotations.json").is_file():
            make_contact_sheet(data, img / f"detectorgan-{method}.jpg", n=16, columns=8, tile=128, seed=0)
    (ROOT / "docs" / "results-detectorgan.json").write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


def _all(args) -> None:
    """Every stage in dependency order, ``--jobs`` at a time (each a subprocess of this script with
    the same options, one CPU thread each); the report at the end. Stages already done are skipped,
    so an interrupted ``all`` resumes."""
    import subprocess
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    seeds = range(args.det_seeds)
    stages: dict[str, tuple[list[str], list[str]]] = {"data": (["data"], [])}  # name: (argv, needs)
    stages["generate paste"] = (["generate", "paste"], ["data"])
    stages["pretrain"] = (["pretrain"], ["data"])
    for method in METHODS:
        stages[f"joint {method}"] = (["joint", method], ["pretrain"])
        stages[f"generate {method}"] = (["generate", method], [f"joint {method}"])
    # Longest chain first: DetectorGAN's joint run, then the other joint runs, then the detectors.
    order = ["data", "pretrain", "joint detectorgan", "generate paste", *[f"joint {m}" for m in METHODS[1:]]]
    for seed in seeds:  # seed-major: whatever has finished holds every condition at the same seeds
        for condition in CONDITIONS:
            needs = ["data"] if condition == "real" else [f"generate {condition}"]
            stages[f"detect {condition} {seed}"] = (["detect", condition, str(seed)], needs)
    order += [name for name in stages if name not in order]
    options = [a for a in sys.argv[1 : sys.argv.index("all")]]
    log = args.work / "all.log"
    done: set[str] = set()
    running: dict = {}
    with ThreadPoolExecutor(args.jobs) as pool:
        while len(done) < len(stages):
            for name in order:
                argv, needs = stages[name]
                if name in done or name in running.values() or len(running) >= args.jobs or not set(needs) <= done:
                    continue
                command = [sys.executable, __file__, *options, *argv]
                env = dict(os.environ, OMP_NUM_THREADS="1")

                def run(command=command, name=name, env=env) -> float:
                    started = time.perf_counter()
                    with (args.work / "logs" / f"{name.replace(' ', '-')}.log").open("a") as out:
                        subprocess.run(command, check=True, stdout=out, stderr=subprocess.STDOUT, env=env)
                    return time.perf_counter() - started

                (args.work / "logs").mkdir(exist_ok=True)
                running[pool.submit(run)] = name
                with log.open("a") as out:
                    out.write(f"{time.strftime('%H:%M:%S')} start {name}\n")
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in finished:
                name = running.pop(future)
                seconds = future.result()  # a failed stage stops the run (its log says why)
                done.add(name)
                with log.open("a") as out:
                    out.write(f"{time.strftime('%H:%M:%S')} done {name} ({seconds:.0f} s)\n")
    _report(args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-detectorgan"))
    parser.add_argument("--data", type=Path, default=SHARED, help="The shared data folder.")
    parser.add_argument("--size", type=int, default=96, help="Inserter image side.")
    parser.add_argument("--ngf", type=int, default=16, help="Generator and discriminator width (CycleGAN: 64).")
    parser.add_argument("--pretrain-gan", type=int, default=100)
    parser.add_argument("--pretrain-detector", type=int, default=60)
    parser.add_argument("--joint-steps", type=int, default=25)
    parser.add_argument("--n-train", type=int, default=50, help="Penn-Fudan images in the labelled split.")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0, help="Seed of the inserters and of the generated data.")
    parser.add_argument("--n-synthetic", type=int, default=200)
    parser.add_argument("--det-steps", type=int, default=150)
    parser.add_argument("--det-size", type=int, default=128)
    sub = parser.add_subparsers(dest="stage", required=True)
    sub.add_parser("data").set_defaults(func=_data)
    sub.add_parser("pretrain").set_defaults(func=_pretrain)
    joint = sub.add_parser("joint")
    joint.add_argument("method", choices=METHODS)
    joint.set_defaults(func=_joint)
    generate = sub.add_parser("generate")
    generate.add_argument("which", nargs="?", choices=(*METHODS, "paste"), help="One method, or the pasted cut-outs (default: all).")
    generate.set_defaults(func=_generate)
    detect = sub.add_parser("detect")
    detect.add_argument("condition", choices=CONDITIONS)
    detect.add_argument("det_seed", type=int)
    detect.set_defaults(func=_detect)
    sub.add_parser("report").set_defaults(func=_report)
    everything = sub.add_parser("all", help="Every stage, --jobs at a time, then the report.")
    everything.add_argument("--jobs", type=int, default=2, help="Stages run at once (one CPU thread each).")
    everything.add_argument("--det-seeds", type=int, default=3, help="Detector seeds 0..N-1 per condition.")
    everything.set_defaults(func=_all)
    args = parser.parse_args()
    if not (args.data / "pennfudan").is_dir():
        sys.exit(f"needs the shared data (pennfudan, coco128, scenes) in {args.data}: pass --data")
    args.work.mkdir(parents=True, exist_ok=True)
    args.func(args)


if __name__ == "__main__":
    main()
