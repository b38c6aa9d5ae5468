"""Memory of an endless run with a generator source: `synthgen paste --objects GENERATOR --n inf
--format wds`, resident memory of the whole process tree (main process, its block-building
thread and the paste workers) after 5,000 and after 50,000 samples.

Target (issue 12): RSS after 50,000 samples within 10% of RSS after 5,000, i.e. neither the
object blocks (a fresh one every --refresh samples) nor anything else grows with the run.

The generator is a small random-weight StyleGAN2 on CPU (synthgen's own network, 64 px; see
random_generator), put in place of synthgen's loader in the `synthgen paste` process this script
starts, so that every other part runs as a user runs it: latents, batched generation,
segmentation, block files, workers, writer.

Run (needs ../shared/data/scenes, or any folder of photos):
    python bench/paste_generator_memory.py --backgrounds ../shared/data/scenes
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from paste_memory import samples_written, tree_rss_kib


def random_generator(resolution: int = 64):
    """A small StyleGAN2 (synthgen's own network) with random weights: z 64, w 64, 2 mapping
    layers of learning-rate multiplier 1 (so each latent gives another image), 64 px."""
    import torch

    from synthgen.generators.stylegan2 import StyleGAN2Config, StyleGAN2Generator, channels_from_base

    config = StyleGAN2Config(z_dim=64, c_dim=0, w_dim=64, img_resolution=resolution, mapping_layers=2,
                             mapping_lr_multiplier=1.0, channels=channels_from_base(resolution, 2048, 64))
    G = StyleGAN2Generator(config)
    draw = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in G.parameters():
            p.copy_(torch.randn(p.shape, generator=draw))
    G.setup_pool_output(["thing"], None)
    return G.eval()


def child(argv: list[str]) -> None:
    """`synthgen paste ARGV` with the random generator behind every generator name or file."""
    import synthgen.generators as generators
    from synthgen.cli import app

    generators.load_generator = lambda spec, device="cpu": random_generator().to(device)
    app(argv, prog_name="synthgen")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backgrounds", required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--checkpoints", default="5000,50000")
    parser.add_argument("--size", default="320x320")
    parser.add_argument("--refresh", type=int, default=1000)
    parser.add_argument("--pool-size", type=int, default=256)
    parser.add_argument("--segmenter", default="none", help="random-weight images are noise: none pastes them whole")
    args = parser.parse_args()
    checkpoints = [int(c) for c in args.checkpoints.split(",")]

    work = Path(tempfile.mkdtemp(prefix="bench-genmem-"))
    out, generator_file = work / "stream", work / "random-generator.pt"
    generator_file.write_bytes(b"stands for a generator file; the child process loads the random generator")
    argv = [
        "paste", "--objects", str(generator_file), "--backgrounds", args.backgrounds, "--segmenter", args.segmenter,
        "--refresh", str(args.refresh), "--pool-size", str(args.pool_size), "--size", args.size, "--format", "wds",
        "--n", "inf", "--shard-size", "500", "--workers", str(args.workers), "--quiet", "--out", str(out),
    ]
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import paste_generator_memory as b; b.child({argv!r})"
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
    started = time.time()
    results = []
    try:
        for target in checkpoints:
            while samples_written(out) < target:
                if proc.poll() is not None:
                    raise SystemExit(f"synthgen stopped early:\n{proc.stderr.read().decode()}")
                time.sleep(0.5)
            rss = tree_rss_kib(proc.pid)
            done = samples_written(out)
            blocks = sum(1 for _ in (out / ".synthgen" / "objects").glob("*/block-*"))
            results.append({"samples": done, "rss_mib": round(sum(rss.values()) / 1024, 1), "processes": len(rss),
                            "blocks_on_disk": blocks, "seconds": round(time.time() - started, 1)})
            print(f"{done:>7} samples  RSS {sum(rss.values()) / 1024:8.1f} MiB over {len(rss)} processes "
                  f"({', '.join(f'{v / 1024:.0f}' for v in rss.values())} MiB)  {blocks} blocks on disk  "
                  f"{time.time() - started:6.0f} s", flush=True)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
        shutil.rmtree(work, ignore_errors=True)
    first, last = results[0]["rss_mib"], results[-1]["rss_mib"]
    print(json.dumps({"results": results, "ratio": round(last / first, 4), "target": 1.10, "exit_code": proc.returncode,
                      "settings": vars(args)}))
    print(f"\nRSS at {results[-1]['samples']:,} / at {results[0]['samples']:,} samples: {last / first:.3f} (target <= 1.10); "
          f"exit code after SIGINT {proc.returncode}")


if __name__ == "__main__":
    main()
