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
from latentbench.streams import stream_seed


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
    if path.is_dir():
        raise UserError(f"--storage {storage} is a folder; give a journal file path such as runs/tune/{study}.log")
    _check_journal(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            from optuna.storages.journal import JournalFileBackend
        except ImportError:  # optuna < 4
            from optuna.storages import JournalFileStorage as JournalFileBackend
        backend = JournalFileBackend(str(path))
    except OSError as exc:
        raise UserError(f"cannot write the Optuna journal {storage}: {exc.strerror or exc}; "
                        "give a writable --storage path") from None
    try:
        return optuna.storages.JournalStorage(backend)
    except Exception as exc:  # noqa: BLE001 - a binary or malformed file fails in many ways
        raise UserError(f"{storage} is not an Optuna journal ({type(exc).__name__} while reading it); "
                        "point --storage at a journal file, or at a new path") from None


def _check_journal(path: Path) -> None:
    """An existing journal must be Optuna's: UTF-8 lines, each a JSON object, the last one complete.
    Checked before Optuna opens it, which appends to whatever the file holds."""
    import json

    if not path.is_file():
        return
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not an Optuna journal (byte {exc.start} is binary); point --storage at a "
                        "journal file, or at a new path") from None
    except OSError as exc:
        raise UserError(f"cannot read the Optuna journal {path}: {exc.strerror or exc}") from None
    if text and not text.endswith("\n"):
        raise UserError(f"{path}: the Optuna journal's last line is truncated (a killed writer?); remove that "
                        "line, or point --storage at a new path")
    for n, line in enumerate(text.splitlines(), 1):
        try:
            ok = isinstance(json.loads(line), dict)
        except ValueError:
            ok = False
        if not ok:
            raise UserError(f"{path} is not an Optuna journal (line {n} is not a journal entry); point --storage "
                            "at a journal file, or at a new path")


def _with_driver(url: str) -> str:
    """SQLAlchemy 2.1 maps ``postgresql://`` to psycopg 3; use psycopg2 when only it is installed."""
    import importlib.util

    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def _sampler(name: str, seed: int):
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.BruteForceSampler(seed=seed)
    raise UserError(f"unknown sampler {name!r}: use tpe, random or grid")


def trial_seed(seed: int, number: int) -> int:
    """The sampler's seed for trial ``number`` of a study tuned with ``--seed seed``."""
    return stream_seed(seed, f"tune/trial/{number}") % 2**32


def make_sampler(name: str, seed: int):
    """The sampler ``name``, seeded per trial from (``seed``, the trial's number).

    Workers of one study draw different trials: the storage gives each trial its own number, so workers
    started together with the same ``--seed`` (or a restarted worker) never redraw the same parameters,
    as one sampler seed per process would; one worker alone draws the same trials for the same seed."""
    import optuna

    _sampler(name, seed)  # an unknown name is one line now

    class TrialSeeded(optuna.samplers.BaseSampler):
        def __init__(self) -> None:
            self.inner = _sampler(name, seed)

        def before_trial(self, study, trial) -> None:
            self.inner = _sampler(name, trial_seed(seed, trial.number))
            self.inner.before_trial(study, trial)

        def infer_relative_search_space(self, study, trial):
            return self.inner.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self.inner.sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self.inner.sample_independent(study, trial, param_name, param_distribution)

        def after_trial(self, study, trial, state, values) -> None:
            self.inner.after_trial(study, trial, state, values)

        def reseed_rng(self) -> None:
            self.inner.reseed_rng()

    return TrialSeeded()


def build_study(name: str, storage: str | None, direction: str = "minimize", sampler: str = "tpe",
                seed: int = 0, warmup_epochs: int = 1, *, base=None, metric: str | None = None):
    """Create or join a study with latentbench's pruner (median over earlier trials, per epoch).

    With ``base`` (the cell being tuned) and ``metric``, a new study records them as user attributes
    and an existing one must match them: trials of other settings are never mixed in one study.
    """
    import optuna

    if direction not in ("minimize", "maximize"):
        raise UserError(f"--direction must be minimize or maximize, got {direction!r}")
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=warmup_epochs)
    store = make_storage(storage, name)
    try:
        study = optuna.create_study(study_name=name, storage=store, load_if_exists=True,
                                    direction=direction, sampler=make_sampler(sampler, seed), pruner=pruner)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - a journal holding text, binary or a truncated line
        if storage is not None and "://" in storage:
            raise
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{storage or f'runs/tune/{name}.log'} is not a readable Optuna journal ({type(exc).__name__}: "
                        f"{why[:120]}); point --storage at a journal file, or at a new path") from None
    if base is not None:
        attrs = {"metric": metric, "settings": _study_settings(base)}
        old = {k: study.user_attrs[k] for k in attrs if k in study.user_attrs}
        clash = [k for k, v in old.items() if v != attrs[k]]
        if clash or (old and study.direction.name.lower() != direction):
            raise UserError(f"study {name!r} was tuned with other settings ({_describe(old, attrs, clash)}); "
                            "give another --study name")
        for k, v in attrs.items():
            if k not in old:
                study.set_user_attr(k, v)
    return study


def _study_settings(base) -> dict[str, Any]:
    """What every trial of one study shares: the cell without the knobs that trials draw."""
    d = base.to_dict()
    for k in ("remedy_params", *SHARED_KNOBS):
        d.pop(k, None)
    return d


def _describe(old: dict[str, Any], new: dict[str, Any], clash: list[str]) -> str:
    if "metric" in clash:
        return f"metric {old['metric']} vs {new['metric']}"
    if "settings" in clash:
        a, b = old["settings"], new["settings"]
        return ", ".join(f"{k} {a.get(k)} vs {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
    return "its direction"


def knob_choices(epochs: int) -> dict[str, list[Any]]:
    """The shared knobs' choices for a cell of ``epochs``: a KL warm-up never longer than training."""
    out = dict(SHARED_KNOBS)
    if "kl_warmup" in out:
        out["kl_warmup"] = [v for v in out["kl_warmup"] if v <= epochs] or [0]
    return out


def suggest(trial, remedy_name: str, epochs: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(remedy params, shared knobs) for one trial of a cell trained for ``epochs``."""
    from latentbench.registry import REMEDIES

    remedy_params = REMEDIES.get(remedy_name).search_space(trial)
    shared = {k: trial.suggest_categorical(k, v) for k, v in knob_choices(epochs).items()}
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
        remedy_params, shared = suggest(trial, base.remedy, base.epochs)
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


def board_cell(board: str | Path | None = None) -> dict[str, Any]:
    """The settings of a board's cells: from a TOML spec, or a run or leaderboard folder's records
    (its main settings); by default the shipped ``baselines/digits.toml``."""
    from latentbench.spec import load_grid

    path = Path(board) if board else Path(__file__).resolve().parent / "baselines" / "digits.toml"
    if path.is_dir():
        from latentbench.report.compare import split_settings
        from latentbench.results import read_records

        groups = split_settings(read_records([path], skip_bad=True))
        if not groups:
            raise UserError(f"--board {path}: no successful records to take the scoring settings from")
        return groups[0][0].cell
    if not path.is_file():
        raise UserError(f"--board {path}: not found; give a spec TOML or a run / leaderboard folder")
    cells = load_grid(path).cells()
    if not cells:
        raise UserError(f"--board {path}: the spec has no cells")
    return cells[0].to_dict()


SCORING = ("n_samples", "iw_k", "iw_images", "features")


def best_grid(study, base, board: dict[str, Any] | None = None):
    """The best trial's parameters as a grid spec that ``latentbench run`` accepts, scored with the
    board's scoring settings (``board``: a cell dict, see :func:`board_cell`) so that its runs can be
    ranked beside the board; the tuning's own small sample counts stay in the study."""
    from latentbench.registry import REMEDIES
    from latentbench.spec import Grid, cell_fields

    best = study.best_trial
    remedy_keys = set(REMEDIES.get(base.remedy).defaults())
    remedy_params = {k: v for k, v in best.params.items() if k in remedy_keys}
    shared = {k: v for k, v in best.params.items() if k in SHARED_KNOBS}
    cell = base.to_dict()
    gbase = {f.name: cell[f.name] for f in (*cell_fields("top"), *cell_fields("score"))
             if f.name in cell and not (f.metadata.get("new") and cell[f.name] == f.default)}
    gbase.update(shared)
    if board:
        gbase.update({k: board[k] for k in SCORING if k in board})
    if base.net:
        gbase["net"] = base.net
    if base.data:
        gbase["data"] = base.data
    return Grid(name=f"best-{study.study_name}", remedies=[base.remedy], latents=[base.latent],
                seeds=[base.seed], base=gbase, remedy_params={base.remedy: {**base.remedy_params, **remedy_params}})


def board_differences(grid, board: dict[str, Any]) -> list[str]:
    """'field spec-value (board board-value)' for each setting that keeps the spec's runs from being
    ranked beside the board (see :mod:`latentbench.report.compare`)."""
    from latentbench.report.compare import cell_settings

    ours = cell_settings(grid.cells()[0].to_dict())
    theirs = cell_settings(board)
    return [f"{k} {ours[k]} (board {theirs.get(k)})" for k in sorted(ours) if ours[k] != theirs.get(k)]


def trials_frame(study):
    """One row per trial: number, state, the study's metric by name, duration in seconds, the drawn
    parameters (``params_*``) and every other metric the trial stored."""
    import pandas as pd

    df = study.trials_dataframe(attrs=("number", "value", "state", "params", "duration", "user_attrs"))
    if df.empty:
        return df
    metric = study.user_attrs.get("metric") or "value"
    df = df.rename(columns={"value": metric})
    if "duration" in df:
        df.insert(3, "duration_s", pd.to_timedelta(df.pop("duration")).dt.total_seconds().round(1))
    attrs = {c: c[len("user_attrs_"):] for c in df.columns if c.startswith("user_attrs_")}
    df = df.drop(columns=[c for c, m in attrs.items() if m == metric]).rename(columns=attrs)
    return df


def studies_frame(storages: list[str]):
    """One row per study in the given storages: its metric, direction, trial counts and best value."""
    import optuna
    import pandas as pd

    rows = []
    for storage in storages:
        st = make_storage(storage, "")
        for name in sorted(optuna.study.get_all_study_names(st)):
            study = optuna.load_study(study_name=name, storage=st)
            states = [t.state.name for t in study.trials]
            done = [t for t in study.trials if t.state.name == "COMPLETE"]
            best = (min if study.direction.name == "MINIMIZE" else max)((t.value for t in done), default=None)
            s = study.user_attrs.get("settings", {})
            rows.append({"study": name, "storage": storage, "metric": study.user_attrs.get("metric", "?"),
                         "direction": study.direction.name.lower(), "best": best,
                         "complete": states.count("COMPLETE"), "pruned": states.count("PRUNED"),
                         "failed": states.count("FAIL"), "remedy": s.get("remedy", ""), "latent": s.get("latent", ""),
                         "epochs": s.get("epochs", "")})
    return pd.DataFrame(rows)
