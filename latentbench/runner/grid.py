"""The benchmark runner: a grid of cells, each trained, ex-post fitted, scored and recorded.

Resumable (a finished cell's record is never recomputed unless ``force``), shardable (``shard=(i, n)``
runs cells i, i+n, i+2n, ... of the sorted grid), and safe for several processes on one folder: each
cell is claimed with an atomic lock file (``O_CREAT | O_EXCL``); a lock whose process is gone is taken
over. A failing cell is recorded as failed and the grid goes on.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from latentbench.atomic import atomic_write_bytes, atomic_write_text
from latentbench.data import load_data
from latentbench.errors import UserError
from latentbench.runner.locks import CellLock
from latentbench.runner.records import make_record, provenance, read_record, write_record
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
    from latentbench.score.sampling import sample_snapshot
    from latentbench.score.scorer import score_model
    from latentbench.training.loop import train_cell

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
