"""Peak memory at the seed's scale (D = 8x8x1024 = 65536), each measurement in a fresh subprocess.

1. One training step of the seed's conv VAE (8x8x1024 latent, 28x28 inputs, batch 128).
2. ``expost_gmm``'s fit on aggregate-posterior codes at D = 65536 (as many codes as the harness
   passes it: 4096, about 1 GiB).
3. The geometry metrics (marginal KL, hole fraction, MMD, ...) at D = 65536 with 10k requested samples.

Prints the peak resident memory of each (CPU) or the peak CUDA allocation (GPU). Goal for 2 and 3:
under 4 GB.

    python scripts/bench_memory.py [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

CASES = ("conv_step", "expost_gmm", "geometry")


def _peak_mb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_case(case: str, device: str) -> dict:
    import torch

    torch.set_num_threads(2)
    from latentbench.latent import LatentShape

    lat = LatentShape.parse("8x8x1024")
    dev = torch.device(device)
    base = _peak_mb(device)
    t0 = time.perf_counter()
    if case == "conv_step":
        from latentbench.model import build_model
        from latentbench.spec import Cell
        from latentbench.training.loop import make_optimizer

        model, _ = build_model(Cell(arch="conv", latent="8x8x1024", likelihood="bernoulli"), (1, 28, 28))
        model.to(dev)
        opt = make_optimizer(model, 1e-3)
        x = torch.rand(128, 1, 28, 28, device=dev)
        from latentbench.device import precision

        with precision(dev, "fp32"):
            loss = model.loss(x)
        loss.backward()
        opt.step()
        extra = {"params_M": sum(p.numel() for p in model.parameters()) / 1e6}
    elif case == "expost_gmm":
        from latentbench.priors.gmm import ExpostGMMPrior

        g = torch.Generator().manual_seed(0)
        codes = torch.randn(4096, lat.dim, generator=g) * torch.rand(lat.dim, generator=g)
        prior = ExpostGMMPrior(lat).to(dev)
        prior.fit(codes.to(dev), g)
        s = prior.sample(1000, g)
        prior.log_prob(s[:256])
        extra = {"n_components": prior.n_components}
    else:
        from latentbench.device import memory_bytes, stable_memory_bytes
        from latentbench.priors.standard_normal import StandardNormal
        from latentbench.score.geometry import latent_metrics, posterior_cap, sample_cap

        g = torch.Generator().manual_seed(0)
        cap_bytes = stable_memory_bytes(torch.device(device))
        n_post = min(10000, posterior_cap(lat.dim, cap_bytes))
        n = min(10000, sample_cap(lat.dim, cap_bytes))
        mu = torch.randn(n_post, *lat.shape, generator=g).mul_(0.5)
        logvar = torch.full_like(mu, -2.0)
        idx = torch.randint(n_post, (n,), generator=g)
        z_post = torch.randn(n, *lat.shape, generator=g).mul_(0.37).add_(mu[idx])
        z_prior = torch.randn(n, *lat.shape, generator=g)
        inputs_mb = _rss_mb()
        m = latent_metrics(StandardNormal(lat), mu.to(dev), logvar.to(dev), z_prior.to(dev), z_post.to(dev), idx.to(dev),
                           mem_bytes=memory_bytes(torch.device(device)))
        extra = {"n_posteriors": n_post, "n_samples": n, "inputs_GB": inputs_mb / 1024,
                 "hole_fraction": m["hole_fraction"]}
    return {"case": case, "peak_mb": _peak_mb(device), "baseline_mb": base, "seconds": time.perf_counter() - t0, **extra}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--case", choices=CASES)
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.device)))
        return
    print(f"D = 65536 (8x8x1024), device {args.device}")
    for case in CASES:
        out = subprocess.run([sys.executable, __file__, "--case", case, "--device", args.device],
                             capture_output=True, text=True)
        if out.returncode != 0:
            print(f"  {case:12s} FAILED: {out.stderr.strip().splitlines()[-1]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rest = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()
                         if k not in ("case", "peak_mb", "baseline_mb", "seconds"))
        print(f"  {case:12s} peak {r['peak_mb'] / 1024:6.2f} GB  ({r['seconds']:.1f} s; {rest})")


if __name__ == "__main__":
    main()
