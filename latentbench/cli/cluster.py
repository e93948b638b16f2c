"""``latentbench run ... --slurm OPTIONS [--shards N] [--wait]``: submit the grid as a job array
(see :mod:`latentbench.runner.slurm`)."""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from latentbench.errors import UserError


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Point this process's stdout and stderr (file descriptors 1 and 2) at ``path`` for the duration, so
    that the processes started meanwhile (submitit's local controllers) write there, not to the terminal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)


def submit(args: argparse.Namespace, grid, folder: Path, report: Callable[[Path], None]) -> int:
    """Submit ``grid`` (already validated) as ``--shards`` array tasks; with ``--wait``, wait for them
    and ``report(folder)`` (the board)."""
    from latentbench.cli import main
    from latentbench.runner.grid import save_grid
    from latentbench.runner.slurm import make_executor, parse_slurm, submit_array, task_argv, wait_all

    if args.shard:
        raise UserError("--slurm splits the grid itself: drop --shard (--shards N sets the number of array tasks)")
    if args.force:  # a requeued task reruns its command: --force would recompute finished cells every time
        raise UserError(f"--force cannot go with --slurm (a requeued task would recompute its finished cells "
                        f"again); delete the records to recompute from {folder}/records, then submit without --force")
    cluster, params = parse_slurm(args.slurm)
    n_cells = len(grid.cells())
    shards = n_cells if args.shards is None else args.shards
    if shards < 1:
        raise UserError(f"bad --shards {shards}: give the number of array tasks, >= 1")
    shards = min(shards, n_cells)
    params.setdefault("name", f"latentbench-{grid.name}")
    argv = task_argv(shlex.split(args.command_line)[1:], folder)
    logs = folder / "slurm"
    executor = make_executor(logs, cluster, params)  # submitit and sbatch are there, before anything is written
    save_grid(grid, folder)
    if cluster == "local":  # the local controllers would print their Ctrl-C tracebacks on this terminal
        with _output_to(logs / "local-controller.log"):
            jobs = submit_array(executor, main, argv, shards)
    else:
        jobs = submit_array(executor, main, argv, shards)
    array = str(jobs[0].job_id).split("_")[0]
    print(f"submitted {n_cells} cells as {shards} {cluster} tasks (job {array}); logs in {logs}")
    if cluster == "slurm":
        print(f"  watch: squeue -j {array}    cancel: scancel {array}")
    print(f"  when they end: latentbench leaderboard {folder}   (or the same command again: it resumes)")
    if not args.wait:
        return 0
    try:
        results = wait_all(jobs)
    except KeyboardInterrupt:
        if cluster == "local":
            for job in jobs:
                job.cancel(check=False)
            print("\nlatentbench: interrupted; the local tasks were stopped. Run the same command again to "
                  "resume.", file=sys.stderr)
        else:
            print(f"\nlatentbench: stopped waiting; the array keeps running (scancel {array} stops it).",
                  file=sys.stderr)
        return 130
    report(folder)
    failed = [(job_id, why) for job_id, why in results if why]
    for job_id, why in failed:
        print(f"latentbench: task {job_id} failed: {why}", file=sys.stderr)
    codes = [job.result() for job in jobs if job.job_id not in {f[0] for f in failed}]
    return 1 if failed or any(codes) else 0
