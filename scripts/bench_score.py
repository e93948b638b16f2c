"""Time the scoring of one cell: 10k samples per set, domain features, FID/KID/PRC, geometry, IWAE k=100.

Trains a digits VAE (z = 32) once, then scores it and prints each part's share of the time, so the
slowest part is visible. Goal: the whole scoring <= 30 s on a 2-core CPU.

    python scripts/bench_score.py [--n 10000] [--iw-k 100] [--latent 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--iw-k", type=int, default=100)
    ap.add_argument("--latent", default="32")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("LATENTBENCH_CACHE", tempfile.mkdtemp(prefix="lb-bench-"))
    from latentbench.score.scorer import score_model
    from latentbench.spec import Cell
    from latentbench.training.loop import train_cell

    cell = Cell(latent=args.latent, epochs=30, n_samples=args.n, iw_k=args.iw_k)
    dev = torch.device("cpu")
    model, data, _ = train_cell(cell, dev, quiet=True)
    for label in ("first run (trains and caches the feature classifier)", "second run (classifier cached)"):
        t0 = time.perf_counter()
        metrics, notes, timing = score_model(model, data, cell, dev)
        total = time.perf_counter() - t0
        print(f"\n{label}: {total:.1f} s for n={notes['n_prior']} prior + {notes['n_post']} posterior-mixture samples, "
              f"{notes['n_data']} held-out images, IWAE k={args.iw_k}")
        for part, s in sorted(timing.items(), key=lambda kv: -kv[1]):
            print(f"  {part:14s} {s:6.2f} s  {100 * s / total:5.1f}%")
    print(f"\nfid_prior {metrics['fid_prior']:.2f}  fid_post {metrics['fid_post']:.2f}  "
          f"hole_fraction {metrics['hole_fraction']:.3f}  nll_iw {metrics['nll_iw']:.2f}")
    print(f"score_s: {total:.1f}")


if __name__ == "__main__":
    main()
