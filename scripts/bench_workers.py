"""Grid throughput with ``latentbench run --workers``: cells per minute with 1 worker against N.

Runs the same small digits grid (vae at several latent sizes) into fresh folders, once as a plain run
and once per worker count, each as its own ``latentbench run`` process, and prints cells per minute and
the ratio to one worker. The domain-feature classifier is trained once beforehand (a warm cache), so
every run times cells only. Works on the CPU (each worker gets cores // N threads) and on a GPU
(``--device cuda``: the cells share the card). Goal on a GPU: >= 2.5x with 4 workers (issue 14).

    python scripts/bench_workers.py [--workers 2,4] [--cells 8] [--epochs 10] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from _scratch import scratch  # scripts/ is on sys.path when a script runs


def run(argv: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "latentbench", *argv], check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", default="2", help="comma-separated worker counts to compare with 1")
    ap.add_argument("--cells", type=int, default=6, help="cells in the grid (latent sizes 2, 3, ...)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--n-samples", default="1000")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--keep", action="store_true", help="keep the run folders (removed when done by default)")
    args = ap.parse_args()
    with scratch("lb-bench-workers-", args.keep) as tmp:
        bench(args, tmp)


def bench(args: argparse.Namespace, tmp: Path) -> None:
    env = {**os.environ, "LATENTBENCH_CACHE": str(tmp / "cache")}
    latents = ",".join(str(2 + i) for i in range(args.cells))
    base = ["run", "--remedies", "vae", "--latents", latents, "--epochs", str(args.epochs), "--n-samples",
            args.n_samples, "--iw-k", "8", "--device", args.device, "--quiet"]
    run([*base[:4], "2", *base[5:], "--epochs", "1", "--out", str(tmp / "warm")], env)  # the classifier
    rates = {}
    for n in [1, *(int(w) for w in args.workers.split(","))]:
        seconds = run([*base, "--workers", str(n), "--out", str(tmp / f"w{n}")], env)
        rates[n] = args.cells / seconds * 60
        print(f"workers {n}: {args.cells} cells in {seconds:6.1f} s = {rates[n]:6.2f} cells/min "
              f"({rates[n] / rates[1]:.2f}x one worker)", flush=True)
    print(f"device {args.device}, {os.cpu_count()} cores, {args.epochs} epochs, n_samples {args.n_samples}")


if __name__ == "__main__":
    main()
