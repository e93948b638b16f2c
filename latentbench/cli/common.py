"""Arguments shared by several subcommands, derived from the :class:`~latentbench.spec.Cell` fields."""

from __future__ import annotations

import argparse
from typing import Any

from latentbench.spec import cell_fields, field_type


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--memory-gb", type=float, dest="memory_gb",
                   help="memory bound in GB for the batch sizes of scoring and ex-post encoding (default: a safe share "
                        "of free GPU memory or available RAM); never changes a number")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_cell_args(p: argparse.ArgumentParser, *, single: bool, score: bool = False) -> None:
    """One flag per top-level cell field (and per ``[score]`` field with ``score``), plus the dataset's
    ``--data-root`` / ``--download`` and ``--compile``; with ``single``, the grid fields of one cell."""
    for f in cell_fields("top"):
        p.add_argument(_flag(f.name), dest=f.name, type=field_type(f), help=f.metadata["help"])
    if score:
        for f in cell_fields("score"):
            p.add_argument(_flag(f.name), dest=f.name, type=field_type(f), help=f.metadata["help"])
    p.add_argument("--data-root", dest="data_root", help="folder with the dataset files")
    p.add_argument("--download", action="store_true", help="let torchvision download the dataset")
    p.add_argument("--compile", nargs="?", const="default", default=False, metavar="MODE",
                   choices=["default", "reduce-overhead", "max-autotune"],
                   help="torch.compile the training step (MODE: default, reduce-overhead = CUDA graphs, "
                        "max-autotune)")
    if single:
        p.add_argument("--remedy", default="vae")
        p.add_argument("--latent", default="32", help="flat '32' or spatial HxWxC like '8x8x1024'")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--beta", type=float, help="KL weight (remedies with a beta parameter)")


def cell_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The cell settings given on the command line (only those given)."""
    out = {f.name: getattr(args, f.name) for f in (*cell_fields("top"), *cell_fields("score"))
           if getattr(args, f.name, None) is not None}
    data = {}
    if getattr(args, "data_root", None):
        data["data_root"] = args.data_root
    if getattr(args, "download", False):
        data["download"] = True
    if data:
        out["data"] = data
    return out
