"""GPU throughput of the seed's conv VAE (8x8x1024 latent) on 60k synthetic 28x28 images.

One epoch each, in one process: a plain hand-written loop (fp32 and bf16 autocast), latentbench's
harness (bf16, eager) and the harness with ``torch.compile``; pythae's pipeline when installed.
Data are resident on the GPU. Prints seconds per epoch and ratios. Without CUDA it says so and exits 0.

    python scripts/bench_gpu.py [--epochs 2] [--batch-size 128]
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--n", type=int, default=60000)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: skipped (run this on a GPU machine)")
        return
    from latentbench.data.synthetic import render
    from latentbench.spec import Cell
    from latentbench.training.loop import build_model, fit

    dev = torch.device("cuda")
    x, _, _ = render(args.n, 28, 1, torch.Generator().manual_seed(0))
    x = x.to(dev)
    cell = Cell(arch="conv", latent="8x8x1024", likelihood="bernoulli", batch_size=args.batch_size,
                epochs=args.epochs, val_fraction=0.01)

    def fresh():
        torch.manual_seed(0)
        m, r = build_model(cell, (1, 28, 28))
        return m.to(dev), r

    def plain(bf16: bool) -> float:
        model, _ = fresh()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        bs, n = args.batch_size, len(x)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(args.epochs):
            perm = torch.randperm(n, device=dev)
            for i in range(0, n - bs + 1, bs):
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
                    loss = model.loss(x[perm[i : i + bs]])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) / args.epochs

    def harness(compile: bool) -> float:
        model, remedy = fresh()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fit(model, remedy, cell, x, dev, quiet=True, compile=compile)
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) / args.epochs

    print(f"{torch.cuda.get_device_name()} · torch {torch.__version__} · {args.n} images 28x28 · latent 8x8x1024 · "
          f"batch {args.batch_size} · {args.epochs} epochs each (the first includes warm-up / compilation)")
    rows = {"plain fp32": plain(False), "plain bf16": plain(True), "harness bf16 eager": harness(False),
            "harness bf16 compiled": harness(True)}
    for k, v in rows.items():
        print(f"  {k:24s} {v:7.2f} s/epoch   {args.n / v:9.0f} images/s")
    print(f"ratio harness(eager)/plain(bf16): {rows['plain bf16'] / rows['harness bf16 eager']:.2f}")
    print(f"ratio harness(compiled)/plain(bf16): {rows['plain bf16'] / rows['harness bf16 compiled']:.2f}")
    print(f"peak CUDA memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GB")


if __name__ == "__main__":
    main()
