"""Records as the runner writes them: provenance, the re-score rules, and the dict API of the grid.

The record itself (:class:`~latentbench.results.Record`, its :class:`~latentbench.results.Outcome`,
the schema, reading and checking) is ``latentbench.results``; this module builds a cell's record with
the provenance of the run writing it, and keeps ``make_record`` / ``read_record`` / ``read_records``
returning the JSON object (a dict) for the grid and its workers. Written atomically, sorted, as always.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from latentbench.errors import UserError
from latentbench.results import (  # noqa: F401 - the names the grid and its workers import from here
    RECORD_SCHEMA,
    STATUSES,
    CorruptRecordError,
    NewerRecordError,
    Outcome,
    Record,
    read_record_json,
    record_files,
    record_origin,
    upgrade,
    write_record,
)
from latentbench.results import read_record as read_typed_record
from latentbench.results import read_records as read_typed_records
from latentbench.spec import Cell


def git_hash() -> str | None:
    """The last commit that changed the latentbench package in use (commits touching only tests or
    docs cannot change a number), if it is a checkout; ``-dirty`` when the package has uncommitted
    changes (the numbers then come from code no commit holds)."""
    here = Path(__file__).resolve().parents[1]  # the package folder
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%H", "--", "."], cwd=here, capture_output=True,
                             text=True, timeout=5)
        if out.returncode != 0 or not out.stdout.strip():
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."],
                               cwd=here, capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() + ("-dirty" if dirty else "")


def provenance(device, command: str, started_at: float) -> dict[str, Any]:
    import torch

    from latentbench import __version__
    from latentbench.device import device_name

    return {
        "latentbench": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device_name(device),
        "threads": torch.get_num_threads(),  # CPU sums differ with the thread count: numbers reproduce only with it
        "git_hash": git_hash(),
        "command": command,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_at)),
    }


def make_record(cell, *, status: str, metrics: dict | None = None, notes: dict | None = None,
                timing: dict | None = None, error: str | None = None, prov: dict | None = None,
                extras: dict | None = None, origin: str = "run") -> dict[str, Any]:
    """The JSON object of a new record for ``cell`` (:meth:`Record.for_cell`); ``origin`` is the command
    writing it (``run`` or ``score``)."""
    return Record.for_cell(cell, status=status, metrics=metrics, notes=notes, timing=timing, error=error,
                           provenance=prov, extras=extras, origin=origin).to_json()


def read_record(path: str | Path) -> dict[str, Any]:
    """The checked JSON object of the record at ``path`` (``latentbench.results.read_record`` gives the
    :class:`Record`)."""
    return read_record_json(path)


def read_records(folders: list[str | Path], skip_bad: bool = False) -> list[dict[str, Any]]:
    """The JSON objects of every record under the folders, each with its ``_path``
    (``latentbench.results.read_records`` gives the :class:`Record` s)."""
    return [{**r.to_json(), "_path": str(r.path)} for r in read_typed_records(folders, skip_bad=skip_bad)]


def rescore_path(checkpoint: Path, cell: Cell, complete: bool, epoch: int | None) -> Path:
    """Where ``latentbench score`` writes by default: ``RUN/rescored/<cell-id>.json`` for a checkpoint in
    ``RUN/records`` (else a ``rescored`` folder beside it), outside the records a run counts and a
    leaderboard reads; the cell id carries the scoring settings, and an unfinished checkpoint's record
    names its epoch."""
    checkpoint = Path(checkpoint)
    base = checkpoint.parent.parent if checkpoint.parent.name == "records" else checkpoint.parent
    return base / "rescored" / (f"{cell.id}.json" if complete else f"{cell.id}.epoch{epoch}.json")


def is_run_records(folder: Path) -> bool:
    """Whether ``folder`` is a run's ``records/`` (the cells a grid counts and a board publishes): named
    ``records`` beside the run's ``grids/``, or holding a cell's record, checkpoint or lock."""
    folder = Path(os.path.realpath(folder))
    if folder.name != "records" or not folder.is_dir():
        return False
    if (folder.parent / "grids").is_dir():
        return True
    return any(p.suffix in (".json", ".pt", ".lock") and not p.name.startswith(".") for p in folder.iterdir())


def refuse_overwrite(path: Path) -> None:
    """A re-score never replaces a record written by ``run`` (nor one of a newer schema), and never goes
    into a run's ``records/``, where it would stand for the grid's own cell."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"--out {path} is a folder; give the record's file path, e.g. {path}/rescored.json")
    parent = Path(os.path.realpath(path)).parent  # a link's target is what would be written
    if is_run_records(parent):
        where = parent.parent / "rescored" / path.name
        raise UserError(f"--out {path} is inside a run's records/, where only `latentbench run` writes its "
                        f"cells; leave out --out (it goes to {where}) or give a path outside records/")
    if not path.is_file():
        return
    try:
        rec = read_typed_record(path)
    except NewerRecordError:
        raise
    except UserError:
        return  # a corrupt file may be replaced
    if record_origin(rec) == "run":
        raise UserError(f"{path} is the record `latentbench run` wrote for its cell; a re-score never replaces "
                        "it: leave out --out (it goes to RUN/rescored/) or give another path")
