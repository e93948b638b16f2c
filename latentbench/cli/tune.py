"""``latentbench tune``."""

from __future__ import annotations

import argparse
from pathlib import Path

from latentbench.errors import UserError


def cmd_tune(args: argparse.Namespace) -> int:
    import logging

    import optuna

    from latentbench import tune
    from latentbench.atomic import atomic_write_text
    from latentbench.spec import grid_to_toml

    if args.quiet:
        optuna.logging.set_verbosity(logging.WARNING)
    study_name = args.study or f"{args.remedy}-{args.latent}-{args.dataset or 'digits'}"
    if args.show:
        storage = args.storage or f"runs/tune/{study_name}.log"
        if "://" not in storage and not Path(storage).is_file():
            raise UserError(f"no study {study_name!r}: the journal file {storage} does not exist")
        try:
            study = optuna.load_study(study_name=study_name, storage=tune.make_storage(storage, study_name))
        except KeyError:
            raise UserError(f"no study {study_name!r} in storage {storage}") from None
        df = tune.trials_frame(study)
        print(df.to_markdown(index=False) if len(df) else "(no trials yet)")
        return 0
    if args.trials < 1:
        raise UserError(f"--trials must be >= 1, got {args.trials}")
    from latentbench.cli.common import cell_overrides
    from latentbench.device import pick_device
    from latentbench.registry import REMEDIES
    from latentbench.spec import Cell

    REMEDIES.get(args.remedy)
    base = Cell(remedy=args.remedy, latent=args.latent, seed=args.seed,
                **{"epochs": 30, "n_samples": 1000, "iw_k": 20, **cell_overrides(args)})
    device = pick_device(args.device)
    study = tune.build_study(study_name, args.storage, args.direction, args.sampler, args.seed,
                             warmup_epochs=max(1, base.epochs // 4))
    objective = tune.make_objective(base, args.metric, args.direction, device)
    study.optimize(objective, n_trials=args.trials, show_progress_bar=not args.quiet, catch=())
    states = [t.state.name for t in study.trials]
    print(f"study {study_name}: {states.count('COMPLETE')} complete, {states.count('PRUNED')} pruned, "
          f"{states.count('FAIL')} failed trials")
    try:
        best = study.best_trial
    except ValueError:
        raise UserError("no trial completed, so there is no best spec; run more trials") from None
    out = Path(args.out or f"best-{study_name}.toml")
    atomic_write_text(out, grid_to_toml(tune.best_grid(study, base)))
    print(f"best {args.metric} = {best.value:.4g} with {best.params}")
    print(f"wrote {out}: run it with `latentbench run {out}`")
    return 0


def add_commands(sub) -> None:
    from latentbench.cli.common import add_cell_args, add_common

    p = sub.add_parser("tune", help="tune one remedy at one latent size with Optuna")
    add_cell_args(p, single=True, score=True)
    p.add_argument("--trials", type=int, default=20, help="trials for this worker (default 20)")
    p.add_argument("--metric", default="fid_prior")
    p.add_argument("--direction", default="minimize", choices=["minimize", "maximize"])
    p.add_argument("--storage", help="journal file path or database URL (default runs/tune/<study>.log)")
    p.add_argument("--study", help="study name; workers with the same name and storage share it")
    p.add_argument("--sampler", default="tpe", choices=["tpe", "random", "grid"])
    p.add_argument("--out", help="best spec TOML (default best-<study>.toml)")
    p.add_argument("--show", action="store_true", help="print the study's trials table and exit")
    add_common(p)
    p.set_defaults(func=cmd_tune)


