"""Training throughput: latentbench's harness vs a plain hand-written PyTorch loop (and pythae).

The same VAE (digits, MLP 64-256-256-z, z = 32, batch 128, Adam 1e-3), timed in one process with
alternating runs. Prints each throughput (training images per second, median over repeats) and ends
with ``ratio: X`` = harness / plain. Goal: X >= 0.95 on CPU. If pythae is importable, its
``TrainingPipeline`` is timed on the same nets too.

    python scripts/bench_harness.py [--epochs 20] [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from latentbench.data import load_data
from latentbench.spec import Cell
from latentbench.training.loop import build_model, fit


def make(cell: Cell, shape):
    torch.manual_seed(0)
    model, remedy = build_model(cell, shape)
    return model, remedy


def plain_loop(model, x: torch.Tensor, epochs: int, bs: int) -> float:
    """A plain PyTorch VAE loop over an in-memory tensor: what a careful user writes by hand."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n = len(x)
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n)
        for i in range(0, n - bs + 1, bs):
            xb = x[perm[i : i + bs]]
            mu, logvar = model.encoder(xb)
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            rec = -model.likelihood.log_prob(xb, model.decoder(z))
            kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
            loss = (rec + kl).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return (n // bs) * bs * epochs / (time.perf_counter() - t0)


def harness(model, remedy, cell, x: torch.Tensor) -> float:
    t0 = time.perf_counter()
    res = fit(model, remedy, cell, x, torch.device("cpu"), quiet=True)
    n_fit = len(x) - max(1, int(round(cell.val_fraction * len(x))))
    return (n_fit // cell.batch_size) * cell.batch_size * res.epochs_run / (time.perf_counter() - t0)


def pythae_run(x: torch.Tensor, epochs: int, bs: int) -> float | None:
    try:
        from pythae.models import VAE, VAEConfig
        from pythae.models.base.base_utils import ModelOutput
        from pythae.models.nn import BaseDecoder, BaseEncoder
        from pythae.pipelines import TrainingPipeline
        from pythae.trainers import BaseTrainerConfig
    except ImportError:
        return None
    from torch import nn

    class Enc(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 64))

        def forward(self, x):
            mu, lv = self.net(x.flatten(1)).chunk(2, 1)
            return ModelOutput(embedding=mu, log_covariance=lv)

    class Dec(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(32, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 64))

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)).reshape(-1, 1, 8, 8))

    torch.manual_seed(0)
    model = VAE(VAEConfig(input_dim=(1, 8, 8), latent_dim=32, reconstruction_loss="mse"), encoder=Enc(), decoder=Dec())
    with tempfile.TemporaryDirectory() as out:
        cfg = BaseTrainerConfig(output_dir=out, num_epochs=epochs, per_device_train_batch_size=bs,
                                per_device_eval_batch_size=bs, learning_rate=1e-3, no_cuda=True, steps_saving=None)
        import logging

        logging.getLogger("pythae").setLevel(logging.ERROR)
        pipe = TrainingPipeline(training_config=cfg, model=model)
        t0 = time.perf_counter()
        pipe(train_data=x.numpy(), eval_data=None)
        return len(x) * epochs / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_data("digits")
    cell = Cell(latent="32", epochs=args.epochs, batch_size=128, lr=1e-3, net={"hidden": [256, 256]})
    x = data.train
    from latentbench.training.loop import split_validation

    x_fit, _ = split_validation(x, cell.val_fraction, cell.seed)
    plain, harn, pyth = [], [], []
    for r in range(args.repeats):
        m, _ = make(cell, data.image_shape)
        plain.append(plain_loop(m, x_fit, args.epochs, cell.batch_size))
        m, rem = make(cell, data.image_shape)
        harn.append(harness(m, rem, cell, x))
        p = pythae_run(x_fit, args.epochs, cell.batch_size) if r < 3 else None
        if p is not None:
            pyth.append(p)
    mp, mh = statistics.median(plain), statistics.median(harn)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.epochs} epochs x {args.repeats} alternating repeats")
    print(f"plain loop : {mp:10.0f} images/s   (runs: {', '.join(f'{v:.0f}' for v in plain)})")
    print(f"latentbench: {mh:10.0f} images/s   (runs: {', '.join(f'{v:.0f}' for v in harn)})")
    if pyth:
        mpy = statistics.median(pyth)
        print(f"pythae     : {mpy:10.0f} images/s   (runs: {', '.join(f'{v:.0f}' for v in pyth)})")
        print(f"ratio vs pythae: {mh / mpy:.2f}   (plain loop vs pythae: {mp / mpy:.2f})")
    else:
        print("pythae     : not installed (pip install pythae to compare)")
    print(f"ratio: {mh / mp:.3f}")


if __name__ == "__main__":
    main()
