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
    from latentbench.results import read_records

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


# --- models from outside ---------------------------------------------------------------------------

EXTERNAL_ARCH = "external"  # the arch of a cell scored for a model latentbench did not build
BROUGHT = "as_brought"  # the remedy name of the brought model's own prior in `fix`


def wrap(encoder: Any, decoder: Any, *, likelihood: Any = "gaussian", prior: Any = None,
         output: str = "means", sigma: float = 0.05, latent: str | None = None) -> Any:
    """Any PyTorch encoder ``x -> (mu, logvar)`` and decoder ``z -> (B, C, H, W)`` as a model the scorer
    accepts (:func:`latentbench.external.wrap.wrap`); ``output`` is ``"means"`` (images in [0, 1]) or
    ``"logits"``."""
    from latentbench.external.wrap import wrap as _wrap

    return _wrap(encoder, decoder, likelihood=likelihood, prior=prior, output=output,  # type: ignore[arg-type]
                 sigma=sigma, latent=latent)


def load_model(spec: str, weights: str | Path | None = None, *, output: str | None = None) -> Any:
    """The model ``MODULE:FACTORY`` (with a state dict file ``weights``) or ``pythae:DIR`` names."""
    from latentbench.external.load import load_model as _load

    return _load(spec, weights, output=output)


def load_sampler(path: str | Path) -> Any:
    """A sampler written by :func:`fix_model` (``OUT/samplers/<remedy>.pt``, ``<remedy>-<param>=<value>....pt`` with parameters): ``.sample(n)`` codes."""
    from latentbench.external.sampler import load_sampler as _load

    return _load(path)


def _as_model(model: Any, weights: str | Path | None = None) -> Any:
    from latentbench.model import VAE

    if isinstance(model, (str, Path)):
        return load_model(str(model), weights)
    if weights is not None:
        raise UserError("weights go with a model named as MODULE:FACTORY; load them into your modules yourself")
    if not isinstance(model, VAE):
        raise UserError(f"a {type(model).__name__} is not a model latentbench can score; pass "
                        "latentbench.wrap(encoder, decoder) or MODULE:FACTORY / pythae:DIR")
    return model


def bring(model: Any, dataset: str = "digits", *, seed: int = 0, weights: str | Path | None = None,
          device: str | torch.device = "auto", data: dict[str, Any] | None = None,
          **scoring: Any) -> tuple[Any, Any, Cell, list[str]]:
    """A model from outside, checked on ``dataset``: (model on ``device``, data, cell, warnings). The
    cell carries the scoring settings (``n_samples``, ``iw_k``, ``features``) and the seed of the
    split, sampling and scoring; the warnings say where the decoder's outputs contradict its declared
    convention."""
    import warnings

    from latentbench.data import load_data
    from latentbench.external.wrap import ConventionWarning, check_model
    from latentbench.runner.preflight import check_scoring

    m = _as_model(model, weights)
    dev = resolve_device(device)
    cell_data = dict(data or {})
    d = load_data(dataset, seed=seed, **cell_data)
    m.to(dev)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConventionWarning)
        found = check_model(m, d.train, what=getattr(m, "source", "the model"))
    for text in found:  # issued here, at the caller's line
        warnings.warn(text, ConventionWarning, stacklevel=2)
    cell = Cell(dataset=dataset, arch=EXTERNAL_ARCH, remedy=BROUGHT, latent=str(m.latent), seed=seed,
                data=cell_data, **scoring)
    check_scoring([cell])
    return m, d, cell, found


def score_model(model: Any, dataset: str = "digits", *, seed: int = 0, weights: str | Path | None = None,
                device: str | torch.device = "auto", quiet: bool = True, data: dict[str, Any] | None = None,
                **scoring: Any) -> ScoreResult:
    """Every registered metric for a model from outside on ``dataset``, with the scorer and settings of
    a built-in cell (``n_samples``, ``iw_k``, ``features`` as in :class:`~latentbench.spec.Cell`)."""
    from latentbench.score.scorer import score_model as _score

    m, d, cell, _ = bring(model, dataset, seed=seed, weights=weights, device=device, data=data, **scoring)
    metrics, notes, timing = _score(m, d, cell, resolve_device(device), quiet=quiet)
    return ScoreResult(metrics=metrics, notes=notes, timing=timing)


def diagnose_model(model: Any, dataset: str = "digits", *, out: str | Path = "diagnose", seed: int = 0,
                   weights: str | Path | None = None, device: str | torch.device = "auto",
                   data: dict[str, Any] | None = None, **scoring: Any) -> Path:
    """The report ``latentbench diagnose`` writes for a built-in cell (verdict, figures, the decoded
    sample sets), for a model from outside; returns ``out/report.md``."""
    from latentbench.report.diagnose import diagnose_model as _diagnose
    from latentbench.report.leaderboard import check_output_folder

    m, d, cell, _ = bring(model, dataset, seed=seed, weights=weights, device=device, data=data, **scoring)
    out = check_output_folder(out, "--out")
    source = f"Model `{getattr(m, 'source', type(m).__name__)}` (brought from outside)"
    path, *_ = _diagnose(m, d, cell, Path(out), resolve_device(device), source=source,
                         prior_name=f"its own prior: {type(m.generative_prior).__name__}")
    return path


@dataclass
class FixResult:
    """What :func:`fix_model` made: the board, one sampler per remedy, and every row's metrics."""

    board: Path
    samplers: dict[str, Path]
    metrics: dict[str, dict[str, float]]
    brief: str | None = None


def expost_remedies(latent: str = "32") -> list[str]:
    """Every registered remedy with an ex-post prior (fitted after training on the codes)."""
    from latentbench.latent import LatentShape
    from latentbench.registry import REMEDIES
    from latentbench.remedies import create_remedy

    shape = LatentShape.parse(latent)
    found = []
    for name in REMEDIES.names():
        try:
            if create_remedy(name).build_expost(shape) is not None:
                found.append(name)
        except Exception:  # noqa: BLE001, S112 - a broken plugin is not a remedy to fit
            continue
    return found


def fix_model(model: Any, dataset: str = "digits", *, remedies: list[Any] | None = None,
              out: str | Path = "fix", seed: int = 0, weights: str | Path | None = None,
              device: str | torch.device = "auto", quiet: bool = True, command: str = "",
              data: dict[str, Any] | None = None, **scoring: Any) -> FixResult:
    """Fit every ex-post prior (``remedies``: names or :class:`~latentbench.remedies.Remedy` instances
    with their parameters; default every registered one) on the codes of a model from
    outside, score each with the scorer of a built-in cell beside the model's own prior, and write
    ``out/records/*.json`` (a run folder ``latentbench leaderboard`` reads), ``out/leaderboard.md`` and
    ``out/plots``, and one sampler per prior, ``out/samplers/<remedy>.pt`` (``<remedy>-<param>=<value>....pt``
    when parameters are given), that
    :func:`load_sampler` reads without the model's code."""
    from latentbench.external.sampler import save_sampler
    from latentbench.registry import REMEDIES
    from latentbench.remedies import Remedy, create_remedy
    from latentbench.report.leaderboard import check_output_folder
    from latentbench.runner.records import make_record, provenance, write_record
    from latentbench.score.scorer import score_model as _score
    from latentbench.training.expost import fit_expost

    folder = Path(out)
    m, d, base, _ = bring(model, dataset, seed=seed, weights=weights, device=device, data=data, **scoring)
    names = list(remedies) if remedies else expost_remedies(base.latent)
    fixes = []
    for item in names:
        if isinstance(item, Remedy):
            remedy, name = item, item.name
        else:
            name = str(item)
            REMEDIES.get(name)  # an unknown name is one line, before anything is written
            remedy = create_remedy(name)
        if remedy.build_expost(m.latent) is None:
            raise UserError(f"remedy {name!r} has no ex-post prior to fit on a trained model; pick from "
                            f"{', '.join(expost_remedies(base.latent))}")
        fixes.append(remedy)
    check_output_folder(folder, "--out")
    dev = resolve_device(device)
    metrics: dict[str, dict[str, float]] = {}
    samplers: dict[str, Path] = {}
    m.set_expost(None)
    rows: list[Any] = [None, *fixes]
    for remedy in rows:
        own = {} if remedy is None else {k: v for k, v in remedy.p.items() if remedy.defaults().get(k) != v}
        name = BROUGHT if remedy is None else remedy.name
        label = name + "".join(f"-{k}={v}" for k, v in sorted(own.items()))  # one row and sampler per setting
        cell = replace(base, remedy=name, remedy_params=own)
        t0 = time.time()
        fit_s = 0.0 if remedy is None else fit_expost(m, remedy, d.train.to(dev), seed, quiet=quiet)
        scores, notes, timing = _score(m, d, cell, dev, quiet=quiet)
        timing = {**timing, "expost_s": fit_s}
        rec = make_record(cell, status="ok", metrics=scores, notes=notes, timing=timing,
                          prov=provenance(dev, command, t0), origin="run",
                          extras={"model": getattr(m, "source", type(m).__name__)})
        write_record(folder / "records" / f"{cell.id}.json", rec)
        metrics[label] = scores
        if remedy is not None:
            samplers[label] = save_sampler(folder / "samplers" / f"{label}.pt", m.expost, name, remedy.p,
                                          {"dataset": dataset, "seed": seed, "latent": base.latent,
                                           "model": str(getattr(m, "source", ""))})
        m.set_expost(None)
    brief = report_run(folder)
    return FixResult(board=folder / "leaderboard.md", samplers=samplers, metrics=metrics, brief=brief)


# --- any generator's samples -----------------------------------------------------------------------

SAMPLES_KIND = "samples"  # the ``kind`` of a record written by score_samples


def read_samples(path: str | Path) -> torch.Tensor:
    """Images from a ``.npz`` / ``.npy`` array or a folder of PNG/JPEG files (the forms ``--dataset
    npz:`` and ``folder:`` read), as float (N, C, H, W) in [0, 1]."""
    import numpy as np

    from latentbench.data.arrays import to_images

    p = Path(path).expanduser()
    if p.is_dir():
        from latentbench.data.folder import read_images, scan

        files, _, _ = scan(p)
        if not files:
            raise UserError(f"{p}: no PNG/JPEG images in this folder; give a folder of images or a .npz/.npy file")
        return to_images(read_images(files, None), str(p))
    if not p.is_file():
        raise UserError(f"no samples at {p}: give a .npz/.npy file or a folder of images")
    try:
        loaded = np.load(p, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - a foreign or truncated file
        raise UserError(f"{p}: cannot read it as .npy/.npz ({type(exc).__name__}); save the images with "
                        "numpy.save or numpy.savez") from None
    if isinstance(loaded, np.ndarray):
        return to_images(loaded, str(p))
    with loaded as z:
        keys = list(z.files)
        key = next((k for k in ("samples", "images", "x") if k in keys), keys[0] if len(keys) == 1 else None)
        if key is None:
            raise UserError(f"{p}: holds arrays {', '.join(keys)}; name the images 'samples' (or save one array)")
        return to_images(z[key], f"{p}[{key}]")


@dataclass
class SamplesResult:
    """A generator's samples graded against held-out data: the record, and where it was written."""

    record: dict[str, Any]
    path: Path | None


def score_samples(samples: str | Path | torch.Tensor, dataset: str = "digits", *, out: str | Path | None = None,
                  n_samples: int | None = None, features: str = "domain", seed: int = 0,
                  source: str | None = None, device: str | torch.device = "auto", quiet: bool = True,
                  command: str = "", data: dict[str, Any] | None = None) -> SamplesResult:
    """Grade any generator's images against ``dataset``'s held-out images in the feature space of a
    board's ``fid_prior`` (the same split, seed, extractor and counts: ``n_samples`` samples, default
    all, against at most as many held-out images), with its noise floor: the FID of as many of the
    dataset's own training images against the same held-out images (``fid_floor``: what a generator
    that draws real images scores). Writes the record to ``out`` when given."""
    from latentbench.data import load_data
    from latentbench.runner.preflight import check_scoring
    from latentbench.runner.records import provenance
    from latentbench.score.features import ensure_classifier
    from latentbench.score.fidelity import FeatureSpace

    x = samples if isinstance(samples, torch.Tensor) else read_samples(samples)
    label = source or (str(samples) if not isinstance(samples, torch.Tensor) else "tensor")
    d = load_data(dataset, seed=seed, **(data or {}))
    if tuple(x.shape[1:]) != d.image_shape:
        raise UserError(f"the samples are images shaped {tuple(x.shape[1:])} (C, H, W) but {dataset}'s are "
                        f"{d.image_shape}; generate at the dataset's size, or pick the dataset they imitate")
    if x.dtype != torch.float32 or not torch.isfinite(x).all() or float(x.min()) < 0 or float(x.max()) > 1:
        raise UserError(f"the samples must be finite float images in [0, 1] (got {x.dtype} spanning "
                        f"[{float(x.min()):g}, {float(x.max()):g}]); rescale them")
    n = n_samples or len(x)
    if n > len(x):
        raise UserError(f"--n {n} but there are {len(x)} samples; give at most {len(x)} or generate more")
    cell = Cell(dataset=dataset, arch=EXTERNAL_ARCH, remedy=SAMPLES_KIND, seed=seed, n_samples=n,
                features=features, data=dict(data or {}))
    check_scoring([cell])
    if out is not None:
        from latentbench.report.leaderboard import check_output_file

        out = check_output_file(out, "--out", example="samples.score.json")
    dev = resolve_device(device)
    t0 = time.time()
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(x), generator=g)[:n]
    n_data = min(n, len(d.test))
    n_floor = min(n, len(d.train))
    ref = d.test[:n_data]  # the held-out images a board's fid_prior compares with
    real = d.train[torch.randperm(len(d.train), generator=g)[:n_floor]]
    weights, info = (ensure_classifier(d, dev, quiet=quiet) if features == "domain"
                     else (None, {"key": "inception-v3-compat"}))
    space = FeatureSpace(features=features, weights=weights, device=dev)
    f_ref = space.features(ref)
    got = space.compare_features(space.features(x[pick]), f_ref, seed=seed)
    floor = space.compare_features(space.features(real), f_ref, seed=seed, fid_only=True)
    metrics = {"fid_prior": got["fid"], "kid_prior": got["kid"], "precision_prior": got["precision"],
               "recall_prior": got["recall"], "fid_floor": floor["fid"]}
    notes = {"n_prior": n, "n_data": n_data, "n_floor": n_floor, "features": features, "feature_key": info["key"],
             "floor": "FID of the dataset's own training images against the same held-out images"}
    rec = {"schema": 1, "kind": SAMPLES_KIND, "status": "ok", "source": label, "dataset": dataset,
           "seed": seed, "cell": cell.to_dict(), "metrics": metrics, "notes": notes,
           "timing": {"score_s": time.time() - t0}, "provenance": provenance(dev, command, t0)}
    path = None
    if out is not None:
        from latentbench.runner.records import write_record

        write_record(out, rec)
        path = Path(out)
    return SamplesResult(record=rec, path=path)
