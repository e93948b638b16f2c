"""The Python API: the workflows the ``latentbench`` commands run, callable from Python.

Each function does one whole job and returns what it made; the CLI parses its arguments, calls one
of these and prints the result. The same functions serve a built-in cell and a model brought from
outside (:func:`latentbench.wrap`, ``--model``)::

    import latentbench as lb
    res = lb.train(remedy="expost_gmm", latent="8", epochs=5)
    rec = lb.score_checkpoint(res.checkpoint, n_samples=500)
    print(rec.metrics["fid_prior_post"])
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from latentbench.errors import UserError
from latentbench.spec import Cell

#: What ``latentbench tune`` trains and scores each trial with unless told otherwise: shorter training
#: and fewer samples than a board, so that a study of tens of trials fits in an afternoon on a CPU.
#: The best spec it writes takes the board's scoring settings back (``latentbench.tune.best_grid``).
TUNE_DEFAULTS: dict[str, Any] = {"epochs": 30, "n_samples": 1000, "iw_k": 20}


@dataclass
class TrainResult:
    """One trained cell: its checkpoint, the model and data, the training info and a held-out evaluation."""

    cell: Cell
    checkpoint: Path
    model: Any
    data: Any
    info: dict[str, Any]
    #: held-out ``rec``, ``kl`` and ``elbo`` in nats (under ``eval_prior``)
    evaluation: dict[str, float]
    #: empty when the evaluation is under the generative prior; else why it is under the training prior
    eval_note: str = ""


@dataclass
class ScoreResult:
    """A scored model: its metrics, notes, timing, and the record written (None if none was written)."""

    metrics: dict[str, float]
    notes: dict[str, Any]
    timing: dict[str, float]
    record: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (cuda > mps > cpu), ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or a torch.device, checked."""
    from latentbench.device import pick_device

    return device if isinstance(device, torch.device) else pick_device(device)


def make_cell(remedy: str = "vae", latent: str = "32", seed: int = 0, *, beta: float | None = None,
              **settings: Any) -> Cell:
    """One cell from a remedy, a latent size, a seed and any :class:`~latentbench.spec.Cell` fields
    (``dataset``, ``epochs``, ``arch``, ``n_samples``, ``data={...}``, ...); ``beta`` is the remedy's."""
    params = {"beta": beta} if beta is not None else {}
    return Cell(remedy=remedy, latent=latent, seed=seed, remedy_params=params, **settings)


def train(remedy: str = "vae", latent: str = "32", seed: int = 0, *, beta: float | None = None,
          out: str | Path = "runs/train", force: bool = False, device: str | torch.device = "auto",
          quiet: bool = True, compile: bool | str = False, **settings: Any) -> TrainResult:
    """Train one cell into ``out/<cell-id>.pt`` (resuming a partial checkpoint; a finished one is
    reused unless ``force``) and evaluate it on the held-out images.

    The evaluation is under the generative prior (the fitted ex-post prior where there is one), or,
    for a prior without a log-density (e.g. a diffusion prior), under the training prior."""
    from latentbench.score.geometry import prior_has_density
    from latentbench.training.loop import evaluate, train_cell

    cell = make_cell(remedy, latent, seed, beta=beta, **settings)
    dev = resolve_device(device)
    ckpt = Path(out) / f"{cell.id}.pt"
    if force and ckpt.exists():
        ckpt.unlink()
    model, data, info = train_cell(cell, dev, checkpoint=ckpt, quiet=quiet, compile=compile)
    prior, note = model.generative_prior, ""
    if not prior_has_density(prior):
        prior = model.prior
        note = (f"under the training prior {type(prior).__name__} "
                f"({type(model.generative_prior).__name__} has no log-density)")
    ev = evaluate(model, data.test, prior=prior)
    return TrainResult(cell=cell, checkpoint=ckpt, model=model, data=data, info=info,
                       evaluation={k: float(v) for k, v in ev.items()}, eval_note=note)


def score_checkpoint(checkpoint: str | Path, *, n_samples: int | None = None, features: str | None = None,
                     iw_k: int | None = None, out: str | Path | None = None, allow_incomplete: bool = False,
                     device: str | torch.device | None = "auto", quiet: bool = True,
                     command: str = "") -> ScoreResult:
    """Re-score a checkpoint into a record of its own (``RUN/rescored/<cell-id>.json`` unless ``out``),
    never over the run's record; an unfinished checkpoint only with ``allow_incomplete``.
    ``n_samples``, ``features`` and ``iw_k`` override the cell's scoring settings."""
    from latentbench.atomic import writes_through
    from latentbench.data import load_data
    from latentbench.runner.preflight import check_device, check_output_folder, check_scoring
    from latentbench.runner.records import (
        make_record,
        provenance,
        refuse_overwrite,
        rescore_path,
        write_record,
    )
    from latentbench.score.scorer import score_model
    from latentbench.training.checkpoint import load_checkpoint

    dev = device if isinstance(device, torch.device) else check_device(device)
    ckpt = Path(checkpoint)
    model, _, payload = load_checkpoint(ckpt, dev)
    cell = Cell.from_dict(payload["cell"])
    complete = bool(payload.get("complete"))
    if not complete and not allow_incomplete:
        raise UserError(f"{ckpt}: training stopped at epoch {payload.get('epoch')} of {cell.epochs}; resume it "
                        "with the same `latentbench run`, or pass --allow-incomplete to score it as it is")
    changes: dict[str, Any] = {k: v for k, v in (("n_samples", n_samples), ("features", features), ("iw_k", iw_k)) if v is not None}
    cell = replace(cell, **changes)
    check_scoring([cell])
    path = Path(out) if out else rescore_path(ckpt, cell, complete, payload.get("epoch"))
    refuse_overwrite(path)
    if not writes_through(path):  # a device or FIFO is written through; a file goes into a writable folder
        check_output_folder(Path(os.path.realpath(path)).parent, "--out")
    data = load_data(cell.dataset, seed=cell.seed, **cell.data)
    t0 = time.time()
    metrics, notes, timing = score_model(model, data, cell, dev, quiet=quiet)
    rec = make_record(cell, status="ok", metrics=metrics, notes=notes, timing=timing,
                      prov=provenance(dev, command, t0), origin="score",
                      extras={"checkpoint": {"path": str(ckpt), "epoch": payload.get("epoch"), "complete": complete}})
    write_record(path, rec)
    return ScoreResult(metrics=metrics, notes=notes, timing=timing, record=rec, path=path)


def report_run(folder: str | Path) -> str | None:
    """Write ``folder/leaderboard.md`` (every table) and ``folder/plots`` from the records so far, and
    return the short board (the gap and the reconstruction side); None when there is no successful
    record yet. A folder without records raises :class:`~latentbench.errors.UserError`."""
    from latentbench.atomic import atomic_write_text
    from latentbench.report.leaderboard import render
    from latentbench.report.plots import make_plots
    from latentbench.report.tables import records_frame
    from latentbench.runner.records import read_records

    folder = Path(folder)
    records = read_records([folder], skip_bad=True)
    df = records_frame(records)
    if df.empty:
        return None
    atomic_write_text(folder / "leaderboard.md", render(df, fmt="markdown"))
    make_plots(records, df, folder / "plots")
    return render(df, fmt="markdown", brief=True)


def tune_cell(remedy: str = "vae", latent: str = "32", seed: int = 0, *, beta: float | None = None,
              **settings: Any) -> Cell:
    """The base cell of a tuning study: :data:`TUNE_DEFAULTS` under the settings given."""
    return make_cell(remedy, latent, seed, beta=beta, **{**TUNE_DEFAULTS, **settings})
