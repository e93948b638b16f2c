"""Clusters: a grid submitted as one job array through submitit (the launcher Hydra's submitit plugin
uses), one ``--shard i/n`` of the grid per array task, all writing into one shared output folder.

``latentbench run SPEC --slurm partition=gpu,gpus=1,time=60 --shards 16`` validates the grid on the
login node, then submits 16 tasks; task i runs the same command with ``--shard i/16 --quiet`` in the
submission's working directory. Cells are claimed through their leases, so tasks, requeued tasks and
reruns never compute a cell twice, and the same command run again resumes. A task that SLURM times out
or preempts is requeued by submitit (``Checkpointable``): it stops like Ctrl-C, its finished cells kept,
and resumes where it stopped. ``--slurm local`` runs the array as local processes through submitit's
local executor: the same code path, testable on a machine without SLURM.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from latentbench.errors import UserError

try:  # the requeue-on-timeout protocol, when submitit is installed
    from submitit.helpers import Checkpointable
except ImportError:  # pragma: no cover - without submitit nothing is submitted
    Checkpointable = object  # type: ignore[assignment,misc]

# --slurm key -> (submitit parameter, type)
OPTIONS: dict[str, tuple[str, type]] = {
    "partition": ("slurm_partition", str),
    "gpus": ("gpus_per_node", int),
    "time": ("timeout_min", int),
    "cpus": ("cpus_per_task", int),
    "mem": ("mem_gb", float),
    "nodes": ("nodes", int),
    "account": ("slurm_account", str),
    "qos": ("slurm_qos", str),
    "constraint": ("slurm_constraint", str),
    "parallel": ("slurm_array_parallelism", int),
    "name": ("name", str),
}
# flags of `latentbench run` that belong to the submission, not to the array tasks
SUBMIT_FLAGS = {"--slurm": True, "--shards": True, "--shard": True, "--wait": False, "--out": True}


def parse_slurm(text: str) -> tuple[str, dict[str, Any]]:
    """``"partition=gpu,gpus=1,time=60"`` -> ("slurm", submitit parameters); a leading ``local`` picks
    the local executor. Other ``key=value`` pairs pass to sbatch as ``--key=value``."""
    cluster, params = "slurm", {}
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        if item in ("local", "slurm"):
            cluster = item
            continue
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise UserError(f"bad --slurm item {item!r}: write key=value pairs such as partition=gpu,gpus=1,time=60 "
                            "(or 'local' to run the array here)")
        name, kind = OPTIONS.get(key, (f"slurm_{key}", str))
        try:
            params[name] = kind(value)
        except ValueError:
            raise UserError(f"bad --slurm {key}={value!r}: give a {kind.__name__}") from None
    if cluster == "local":  # the local executor knows only the generic parameters
        params = {k: v for k, v in params.items() if k in ("timeout_min", "name")}
    params.setdefault("timeout_min", 60)
    return cluster, params


def task_argv(argv: list[str], folder: Path) -> list[str]:
    """The array task's command: the submitted one without the submission flags, with the absolute
    output folder and ``--quiet`` (a task's log is a file, not a terminal)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in SUBMIT_FLAGS:
            skip = SUBMIT_FLAGS[name] and "=" not in arg
            continue
        out.append(arg)
    return [*out, "--out", str(Path(folder).resolve()), *([] if "--quiet" in out else ["--quiet"])]


class ShardTask(Checkpointable):
    """One array task: run ``entry(argv + --shard i/n)`` in the submission's directory. Requeued on
    timeout or preemption (submitit calls :meth:`checkpoint`, which resubmits the same task: finished
    cells are kept and the rest resume)."""

    def __call__(self, entry: Callable[[list[str]], int], argv: list[str], cwd: str, shard: str) -> int:
        os.chdir(cwd)
        code = entry([*argv, "--shard", shard])
        if code not in (0, 1):  # 1: some cells failed, and they are recorded as failed
            raise RuntimeError(f"latentbench run --shard {shard} exited with code {code}; see this task's log")
        return code


def make_executor(folder: Path, cluster: str, params: dict[str, Any]) -> Any:
    """submitit's executor writing its logs to ``folder``; one line if submitit or sbatch is missing or
    submitit refuses the options."""
    try:
        import submitit
    except ImportError:
        raise UserError('--slurm needs submitit: pip install "latentbench[slurm]"') from None
    if cluster == "slurm":
        import shutil

        if shutil.which("sbatch") is None:
            raise UserError("--slurm: sbatch is not on PATH; submit from a SLURM login node, or use "
                            "--slurm local to run the array on this machine")
    existed = Path(folder).exists()
    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)  # creates the folder
    try:
        executor.update_parameters(**params)
    except (NameError, ValueError, AssertionError) as exc:
        if not existed:  # nothing left behind for a refused submission
            try:
                Path(folder).rmdir()
            except OSError:
                pass
        raise UserError(f"--slurm: submitit refused the options: {str(exc).splitlines()[0]}") from None
    return executor


def submit_array(executor: Any, entry: Callable[[list[str]], int], argv: list[str], shards: int) -> list[Any]:
    """Submit ``shards`` array tasks running ``entry`` on ``argv`` through ``executor``
    (:func:`make_executor`)."""
    cwd = os.getcwd()
    task = ShardTask()
    with executor.batch():
        jobs = [executor.submit(task, entry, argv, cwd, f"{i}/{shards}") for i in range(shards)]
    return jobs


def wait_all(jobs: list[Any]) -> list[tuple[str, str | None]]:
    """Wait for every task; returns (job id, None or the one-line reason it failed)."""
    out = []
    for job in jobs:
        try:
            job.result()
            out.append((job.job_id, None))
        except Exception as exc:  # noqa: BLE001 - a failed task is reported, the others still count
            lines = [ln for ln in str(exc).splitlines() if ln.strip()]
            out.append((job.job_id, lines[-1] if lines else type(exc).__name__))
    return out
