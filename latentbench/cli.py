"""``latentbench`` subcommands. User errors print one line and exit with code 2."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from latentbench.errors import UserError


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_cell_args(p: argparse.ArgumentParser, *, single: bool) -> None:
    p.add_argument("--dataset", help="registered dataset (default digits)")
    p.add_argument("--arch", help="mlp or conv (or a plugin net)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, dest="batch_size")
    p.add_argument("--lr", type=float)
    p.add_argument("--kl-warmup", type=int, dest="kl_warmup", help="epochs of linear KL warm-up")
    p.add_argument("--early-stop", type=int, dest="early_stop", help="patience in epochs (0 = off)")
    p.add_argument("--likelihood", help="bernoulli, gaussian (fixed sigma), gaussian_learned")
    p.add_argument("--sigma", type=float, help="Gaussian likelihood sigma (initial value if learned)")
    p.add_argument("--data-root", dest="data_root", help="folder with the torchvision dataset files")
    p.add_argument("--download", action="store_true", help="let torchvision download the dataset")
    p.add_argument("--compile", action="store_true", help="torch.compile the training step")
    if single:
        p.add_argument("--remedy", default="vae")
        p.add_argument("--latent", default="32", help="flat '32' or spatial HxWxC like '8x8x1024'")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--beta", type=float, help="KL weight (remedies with a beta parameter)")


def _cell_overrides(args: argparse.Namespace) -> dict:
    keys = ("dataset", "arch", "epochs", "batch_size", "lr", "kl_warmup", "early_stop", "likelihood", "sigma")
    out = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    data = {}
    if getattr(args, "data_root", None):
        data["data_root"] = args.data_root
    if getattr(args, "download", False):
        data["download"] = True
    if data:
        out["data"] = data
    return out


def cmd_list(args: argparse.Namespace) -> int:
    from latentbench.registry import REGISTRIES

    kinds = [args.kind] if args.kind else list(REGISTRIES)
    for kind in kinds:
        reg = REGISTRIES[kind]
        names = reg.names(args.pattern)
        if len(kinds) > 1:
            print(f"{kind}:")
        width = max((len(n) for n in names), default=0)
        for name in names:
            print(f"{'  ' if len(kinds) > 1 else ''}{name:<{width}}  {reg.describe(name)}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from latentbench.device import pick_device
    from latentbench.spec import Cell
    from latentbench.train import evaluate, train_cell

    params = {"beta": args.beta} if args.beta is not None else {}
    cell = Cell(remedy=args.remedy, latent=args.latent, seed=args.seed, remedy_params=params,
                **_cell_overrides(args))
    device = pick_device(args.device)
    out = Path(args.out or "runs/train")
    ckpt = out / f"{cell.id}.pt"
    if args.force and ckpt.exists():
        ckpt.unlink()
    model, data, info = train_cell(cell, device, checkpoint=ckpt, quiet=args.quiet, compile=args.compile)
    ev = evaluate(model, data.test)
    print(f"checkpoint: {ckpt}")
    print(f"held-out ({len(data.test)} images): rec {ev['rec']:.3f}  kl {ev['kl']:.3f}  elbo {ev['elbo']:.3f} "
          f"nats  ({info['epochs_run']} epochs, {info['train_s']:.1f}s)")
    return 0


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
    _add_cell_args(p, single=True)
    _add_common(p)
    p.add_argument("--out", help="output folder (default runs/train)")
    p.add_argument("--force", action="store_true", help="retrain even if a finished checkpoint exists")
    p.set_defaults(func=cmd_train)

    for extra in _EXTRA_COMMANDS:
        extra(sub)
    return parser


def _bench_commands(sub) -> None:
    from latentbench.cli_bench import add_commands

    add_commands(sub)


def _tune_commands(sub) -> None:
    from latentbench.cli_tune import add_commands

    add_commands(sub)


_EXTRA_COMMANDS: list = [_bench_commands, _tune_commands]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    args.command_line = "latentbench " + " ".join(shlex.quote(a) for a in argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"latentbench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("latentbench: interrupted", file=sys.stderr)
        return 130
