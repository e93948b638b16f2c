"""The benchmark runner: a grid of cells, each trained, ex-post fitted, scored and recorded.

Resumable (a finished cell's record is never recomputed unless ``force``), shardable (``shard=(i, n)``
runs cells i, i+n, i+2n, ... of the sorted grid), and safe for several processes on one folder: each
cell is claimed with an atomic lock file (``O_CREAT | O_EXCL``); a lock whose process is gone is taken
over. A failing cell is recorded as failed and the grid goes on.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from latentbench.atomic import atomic_write_bytes
from latentbench.data import load_data
from latentbench.errors import UserError
from latentbench.records import make_record, provenance, read_record, write_record
from latentbench.spec import Cell, Grid

STALE_LOCK_S = 24 * 3600


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


class CellLock:
    """An atomic lock file per cell.

    The lock appears with its content in one step (a temp file hard-linked into place), so a reader
    never sees it half-written. A stale lock (its process gone on this host, or older than a day, or
    unreadable for over a minute) is taken over by renaming it aside, and only if the renamed file is
    still the one judged stale; otherwise it is put back and the cell is left to its owner.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.held = False

    def _read(self) -> tuple[bytes, dict | None]:
        try:
            raw = self.path.read_bytes()
        except OSError:
            return b"", None
        try:
            return raw, json.loads(raw)
        except ValueError:
            return raw, None

    def _stale(self, info: dict | None) -> bool:
        if info is None:  # unreadable: only a crashed writer or a foreign file leaves that
            try:
                return time.time() - self.path.stat().st_mtime > 60
            except OSError:
                return False
        if time.time() - float(info.get("time", 0)) > STALE_LOCK_S:
            return True
        if info.get("host") == socket.gethostname():
            try:
                os.kill(int(info["pid"]), 0)
            except ProcessLookupError:
                return True
            except (PermissionError, KeyError, ValueError):
                return False
        return False

    def _create(self) -> bool:
        body = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}).encode()
        tmp = self.path.with_name(f".tmp-{self.path.name}.{os.getpid()}")
        tmp.write_bytes(body)
        try:
            os.link(tmp, self.path)  # fails if the lock exists: create-with-content in one step
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def _take_over(self, judged: bytes) -> None:
        aside = self.path.with_name(f".stale-{self.path.name}.{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # someone else removed it; try to create ours
        if aside.read_bytes() == judged:
            aside.unlink(missing_ok=True)
        else:  # we moved a fresh lock of another process: give it back
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            aside.unlink(missing_ok=True)

    def acquire(self) -> bool:
        for _ in range(2):
            if self._create():
                self.held = True
                return True
            raw, info = self._read()
            if not self._stale(info):
                return False
            self._take_over(raw)
        return False

    def release(self) -> None:
        if self.held:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            self.held = False


def is_finished(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        return read_record(path).get("status") == "ok"
    except UserError:
        return False


def run_cell(cell: Cell, folder: Path, device: torch.device, *, command: str, quiet: bool, compile: bool,
             data_cache: dict) -> dict[str, Any]:
    """Train, fit, score and record one cell; a failure becomes a failed record."""
    from latentbench.score import sample_snapshot, score_model
    from latentbench.train import train_cell

    started = time.time()
    prov = provenance(device, command, started)
    rec_path = folder / "records" / f"{cell.id}.json"
    try:
        key = (cell.dataset, cell.seed, json.dumps(cell.data, sort_keys=True))
        if key not in data_cache:
            data_cache.clear()
            data_cache[key] = load_data(cell.dataset, seed=cell.seed, **cell.data)
        data = data_cache[key]
        model, data, info = train_cell(cell, device, checkpoint=folder / "records" / f"{cell.id}.pt",
                                       quiet=True, compile=compile, data=data)
        t = time.perf_counter()
        metrics, notes, timing = score_model(model, data, cell, device, quiet=quiet)
        timing = {"train_s": info["train_s"], "expost_s": info["expost_s"], **timing,
                  "score_s": time.perf_counter() - t}
        notes.update({"epochs_run": info["epochs_run"], "stopped_early": info["stopped_early"],
                      "final_val_elbo": info["history"][-1]["val_elbo"] if info["history"] else None})
        snap = sample_snapshot(model, data.test, cell.seed)
        _save_npz(folder / "records" / f"{cell.id}.samples.npz", snap)
        rec = make_record(cell, status="ok", metrics=metrics, notes=notes, timing=timing, prov=prov)
    except (KeyboardInterrupt, SystemExit):
        raise
    except (torch.cuda.OutOfMemoryError, MemoryError) as exc:
        rec = make_record(cell, status="failed", error=f"out of memory: {(str(exc) or type(exc).__name__).splitlines()[0]}",
                          prov=prov)
    except Exception as exc:  # noqa: BLE001 - any failure is recorded and the grid goes on
        msg = f"{type(exc).__name__}: {exc}" if not isinstance(exc, UserError) else str(exc)
        rec = make_record(cell, status="failed", error=msg, prov=prov,
                          extras={"traceback": traceback.format_exc(limit=8)})
    rec["timing"]["total_s"] = time.time() - started
    write_record(rec_path, rec)
    return rec


def _save_npz(path: Path, arrays: dict[str, Any]) -> None:
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def run_grid(grid: Grid, folder: Path, device: torch.device, *, shard: tuple[int, int] = (0, 1),
             force: bool = False, quiet: bool = False, command: str = "", compile: bool = False) -> dict[str, Any]:
    """Run every cell of ``grid`` in this shard; returns counts and the failed records."""
    folder = Path(folder)
    (folder / "records").mkdir(parents=True, exist_ok=True)
    cells = shard_cells(grid.cells(), shard)
    done = skipped = busy = 0
    failed: list[dict[str, Any]] = []
    data_cache: dict = {}
    t0 = time.time()
    bar = tqdm(cells, desc=f"grid {grid.name}", disable=quiet, unit="cell")
    for cell in bar:
        rec_path = folder / "records" / f"{cell.id}.json"
        if not force and is_finished(rec_path):
            skipped += 1
            continue
        lock = CellLock(rec_path.with_suffix(".lock"))
        if not lock.acquire():
            busy += 1
            continue
        try:
            if not force and is_finished(rec_path):  # another process finished it meanwhile
                skipped += 1
                continue
            if force:
                for suffix in (".pt",):
                    rec_path.with_suffix(suffix).unlink(missing_ok=True)
            bar.set_postfix_str(f"{cell.remedy} z={cell.latent} seed={cell.seed}")
            rec = run_cell(cell, folder, device, command=command, quiet=True, compile=compile, data_cache=data_cache)
            if rec["status"] == "ok":
                done += 1
            else:
                failed.append(rec)
                if not quiet:
                    tqdm.write(f"latentbench: cell {cell.id} failed: {rec['error']}", file=sys.stderr)
        finally:
            lock.release()
    return {"cells": len(cells), "done": done, "skipped": skipped, "busy": busy, "failed": failed,
            "seconds": time.time() - t0}
