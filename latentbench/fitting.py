"""The one fitting routine for auxiliary networks: ex-post flows, the two-stage second VAE, the
noise-contrastive classifier, the diffusion denoiser and the domain feature classifier.

:func:`fit_module` holds what each of them needs and used to write by hand: a seeded split into fit
and validation rows, Adam, minibatches in a fresh order each epoch (the ragged last batch dropped),
the cell's precision, early stopping on the validation loss with the best weights kept in place
(:mod:`latentbench.early_stop`), a progress bar, and a small history. The VAE itself trains through
``training/loop.py``, which adds what only it needs (checkpoints, resume, the KL warm-up).

Randomness comes from named streams of ``seed`` (:mod:`latentbench.streams`): ``fit/split`` for the
split, ``fit/epoch/<k>`` for epoch k's order and fresh draws, ``fit/val`` for the fixed validation
draw, and ``fit/torch`` seeds the global generator (``torch.randn_like`` in a loss) inside the fit,
which leaves the caller's global generator as it was.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from latentbench.device import precision as precision_context
from latentbench.early_stop import EarlyStopping
from latentbench.streams import Seed, stream, stream_seed

Rows = tuple[torch.Tensor, ...]
#: ``draw(rows, generator) -> tensors``: what the loss sees for a block of data rows (fresh noise).
Draw = Callable[[Rows, torch.Generator], Rows]

_PRECISION: contextvars.ContextVar[str] = contextvars.ContextVar("latentbench_fit_precision", default="fp32")


@contextlib.contextmanager
def fit_precision(name: str) -> Iterator[None]:
    """Fits inside the block that do not name a precision run at ``name`` (the cell's ``precision``:
    ``fp32``, ``tf32`` or ``bf16``), so a prior's ``fit`` follows the cell without a new argument."""
    token = _PRECISION.set(name)
    try:
        yield
    finally:
        _PRECISION.reset(token)


@dataclass
class Fitted:
    """What :func:`fit_module` returns: the module (best weights loaded) and its history."""

    module: nn.Module
    train_loss: list[float] = field(default_factory=list)  # mean minibatch loss per epoch
    val_loss: list[float] = field(default_factory=list)  # validation loss per epoch (empty without one)
    best: float = math.inf  # the lowest validation loss (the last training loss without validation)
    epochs_run: int = 0
    stopped_early: bool = False


def split_rows(n: int, fraction: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded split of ``n`` rows into (fit, validation) indices; ``fraction`` 0 keeps every row."""
    if fraction <= 0:
        return torch.arange(n), torch.arange(0)
    n_val = max(1, math.floor(fraction * n + 1e-9))
    if n_val >= n:
        raise ValueError(f"a validation fraction of {fraction} leaves no row of {n} to fit on")
    perm = torch.randperm(n, generator=generator)
    return perm[n_val:], perm[:n_val]


def fit_module(
    module: nn.Module,
    loss: Callable[..., torch.Tensor],
    data: torch.Tensor | Sequence[torch.Tensor],
    *,
    seed: Seed,
    lr: float,
    batch_size: int,
    epochs: int,
    patience: int = 0,
    val_fraction: float = 0.1,
    precision: str | None = None,
    desc: str = "fit",
    quiet: bool = True,
    params: Iterable[nn.Parameter] | None = None,
    draw: Draw | None = None,
    val_draw: Draw | None = None,
) -> Fitted:
    """Fit ``module`` by minimising ``loss(*batch)`` (a scalar) over minibatches of ``data``.

    ``data`` is a tensor or a tuple of tensors whose rows belong together (images and labels; means
    and standard deviations); a ``val_fraction`` of the rows is held out (none at 0) and the loss on
    them, after each epoch, drives early stopping (``patience`` epochs without improvement; 0 never
    stops). The weights of the best validation epoch are put back at the end (the last ones without
    validation). ``draw`` turns a block of rows into the tensors the loss sees, for losses that need
    fresh randomness every epoch (z ~ q(z|x), negatives, timesteps): it is called once per epoch on
    the shuffled fit rows and once on the validation rows (``val_draw`` if given), whose draw stays
    fixed so that the stopping signal is not noisier than it must be. ``params`` defaults to the
    module's trainable parameters; ``precision`` to the enclosing :func:`fit_precision` (fp32).
    ``seed`` is an int or a generator (a stage's stream) that the named streams are derived from.
    """
    rows: Rows = (data,) if isinstance(data, torch.Tensor) else tuple(data)
    n, dev = len(rows[0]), rows[0].device
    if any(len(t) != n for t in rows):
        raise ValueError(f"fit_module: data tensors differ in length ({[len(t) for t in rows]})")
    prec = precision or _PRECISION.get()
    fit_idx, val_idx = split_rows(n, val_fraction, stream(seed, "fit/split"))
    fit_rows = tuple(t[fit_idx.to(t.device)] for t in rows)
    val_rows = tuple(t[val_idx.to(t.device)] for t in rows) if len(val_idx) else None
    trainable = [p for p in (module.parameters() if params is None else params) if p.requires_grad]
    opt = torch.optim.Adam(trainable, lr=lr)
    stopper = EarlyStopping(patience, module)
    result = Fitted(module)
    n_fit = len(fit_idx)
    bs = min(int(batch_size), n_fit)
    steps = max(1, n_fit // bs)
    devices = [dev] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(stream_seed(seed, "fit/torch"))
        val_batch = None
        if val_rows is not None:
            val_batch = (val_draw or draw)(val_rows, stream(seed, "fit/val")) if (val_draw or draw) else val_rows
        bar = tqdm(range(epochs), desc=desc, disable=quiet, leave=False, unit="ep")
        for epoch in bar:
            g = stream(seed, f"fit/epoch/{epoch}")
            order = torch.randperm(n_fit, generator=g).to(dev)
            drawn = draw(tuple(t[order.to(t.device)] for t in fit_rows), g) if draw is not None else None
            module.train()
            total = torch.zeros((), device=dev)
            for s in range(steps):
                if drawn is not None:
                    batch = tuple(t[s * bs : (s + 1) * bs] for t in drawn)
                else:
                    idx = order[s * bs : (s + 1) * bs]
                    batch = tuple(t[idx.to(t.device)] for t in fit_rows)
                with precision_context(dev, prec):
                    value = loss(*batch)
                opt.zero_grad(set_to_none=True)
                value.backward()
                opt.step()
                total += value.detach().float()
            result.train_loss.append(total.item() / steps)  # the one host sync of the epoch
            result.epochs_run = epoch + 1
            if val_batch is None:
                continue
            module.eval()
            with torch.no_grad(), precision_context(dev, prec):
                v = float(loss(*val_batch))
            result.val_loss.append(v)
            bar.set_postfix(val=f"{v:.4g}")
            if stopper.step(v):
                result.stopped_early = True
                break
        bar.close()
    if val_batch is not None:
        stopper.restore()
        result.best = stopper.best
    else:
        result.best = result.train_loss[-1] if result.train_loss else math.inf
    module.eval()
    return result
