"""Grid wall time with the shared first stage against every cell trained alone, printed as ratios.

For each grid (the default digits grid and the Fashion-MNIST CPU grid unless ``--spec`` says
otherwise) it runs ``latentbench run`` twice into fresh folders, as its own process each time: once as
it runs by default (each first stage, the plain VAE that the vae cell and the ex-post cells share,
trained once) and once with ``--no-shared-stage`` (every cell trains its own model). The feature
classifier of each grid's data is trained beforehand (a warm cache), so both runs time cells only.
It prints each wall time, the ratio shared / alone, and the training time the ex-post cells spent
(from their records' ``timing.train_s``), which sharing should bring to zero.

    python scripts/bench_shared_stage.py [--spec default] [--spec baselines/fashion_mnist-cpu.toml]
                                         [--args "--epochs 1 ..."] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from latentbench.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPECS = ["default", "baselines/fashion_mnist-cpu.toml"]


class NotRun(Exception):
    """A grid that could not run here (its data missing, a bad flag): the last line of its error."""


def run(argv: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "latentbench", *argv], env=env, cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise NotRun((done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1])
    return time.perf_counter() - t


def warm_features(spec: list[str], extra: list[str]) -> None:
    """Train (or find) the feature classifier of the grid's data in this process, before any timing."""
    import torch

    from latentbench.cli import build_parser
    from latentbench.cli.run import build_grid
    from latentbench.runner.grid import prepare_features

    args = build_parser().parse_args(["run", *spec, *extra])
    prepare_features(build_grid(args).cells(), torch.device("cpu"), quiet=True)


def training_seconds(folder: Path) -> tuple[float, float]:
    """(seconds every cell spent training, seconds the cells built on a first stage spent), from the records."""
    from latentbench.spec import Cell
    from latentbench.training.first_stage import first_stage_cell

    total = expost = 0.0
    for p in (folder / "records").glob("*.json"):
        rec = json.loads(p.read_text())
        train = float(rec.get("timing", {}).get("train_s") or 0.0)
        total += train
        cell = Cell.from_dict(rec["cell"])
        if cell.remedy != "vae" and first_stage_cell(cell) is not None:  # an ex-post cell
            expost += train
    return total, expost


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", action="append",
                    help="a grid: 'default' or a spec TOML (repeatable; default: the default grid and "
                         "baselines/fashion_mnist-cpu.toml)")
    ap.add_argument("--args", default="", help="extra `latentbench run` flags for every run, e.g. a smaller grid")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each kind, alternating (the fastest counts)")
    opts = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lb-bench-shared-"))
    env = {**os.environ, "LATENTBENCH_CACHE": os.environ.get("LATENTBENCH_CACHE", str(tmp / "cache"))}
    os.environ["LATENTBENCH_CACHE"] = env["LATENTBENCH_CACHE"]
    extra = shlex.split(opts.args)
    for i, name in enumerate(opts.spec or DEFAULT_SPECS):
        spec = [] if name == "default" else [name]
        best: dict[str, float] = {}
        seconds: dict[str, tuple[float, float]] = {}
        try:
            warm_features(spec, extra)
            for r in range(opts.repeats):
                for kind in ("shared", "alone"):
                    out = tmp / f"g{i}-{kind}-{r}"
                    flags = [] if kind == "shared" else ["--no-shared-stage"]
                    wall = run(["run", *spec, *extra, *flags, "--quiet", "--out", str(out)], env)
                    if wall < best.get(kind, float("inf")):
                        best[kind], seconds[kind] = wall, training_seconds(out)
        except (NotRun, UserError) as exc:
            print(f"{name}: not run: {exc}", flush=True)
            continue
        ratio = best["shared"] / best["alone"]
        print(f"{name}: shared first stage {best['shared']:.1f} s, cells trained alone {best['alone']:.1f} s: "
              f"ratio shared / alone {ratio:.2f}", flush=True)
        print(f"  training in the records: {seconds['shared'][0]:.1f} s shared ({seconds['shared'][1]:.1f} s in "
              f"ex-post cells) vs {seconds['alone'][0]:.1f} s alone ({seconds['alone'][1]:.1f} s in ex-post cells)",
              flush=True)
    import torch

    print(f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{opts.repeats} run(s) of each kind")


if __name__ == "__main__":
    main()
