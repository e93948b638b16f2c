"""Optuna tuning of one remedy at one latent size: ``latentbench tune``.

The search space is the remedy's ``search_space(trial)`` plus the shared training knobs (lr, batch
size, KL warm-up), so plugins are tunable for free. Each trial trains a cell with the shared harness,
reports the held-out ELBO per epoch (sign-adjusted to the study's direction) to a ``MedianPruner``,
and is scored with the scoring code; NaN trials are pruned, not crashes.

Storage: a plain path is Optuna's ``JournalStorage`` over a ``JournalFileBackend`` (safe for several
processes on one machine); a URL (``postgresql://``, ``mysql://``, ``sqlite:///``) is ``RDBStorage``
with heartbeats, so the running trials of a dead worker are marked failed. Workers started with the
same ``--study`` and ``--storage`` share one study (``load_if_exists``); ``--trials`` counts per worker.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from latentbench.errors import UserError
from latentbench.spec import TUNE_KNOBS as SHARED_KNOBS  # the Cell fields with tuning choices


def make_storage(storage: str | None, study: str):
    import optuna

    if storage is None:
        storage = f"runs/tune/{study}.log"
    if "://" in storage:
        import time
        import warnings

        url = _with_driver(storage)
        for attempt in range(6):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=120,
                                                      engine_kwargs={"pool_pre_ping": True})
            except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises many kinds
                text = str(exc)
                # Workers that reach an empty database together race to create Optuna's tables;
                # the loser sees a duplicate and simply tries again.
                if attempt < 5 and ("duplicate key" in text or "already exists" in text):
                    time.sleep(0.5 + attempt)
                    continue
                first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
                raise UserError(f"cannot open Optuna storage {storage!r}: {first}; check the URL, the server "
                                "and its driver (postgresql needs psycopg2-binary)") from None
    path = Path(storage)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        from optuna.storages.journal import JournalFileBackend
    except ImportError:  # optuna < 4
        from optuna.storages import JournalFileStorage as JournalFileBackend
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def _with_driver(url: str) -> str:
    """SQLAlchemy 2.1 maps ``postgresql://`` to psycopg 3; use psycopg2 when only it is installed."""
    import importlib.util

    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def make_sampler(name: str, seed: int):
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.BruteForceSampler(seed=seed)
    raise UserError(f"unknown sampler {name!r}: use tpe, random or grid")


def build_study(name: str, storage: str | None, direction: str = "minimize", sampler: str = "tpe",
                seed: int = 0, warmup_epochs: int = 1):
    """Create or join a study with latentbench's pruner (median over earlier trials, per epoch)."""
    import optuna

    if direction not in ("minimize", "maximize"):
        raise UserError(f"--direction must be minimize or maximize, got {direction!r}")
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=warmup_epochs)
    return optuna.create_study(study_name=name, storage=make_storage(storage, name), load_if_exists=True,
                               direction=direction, sampler=make_sampler(sampler, seed), pruner=pruner)


def suggest(trial, remedy_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(remedy params, shared knobs) for one trial."""
    from latentbench.registry import REMEDIES

    remedy_params = REMEDIES.get(remedy_name).search_space(trial)
    shared = {k: trial.suggest_categorical(k, v) for k, v in SHARED_KNOBS.items()}
    return remedy_params, shared


def make_objective(base, metric: str, direction: str, device, quiet: bool = True):
    """The objective for cells like ``base`` (a :class:`latentbench.spec.Cell`)."""
    import optuna

    from latentbench.data import load_data
    from latentbench.registry import METRICS
    from latentbench.score.scorer import score_model
    from latentbench.training.loop import TrainingDiverged, train_cell

    if metric not in METRICS:
        raise UserError(f"unknown metric {metric!r}; see `latentbench list metrics`")
    data = load_data(base.dataset, seed=base.seed, **base.data)
    sign = -1.0 if direction == "minimize" else 1.0  # report ELBO so that "better" matches the study

    def objective(trial) -> float:
        remedy_params, shared = suggest(trial, base.remedy)
        cell = replace(base, remedy_params={**base.remedy_params, **remedy_params}, **shared)

        def on_epoch(epoch: int, stats: dict[str, float]) -> None:
            trial.report(sign * stats["val_elbo"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        try:
            model, _, _ = train_cell(cell, device, quiet=True, data=data, on_epoch=on_epoch)
            metrics, _, _ = score_model(model, data, cell, device, quiet=True)
        except TrainingDiverged as exc:
            raise optuna.TrialPruned(str(exc)) from None
        value = metrics.get(metric, math.nan)
        for k, v in metrics.items():
            trial.set_user_attr(k, v)
        if not math.isfinite(value):
            raise optuna.TrialPruned(f"{metric} is not finite")
        return value

    return objective


def best_grid(study, base):
    """The best trial's parameters as a grid spec that ``latentbench run`` accepts."""
    from latentbench.registry import REMEDIES
    from latentbench.spec import Grid

    best = study.best_trial
    remedy_keys = set(REMEDIES.get(base.remedy).params)
    remedy_params = {k: v for k, v in best.params.items() if k in remedy_keys}
    shared = {k: v for k, v in best.params.items() if k in SHARED_KNOBS}
    keep = ("dataset", "arch", "epochs", "likelihood", "sigma", "n_samples", "iw_k", "early_stop")
    cell = base.to_dict()
    gbase = {k: cell[k] for k in keep}
    gbase.update(shared)
    if base.net:
        gbase["net"] = base.net
    if base.data:
        gbase["data"] = base.data
    return Grid(name=f"best-{study.study_name}", remedies=[base.remedy], latents=[base.latent],
                seeds=[base.seed], base=gbase, remedy_params={base.remedy: {**base.remedy_params, **remedy_params}})


def trials_frame(study):
    df = study.trials_dataframe(attrs=("number", "value", "state", "params", "duration"))
    return df
