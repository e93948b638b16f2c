"""The benchmark runner: a grid of cells, each trained, ex-post fitted, scored and recorded.

Resumable (a finished cell's record is never recomputed unless ``force``), shardable (``shard=(i, n)``
runs cells i, i+n, i+2n, ... of the sorted grid), and safe for several processes on one folder, on one
host or many: each cell is claimed with a lease (:mod:`latentbench.runner.locks`). A cell held by
another live run is revisited after this run's own cells until it is finished there or its lease
expires (then this run takes it over), so a run that ends has its whole shard done. A failing cell is
recorded as failed and the grid goes on; a failed record from before this run started is recomputed,
one written by a concurrent run meanwhile is not (so failures are never computed twice at once).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentbench.atomic import WriteError, atomic_write_bytes, atomic_write_text
from latentbench.data import load_data
from latentbench.errors import UserError
from latentbench.runner.locks import CellLock, LeaseLost, fs_clock, lease_seconds, written_since
from latentbench.runner.progress import GridProgress, cell_label
from latentbench.runner.records import (
    NewerRecordError,
    make_record,
    provenance,
    read_record,
    record_origin,
    write_record,
)
from latentbench.runner.stages import FirstStage, FirstStageFailed
from latentbench.spec import Cell, Grid, grid_to_toml, load_grid


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/n"`` with 0 <= i < n (0-based, as in SLURM_ARRAY_TASK_ID)."""
    if not text:
        return 0, 1
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise UserError(f"bad --shard {text!r}: write i/n with 0 <= i < n, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise UserError(f"bad --shard {text!r}: need 0 <= i < n (shards are 0-based), e.g. 0/{max(n, 1)}")
    return i, n


def shard_cells(cells: list[Cell], shard: tuple[int, int]) -> list[Cell]:
    ordered = sorted(cells, key=lambda c: c.id)
    return ordered[shard[0] :: shard[1]]


def is_finished(path: Path, cell: Cell | None = None) -> bool:
    """Whether ``path`` holds a finished cell: a valid ``ok`` record written by ``run`` (not a re-score
    by ``score``) for ``cell`` itself. A corrupt record is not finished (the cell is recomputed); a
    record of a newer schema raises :class:`~latentbench.runner.records.NewerRecordError`."""
    if not path.is_file():
        return False
    try:
        rec = read_record(path)
    except NewerRecordError:
        raise
    except UserError:
        return False
    return (rec["status"] == "ok" and record_origin(rec) == "run"
            and (cell is None or Cell.from_dict(rec["cell"]).id == cell.id))


def failed_meanwhile(path: Path, since: float | None) -> dict[str, Any] | None:
    """The failed record at ``path`` if a concurrent run wrote it after ``since`` (the file system's
    clock when this run started, see :func:`fs_clock`): such a cell is not recomputed by this run."""
    if since is None or not path.is_file():
        return None
    try:
        rec = read_record(path)
        if rec["status"] == "failed" and record_origin(rec) == "run" and written_since(path, since):
            return rec
    except NewerRecordError:
        raise
    except (UserError, OSError):
        pass
    return None


# a cell's files, ``<cell-id>.<suffix>``, written through latentbench.atomic (temp name ``.tmp-<name>.<random>``)
CELL_FILES = ("json", "pt", "samples.npz")


def remove_partial_writes(folder: Path, cell: Cell) -> None:
    """Remove the cell's ``.tmp-*`` files left by a killed writer (only its lease holder calls this): its
    record, checkpoint and samples, and the lease's temp files (``.tmp-<id>.lock.<token>``: a claim links
    one into place, a judge probes the clock with one; a run killed meanwhile leaves it, and a live
    claimant that finds its own gone is simply refused, as the lease is held). The lease's aside files
    (``.stale-...``, ``.release-...``) go once older than the lease: a live judge or releaser holds one
    for milliseconds."""
    records = Path(folder) / "records"
    for suffix in (*CELL_FILES, "lock"):
        for p in records.glob(f".tmp-{cell.id}.{suffix}.*"):
            p.unlink(missing_ok=True)
    aside = [p for prefix in (".stale-", ".release-") for p in records.glob(f"{prefix}{cell.id}.lock.*")]
    if aside:
        try:
            now = fs_clock(records)
        except UserError:  # the folder cannot be written: the cell's own writes will say so
            return
        for p in aside:
            try:
                st = p.stat()  # a rename keeps the mtime (a judged lock is old) and sets the ctime
                if now - max(st.st_mtime, st.st_ctime) > lease_seconds():
                    p.unlink(missing_ok=True)
            except OSError:
                pass


def tidy_finished(folder: Path, cells: list[Cell]) -> None:
    """Free the stale leases of finished cells, and their ``.tmp-*`` files: a run killed between writing
    a cell's record and releasing its lease left them, and a finished cell is never claimed again."""
    for cell in cells:
        lock = CellLock(Path(folder) / "records" / f"{cell.id}.lock")
        if lock.path.exists():
            due = lock.stale()
        else:  # a run killed before it linked its lock into place leaves only temp files
            due = any((Path(folder) / "records").glob(f".tmp-{cell.id}.*"))
        if due and lock.acquire():
            try:
                remove_partial_writes(folder, cell)
            finally:
                lock.release()


def adopt_legacy_files(folder: Path, cells: list[Cell]) -> None:
    """Give the files of cells whose id once included the data's location (``--data-root``,
    ``--download``) the current id's names, so that the same grid resumes from them. A file already
    there under the current name is kept; a cell whose old lease is held is left alone."""
    records = Path(folder) / "records"
    for cell in cells:
        old = cell.legacy_id
        if old == cell.id or (records / f"{old}.lock").exists():
            continue
        for suffix in CELL_FILES:
            src = records / f"{old}.{suffix}"
            try:
                os.link(src, records / f"{cell.id}.{suffix}")  # never over an existing file
            except OSError:  # not there, or the new name is taken
                continue
            src.unlink(missing_ok=True)


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        s in text for s in ("out of memory", "can't allocate memory", "could not allocate", "cannot allocate memory",
                            "failed to allocate"))


def error_line(exc: BaseException) -> str:
    """The one-line error a failed cell (or first stage) is recorded with."""
    if _is_oom(exc):  # CUDA's OutOfMemoryError, MemoryError, or an allocator's RuntimeError
        first = (str(exc) or type(exc).__name__).strip().splitlines()[0]
        return f"out of memory: {first}"
    return f"{type(exc).__name__}: {exc}" if not isinstance(exc, UserError) else str(exc)


def _finished_checkpoint(path: Path, cell: Cell, device: torch.device) -> tuple[Any, dict[str, Any]] | None:
    """The cell's own finished checkpoint (a run killed while scoring it), as (model, info), or None."""
    from latentbench.training.checkpoint import CorruptCheckpointError, load_checkpoint

    if not path.is_file():
        return None
    try:
        model, _, payload = load_checkpoint(path, device, expect_cell=cell)
    except CorruptCheckpointError:  # truncated by a kill: rebuilt from the first stage
        path.unlink(missing_ok=True)
        return None
    return (model, payload["info"]) if payload.get("complete") else None


def _shared_model(cell: Cell, stage: FirstStage, claim: str, folder: Path, device: torch.device, data: Any, *,
                  compile: bool | str, on_epoch: Callable[[int, dict], None] | None, lock: CellLock | None,
                  prov: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The cell's model built on its first stage: trained here if this run claimed the stage (``mine``),
    read back if it is ``ready``; a ``failed`` stage fails the cell with the stage's reason."""
    from latentbench.training.first_stage import fit_on_first_stage
    from latentbench.training.loop import train_cell

    ckpt = folder / "records" / f"{cell.id}.pt"
    own = _finished_checkpoint(ckpt, cell, device)
    if own is not None:
        return own
    if claim == "failed":
        raise FirstStageFailed(stage.reason())
    trained_s = 0.0
    if claim == "mine":
        def guard() -> None:  # nothing more is written once either lease is lost
            if lock is not None:
                lock.check()
            stage.lock.check()

        try:
            try:
                _, _, info = train_cell(stage.cell, device, checkpoint=stage.checkpoint, quiet=True, compile=compile,
                                        data=data, on_epoch=on_epoch, guard=guard)
            except (KeyboardInterrupt, SystemExit, LeaseLost):
                raise
            except Exception as exc:  # noqa: BLE001 - the stage fails, and with it every cell built on it
                stage.failed(error_line(exc).splitlines()[0], prov, traceback.format_exc(limit=8))
                raise FirstStageFailed(stage.reason()) from None
            stage.finished(info, prov)
            trained_s = float(info["train_s"])
        finally:
            stage.release()
    model, info = fit_on_first_stage(cell, stage.checkpoint, device, data, stage_id=stage.id, checkpoint=ckpt,
                                     guard=lock.check if lock is not None else None)
    return model, {**info, "train_s": trained_s}


def run_cell(cell: Cell, folder: Path, device: torch.device, *, command: str, quiet: bool, compile: bool | str,
             data_cache: dict, on_epoch: Callable[[int, dict], None] | None = None,
             on_stage: Callable[..., None] | None = None, lock: CellLock | None = None,
             stage: FirstStage | None = None, claim: str | None = None) -> dict[str, Any]:
    """Train, fit, score and record one cell; a failure becomes a failed record.

    ``on_epoch(epoch, stats)`` follows training and ``on_stage(name, fraction)`` the scoring stages. With
    ``lock``, checkpoints, the record and the sample snapshot are written only while its lease is still
    this run's (checked after every epoch and before every write; otherwise training stops and the
    returned record has ``status`` ``lost``). With ``stage`` (the cell's first stage, see
    :mod:`latentbench.runner.stages`) and ``claim`` (what :meth:`FirstStage.claim` said), the model is
    the shared first stage's, trained here if ``claim`` is ``mine``. A record that cannot be written
    (disk full) is returned failed with a one-line error and the grid goes on."""
    from latentbench.score.sampling import sample_snapshot
    from latentbench.score.scorer import score_model
    from latentbench.training.loop import train_cell

    started = time.time()
    prov = provenance(device, command, started)
    rec_path = folder / "records" / f"{cell.id}.json"
    remove_partial_writes(folder, cell)
    snap = None
    first_stage = stage.id if stage is not None else None
    try:
        key = (cell.dataset, cell.seed, json.dumps(cell.data, sort_keys=True))
        if key not in data_cache:
            data_cache.clear()
            data_cache[key] = load_data(cell.dataset, seed=cell.seed, **cell.data)
        data = data_cache[key]
        if stage is not None:
            model, info = _shared_model(cell, stage, claim or "ready", folder, device, data, compile=compile,
                                        on_epoch=on_epoch, lock=lock, prov=prov)
        else:
            model, data, info = train_cell(cell, device, checkpoint=folder / "records" / f"{cell.id}.pt",
                                           quiet=True, compile=compile, data=data, on_epoch=on_epoch,
                                           guard=lock.check if lock is not None else None)
        first_stage = info.get("first_stage")  # None for a cell's own checkpoint from an unshared run
        t = time.perf_counter()
        metrics, notes, timing = score_model(model, data, cell, device, quiet=quiet, on_stage=on_stage)
        timing = {"train_s": info["train_s"], "expost_s": info["expost_s"],
                  **({"first_stage_train_s": info["first_stage_train_s"]} if "first_stage_train_s" in info else {}),
                  **timing, "score_s": time.perf_counter() - t}
        notes.update({"epochs_run": info["epochs_run"], "stopped_early": info["stopped_early"],
                      "final_val_elbo": info["history"][-1]["val_elbo"] if info["history"] else None})
        snap = sample_snapshot(model, data.test, cell.seed)
        rec = make_record(cell, status="ok", metrics=metrics, notes=notes, timing=timing, prov=prov)
    except (KeyboardInterrupt, SystemExit):
        raise
    except LeaseLost as exc:  # stalled past the lease: another run has the cell now, nothing more is written
        return {**make_record(cell, status="failed", prov=prov), "status": "lost", "error": str(exc)}
    except FirstStageFailed as exc:  # the same one line in every cell built on the stage
        rec = make_record(cell, status="failed", error=str(exc), prov=prov)
    except Exception as exc:  # noqa: BLE001 - any failure is recorded and the grid goes on
        extras = None if _is_oom(exc) else {"traceback": traceback.format_exc(limit=8)}
        rec = make_record(cell, status="failed", error=error_line(exc), prov=prov, extras=extras)
    rec["first_stage"] = first_stage
    rec["timing"]["total_s"] = time.time() - started
    if lock is not None and not lock.owned():  # stalled past the lease: another run has the cell now
        return {**rec, "status": "lost", "error": f"lease on {cell.id} was taken over by another run"}
    if snap is not None:  # written only by the lease's owner, like the record
        try:
            _save_npz(folder / "records" / f"{cell.id}.samples.npz", snap)
        except UserError as exc:
            rec = {**make_record(cell, status="failed", error=str(exc), prov=prov, timing=rec["timing"]),
                   "first_stage": first_stage}
    try:
        write_record(rec_path, rec)
    except UserError as exc:  # disk full, folder gone read-only: this cell fails, the grid goes on
        return {**rec, "status": "failed", "error": f"record not saved: {exc}"}
    return rec


def _save_npz(path: Path, arrays: dict[str, Any]) -> None:
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def attempt_cell(cell: Cell, folder: Path, device: torch.device, progress: Any, *, force: bool = False,
                 command: str = "", compile: bool | str = False, data_cache: dict | None = None,
                 tracker: Any = None, since: float | None = None, token: str | None = None,
                 shared: bool = True) -> tuple[str, dict[str, Any] | None]:
    """Claim ``cell`` through its lease (with owner ``token`` if given) and compute it. Returns (outcome, record): ``done`` or ``failed``
    with the record; ``skipped`` (finished already) or ``busy`` (another run holds it, or the first stage
    it is built on) with None. ``since`` is the file system's clock when the run started
    (:func:`fs_clock`): a failed record written after it by a concurrent run is returned as ``failed``,
    not recomputed. ``shared`` builds an ex-post cell (and the ``vae`` cell) on the run folder's shared
    first stage (:mod:`latentbench.runner.stages`); without it every cell trains its own model.

    ``progress`` is told ``start(id, label, token)``, ``epoch``, ``stage`` and ``end``; the grid loop,
    its worker processes and their bars share this one function.
    """
    rec_path = folder / "records" / f"{cell.id}.json"

    def done_already() -> bool:  # with force: recomputed by a concurrent --force run since this one started
        return is_finished(rec_path, cell) and (not force or written_since(rec_path, since))

    if done_already():
        return "skipped", None
    if (other := failed_meanwhile(rec_path, since)) is not None:
        return "failed", other
    lock = CellLock(rec_path.with_suffix(".lock"), token=token)
    stage: FirstStage | None = None
    claim: str | None = None
    try:  # acquire inside the try: a signal right after the claim still releases it
        if not lock.acquire():
            return "busy", None
        if done_already():  # another process finished it meanwhile
            return "skipped", None
        if (other := failed_meanwhile(rec_path, since)) is not None:
            return "failed", other
        if shared:
            try:
                stage = FirstStage.of(folder, cell)
            except UserError:  # a remedy that cannot be built: the cell fails on it as it trains
                stage = None
        if stage is not None:  # claimed after the cell: a stage is only ever waited for by a cell's holder
            try:
                claim = stage.claim(since)
            except WriteError:  # its folder cannot be written (a full disk): this cell trains alone
                stage, claim = None, None
            if claim == "busy":
                return "busy", None
        if force:  # the old results go first: a kill from here on leaves an unfinished cell, never a record
            for suffix in ("json", "samples.npz", "pt"):  # without the checkpoint it was computed with
                rec_path.with_name(f"{cell.id}.{suffix}").unlink(missing_ok=True)
        progress.start(cell.id, cell_label(cell), lock.token)
        run = None
        if tracker is not None:  # a cell resuming from its checkpoint continues its tracker run
            # (its own, or the first stage it trains: a killed run resumes that one's periodic checkpoint)
            resume = rec_path.with_suffix(".pt").is_file() or (claim == "mine" and stage.checkpoint.is_file())
            run = tracker.open(cell, progress, resume=resume)

        def on_epoch(epoch: int, stats: dict) -> None:
            progress.epoch(cell.id, epoch, cell.epochs)
            if run is not None:
                run.log_epoch(stats)

        try:
            rec = run_cell(cell, folder, device, command=command, quiet=True, compile=compile,
                           data_cache={} if data_cache is None else data_cache, on_epoch=on_epoch,
                           on_stage=lambda name, fraction=0.0: progress.stage(cell.id, name, fraction), lock=lock,
                           stage=stage, claim=claim)
        except BaseException:
            if run is not None:
                run.stopped()
            raise
        if rec["status"] == "lost":  # our lease was taken over: the other run records the cell
            if run is not None:
                run.stopped()
            return "busy", None
        if run is not None:
            run.finish(rec, folder)
        return ("done" if rec["status"] == "ok" else "failed"), rec
    finally:
        try:  # (each release finishes even if a stop signal lands in it; the cell's lock goes either way)
            if stage is not None:
                stage.release()
        finally:
            lock.release()


def run_grid(grid: Grid, folder: Path, device: torch.device, *, shard: tuple[int, int] = (0, 1),
             force: bool = False, quiet: bool = False, command: str = "", compile: bool | str = False,
             tracker: Any = None, execute: Callable[..., dict[str, Any]] | None = None,
             shared: bool = True) -> dict[str, Any]:
    """Run every cell of ``grid`` in this shard; returns counts and the failed records (``busy``: cells
    this run waited for that another run finished meanwhile). ``tracker`` (see
    :mod:`latentbench.runner.track`) mirrors cells into a tracker; ``execute`` computes the cells to do
    instead of this process (``latentbench run --workers N`` passes
    :func:`latentbench.runner.workers.run_workers` with ``workers=N``). ``shared`` (the default) trains
    each first stage once and builds the ex-post cells on it (:mod:`latentbench.runner.stages`); False
    trains every cell alone. The feature classifier of each dataset is trained before the first cell."""
    folder = Path(folder)
    (folder / "records").mkdir(parents=True, exist_ok=True)
    cells = shard_cells(grid.cells(), shard)
    adopt_legacy_files(folder, cells)
    since = fs_clock(folder / "records")
    todo = [c for c in cells if force or not is_finished(folder / "records" / f"{c.id}.json", c)]
    pending = {c.id for c in todo}
    tidy_finished(folder, [c for c in cells if c.id not in pending])
    t0 = time.time()
    prepare_features(todo, device, quiet=quiet)
    if tracker is not None:
        from latentbench.runner.track import guarded

        pending = {c.id for c in todo}
        if not guarded(tracker.start_grid, grid, folder, [c for c in cells if c.id not in pending]):
            tracker = None  # the store is unreachable: the grid goes on untracked
    if execute is not None:
        counts = execute(todo, folder, device, name=grid.name, force=force, quiet=quiet, command=command,
                         compile=compile, tracker=tracker, since=since, shared=shared)
    else:
        counts = {"done": 0, "skipped": 0, "busy": 0, "failed": []}
        data_cache: dict = {}
        progress = GridProgress(grid.name, len(todo), quiet=quiet)
        pending, first, waited = list(todo), True, set()
        try:
            while pending:  # after the first pass: cells held by other runs, until finished or free
                if not first:
                    time.sleep(min(5.0, lease_seconds() / 8))
                busy = []
                for cell in pending:
                    outcome, rec = attempt_cell(cell, folder, device, progress, force=force and first,
                                                command=command, compile=compile, data_cache=data_cache,
                                                tracker=tracker, since=since, shared=shared)
                    if outcome == "busy":
                        busy.append(cell)
                        waited.add(cell.id)
                        continue
                    if outcome == "skipped" and cell.id in waited:  # the other run finished it
                        outcome = "busy"
                    progress.end(cell.id, outcome)
                    if outcome == "failed":
                        counts["failed"].append(rec)
                        if not quiet:
                            progress.write(f"latentbench: cell {cell.id} failed: {rec['error']}")
                    else:
                        counts[outcome] += 1
                if busy and first:
                    progress.write(f"latentbench: waiting for {len(busy)} cell(s) held by other runs, or built "
                                   f"on a first stage another run trains (a dead run's lease expires within "
                                   f"{lease_seconds():.0f}s)")
                pending, first = busy, False
        finally:
            progress.close()
    counts["skipped"] += len(cells) - len(todo)
    return {"cells": len(cells), **counts, "seconds": time.time() - t0}


def prepare_features(cells: list[Cell], device: torch.device, *, quiet: bool = False) -> None:
    """Train the domain feature classifier of each dataset the cells score with (once, cached on disk)
    before the first cell, with its own progress bar, instead of inside the first cell's scoring."""
    from latentbench.score.features import ensure_classifier

    seen = set()
    for cell in cells:
        key = (cell.dataset, cell.seed, json.dumps(cell.data, sort_keys=True))
        if cell.features != "domain" or key in seen:
            continue
        seen.add(key)
        try:
            ensure_classifier(load_data(cell.dataset, seed=cell.seed, **cell.data), device, quiet=quiet,
                              announce=not quiet)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception:  # noqa: BLE001 - the cell's scoring meets the same problem and records it
            continue


def save_grid(grid: Grid, folder: Path) -> Path:
    """Remember a grid run into ``folder`` (so that publish can tell which cells are missing)."""
    ids = sorted(c.id for c in grid.cells())
    path = Path(folder) / "grids" / f"{hashlib.sha256(' '.join(ids).encode()).hexdigest()[:12]}.toml"
    if not path.exists():
        atomic_write_text(path, grid_to_toml(grid))
    return path


def expected_cells(folder: Path) -> dict[str, Cell]:
    """Every cell of every grid that was run into ``folder``, by id."""
    cells = {}
    for p in sorted((Path(folder) / "grids").glob("*.toml")):
        for c in load_grid(p).cells():
            cells[c.id] = c
    return cells
