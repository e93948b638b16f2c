"""``latentbench tune``."""

from __future__ import annotations

import argparse
from pathlib import Path

from latentbench.errors import UserError

TUNE_DIR = Path("runs/tune")


def cmd_show(args: argparse.Namespace, study_name: str | None) -> int:
    """The trials table of one study, or (no --study) the studies of a storage or of runs/tune/."""
    import optuna

    from latentbench import tune

    if study_name is None:
        storages = [args.storage] if args.storage else [str(p) for p in sorted(TUNE_DIR.glob("*.log"))]
        if args.storage and "://" not in args.storage and not Path(args.storage).is_file():
            raise UserError(f"no Optuna storage at {args.storage}: the journal file does not exist")
        df = tune.studies_frame(storages)
        if df.empty:
            raise UserError(f"no studies in {args.storage or str(TUNE_DIR) + '/*.log'}; run `latentbench tune` first")
        print(df.to_markdown(index=False, floatfmt=".4g"))
        return 0
    storage = args.storage or str(TUNE_DIR / f"{study_name}.log")
    if "://" not in storage and not Path(storage).is_file():
        raise UserError(f"no study {study_name!r}: the journal file {storage} does not exist")
    try:
        study = optuna.load_study(study_name=study_name, storage=tune.make_storage(storage, study_name))
    except KeyError:
        raise UserError(f"no study {study_name!r} in storage {storage}; `latentbench tune --show` lists them") from None
    df = tune.trials_frame(study)
    metric = study.user_attrs.get("metric", "value")
    print(f"study {study_name} ({storage}): {metric}, {study.direction.name.lower()}; durations in seconds")
    print(df.to_markdown(index=False, floatfmt=".4g") if len(df) else "(no trials yet)")
    return 0


def _direction(args: argparse.Namespace) -> str:
    """--direction, or the metric's own direction."""
    from latentbench.report.tables import metric_info

    info = metric_info(args.metric)  # an unknown metric is one line, before anything is written
    if args.direction:
        return args.direction
    if info.higher_is_better is None:
        why = {"target": f"is best at {info.target:g}, not at an end", "describe": "is descriptive"}.get(
            info.goal, f"is a {info.bound} bound")
        raise UserError(f"metric {args.metric!r} {why}; tune on a ranked metric (e.g. fid_prior_post) "
                        "or pass --direction minimize or maximize")
    return "maximize" if info.higher_is_better else "minimize"


def cmd_tune(args: argparse.Namespace) -> int:
    import logging

    import optuna

    from latentbench import tune
    from latentbench.atomic import atomic_write_text
    from latentbench.spec import grid_to_toml

    if args.quiet:
        optuna.logging.set_verbosity(logging.WARNING)
    if args.show:
        return cmd_show(args, args.study)
    study_name = args.study or f"{args.remedy}-{args.latent}-{args.dataset or 'digits'}"
    if args.trials < 1:
        raise UserError(f"--trials must be >= 1, got {args.trials}")
    from latentbench.api import tune_cell
    from latentbench.cli.common import cell_overrides
    from latentbench.data import load_data
    from latentbench.device import pick_device
    from latentbench.model import build_model
    from latentbench.remedies import create_remedy
    from latentbench.report.leaderboard import check_output_file

    # Everything a trial needs is checked before the study exists: nothing is written on an error.
    direction = _direction(args)
    params = {"beta": args.beta} if args.beta is not None else {}
    create_remedy(args.remedy, **params)
    base = tune_cell(args.remedy, args.latent, args.seed, beta=args.beta, **cell_overrides(args))
    data = load_data(base.dataset, seed=base.seed, **base.data)
    build_model(base, data.image_shape)  # arch, likelihood and net parameters
    from latentbench.runner.preflight import check_scoring

    check_scoring([base])  # n_samples, Inception weights, the feature cache
    board = tune.board_cell(args.board)
    out = check_output_file(args.out or f"best-{study_name}.toml", example=f"best-{study_name}.toml")
    device = pick_device(args.device)
    study = tune.build_study(study_name, args.storage, direction, args.sampler, args.seed,
                             warmup_epochs=max(1, base.epochs // 4), base=base, metric=args.metric)
    objective = tune.make_objective(base, args.metric, direction, device)
    study.optimize(objective, n_trials=args.trials, show_progress_bar=not args.quiet, catch=())
    states = [t.state.name for t in study.trials]
    print(f"study {study_name}: {states.count('COMPLETE')} complete, {states.count('PRUNED')} pruned, "
          f"{states.count('FAIL')} failed trials")
    try:
        best = study.best_trial
    except ValueError:
        raise UserError("no trial completed, so there is no best spec; run more trials") from None
    grid = tune.best_grid(study, base, board)
    atomic_write_text(out, grid_to_toml(grid))
    print(f"best {args.metric} = {best.value:.4g} with {best.params}")
    print(f"wrote {out} (scored like the board: n_samples {grid.base['n_samples']}, iw_k {grid.base['iw_k']}): "
          f"run it with `latentbench run {out}`")
    diffs = tune.board_differences(grid, board)
    if diffs:
        print(f"note: its runs differ from the board in {', '.join(diffs)}, so `latentbench leaderboard BOARD RUN` "
              "will show them marked and unranked; edit those keys in the spec (or tune with the board's "
              "settings) to rank them")
    return 0


def add_commands(sub) -> None:
    from latentbench.cli.common import add_cell_args, add_common

    p = sub.add_parser("tune", help="tune one remedy at one latent size with Optuna")
    add_cell_args(p, single=True, score=True)
    p.add_argument("--trials", type=int, default=20, help="trials for this worker (default 20)")
    p.add_argument("--metric", default="fid_prior")
    p.add_argument("--direction", choices=["minimize", "maximize"], help="default: the metric's own direction")
    p.add_argument("--storage", help="journal file path or database URL (default runs/tune/<study>.log)")
    p.add_argument("--study", help="study name; workers with the same name and storage share it")
    p.add_argument("--sampler", default="tpe", choices=["tpe", "random", "grid"])
    p.add_argument("--out", help="best spec TOML (default best-<study>.toml)")
    p.add_argument("--board", help="spec TOML or run / leaderboard folder whose scoring settings (n_samples, iw_k, "
                                   "features) the best spec takes (default baselines/digits.toml)")
    p.add_argument("--show", action="store_true",
                   help="print the trials table of --study, or without --study the studies in the storage")
    add_common(p)
    p.set_defaults(func=cmd_tune)
