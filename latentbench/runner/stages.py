"""Shared first stages in a run folder: ``OUT/first_stages/<id>/``, claimed with a lease like a cell.

A first stage (see :mod:`latentbench.training.first_stage`) is the plain VAE that the ``vae`` cell and
every ex-post cell of the same setting are built on. Its folder holds

- ``checkpoint.pt``: the training checkpoint (periodic while it trains, so a killed run resumes it;
  finished at the end), written atomically by the lease holder only;
- ``stage.json``: its outcome, written atomically once training ends: ``ok`` with its training info,
  or ``failed`` with the one-line reason;
- ``lock``: the lease (:class:`latentbench.runner.locks.CellLock`: an owner token plus a heartbeat).

The first cell that needs a stage claims it and trains it inside its own cell; another run, worker or
shard needing it meanwhile finds the lease held and takes other cells, then comes back (``busy``, as
for a cell held by another run). A stage that failed fails each dependent cell with the same reason:
a failure recorded before this run started is retried (as a failed cell is recomputed), one recorded
meanwhile by this or a concurrent run is not. ``--force`` recomputes cells, never a stage: delete
``OUT/first_stages/<id>/`` to retrain one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from latentbench.atomic import atomic_write_text
from latentbench.errors import UserError
from latentbench.runner.locks import CellLock, written_since
from latentbench.spec import Cell
from latentbench.training.first_stage import first_stage_cell, first_stage_id

STAGES = "first_stages"
STAGE_FILES = ("checkpoint.pt", "stage.json")


class FirstStageFailed(UserError):
    """The cell's first stage failed: the cell fails with the stage's one-line reason."""


class FirstStage:
    """The first stage of a cell in the run folder ``folder``; ``None`` from :meth:`of` when the cell
    trains its own model."""

    def __init__(self, folder: Path, cell: Cell, token: str | None = None) -> None:
        self.cell = cell  # the plain vae cell the stage trains
        self.id = first_stage_id(cell)
        self.dir = Path(folder) / STAGES / self.id
        self.checkpoint = self.dir / "checkpoint.pt"
        self.status_path = self.dir / "stage.json"
        self.lock = CellLock(self.dir / "lock", token=token)

    @classmethod
    def of(cls, folder: Path, cell: Cell, token: str | None = None) -> FirstStage | None:
        stage = first_stage_cell(cell)
        return None if stage is None else cls(folder, stage, token)

    # -- reading -------------------------------------------------------------------------------
    def outcome(self) -> dict[str, Any] | None:
        """The stage's ``stage.json`` (``status`` ok or failed), or None if it has none (or a corrupt one)."""
        try:
            rec = json.loads(self.status_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return None
        if not isinstance(rec, dict) or rec.get("status") not in ("ok", "failed") or rec.get("id") != self.id:
            return None
        return rec

    def state(self, since: float | None) -> str | None:
        """``ready`` (trained), ``failed`` (failed since this run started at ``since``, the file system's
        clock), or None (to be trained: never tried, unfinished, or failed before this run)."""
        rec = self.outcome()
        if rec is None:
            return None
        if rec["status"] == "ok":
            return "ready" if self.checkpoint.is_file() else None
        return "failed" if written_since(self.status_path, since) else None

    def reason(self) -> str:
        """The one line every dependent cell fails with: the stage's own error first (so that an out of
        memory or a diverged training reads as such), then which stage it was."""
        rec = self.outcome() or {}
        return f"{rec.get('error') or 'unknown error'} (in first stage {self.id}, shared by this cell)"

    # -- claiming ------------------------------------------------------------------------------
    def claim(self, since: float | None) -> str:
        """``ready``, ``failed``, ``mine`` (this lease holds it now: train it, then :meth:`release`) or
        ``busy`` (another run, worker or shard trains it)."""
        state = self.state(since)
        if state is not None:
            return state
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.lock.acquire():
            return "busy"
        state = self.state(since)  # finished by its previous holder meanwhile
        if state is not None:
            self.lock.release()
            return state
        for name in STAGE_FILES:  # a killed writer's temp files (never the lock's own)
            for p in self.dir.glob(f".tmp-{name}.*"):
                p.unlink(missing_ok=True)
        if self.outcome() is not None:  # an old failure (or an ok without its checkpoint): trained again
            self.status_path.unlink(missing_ok=True)
        return "mine"

    def release(self) -> None:
        self.lock.release()

    # -- writing (the lease holder only) ---------------------------------------------------------
    def _write(self, rec: dict[str, Any]) -> None:
        self.lock.check()
        atomic_write_text(self.status_path, json.dumps(rec, indent=1, sort_keys=True) + "\n")

    def finished(self, info: dict[str, Any], prov: dict[str, Any]) -> None:
        """Record the stage as trained (its checkpoint is written, complete)."""
        self._write({"schema": 1, "id": self.id, "status": "ok", "error": None, "cell": self.cell.to_dict(),
                     "info": {k: info[k] for k in ("epochs_run", "stopped_early", "train_s") if k in info},
                     "provenance": prov, "finished_at": time.time()})

    def failed(self, error: str, prov: dict[str, Any], traceback: str | None = None) -> None:
        """Record the stage as failed with the one-line ``error``."""
        self._write({"schema": 1, "id": self.id, "status": "failed", "error": error, "cell": self.cell.to_dict(),
                     "provenance": prov, "traceback": traceback, "finished_at": time.time()})
