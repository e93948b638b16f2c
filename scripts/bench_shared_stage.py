"""Grid wall time with the shared first stage against every cell trained alone, printed as ratios.

For each grid (the default digits grid and the Fashion-MNIST CPU grid unless ``--spec`` says
otherwise) it runs ``latentbench run`` twice into fresh folders, as its own process each time: once as
it runs by default (each first stage, the plain VAE that the vae cell and the ex-post cells share,
trained once) and once with ``--no-shared-stage`` (every cell trains its own model). The feature
classifier of each grid's data is trained beforehand (a warm cache), so both runs time cells only.
It prints each wall time, the ratio shared / alone, and from the records' ``timing.train_s`` how many
models were trained and for how long: with the shared stage one per first stage (whichever cell of the
stage claims it first trains it, the others read it back with 0 s of training), alone one per cell.

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
import time
from pathlib import Path

from _scratch import scratch  # scripts/ is on sys.path when a script runs

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


def training_seconds(folder: Path) -> tuple[float, int, int]:
    """From a run folder's records: (seconds of training, models trained, cells). A cell whose
    ``timing.train_s`` is 0 trained nothing (it read back a first stage another cell trained)."""
    total, trained, cells = 0.0, 0, 0
    for p in (folder / "records").glob("*.json"):
        rec = json.loads(p.read_text())
        train = float(rec.get("timing", {}).get("train_s") or 0.0)
        total += train
        trained += train > 0
        cells += 1
    return total, trained, cells


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", action="append",
                    help="a grid: 'default' or a spec TOML (repeatable; default: the default grid and "
                         "baselines/fashion_mnist-cpu.toml)")
    ap.add_argument("--args", default="", help="extra `latentbench run` flags for every run, e.g. a smaller grid")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each kind, alternating (the fastest counts)")
    ap.add_argument("--keep", action="store_true", help="keep the run folders (removed when done by default)")
    opts = ap.parse_args()
    with scratch("lb-bench-shared-", opts.keep) as tmp:
        bench(opts, tmp)


def bench(opts: argparse.Namespace, tmp: Path) -> None:
    env = {**os.environ, "LATENTBENCH_CACHE": os.environ.get("LATENTBENCH_CACHE", str(tmp / "cache"))}
    os.environ["LATENTBENCH_CACHE"] = env["LATENTBENCH_CACHE"]
    extra = shlex.split(opts.args)
    for i, name in enumerate(opts.spec or DEFAULT_SPECS):
        spec = [] if name == "default" else [name]
        best: dict[str, float] = {}
        seconds: dict[str, tuple[float, int, int]] = {}
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
        (s_sec, s_n, cells), (a_sec, a_n, _) = seconds["shared"], seconds["alone"]
        print(f"  training in the records ({cells} cells): shared {s_n} models in {s_sec:.1f} s, "
              f"alone {a_n} models in {a_sec:.1f} s", flush=True)
    import torch

    print(f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{opts.repeats} run(s) of each kind")


if __name__ == "__main__":
    main()
