"""Time the scoring of one cell, part by part: sampling and decoding, domain features, FID/KID/PRC (the
noise floor, the seed's N(mu(x), I) set and the swap interventions), the calibrated latent metrics, IWAE.

Trains a VAE briefly on digits (flat latents: MLP) or synthetic 28x28 images (spatial latents such as
8x8x1024: the conv net), then scores it twice (the first run also trains the feature classifier) and
prints each part's share of the time, the sample counts, and the memory bound the scorer batched to.
Goal on a 2-core CPU at latent 32: the whole scoring <= 10 s once the classifier is cached.

    python scripts/bench_score.py [--device cpu|cuda] [--latent 32|8x8x1024] [--n 10000] [--iw-k 100]
                                  [--threads 2] [--memory-gb GB]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from _scratch import scratch  # scripts/ is on sys.path when a script runs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--latent", default="32")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--iw-k", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default 30 flat, 3 spatial)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--memory-gb", type=float, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if "LATENTBENCH_CACHE" in os.environ:
        bench(args)
        return
    with scratch("lb-bench-", keep=False) as cache:  # its own feature cache, removed when done
        os.environ["LATENTBENCH_CACHE"] = str(cache)
        bench(args)


def bench(args: argparse.Namespace) -> None:
    from latentbench.device import memory_bytes, pick_device, set_memory_gb, stable_memory_bytes
    from latentbench.latent import LatentShape
    from latentbench.score.scorer import score_model
    from latentbench.spec import Cell
    from latentbench.training.loop import train_cell

    set_memory_gb(args.memory_gb)
    dev = pick_device(args.device)
    spatial = len(LatentShape.parse(args.latent).shape) == 3
    if spatial:
        cell = Cell(dataset="synthetic", arch="conv", latent=args.latent, epochs=args.epochs or 3,
                    likelihood="bernoulli", n_samples=args.n, iw_k=args.iw_k,
                    data={"n_train": 12000, "n_test": 10000, "size": 28})
    else:
        cell = Cell(latent=args.latent, epochs=args.epochs or 30, n_samples=args.n, iw_k=args.iw_k)
    t0 = time.perf_counter()
    model, data, _ = train_cell(cell, dev, quiet=True)
    print(f"{cell.dataset} {cell.arch} latent {cell.latent} on {dev}: trained in {time.perf_counter() - t0:.1f} s; "
          f"memory bound {memory_bytes(dev) / 2**30:.1f} GiB (batches), {stable_memory_bytes(dev) / 2**30:.1f} GiB "
          "(geometry caps)")
    for label in ("first run (trains and caches the feature classifier)", "second run (classifier cached)"):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        metrics, notes, timing = score_model(model, data, cell, dev)
        total = time.perf_counter() - t0
        print(f"\n{label}: {total:.1f} s for n={notes['n_prior']} prior + {notes['n_post']} posterior-mixture "
              f"samples, {notes['n_data']} held-out images, IWAE k={args.iw_k}; geometry on {notes['n_geometry']} "
              f"samples over {notes['n_geometry_posteriors']} posteriors")
        for part, s in sorted(timing.items(), key=lambda kv: -kv[1]):
            print(f"  {part:14s} {s:7.2f} s  {100 * s / total:5.1f}%")
    shown = ("fid_prior", "fid_post", "fid_prior_post", "fid_floor", "fid_swap_sub", "fid_swap_sub_rand",
             "hole_fraction", "spec_wide", "spec_narrow", "sub_dims", "sub_spread", "nll_iw")
    print("\n" + "  ".join(f"{k} {metrics[k]:.3g}" for k in shown if k in metrics))
    if dev.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(dev) / 2**30:.1f} GiB")
    print(f"score_s: {total:.1f}")


if __name__ == "__main__":
    main()
