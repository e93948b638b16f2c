"""Results: the record of one grid cell as data (:class:`Record`), and the one place records are read.

A record is one JSON file per cell, the only thing leaderboards read::

    {"schema": 1, "id": ..., "status": "ok"|"failed", "error": null|str, "cell": {...}, "metrics": {...},
     "notes": {...}, "timing": {...}, "provenance": {...}, "origin": "run"|"score",
     "first_stage": null|str, "extras": {...}}

This module sits between scoring and the rooms that use its output: the runner writes records through
it (``latentbench.runner.records`` adds provenance, leases and the re-score rules), and the reports and
tuning read them through it, so neither imports the runner to read a JSON file. ``Record.from_json`` /
``to_json`` are exact inverses on every record: keys a record did not hold stay absent, keys this
latentbench does not know are kept in ``extra``, and the JSON written is byte-for-byte what it was
(``status`` is an :class:`Outcome`, a ``str``).

A newer schema than this latentbench knows is refused with one line naming the version (by ``run`` as
by ``leaderboard``: it is never recomputed over); a record without a valid cell, status or metrics is
corrupt, never "finished". ``origin`` says which command wrote it: only ``run`` records count as a
grid's cells (records before the field are told apart by their ``provenance.command``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from latentbench.atomic import atomic_write_text
from latentbench.errors import UserError
from latentbench.spec import Cell

RECORD_SCHEMA = 1
SAMPLES_KIND = "samples"  # the ``kind`` of a record written by ``latentbench score-samples``


class Outcome(str, Enum):
    """How a cell ended. ``ok`` and ``failed`` are written; ``lost`` (another run took the cell's lease
    over, and records it) is only ever returned, never written."""

    OK = "ok"
    FAILED = "failed"
    LOST = "lost"

    def __str__(self) -> str:
        return self.value


WRITTEN = (Outcome.OK, Outcome.FAILED)
STATUSES = tuple(o.value for o in WRITTEN)


class NewerRecordError(UserError):
    """A record written by a newer latentbench: refused everywhere, never overwritten."""


class CorruptRecordError(UserError):
    """A file where a record should be that is not a valid record."""


# The keys a record holds, in the order the fields below list them; every one but status and cell may be
# absent from an older record (or a hand-made one), and stays absent when it is written back.
KEYS = ("schema", "id", "status", "error", "cell", "metrics", "notes", "timing", "provenance", "origin",
        "first_stage", "extras")
_REQUIRED = ("status", "cell")
_UNSET: Any = object()


@dataclass(kw_only=True)
class Record:
    """One cell's record.

    ``cell`` is the cell as written (``Cell.to_dict``; :meth:`spec` parses it), kept as it was read so a
    record written before a cell field existed is written back without it. ``metrics`` maps metric
    names to numbers (None where a metric did not apply), ``notes`` holds what the scorer says about
    them (sample counts, noise floors, caps), ``timing`` seconds per stage, ``provenance`` the versions,
    device, thread count, git hash and command. ``first_stage`` names the shared first stage the cell
    was built on (None for a cell trained alone). ``extras`` is what a failed cell or a re-score adds
    (a traceback; the checkpoint scored). ``extra`` keeps the keys this latentbench does not know, and
    ``absent`` the known keys the JSON did not hold: both make ``to_json`` the inverse of ``from_json``.

    ``path`` (the file it was read from) and ``marks`` (what a report notes on it: its source folder,
    its row label) are never written.
    """

    schema: int = RECORD_SCHEMA
    id: str = ""
    status: Outcome
    error: str | None = None
    cell: dict[str, Any]
    metrics: dict[str, float | None] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    origin: str = "run"
    first_stage: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    absent: frozenset[str] = frozenset()
    path: Path | None = field(default=None, compare=False)
    marks: dict[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def for_cell(cls, cell: Cell, *, status: Outcome | str, metrics: dict[str, float | None] | None = None,
                 notes: dict[str, Any] | None = None, timing: dict[str, float] | None = None,
                 error: str | None = None, provenance: dict[str, Any] | None = None,
                 extras: dict[str, Any] | None = None, origin: str = "run",
                 first_stage: str | None = _UNSET) -> Record:
        """A new record of ``cell`` (the tables given are held, not copied); ``extras`` is written only
        when it holds something, and ``first_stage`` only when given."""
        absent = {k for k, leave in (("extras", not extras), ("first_stage", first_stage is _UNSET)) if leave}
        return cls(id=cell.id, status=Outcome(status), error=error, cell=cell.to_dict(), metrics=metrics or {},
                   notes=notes or {}, timing=timing or {}, provenance=provenance or {}, origin=origin,
                   first_stage=None if first_stage is _UNSET else first_stage, extras=extras or {},
                   absent=frozenset(absent))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Record:
        """The record of a parsed JSON object. Raises ValueError on one that is not a record (no status or
        cell); :func:`read_record` checks the rest (the schema, the cell, the metrics) and names the file."""
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise ValueError(f"no {missing[0]} field")
        if not isinstance(data["cell"], dict):
            raise ValueError("no cell")
        try:
            status = Outcome(data["status"])
        except ValueError:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {data['status']!r}") from None
        known = {k: data[k] for k in KEYS if k in data}
        known["status"] = status
        marks = {k[1:]: v for k, v in data.items() if k.startswith("_")}
        path = marks.pop("path", None)
        return cls(**known, extra={k: v for k, v in data.items() if k not in KEYS and not k.startswith("_")},
                   absent=frozenset(k for k in KEYS if k not in data), path=Path(path) if path else None,
                   marks=marks)

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this record: exactly the keys it was read with (or made with)."""
        out: dict[str, Any] = {k: getattr(self, k) for k in KEYS if k not in self.absent}
        out["status"] = self.status.value
        out.update(self.extra)
        return out

    @property
    def ok(self) -> bool:
        return self.status is Outcome.OK

    @property
    def written_by(self) -> str:
        """``run`` or ``score``: the command that wrote the record (inferred for records before the field)."""
        return record_origin(self)

    @property
    def remedy(self) -> str:
        return str(self.cell["remedy"])

    @property
    def latent(self) -> str:
        return str(self.cell["latent"])

    @property
    def seed(self) -> int:
        return int(self.cell["seed"])

    @property
    def dataset(self) -> str:
        return str(self.cell.get("dataset"))

    def spec(self) -> Cell:
        """The cell, parsed (as the grid that ran it would build it)."""
        return Cell.from_dict(self.cell)


RecordLike = Record | Mapping[str, Any]


def as_record(record: RecordLike) -> Record:
    """``record`` itself when it is a :class:`Record`, else the record of a record's JSON object (the
    dict API older callers hold: its ``_path`` and other ``_`` keys become ``path`` and ``marks``)."""
    return record if isinstance(record, Record) else Record.from_json(record)


def as_records(records: Iterable[RecordLike]) -> list[Record]:
    return [as_record(r) for r in records]


def record_origin(record: RecordLike) -> str:
    """``run`` or ``score``: the command that wrote the record (inferred for records before the field)."""
    if isinstance(record, Record):
        origin = None if "origin" in record.absent else record.origin
        prov = record.provenance
    else:
        origin, prov = record.get("origin"), record.get("provenance") or {}
    if origin in ("run", "score"):
        return str(origin)
    words = str(prov.get("command") or "").split()
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


def _load_object(path: Path) -> dict[str, Any]:
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: corrupt record ({type(exc).__name__}: {exc}); fix or delete it, or pass --skip-bad") from None
    if not isinstance(rec, dict):
        raise UserError(f"{path}: corrupt record (not a JSON object); fix or delete it, or pass --skip-bad")
    return rec


def read_record_json(path: str | Path) -> dict[str, Any]:
    """The checked JSON object of the record at ``path`` (:func:`upgrade` applied)."""
    path = Path(path)
    return upgrade(_load_object(path), path)


def read_record(path: str | Path) -> Record:
    """The record at ``path``, checked; a corrupt file or a newer schema is one line naming it."""
    rec = Record.from_json(read_record_json(path))
    rec.path = Path(path)
    return rec


def record_files(folder: Path) -> list[Path]:
    """The record files of a run or leaderboard folder (``DIR/records/*.json``, else ``DIR/*.json``)."""
    sub = folder / "records"
    base = sub if sub.is_dir() else folder
    return sorted(p for p in base.glob("*.json") if not p.name.startswith("."))


def read_records(folders: Iterable[str | Path], skip_bad: bool = False) -> list[Record]:
    """All records under the given run or leaderboard folders, each with its ``path``; with ``skip_bad``
    a corrupt one is skipped with a warning."""
    out: list[Record] = []
    for folder in map(Path, folders):
        if not folder.exists():
            raise UserError(f"no such folder: {folder}")
        files = record_files(folder)
        if not files:
            raise UserError(f"{folder}: no records found (expected {folder}/records/*.json); run `latentbench run` first")
        for f in files:
            try:
                out.append(read_record(f))
            except UserError as exc:
                if not skip_bad:
                    raise
                print(f"latentbench: warning: skipped {exc}", file=sys.stderr)
    return out


def write_record(path: str | Path, record: RecordLike) -> None:
    """Write a record atomically (sorted keys, one space of indent, as every record ever written)."""
    data = record.to_json() if isinstance(record, Record) else record
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True, allow_nan=True) + "\n")


def read_samples_record(path: Path) -> dict[str, Any] | None:
    """The samples record (``latentbench score-samples``) at ``path``, with its ``_path``, or None when
    the file is not one."""
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(rec, dict) or rec.get("kind") != SAMPLES_KIND or not isinstance(rec.get("metrics"), dict):
        return None
    rec["_path"] = str(path)
    return rec
