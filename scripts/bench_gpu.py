"""Training speed of the seed's conv VAE (8x8x1024 latent, 28x28 images) and one full seed-scale cell.

In one process, on data resident on the device:
1. a plain hand-written loop at each precision (fp32, tf32, bf16 autocast) against latentbench's
   harness at the same precisions; seconds per epoch after one warm-up epoch, and ratios;
2. the harness compiled (``torch.compile`` default mode and ``reduce-overhead``, i.e. CUDA graphs),
   timed after its warm-up epoch, with the compile (warm-up) time printed apart;
3. with ``--cell``, one full cell through ``latentbench run``'s own code (train, ex-post GMM fit,
   domain classifier, samples, FID/KID/PRC, geometry, IWAE) and its record's timing parts.

Grid throughput with several workers is measured by ``scripts/bench_workers.py``.

    python scripts/bench_gpu.py [--device cuda] [--epochs 3] [--batch-size 128] [--cell]
    python scripts/bench_gpu.py --device cpu --n 512 --latent 4x4x8 --epochs 2   # the same code on a CPU

Without CUDA and without ``--device cpu`` it says so and exits 0.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs per variant, after one warm-up epoch")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--n", type=int, default=60000, help="synthetic 28x28 training images")
    ap.add_argument("--latent", default="8x8x1024")
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled variants")
    ap.add_argument("--cell", action="store_true", help="also run one full cell and print its parts")
    ap.add_argument("--cell-epochs", type=int, default=50)
    ap.add_argument("--cell-n-samples", type=int, default=10000)
    ap.add_argument("--cell-iw-k", type=int, default=100)
    args = ap.parse_args()
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: skipped (run this on a GPU machine, or pass --device cpu)")
        return
    from latentbench.data.synthetic import render
    from latentbench.device import device_name, precision
    from latentbench.model import build_model
    from latentbench.spec import Cell
    from latentbench.training.loop import fit, make_optimizer

    x, _, _ = render(args.n, 28, 1, torch.Generator().manual_seed(0))
    x = x.to(dev)

    def cell_at(prec: str, epochs: int) -> Cell:
        return Cell(arch="conv", latent=args.latent, likelihood="bernoulli", batch_size=args.batch_size,
                    epochs=epochs, val_fraction=0.01, precision=prec)

    def fresh(prec: str):
        torch.manual_seed(0)
        m, r = build_model(cell_at(prec, 1), (1, 28, 28))
        m = m.to(dev)
        if dev.type == "cuda":
            m = m.to(memory_format=torch.channels_last)
        return m, r

    def plain(prec: str) -> float:
        """The loop a user would write: the same model, Adam, randperm batches, no extras."""
        model, _ = fresh(prec)
        opt = make_optimizer(model, 1e-3)
        bs, n = args.batch_size, len(x)

        def epoch() -> None:
            perm = torch.randperm(n, device=dev)
            for i in range(0, n - bs + 1, bs):
                with precision(dev, prec):
                    loss = model.loss(x[perm[i : i + bs]])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

        epoch()  # warm-up
        _sync(dev)
        t0 = time.perf_counter()
        for _ in range(args.epochs):
            epoch()
        _sync(dev)
        return (time.perf_counter() - t0) / args.epochs

    def harness(prec: str, compile: bool | str = False) -> tuple[float, float]:
        """(seconds per epoch after warm-up, seconds of the warm-up epoch)."""
        model, remedy = fresh(prec)
        _sync(dev)
        t0 = time.perf_counter()
        fit(model, remedy, cell_at(prec, 1), x, dev, quiet=True, compile=compile)
        _sync(dev)
        warm = time.perf_counter() - t0
        # resume the same model for the timed epochs (its compiled step is cached by torch)
        t0 = time.perf_counter()
        fit(model, remedy, cell_at(prec, args.epochs), x, dev, quiet=True, compile=compile)
        _sync(dev)
        return (time.perf_counter() - t0) / args.epochs, warm

    print(f"{device_name(dev)} · torch {torch.__version__} · {args.n} images 28x28 · latent {args.latent} · "
          f"batch {args.batch_size} · {args.epochs} timed epochs after 1 warm-up epoch")
    rows: dict[str, float] = {}
    precs = ["fp32", "tf32", "bf16"] if dev.type == "cuda" else ["fp32", "bf16"]
    for prec in precs:
        rows[f"plain {prec}"] = plain(prec)
        rows[f"harness {prec}"], _ = harness(prec)
    if not args.no_compile:
        for mode in ("default", "reduce-overhead") if dev.type == "cuda" else ("default",):
            s, warm = harness("fp32", mode)
            rows[f"harness fp32 compiled ({mode})"] = s
            print(f"  compile + first epoch ({mode}): {warm:.2f} s")
    for k, v in rows.items():
        print(f"  {k:36s} {v:8.3f} s/epoch  {args.n / v:10.0f} images/s")
    fastest_plain = min(v for k, v in rows.items() if k.startswith("plain"))
    best_plain = min((k for k in rows if k.startswith("plain")), key=rows.get)
    for prec in precs:
        print(f"ratio harness {prec} / fastest plain ({best_plain}): {fastest_plain / rows[f'harness {prec}']:.2f}")
    for k in rows:
        if "compiled" in k:
            print(f"ratio {k} / fastest plain: {fastest_plain / rows[k]:.2f}")
    if dev.type == "cuda":
        print(f"peak CUDA memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GB")
    if args.cell:
        full_cell(args, dev)


def full_cell(args: argparse.Namespace, dev: torch.device) -> None:
    """One cell of the seed's scale through the runner: its record's timing parts."""
    import os

    from latentbench.runner.grid import run_grid
    from latentbench.spec import Grid

    dataset = os.environ.get("BENCH_DATASET", "fashion_mnist")
    base = {"dataset": dataset, "arch": "conv", "epochs": args.cell_epochs, "likelihood": "bernoulli",
            "n_samples": args.cell_n_samples, "iw_k": args.cell_iw_k, "batch_size": args.batch_size}
    if dataset == "synthetic":
        base["data"] = {"n_train": args.n, "size": 28}
    grid = Grid(name="bench-cell", remedies=["expost_gmm"], latents=[args.latent], seeds=[0], base=base)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = run_grid(grid, Path(tmp), dev, quiet=True)
        wall = time.perf_counter() - t0
        import json

        rec = json.loads(next((Path(tmp) / "records").glob("*.json")).read_text())
    print(f"full cell: {dataset}, conv, expost_gmm, latent {args.latent}, {args.cell_epochs} epochs, "
          f"{args.cell_n_samples} samples, IWAE k = {args.cell_iw_k}: {wall:.1f} s wall "
          f"({summary['done']} done, {len(summary['failed'])} failed)")
    for k, v in sorted(rec["timing"].items()):
        print(f"  {k:16s} {v:8.1f} s")
    if rec["status"] != "ok":
        print(f"  failed: {rec['error']}")


if __name__ == "__main__":
    main()
