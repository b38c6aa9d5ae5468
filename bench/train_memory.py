"""Peak memory of a CPU training run (`synthgen pretrain`), and where it goes.

Usage:
    python bench/train_memory.py runs [--data COCO_DIR] [--steps 6] [--batch-size 16] [--image-size 320]
        [--variants default,workers0,...] [--repeats 2]
    python bench/train_memory.py breakdown [--data COCO_DIR] [--steps 4] [--batch-size 16] [--image-size 320]

``runs`` starts ``synthgen pretrain --threads 1 --no-progress`` (the user's command, validating
once at the end on the same COCO set) once per variant and repeat, the variants interleaved, and
samples every 50 ms the resident memory of its process tree: the main process's RSS, the sum of
RSS over the main process and its data-loader workers (what `top` adds up: shared pages counted
in each process), and the sum of PSS (each shared page split between the processes sharing it:
what the run really holds). Variants change one thing each against ``default`` (the command as a user runs it):
``workers0`` (--num-workers 0), ``arena2`` (MALLOC_ARENA_MAX=2), ``mmap`` (glibc's mmap
threshold pinned at 128 KiB with MALLOC_MMAP_THRESHOLD_=131072, so every tensor buffer above it
goes back to the system when freed). The CPU time (user and system) of the whole run is
recorded too: what a memory saving costs.

``breakdown`` runs the same training steps in this process (``--num-workers 0``) and prints the
RSS after each phase (torch imported, model built, first batch, forward, backward, optimizer
step, after N steps, validation) with the bytes autograd saved for the backward pass of one
step, measured with ``torch.autograd.graph.saved_tensors_hooks``.

Without ``--data`` a 96-sample COCO set is pasted from the demo objects first (320x320). One
JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024

VARIANTS: dict[str, tuple[list[str], dict[str, str]]] = {
    "default": ([], {}),
    "workers0": (["--num-workers", "0"], {}),
    "arena2": ([], {"MALLOC_ARENA_MAX": "2"}),
    "mmap": ([], {"MALLOC_MMAP_THRESHOLD_": "131072"}),
}


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _pss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return found


class TreeSampler(threading.Thread):
    """Samples the memory of a process tree every ``interval`` seconds; keeps the peaks (MiB)."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak = {"main_rss": 0.0, "tree_rss": 0.0, "tree_pss": 0.0, "processes": 0}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            rss = pss = 0
            main = 0
            pids = _tree(self.pid)
            for pid in pids:
                try:
                    r = _status_kib(pid, "VmRSS")
                    rss += r
                    pss += _pss_kib(pid)
                    if pid == self.pid:
                        main = r
                except OSError:
                    pass
            for key, value in (("main_rss", main / 1024), ("tree_rss", rss / 1024), ("tree_pss", pss / 1024)):
                self.peak[key] = max(self.peak[key], round(value, 1))
            self.peak["processes"] = max(self.peak["processes"], len(pids))
            time.sleep(self.interval)


def demo_data(scratch: Path, image_size: int) -> Path:
    out = scratch / "demo_coco"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "synthgen", "paste", "--n", "96", "--size", f"{image_size}x{image_size}",
                    "--quiet", "--out", str(out)], check=True, env=env, stdout=subprocess.DEVNULL)
    return out


def run_variant(name: str, data: Path, args: argparse.Namespace, scratch: Path, repeat: int) -> dict:
    extra, env_extra = VARIANTS[name]
    out = scratch / f"run-{name}-{repeat}"
    command = [sys.executable, "-m", "synthgen", "pretrain", "--data", str(data), "--val", str(data / "annotations.json"),
               "--steps", str(args.steps), "--eval-every", str(args.steps), "--batch-size", str(args.batch_size),
               "--image-size", str(args.image_size), "--threads", "1", "--no-progress", "--device", "cpu",
               "--out", str(out), *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env_extra}
    import resource

    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    sampler = TreeSampler(process.pid)
    sampler.start()
    _, stderr = process.communicate()
    sampler.done.set()
    sampler.join()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    user = children.ru_utime - children_before.ru_utime
    system = children.ru_stime - children_before.ru_stime
    shutil.rmtree(out, ignore_errors=True)
    if process.returncode != 0:
        raise SystemExit(f"{name}: pretrain failed ({process.returncode}):\n{stderr}")
    return {"variant": name, "repeat": repeat, "batch_size": args.batch_size, "image_size": args.image_size,
            "steps": args.steps, **{f"peak_{k}_mib" if k != "processes" else k: v for k, v in sampler.peak.items()},
            "seconds": round(time.perf_counter() - started, 1), "cpu_user_s": round(user, 1), "cpu_system_s": round(system, 1),
            "load_before": round(load, 2)}


def runs(args: argparse.Namespace, data: Path, scratch: Path) -> None:
    names = args.variants.split(",")
    unknown = set(names) - VARIANTS.keys()
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; known: {sorted(VARIANTS)}")
    for repeat in range(args.repeats):
        for name in names:
            print(json.dumps(run_variant(name, data, args, scratch, repeat)), flush=True)


def _rss_mib() -> float:
    return round(_status_kib(os.getpid(), "VmRSS") / 1024, 1)


def breakdown(args: argparse.Namespace, data: Path, scratch: Path) -> None:
    import resource

    phases: dict[str, float] = {"python": _rss_mib()}
    import torch

    torch.set_num_threads(1)
    phases["torch imported"] = _rss_mib()
    from synthgen.detectors import build_detector
    from synthgen.evaluation import match_categories, predict
    from synthgen.training.coco import load_coco
    from synthgen.training.data import open_source, make_loader

    source = open_source(str(data), real=False)
    model = build_detector("ssd-mobilenet", len(source.categories), args.image_size, True)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    phases["model built"] = _rss_mib()
    batches = iter(make_loader(source, image_size=args.image_size, batch_size=args.batch_size, seed=0, num_workers=0))
    images, targets = next(batches)
    phases["first batch"] = _rss_mib()
    saved = {"bytes": 0, "tensors": 0}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved["bytes"] += tensor.numel() * tensor.element_size()
        saved["tensors"] += 1
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        losses = model(images, targets)
    phases["forward"] = _rss_mib()
    loss = sum(losses.values())
    loss.backward()
    phases["backward"] = _rss_mib()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    phases["optimizer step"] = _rss_mib()
    del loss, losses
    for _ in range(args.steps - 1):
        images, targets = next(batches)
        loss = sum(model(images, targets).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        del loss
    phases[f"after {args.steps} steps"] = _rss_mib()
    val = load_coco(data / "annotations.json")
    predict(model, val, match_categories(source.categories, val.categories), device="cpu", batch_size=args.batch_size)
    phases["validation"] = _rss_mib()
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    print(json.dumps({
        "batch_size": args.batch_size, "image_size": args.image_size, "rss_mib_after": phases,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "saved_for_backward_mib": round(saved["bytes"] / MIB, 1), "saved_tensors": saved["tensors"],
        "parameters_mib": round(params / MIB, 1), "batch_pixels_mib": round(sum(i.numel() * 4 for i in images) / MIB, 1),
        "mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_", "glibc default"),
    }), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("runs", "breakdown"))
    parser.add_argument("--data", type=Path, default=None, help="A COCO folder (default: 96 demo samples pasted first).")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--variants", default="default,mmap")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="train-memory-"))
    try:
        data = args.data or demo_data(scratch, args.image_size)
        (runs if args.mode == "runs" else breakdown)(args, data, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
