"""Sampling speed of synthgen's StyleGAN (v1) and DM-GAN networks against the implementations a
user would run instead, on the same weights and inputs, in one run; the outputs are compared too.

* StyleGAN (v1), 256 px with NVlabs' settings (fmap_base 8192, fmap_max 512, 8 mapping layers of
  512, fused upsampling from 128 px), random weights: synthgen (the weights written as an NVlabs
  TF pickle and loaded by ``load_generator``) against genforce's PyTorch port (the official code
  is TensorFlow 1, which does not install here). psi 0.7, cutoff 8, constant noise.
* DM-GAN birds with ``cfg/eval_bird.yml``'s settings (GF_DIM 64, Z_DIM 100, CONDITION_DIM 100,
  EMBEDDING_DIM 256, R_NUM 2, 3 stages to 256 px) and a 5,450-word vocabulary (CUB's size),
  random weights: synthgen against the official ``model.py`` (``RNN_ENCODER`` + ``G_NET``), both
  from captions already turned into token ids, equal-length captions (the official G mixes the
  masks of a batch otherwise), the same eps (the official draws it from torch's generator, which
  is seeded so that it draws the eps synthgen is given).

Timings alternate the two implementations, ``--reps`` times each after one warm-up call; reported
are the median and the min-max of the seconds per batch and the speed-up of the medians and of the
minima (the minima are the least disturbed by other jobs on a shared machine). One JSON line per
family.

Run:
    PYTHONPATH=.:/path/with/easydict python bench/generator_speed_sg1_dmgan.py \\
        --genforce /path/to/genforce --dmgan /path/to/DM-GAN --batch 4 --reps 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "fixtures" / "generators"))


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(ours, theirs, reps: int) -> dict:
    ours(), theirs()  # warm-up
    t_ours, t_theirs = [], []
    for _ in range(reps):
        t_ours.append(_timed(ours))
        t_theirs.append(_timed(theirs))
    mo, mt = statistics.median(t_ours), statistics.median(t_theirs)
    return {"synthgen_s": round(mo, 4), "synthgen_range_s": [round(min(t_ours), 4), round(max(t_ours), 4)],
            "reference_s": round(mt, 4), "reference_range_s": [round(min(t_theirs), 4), round(max(t_theirs), 4)],
            "speedup": round(mt / mo, 3), "speedup_of_minima": round(min(t_theirs) / min(t_ours), 3)}


def bench_stylegan1(genforce: str, batch: int, reps: int, resolution: int) -> dict:
    sys.path.insert(0, genforce)
    from make_sg1 import randomize, to_tf  # the fixture script's weight writer
    from models.stylegan_generator import StyleGANGenerator  # genforce
    from writers import tf_network, write_tf_pickle

    from synthgen.generators import load_generator

    theirs = StyleGANGenerator(resolution).eval()  # genforce defaults = NVlabs' (its fmaps_base is 2x fmap_base)
    randomize(theirs, torch.Generator().manual_seed(0))
    state = theirs.state_dict()
    parts = {"mapping": {}, "synthesis": {}, "truncation": {}}
    for pth, tf in theirs.pth_to_tf_var_mapping.items():
        parts[pth.split(".")[0]][tf] = to_tf(pth, tf, state[pth])
    common = {"num_channels": 3, "resolution": resolution, "label_size": 0}
    gs = tf_network("Gs", common, parts["truncation"],
                    {"mapping": tf_network("G_mapping", common, parts["mapping"], version=3),
                     "synthesis": tf_network("G_synthesis", common, parts["synthesis"], version=3)}, version=3)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sg1.pkl"
        write_tf_pickle(path, gs, gs, gs, protocol=4)
        ours = load_generator(path)
    z = torch.from_numpy(np.random.default_rng(0).standard_normal((batch, 512)).astype(np.float32))

    def run_theirs():
        with torch.no_grad():
            return theirs(z, trunc_psi=0.7, trunc_layers=8, randomize_noise=False)["image"]

    def run_ours():
        return ours.sample(z, truncation_psi=0.7)

    diff = float((run_ours() - run_theirs()).abs().max())
    return {"family": "stylegan1", "resolution": resolution, "batch": batch, "reps": reps, "reference": "genforce port",
            "max_abs_diff": diff, **compare(run_ours, run_theirs, reps)}


def bench_dmgan(dmgan: str, batch: int, reps: int, words: int = 12, n_words: int = 5450) -> dict:
    sys.path.insert(0, str(Path(dmgan) / "code"))
    from make_dmgan import randomize
    from miscc.config import cfg  # official

    cfg.CUDA = False
    cfg.GAN.GF_DIM, cfg.GAN.Z_DIM, cfg.GAN.CONDITION_DIM, cfg.GAN.R_NUM = 64, 100, 100, 2
    cfg.TREE.BRANCH_NUM, cfg.TEXT.EMBEDDING_DIM, cfg.TEXT.WORDS_NUM = 3, 256, 25
    import model as official

    from synthgen.generators.dmgan import DMGANGenerator, Vocabulary, build_generator_net, build_text_encoder

    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    text_encoder = official.RNN_ENCODER(n_words, nhidden=256).eval()
    netG = official.G_NET().eval()
    randomize(text_encoder, gen)
    randomize(netG, gen)
    G, arch = build_generator_net(netG.state_dict(), "G_NET")
    encoder = build_text_encoder(text_encoder.state_dict(), "RNN_ENCODER")
    vocabulary = Vocabulary({f"w{i}": i for i in range(n_words)}, [], [[1, 2, 3]], "bench")
    ours = DMGANGenerator(G, encoder, vocabulary, z_dim=arch["z_dim"], ncf=arch["ncf"]).eval()

    rng = np.random.default_rng(0)
    ids = rng.integers(1, n_words, (batch, words))
    z = torch.from_numpy(rng.standard_normal((batch, 100)).astype(np.float32))
    torch.manual_seed(1)
    eps = torch.FloatTensor(batch, 100).normal_()
    captions = torch.from_numpy(ids)
    cap_lens = torch.full((batch,), words, dtype=torch.int64)

    def run_theirs():
        with torch.no_grad():
            words_embs, sent_emb = text_encoder(captions, cap_lens, text_encoder.init_hidden(batch))
            torch.manual_seed(1)  # CA_NET draws the same eps
            return netG(z, sent_emb, words_embs, captions == 0, cap_lens)[0][-1]

    def run_ours():
        return ours.sample(z, ids.tolist(), eps=eps)

    diff = float((run_ours() - run_theirs()).abs().max())
    return {"family": "dmgan", "resolution": 256, "batch": batch, "reps": reps, "reference": "official model.py",
            "max_abs_diff": diff, **compare(run_ours, run_theirs, reps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--genforce", help="checkout of github.com/genforce/genforce (StyleGAN v1 reference)")
    parser.add_argument("--dmgan", help="checkout of github.com/MinfengZhu/DM-GAN (needs easydict importable)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--resolution", type=int, default=256, help="StyleGAN resolution")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.genforce:
        print(json.dumps({**bench_stylegan1(args.genforce, args.batch, args.reps, args.resolution), "threads": args.threads}), flush=True)
    if args.dmgan:
        print(json.dumps({**bench_dmgan(args.dmgan, args.batch, args.reps), "threads": args.threads}), flush=True)


if __name__ == "__main__":
    main()
