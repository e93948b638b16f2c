"""Records: one JSON file per grid cell, the only thing leaderboards read.

``{"schema": 1, "status": "ok"|"failed", "error": null|str, "cell": {...}, "metrics": {...},
"notes": {...}, "timing": {...}, "provenance": {...}, "origin": "run"|"score"}``. Written atomically;
a newer schema than this latentbench knows is refused with one line naming the version (by ``run`` as
by ``leaderboard``: it is never recomputed over); a record without a valid cell, status or metrics is
corrupt, never "finished". ``origin`` says which command wrote it: only ``run`` records count as a
grid's cells (records before the field are told apart by their ``provenance.command``).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from latentbench.atomic import atomic_write_text
from latentbench.errors import UserError
from latentbench.spec import Cell

RECORD_SCHEMA = 1
STATUSES = ("ok", "failed")


class NewerRecordError(UserError):
    """A record written by a newer latentbench: refused everywhere, never overwritten."""


class CorruptRecordError(UserError):
    """A file where a record should be that is not a valid record."""


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
    """A record for ``cell``; ``origin`` is the command writing it (``run`` or ``score``)."""
    return {
        "schema": RECORD_SCHEMA,
        "id": cell.id,
        "status": status,
        "error": error,
        "cell": cell.to_dict(),
        "metrics": metrics or {},
        "notes": notes or {},
        "timing": timing or {},
        "provenance": prov or {},
        "origin": origin,
        **({"extras": extras} if extras else {}),
    }


def write_record(path: str | Path, record: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True, allow_nan=True) + "\n")


def record_origin(record: dict[str, Any]) -> str:
    """``run`` or ``score``: the command that wrote the record (inferred for records before the field)."""
    if record.get("origin") in ("run", "score"):
        return record["origin"]
    words = str((record.get("provenance") or {}).get("command") or "").split()
    return "score" if len(words) > 1 and words[1] == "score" else "run"


def _corrupt(path: Path, why: str) -> CorruptRecordError:
    return CorruptRecordError(f"{path}: corrupt record ({why}); fix or delete it, or pass --skip-bad")


def upgrade(record: dict[str, Any], path: Path) -> dict[str, Any]:
    """Read records of older schemas (none so far below 1); refuse newer ones; reject corrupt ones."""
    schema = record.get("schema")
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise _corrupt(path, "no schema field: not a latentbench record")
    if schema > RECORD_SCHEMA:
        raise NewerRecordError(f"{path}: record schema {schema} is newer than this latentbench reads "
                               f"({RECORD_SCHEMA}); upgrade latentbench")
    if record.get("status") not in STATUSES:
        raise _corrupt(path, f"status must be one of {', '.join(STATUSES)}, got {record.get('status')!r}")
    if not isinstance(record.get("cell"), dict):
        raise _corrupt(path, "no cell")
    for key in ("metrics", "notes", "timing", "provenance"):
        if not isinstance(record.get(key, {}), dict):
            raise _corrupt(path, f"{key!r} is not a table")
    for key in ("data", "net", "remedy_params"):
        if not isinstance(record["cell"].get(key, {}), dict):
            raise _corrupt(path, f"cell.{key} is not a table")
    for name, value in record.get("metrics", {}).items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise _corrupt(path, f"metric {name!r} is not a number: {value!r}")
    try:
        cell = Cell.from_dict(record["cell"])
        ids = (cell.id, cell.legacy_id)
    except (TypeError, ValueError, AttributeError, KeyError, UserError) as exc:
        raise _corrupt(path, f"bad cell: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if record.get("id", cell.id) not in ids:
        raise _corrupt(path, f"its id {record.get('id')!r} is not its cell's ({cell.id})")
    if record.get("id") == cell.legacy_id != cell.id:  # written while the data's location was part of the id
        record["id"] = cell.id
    return record


def read_record(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: corrupt record ({type(exc).__name__}: {exc}); fix or delete it, or pass --skip-bad") from None
    if not isinstance(rec, dict):
        raise UserError(f"{path}: corrupt record (not a JSON object); fix or delete it, or pass --skip-bad")
    return upgrade(rec, path)


def record_files(folder: Path) -> list[Path]:
    sub = folder / "records"
    base = sub if sub.is_dir() else folder
    return sorted(p for p in base.glob("*.json") if not p.name.startswith("."))


def read_records(folders: list[str | Path], skip_bad: bool = False) -> list[dict[str, Any]]:
    """All records under the given run or leaderboard folders (``DIR/records/*.json`` or ``DIR/*.json``)."""
    out: list[dict[str, Any]] = []
    for folder in map(Path, folders):
        if not folder.exists():
            raise UserError(f"no such folder: {folder}")
        files = record_files(folder)
        if not files:
            raise UserError(f"{folder}: no records found (expected {folder}/records/*.json); run `latentbench run` first")
        for f in files:
            try:
                rec = read_record(f)
            except UserError as exc:
                if not skip_bad:
                    raise
                import sys

                print(f"latentbench: warning: skipped {exc}", file=sys.stderr)
                continue
            rec["_path"] = str(f)
            out.append(rec)
    return out


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
        rec = read_record(path)
    except NewerRecordError:
        raise
    except UserError:
        return  # a corrupt file may be replaced
    if record_origin(rec) == "run":
        raise UserError(f"{path} is the record `latentbench run` wrote for its cell; a re-score never replaces "
                        "it: leave out --out (it goes to RUN/rescored/) or give another path")
