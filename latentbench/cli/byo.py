"""``latentbench diagnose --model``, ``fix`` and ``score-samples``: models and samples from outside."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """A model's convention warnings as ``latentbench: warning: ...`` lines on stderr."""
    from latentbench.external.wrap import ConventionWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConventionWarning)
        try:
            yield
        finally:
            for w in caught:
                if issubclass(w.category, ConventionWarning):
                    print(f"latentbench: warning: {w.message}", file=sys.stderr)
                else:
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def model_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The model, dataset and scoring settings of a ``--model`` command."""
    from latentbench.api import load_model

    model = load_model(args.model, args.weights, output=args.output)
    scoring = {k: getattr(args, k) for k in ("n_samples", "iw_k", "features") if getattr(args, k, None) is not None}
    data = {"data_root": args.data_root} if getattr(args, "data_root", None) else None
    return {"model": model, "dataset": args.dataset, "seed": args.seed, "device": args.device, "data": data,
            **scoring}


def cmd_diagnose_model(args: argparse.Namespace) -> int:
    from latentbench.api import diagnose_model

    out = args.out or "diagnose"
    with _warnings_as_lines():
        print(diagnose_model(out=out, **model_settings(args)))
    return 0


def cmd_fix(args: argparse.Namespace) -> int:
    from latentbench.api import fix_model

    remedies = [r.strip() for r in args.remedies.split(",") if r.strip()] if args.remedies else None
    with _warnings_as_lines():
        res = fix_model(remedies=remedies, out=args.out, quiet=args.quiet, command=args.command_line,
                        **model_settings(args))
    if res.brief:
        print(res.brief)
    print(f"board: {res.board}; plots: {res.board.parent / 'plots'}")
    for name, path in res.samplers.items():
        print(f"sampler {name}: {path}")
    print("sample from it: z = latentbench.load_sampler(PATH).sample(n); images = decoder(z)")
    return 0


def cmd_score_samples(args: argparse.Namespace) -> int:
    from latentbench.api import score_samples

    res = score_samples(args.samples, args.dataset, out=args.out, n_samples=args.n, features=args.features,
                        seed=args.seed, source=args.source, device=args.device, quiet=args.quiet,
                        command=args.command_line, data={"data_root": args.data_root} if args.data_root else None)
    m, notes = res.record["metrics"], res.record["notes"]
    print(f"{res.record['source']} vs {args.dataset} held-out ({notes['n_prior']} samples, {notes['n_data']} "
          f"held-out, {notes['features']} features): fid_prior {m['fid_prior']:.3f} (floor {m['fid_floor']:.3f}), "
          f"kid_prior {m['kid_prior']:.4g}, precision {m['precision_prior']:.3f}, recall {m['recall_prior']:.3f}")
    if res.path:
        print(f"record: {res.path} (latentbench leaderboard BOARD {res.path} shows it beside the board)")
    return 0


def add_model_args(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument("--model", required=required, metavar="MODULE:FACTORY|pythae:DIR",
                   help="a callable returning (encoder, decoder) or latentbench.wrap(...), or a saved pythae model")
    p.add_argument("--weights", help="state dict for the factory's encoder and decoder (keys encoder.*, decoder.*)")
    p.add_argument("--output", choices=["means", "logits"],
                   help="what the decoder returns when the factory gives bare modules (default means)")
    p.add_argument("--dataset", default="digits", help="the dataset the model was trained on (default digits)")
    p.add_argument("--data-root", dest="data_root", help="folder with the dataset files")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, sampling and scoring")
    p.add_argument("--n-samples", type=int, dest="n_samples", help="samples per set (default 10000)")
    p.add_argument("--iw-k", type=int, dest="iw_k", help="importance samples per image for nll_iw (default 100)")
    p.add_argument("--features", choices=["domain", "inception"])


def add_commands(sub: Any) -> None:
    from latentbench.cli.common import add_common

    p = sub.add_parser("fix", help="fit every ex-post prior on a model's codes, score each, save the samplers")
    add_model_args(p, required=True)
    p.add_argument("--remedies", help="comma-separated ex-post remedies (default: every registered one)")
    p.add_argument("--out", default="fix", help="output folder (default fix)")
    add_common(p)
    p.set_defaults(func=cmd_fix)

    p = sub.add_parser("score-samples", help="grade any generator's images against held-out data")
    p.add_argument("samples", help="a .npz/.npy image array or a folder of PNG/JPEG images")
    p.add_argument("--dataset", default="digits", help="the dataset the samples imitate (default digits)")
    p.add_argument("--data-root", dest="data_root", help="folder with the dataset files")
    p.add_argument("--n", type=int, help="samples to grade (default all; a board's fid_prior uses its n_samples)")
    p.add_argument("--features", default="domain", choices=["domain", "inception"])
    p.add_argument("--seed", type=int, default=0, help="seed of the dataset split (a board's seed)")
    p.add_argument("--source", help="the name shown on the leaderboard (default: the samples path)")
    p.add_argument("--out", help="record file (JSON) to write")
    add_common(p)
    p.set_defaults(func=cmd_score_samples)
