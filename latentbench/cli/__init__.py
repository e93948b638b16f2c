"""``latentbench`` subcommands (argument parsing only; the work is done in the stage packages).

User errors print one line and exit with code 2; ``run``, ``score``, ``leaderboard``, ``publish`` and
``diagnose`` live in ``cli.run``, ``tune`` in ``cli.tune``.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading

from latentbench.cli.common import add_cell_args, add_common, cell_overrides
from latentbench.errors import UserError


def cmd_list(args: argparse.Namespace) -> int:
    from latentbench.registry import REGISTRIES

    kinds = [args.kind] if args.kind else list(REGISTRIES)
    for kind in kinds:
        reg = REGISTRIES[kind]
        names = reg.names(args.pattern)
        if len(kinds) > 1:
            print(f"{kind}:")
        width = max((len(n) for n in names), default=0)
        goals = {}
        if kind == "metrics":  # how tables read each metric: its goal, and whether it is a bound
            from latentbench.report.tables import direction

            goals = {name: direction(reg.get(name)) for name in names}
        goal_width = max((len(g) for g in goals.values()), default=0)
        for name in names:
            goal = f"{goals[name]:<{goal_width}}  " if goals else ""
            print(f"{'  ' if len(kinds) > 1 else ''}{name:<{width}}  {goal}{reg.describe(name)}")
        if goals:
            print(f"{'  ' if len(kinds) > 1 else ''}Tables rank a metric by its goal (a target metric by its "
                  "distance to the target) and bold every row within the record's noise floor of the best; "
                  "descriptive metrics and bounds are shown, never ranked.")
        if kind == "datasets" and not args.pattern:
            pad = "  " if len(kinds) > 1 else ""
            print(f"{pad}{'npz:PATH':<{width}}  your own images in a .npz/.npy array (see README, Datasets)")
            print(f"{pad}{'folder:PATH':<{width}}  your own PNG/JPEG files, one subfolder per class or flat")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from latentbench.api import train

    res = train(args.remedy, args.latent, args.seed, beta=args.beta, out=args.out or "runs/train",
                force=args.force, device=args.device, quiet=args.quiet, compile=args.compile,
                **cell_overrides(args))
    ev, info = res.evaluation, res.info
    under = f" {res.eval_note}" if res.eval_note else ""
    print(f"checkpoint: {res.checkpoint}")
    print(f"held-out ({len(res.data.test)} images): rec {ev['rec']:.3f}  kl {ev['kl']:.3f}  elbo {ev['elbo']:.3f} "
          f"nats{under}  ({info['epochs_run']} epochs, {info['train_s']:.1f}s)")
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM (what SLURM, Kubernetes and ``kill`` send) or SIGHUP (a closed terminal or ssh session),
    raised where the program is, so that it unwinds like Ctrl-C: locks released, nothing half-written,
    the resume hint printed. Its exit code is 128 + the signal (143, 129: the shell's convention) so that
    a scheduler or script can tell it from Ctrl-C's 130."""

    exit_code = 128 + signal.SIGTERM

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__()
        self.exit_code = 128 + int(signum)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _ignore(signum: int, frame: object) -> None:
    """Ignore a repeated stop signal (a Python handler: ``SIG_IGN`` set from inside a handler can make
    Python print "Signal 15 ignored due to race condition")."""


def _on_stop_signal(signum: int, frame: object) -> None:
    for sig in STOP_SIGNALS:  # a second signal must not interrupt the unwinding
        if signal.getsignal(sig) is _on_stop_signal:
            signal.signal(sig, _ignore)
    raise Terminated(signum)


def build_parser() -> argparse.ArgumentParser:
    from latentbench import __version__

    parser = argparse.ArgumentParser(
        prog="latentbench",
        description="Benchmark remedies for the VAE prior hole problem across latent sizes.",
    )
    parser.add_argument("--version", action="version", version=f"latentbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("list", help="list registered remedies, datasets, nets or metrics")
    p.add_argument("kind", nargs="?", choices=["remedies", "datasets", "nets", "metrics"])
    p.add_argument("pattern", nargs="?", help="fnmatch filter, e.g. '*prior*'")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("train", help="train one cell and write its checkpoint")
    add_cell_args(p, single=True)
    add_common(p)
    p.add_argument("--out", help="output folder (default runs/train)")
    p.add_argument("--force", action="store_true", help="retrain even if a finished checkpoint exists")
    p.set_defaults(func=cmd_train)

    from latentbench.cli import run, tune

    run.add_commands(sub)
    tune.add_commands(sub)
    for p in (parser, *sub.choices.values()):  # no prefixes: `--slu local` must not mean --slurm
        p.allow_abbrev = False
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    args.command_line = "latentbench " + " ".join(shlex.quote(a) for a in argv)
    # SIGTERM and SIGHUP unwind like Ctrl-C, unless the program that calls main handles them already
    # (submitit's job wrapper on a cluster does: it checkpoints and requeues the task) or ignores them
    # (``nohup`` ignores SIGHUP)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} if main_thread else {}
    ours = [sig for sig, old in previous.items() if old in (signal.SIG_DFL, None)]
    for sig in ours:
        signal.signal(sig, _on_stop_signal)
    try:
        if getattr(args, "memory_gb", None) is not None:
            from latentbench.device import set_memory_gb

            set_memory_gb(args.memory_gb)
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"latentbench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        print("latentbench: interrupted", file=sys.stderr)
        return getattr(exc, "exit_code", 130)
    finally:
        for sig in ours:
            signal.signal(sig, previous[sig])
