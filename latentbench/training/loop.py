"""The shared training harness: every remedy trains through this one loop.

- The data lives on the device as one tensor; batches are drawn by index (no DataLoader workers).
- No per-step host sync: the epoch's loss is summed on the device and read once per epoch.
- Fused (or foreach) Adam, the cell's precision (fp32 by default; tf32, bf16), optional ``torch.compile``
  (``mode`` e.g. ``reduce-overhead`` for CUDA graphs).
- Seeded per epoch, so a resumed run continues exactly where an uninterrupted one would be.
- Optional KL warm-up (linear over ``kl_warmup`` epochs) and early stopping on the held-out ELBO.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from latentbench.data import Data, load_data
from latentbench.device import precision
from latentbench.early_stop import EarlyStopping
from latentbench.errors import UserError
from latentbench.model import VAE, build_model
from latentbench.remedies import Remedy
from latentbench.spec import Cell
from latentbench.streams import stream, stream_seed
from latentbench.training.checkpoint import CorruptCheckpointError, load_checkpoint, save_checkpoint
from latentbench.training.expost import fit_expost


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


def split_validation(x: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded split of the training images into (fit, validation)."""
    perm = torch.randperm(len(x), generator=stream(seed, "train/split"))
    n_val = max(1, int(round(fraction * len(x))))
    return x[perm[n_val:]], x[perm[:n_val]]


def _seed_epoch(seed: int, epoch: int) -> torch.Generator:
    """Epoch ``epoch``'s streams: the global generator (the reparameterisation noise) from
    ``train/epoch/<k>/torch``, the batch order from the returned ``train/epoch/<k>``."""
    torch.manual_seed(stream_seed(seed, f"train/epoch/{epoch}/torch"))
    return stream(seed, f"train/epoch/{epoch}")


def make_optimizer(model: VAE, lr: float) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, foreach=True)


@torch.no_grad()
def evaluate(model: VAE, x: torch.Tensor, batch_size: int = 1024, precision_name: str = "fp32",
             prior: Any = None) -> dict[str, float]:
    """Held-out means of rec, kl and elbo (one z per image), in nats, under ``prior`` (default: the
    generative prior, which must have a log-density)."""
    prior = prior if prior is not None else model.generative_prior
    was_training = model.training
    model.eval()
    dev = model.device
    rec = torch.zeros((), device=dev, dtype=torch.float64)
    kl = torch.zeros((), device=dev, dtype=torch.float64)
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(dev)
        with precision(dev, precision_name):
            t = model.terms(xb, prior=prior)
        rec += t["rec"].double().sum()
        kl += t["kl"].double().sum()
    model.train(was_training)
    r, k = rec.item() / len(x), kl.item() / len(x)
    return {"rec": r, "kl": k, "elbo": -(r + k)}


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)
    epochs_run: int = 0
    stopped_early: bool = False
    train_s: float = 0.0
    optimizer: Any = None
    aux_optimizer: Any = None


def fit(
    model: VAE,
    remedy: Remedy,
    cell: Cell,
    train_x: torch.Tensor,
    device: torch.device,
    *,
    quiet: bool = False,
    compile: bool | str = False,
    checkpoint: Path | None = None,
    image_shape: tuple[int, int, int] | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    state: dict[str, Any] | None = None,
    checkpoint_every: int = 10,
    guard: Callable[[], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``train_x`` for ``cell.epochs`` epochs (resuming from ``state`` if given).

    ``on_epoch(epoch, stats)`` is called after each epoch with the held-out ELBO (Optuna reports it).
    ``guard()`` is called after each epoch, before any checkpoint is written, and raises to stop (a run
    whose lease on the cell was taken over writes nothing more). ``train_s`` counts the epochs of a
    resumed ``state`` too: it is the training time of the weights, however many runs it took.
    """
    model.to(device).train()
    if device.type == "cuda" and cell.arch == "conv":
        model.to(memory_format=torch.channels_last)
    fit_x, val_x = split_validation(train_x, cell.val_fraction, cell.seed)
    fit_x, val_x = fit_x.to(device), val_x.to(device)
    opt = make_optimizer(model, cell.lr)
    aux = remedy.aux_modules()  # a remedy's own networks (the AAE's discriminator), with their own Adam
    aux_opt = make_optimizer(aux.to(device).train(), cell.lr) if aux is not None else None
    result = TrainResult()
    start_epoch, train_s_before = 0, 0.0
    # early stopping watches -ELBO on the validation images (lower is better)
    stopper = EarlyStopping(cell.early_stop, model)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        if aux_opt is not None and state.get("aux_optimizer") is not None:
            aux_opt.load_state_dict(state["aux_optimizer"])
        result.history = list(state.get("history", []))
        start_epoch = int(state["epoch"])
        train_s_before = float(state.get("train_s") or 0.0)  # saved by the checkpoint, since a resume
        best = state.get("best_elbo")
        stopper = EarlyStopping(cell.early_stop, model, best=None if best is None else -best,
                                bad=int(state.get("bad_epochs", 0)), best_state=state.get("best_weights"))
    # ``compile`` True compiles with torch's default mode; a string names the mode ("reduce-overhead"
    # captures CUDA graphs, which suits small launch-bound nets).
    mode = compile if isinstance(compile, str) and compile != "default" else None
    def batch_loss(xb: torch.Tensor, beta: float) -> torch.Tensor:
        return remedy.loss(model, xb, beta)  # the negative beta-ELBO unless the remedy says otherwise

    loss_fn = torch.compile(batch_loss, mode=mode) if compile else batch_loss
    n, bs = len(fit_x), min(cell.batch_size, len(fit_x))
    steps = max(1, n // bs)  # drop the ragged last batch: constant shapes suit compile and speed
    t0 = time.perf_counter()
    bar = tqdm(range(start_epoch, cell.epochs), desc=f"train {cell.remedy} z={cell.latent}",
               disable=quiet, leave=False, unit="ep", initial=start_epoch, total=cell.epochs)
    for epoch in bar:
        g = _seed_epoch(cell.seed, epoch)
        beta = remedy.beta * (min(1.0, (epoch + 1) / cell.kl_warmup) if cell.kl_warmup else 1.0)
        perm = torch.randperm(n, generator=g).to(device)
        total = torch.zeros((), device=device)
        for s in range(steps):
            xb = fit_x[perm[s * bs : (s + 1) * bs]]
            with precision(device, cell.precision):
                loss = loss_fn(xb, beta)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if aux_opt is not None:
                with precision(device, cell.precision):
                    remedy.aux_step(model, xb, aux_opt)
            total += loss.detach()
        train_loss = total.item() / steps  # the one host sync of the epoch
        if not torch.isfinite(torch.tensor(train_loss)):
            raise TrainingDiverged(
                f"training diverged: non-finite loss at epoch {epoch + 1} of {cell.remedy} z={cell.latent}; "
                "try a lower --lr or a KL warm-up"
            )
        stats = {"epoch": epoch + 1, "loss": train_loss, **{f"val_{k}": v for k, v in evaluate(model, val_x, precision_name=cell.precision).items()}}
        result.history.append(stats)
        bar.set_postfix(loss=f"{train_loss:.2f}", val_elbo=f"{stats['val_elbo']:.2f}")
        if cell.early_stop and stopper.step(-stats["val_elbo"]):
            result.stopped_early = True
            result.epochs_run = epoch + 1
            break
        result.epochs_run = epoch + 1
        if guard is not None:
            guard()
        if (checkpoint is not None and image_shape is not None and checkpoint_every
                and (epoch + 1) % checkpoint_every == 0 and epoch + 1 < cell.epochs):
            save_checkpoint(checkpoint, model, cell, image_shape, optimizer=opt, epoch=epoch + 1,
                            history=result.history, remedy=remedy, aux_optimizer=aux_opt, extra={"best_elbo": None if math.isinf(stopper.best) else -stopper.best,
                                   "bad_epochs": stopper.bad,
                                   "best_weights": stopper.best_state if cell.early_stop else None,
                                   "train_s": train_s_before + time.perf_counter() - t0})
        if on_epoch is not None:
            on_epoch(epoch + 1, stats)
    bar.close()
    if result.stopped_early:
        stopper.restore()
    result.train_s = train_s_before + time.perf_counter() - t0
    result.optimizer, result.aux_optimizer = opt, aux_opt
    return result


def train_cell(
    cell: Cell,
    device: torch.device,
    *,
    checkpoint: Path | None = None,
    quiet: bool = False,
    compile: bool | str = False,
    data: Data | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    checkpoint_every: int = 10,
    guard: Callable[[], None] | None = None,
) -> tuple[VAE, Data, dict[str, Any]]:
    """Load data, build, train (resuming from ``checkpoint`` if it holds a partial run), ex-post fit
    and save. Returns (model, data, info) where info has the history and timings. ``guard`` (see
    :func:`fit`) is also called before the finished checkpoint is written."""
    data = data or load_data(cell.dataset, seed=cell.seed, **cell.data)
    torch.manual_seed(stream_seed(cell.seed, "train/init"))
    state, payload = None, None
    if checkpoint is not None and Path(checkpoint).is_file():
        try:
            model, remedy, payload = load_checkpoint(checkpoint, device, expect_cell=cell)
        except CorruptCheckpointError as exc:  # truncated by a kill or a full disk: retrain, never fail for good
            print(f"latentbench: warning: {str(exc).split('; delete it')[0]}; retraining the cell", file=sys.stderr)
            Path(checkpoint).unlink(missing_ok=True)
    if payload is not None:
        if payload.get("complete"):
            return model, data, payload["info"]
        state = payload
    else:
        torch.manual_seed(stream_seed(cell.seed, "train/init"))  # as a fresh run, also after a discarded checkpoint
        model, remedy = build_model(cell, data.image_shape)
    result = fit(model, remedy, cell, data.train, device, quiet=quiet, compile=compile,
                 checkpoint=checkpoint, image_shape=data.image_shape, on_epoch=on_epoch, state=state,
                 checkpoint_every=checkpoint_every, guard=guard)
    expost_s = fit_expost(model, remedy, data.train.to(device), cell.seed, quiet=quiet, precision=cell.precision)
    info = {
        "history": result.history,
        "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early,
        "train_s": result.train_s,
        "expost_s": expost_s,
    }
    if guard is not None:
        guard()
    if checkpoint is not None:
        save_checkpoint(checkpoint, model, cell, data.image_shape, optimizer=result.optimizer,
                        epoch=result.epochs_run, history=result.history, complete=True, info=info,
                        remedy=remedy, aux_optimizer=result.aux_optimizer)
    return model, data, info
