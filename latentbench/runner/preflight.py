"""Preflight: validate a whole grid before its first cell, so that a fixable problem is one line and exit
code 2 with nothing written, never one failed record per cell after hours of training.

Checked, in this order (all but the last write nothing): every name (remedy, dataset, arch,
likelihood); every parameter (``[remedy.X]`` through ``create_remedy``, ``[net]`` by building each
distinct model on the CPU and passing two images through it, ``[data]`` by loading each distinct
dataset once); the scoring settings (``n_samples`` at least what precision/recall's nearest-neighbour
radius needs); the device; records of a newer schema in the output folder (refused, never overwritten);
and last the output folder itself (a file, ``/dev/null``, a read-only or immutable folder), probed by
creating and removing a file, with any folders it had to create removed again on failure.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import torch

from latentbench.atomic import write_error
from latentbench.errors import UserError
from latentbench.spec import Cell, Grid


def min_n_samples() -> int:
    """The smallest ``n_samples`` every metric can score: precision/recall (Kynkaanniemi et al. 2019)
    take each sample's k-th nearest neighbour among the others, k = torch-fidelity's
    ``prc_neighborhood`` (3), so a set needs k + 1 samples."""
    from torch_fidelity.defaults import DEFAULTS

    return int(DEFAULTS["prc_neighborhood"]) + 1


def check_device(name: str | None) -> torch.device:
    """:func:`~latentbench.device.pick_device` plus: only devices latentbench computes on (cpu, cuda,
    mps); ``meta``, ``xla`` and the like are one line."""
    from latentbench.device import pick_device

    dev = pick_device(name)
    if dev.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device {name}: latentbench trains and scores on cpu, cuda or mps, not "
                        f"{dev.type!r}; use --device auto, cpu, cuda, cuda:N or mps")
    return dev


def check_names(cells: list[Cell]) -> None:
    """Every remedy, dataset, arch and likelihood name of the grid is known."""
    from latentbench.nets.likelihood import LIKELIHOODS
    from latentbench.registry import DATASETS, NETS, REMEDIES

    for cell in cells:
        REMEDIES.get(cell.remedy)
        if ":" not in cell.dataset:  # npz:PATH / folder:PATH are checked by loading them
            DATASETS.get(cell.dataset)
        NETS.get(cell.arch)
        if cell.likelihood not in LIKELIHOODS:
            raise UserError(f"unknown likelihood {cell.likelihood!r}; known: {', '.join(LIKELIHOODS)}")


def check_scoring(cells: list[Cell]) -> None:
    """Sample counts, the Inception weights ``--features inception`` needs, and the feature cache folder
    (``$LATENTBENCH_CACHE``), before any cell trains."""
    import os

    need = min_n_samples()
    if any(cell.features == "inception" for cell in cells):
        from latentbench.score.fidelity import inception_weights

        inception_weights()  # one line naming where to put them
    cache = os.environ.get("LATENTBENCH_CACHE")
    if cache and Path(cache).exists() and not Path(cache).is_dir():
        raise UserError(f"LATENTBENCH_CACHE={cache} is not a folder (the feature classifiers are cached there); "
                        "point it at a folder, or unset it to use ~/.cache/latentbench")
    for cell in cells:
        if cell.n_samples < need:
            raise UserError(f"n_samples {cell.n_samples} is too small to score: precision/recall need at least "
                            f"{need} samples per set (their {need - 1} nearest neighbours); use --n-samples "
                            f"{need} or more (the published boards use 10000)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def load_datasets(cells: list[Cell]) -> dict[tuple, Any]:
    """Load each distinct dataset of the grid once (missing files and bad ``[data]`` values fail here)."""
    from latentbench.data import load_data

    out: dict[tuple, Any] = {}
    for cell in cells:
        key = (cell.dataset, json.dumps(cell.data, sort_keys=True))
        if key in out:
            continue
        try:
            out[key] = load_data(cell.dataset, seed=cell.seed, **cell.data)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bad [data] value deep in a loader
            raise UserError(f"dataset {cell.dataset!r} failed to load with [data] {cell.data}: {_first_line(exc)}; "
                            "check the [data] settings") from None
        need, data = min_n_samples(), out[key]
        if len(data.test) < need or len(data.train) < need:  # else every cell trains, then fails to score
            raise UserError(f"dataset {cell.dataset!r} is too small: {len(data.train)} training and {len(data.test)} "
                            f"held-out images, and scoring needs at least {need} of each (their {need - 1} nearest "
                            "neighbours); give more images")
    return out


def check_models(cells: list[Cell], datasets: dict[tuple, Any]) -> None:
    """Build each distinct model on the CPU (remedy, prior, ex-post prior, nets, likelihood) and pass two
    images through it: bad ``[net]`` and ``[remedy.X]`` values fail here, before any training."""
    from latentbench.model import build_model

    seen = set()
    for cell in cells:
        data = datasets[(cell.dataset, json.dumps(cell.data, sort_keys=True))]
        key = json.dumps([cell.remedy, cell.remedy_params, cell.arch, cell.net, cell.latent, cell.likelihood,
                          cell.sigma, list(data.image_shape)], sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        where = f"[net] {cell.net}" + (f" / [remedy.{cell.remedy}] {cell.remedy_params}" if cell.remedy_params else "")
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                model, remedy = build_model(cell, data.image_shape)
                remedy.build_expost(cell.latent_shape)
                loss = remedy.loss(model, data.train[:2].float(), remedy.beta)
            if not torch.is_tensor(loss) or loss.numel() != 1:
                raise ValueError(f"the loss is not a scalar (shape {tuple(getattr(loss, 'shape', ()))})")
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - any build failure is a bad parameter of this cell
            raise UserError(f"{cell.remedy} z={cell.latent} arch={cell.arch} cannot be built with {where}: "
                            f"{_first_line(exc)}; fix those values") from None


def check_records(cells: list[Cell], folder: Path) -> None:
    """Refuse a run whose folder holds records of a newer schema for its cells (never recomputed over)."""
    from latentbench.runner.records import NewerRecordError, read_record

    for cell in cells:
        path = folder / "records" / f"{cell.id}.json"
        if path.is_file():
            try:
                read_record(path)
            except NewerRecordError:
                raise
            except UserError:
                pass  # corrupt: the cell is recomputed


def check_output_folder(folder: Path, flag: str = "--out") -> None:
    """The output folder can hold files: not a file or device, not read-only or immutable. Folders
    created for the probe are removed again if it fails."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        kind = "a file" if folder.is_file() else "not a folder (a device or special file)"
        raise UserError(f"{flag} {folder} is {kind}; give a folder path (it is created if missing)")
    created = []
    probe = folder / f".tmp-write-check.{uuid.uuid4().hex}"  # not the PID: namespaces repeat PIDs
    try:
        missing = [p for p in [folder, *folder.parents] if not p.exists()]
        for p in reversed(missing):
            try:
                p.mkdir()
            except FileExistsError:  # a concurrent run made it: not ours to remove
                continue
            created.append(p)
        with open(probe, "xb") as f:
            f.write(b"latentbench")
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as exc:
        probe.unlink(missing_ok=True)  # created, then the write failed (a full disk): no 0-byte probe left
        for p in reversed(created):
            try:
                p.rmdir()
            except OSError:
                pass
        raise UserError(f"{write_error(folder, exc)} (the {flag} folder)") from None


def preflight(grid: Grid, folder: Path | None, device: str | None) -> torch.device:
    """Validate ``grid`` as a whole before its first cell; returns the device. Raises a one-line
    :class:`UserError` for the first problem found; writes nothing unless everything else passed (and
    then only the output folder itself)."""
    from latentbench.runner.locks import lease_seconds

    cells = grid.cells()
    if not cells:
        raise UserError("the grid is empty: give at least one remedy, latent size and seed")
    lease_seconds()  # a bad LATENTBENCH_LEASE_S is one line before grids/ or records/ exist
    check_names(cells)
    check_scoring(cells)
    dev = check_device(device)
    datasets = load_datasets(cells)
    check_models(cells, datasets)
    if folder is not None:
        check_records(cells, Path(folder))
        check_output_folder(Path(folder))
    return dev
