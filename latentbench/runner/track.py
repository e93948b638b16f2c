"""Experiment tracking: ``latentbench run --track mlflow`` mirrors every cell into MLflow.

One MLflow run per cell, named ``remedy z=latent s=seed`` and tagged ``latentbench.cell_id``: the cell
as params (nested tables flattened, ``net.hidden``), the per-epoch training loss and held-out
ELBO terms as metrics with the epoch as step (live, while the cell trains), the record's metrics and
timings, the record, its samples (``samples.png``: rows of prior, posterior-mixture, N(mu(x), I) and
held-out images) and the record file as artifacts, and the record's notes as tags. The cell runs are
children of one run per grid, which receives ``leaderboard.md`` and the plots when the grid ends.

Re-runs do not duplicate: a cell's run is found by its tag. A run of an interrupted cell is continued
when the cell resumes from its checkpoint (the epochs it retrains after the checkpoint, logged once
already, are not logged again: one point per epoch); a recomputed cell (``--force``, or a failed cell tried again
from scratch) replaces its old run (MLflow's soft delete); a finished cell that has no run yet (a
grid first run without ``--track``) gets one from its record and checkpoint.

The default store is MLflow's file store in ``OUT/mlruns`` (``$MLFLOW_TRACKING_URI`` or ``--track-uri``
override it): it needs no server and, unlike SQLite, is safe for several worker processes and for
SLURM array tasks on a shared file system. MLflow 3 keeps the file store in maintenance mode behind
``MLFLOW_ALLOW_FILE_STORE=true``, which latentbench sets for file stores only. A tracking failure is
reported once per cell and never fails the cell; a failure of the grid's own run (an unreachable
store) is one warning line and the grid goes on without tracking.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from latentbench.errors import UserError

CELL_TAG = "latentbench.cell_id"
GRID_TAG = "latentbench.grid_id"
EPOCH_KEYS = ("loss", "val_rec", "val_kl", "val_elbo")


def make_tracker(kind: str, folder: Path, *, uri: str | None = None, experiment: str = "latentbench") -> MLflowTracker:
    """The tracker named by ``--track`` (only ``mlflow``); one line if its package is missing."""
    if kind != "mlflow":
        raise UserError(f"unknown tracker {kind!r}: the trackers are: mlflow")
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise UserError('--track mlflow needs MLflow: pip install "latentbench[mlflow]"') from None
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or (Path(folder) / "mlruns").resolve().as_uri()
    return MLflowTracker(uri, experiment)


def guarded(call: Any, *args: Any) -> bool:
    """Call a grid-level tracker method; a failure (an unreachable ``--track-uri``, a broken store) is
    one warning line on stderr and the grid goes on. Returns whether the call succeeded."""
    try:
        call(*args)
        return True
    except Exception as exc:  # noqa: BLE001 - tracking never stops a grid
        first = (str(exc).strip().splitlines() or [""])[0]
        print(f"latentbench: warning: MLflow tracking of the grid failed, going on without it: "
              f"{type(exc).__name__}: {first}", file=sys.stderr)
        return False


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"net": {"hidden": [32]}}`` -> ``{"net.hidden": "[32]"}``: MLflow params are flat strings."""
    out: dict[str, str] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    return out


class MLflowTracker:
    """Cells as MLflow runs in experiment ``experiment`` of the store at ``uri`` (picklable: the client
    is made in each process that uses it)."""

    def __init__(self, uri: str, experiment: str) -> None:
        self.uri, self.experiment = uri, experiment
        self.experiment_id: str | None = None
        self.grid_run_id: str | None = None
        self._client_obj: Any = None
        if uri.startswith("file:") or "://" not in uri:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # workers inherit it

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client_obj": None}

    @property
    def client(self) -> Any:
        if self._client_obj is None:
            from mlflow.tracking import MlflowClient

            self._client_obj = MlflowClient(tracking_uri=self.uri)
        return self._client_obj

    def _experiment(self) -> str:
        if self.experiment_id is None:
            from mlflow.exceptions import MlflowException

            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                try:
                    self.experiment_id = self.client.create_experiment(self.experiment)
                except MlflowException:  # created by another process meanwhile
                    exp = self.client.get_experiment_by_name(self.experiment)
            if exp is not None:
                self.experiment_id = exp.experiment_id
        return self.experiment_id

    def find(self, tag: str, value: str) -> list[Any]:
        """Active (not deleted) runs of the experiment with ``tag`` = ``value``, newest first."""
        return self.client.search_runs([self._experiment()], filter_string=f"tags.`{tag}` = '{value}'",
                                       order_by=["attributes.start_time DESC"])

    # -- the grid ------------------------------------------------------------------------------
    def start_grid(self, grid: Any, folder: Path, finished: list[Any]) -> None:
        """Open (or reuse) the grid's run, and give finished cells without a run one from their record."""
        ids = sorted(c.id for c in grid.cells())
        key = hashlib.sha256(" ".join(ids).encode()).hexdigest()[:12]
        runs = self.find(GRID_TAG, key)
        if runs:
            self.grid_run_id = runs[0].info.run_id
            self.client.update_run(self.grid_run_id, status="RUNNING")
        else:
            run = self.client.create_run(self._experiment(), run_name=f"grid {grid.name}",
                                         tags={GRID_TAG: key, "latentbench.folder": str(Path(folder).resolve())})
            self.grid_run_id = run.info.run_id
        for cell in finished:
            if any(r.info.status == "FINISHED" for r in self.find(CELL_TAG, cell.id)):
                continue
            rec_path = Path(folder) / "records" / f"{cell.id}.json"
            try:
                rec = json.loads(rec_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            run = self.open(cell, None, resume=False)
            run.finish(rec, Path(folder))

    def finish_grid(self, folder: Path) -> None:
        """Attach the grid's leaderboard and plots to its run and close it."""
        if self.grid_run_id is None:
            return
        folder = Path(folder)
        if (folder / "leaderboard.md").is_file():
            self.client.log_artifact(self.grid_run_id, str(folder / "leaderboard.md"))
        if (folder / "plots").is_dir():
            self.client.log_artifacts(self.grid_run_id, str(folder / "plots"), "plots")
        self.client.set_terminated(self.grid_run_id, "FINISHED")

    # -- one cell ------------------------------------------------------------------------------
    def open(self, cell: Any, progress: Any, *, resume: bool) -> CellRun:
        """The run of ``cell``: continued if the cell resumes from its checkpoint (``resume``), otherwise
        a fresh run replacing any old one."""
        return CellRun(self, cell, progress, resume)


class CellRun:
    """One cell's MLflow run while the cell is computed."""

    def __init__(self, tracker: MLflowTracker, cell: Any, progress: Any, resume: bool) -> None:
        self.tracker, self.cell, self.progress = tracker, cell, progress
        self.run_id: str | None = None
        self.epochs_logged = 0
        self.logged_through = 0  # epochs already logged by the interrupted run this one continues
        try:
            client = tracker.client
            old = tracker.find(CELL_TAG, cell.id)
            if resume and old:
                self.run_id = old[0].info.run_id
                client.update_run(self.run_id, status="RUNNING")
                # the killed run logged epochs past its last checkpoint, which the resumed cell trains again
                self.logged_through = max((m.step for m in client.get_metric_history(self.run_id, "loss")),
                                          default=0)
                old = old[1:]
            for r in old:  # a recomputation replaces the old runs of the cell
                client.delete_run(r.info.run_id)
            if self.run_id is None:
                tags = {CELL_TAG: cell.id, "remedy": cell.remedy, "latent": str(cell.latent),
                        "seed": str(cell.seed), "dataset": cell.dataset}
                if tracker.grid_run_id:
                    tags["mlflow.parentRunId"] = tracker.grid_run_id
                run = client.create_run(tracker._experiment(), run_name=f"{cell.remedy} z={cell.latent} s={cell.seed}",
                                        tags=tags)
                self.run_id = run.info.run_id
                from mlflow.entities import Param

                params = [Param(k, v[:6000]) for k, v in flatten(cell.to_dict()).items()]
                for i in range(0, len(params), 100):
                    client.log_batch(self.run_id, params=params[i : i + 100])
        except Exception as exc:  # noqa: BLE001 - tracking never fails a cell
            self._warn(exc)

    def _warn(self, exc: BaseException) -> None:
        message = f"latentbench: warning: MLflow tracking of cell {self.cell.id} stopped: {type(exc).__name__}: {exc}"
        if self.progress is not None:
            self.progress.write(message.splitlines()[0])
        self.run_id = None

    def _metrics(self, values: dict[str, Any], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in values.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)]
        for i in range(0, len(batch), 500):
            self.tracker.client.log_batch(self.run_id, metrics=batch[i : i + 500])

    def log_epoch(self, stats: dict[str, Any]) -> None:
        """One epoch's loss and held-out terms, at step = epoch."""
        if self.run_id is None or int(stats["epoch"]) <= self.logged_through:  # one point per epoch
            return
        try:
            self._metrics({k: stats[k] for k in EPOCH_KEYS if k in stats}, step=int(stats["epoch"]))
            self.epochs_logged += 1
        except Exception as exc:  # noqa: BLE001
            self._warn(exc)

    def stopped(self) -> None:
        """The cell was interrupted: the run is KILLED, and continued when the cell resumes."""
        if self.run_id is not None:
            try:
                self.tracker.client.set_terminated(self.run_id, "KILLED")
            except Exception:  # noqa: BLE001 - stopping must go on
                pass

    def finish(self, rec: dict[str, Any], folder: Path) -> None:
        """The record's metrics, timings, notes and artifacts; FINISHED or FAILED with the record."""
        if self.run_id is None:
            return
        client, rid = self.tracker.client, self.run_id
        records = Path(folder) / "records"
        try:
            if not self.epochs_logged and not client.get_metric_history(rid, "loss"):
                for stats in _history(records / f"{self.cell.id}.pt"):  # trained earlier: from the checkpoint
                    self._metrics({k: stats[k] for k in EPOCH_KEYS if k in stats}, step=int(stats["epoch"]))
            self._metrics(rec.get("metrics", {}))
            self._metrics({f"time_{k}": v for k, v in rec.get("timing", {}).items()})
            tags = {f"note.{k}": str(v)[:5000] for k, v in rec.get("notes", {}).items()}
            tags["status"] = rec.get("status", "")
            if rec.get("error"):
                tags["error"] = str(rec["error"])[:5000]
            for k, v in tags.items():
                client.set_tag(rid, k, v)
            rec_file = records / f"{self.cell.id}.json"
            if rec_file.is_file():
                client.log_artifact(rid, str(rec_file))
            samples = records / f"{self.cell.id}.samples.npz"
            if samples.is_file():
                with tempfile.TemporaryDirectory() as tmp:
                    client.log_artifact(rid, str(_samples_png(samples, Path(tmp) / "samples.png")))
            client.set_terminated(rid, "FINISHED" if rec.get("status") == "ok" else "FAILED")
        except Exception as exc:  # noqa: BLE001
            self._warn(exc)


def _history(checkpoint: Path) -> list[dict[str, Any]]:
    """The per-epoch history saved in a cell's checkpoint (empty if there is none)."""
    if not checkpoint.is_file():
        return []
    import torch

    try:
        payload = torch.load(checkpoint, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - a missing history only leaves the curves out
        return []
    return list(payload.get("history", [])) if isinstance(payload, dict) else []


def _samples_png(npz: Path, out: Path) -> Path:
    """Rows of prior, posterior-mixture, N(mu(x), I) and held-out images from a cell's sample snapshot."""
    import numpy as np
    import torch
    from torchvision.utils import save_image

    with np.load(npz) as snap:
        rows = [torch.from_numpy(snap[k]).float() for k in ("prior_images", "post_images", "unit_images", "data_images")
                if k in snap.files]
    images = torch.cat(rows).clamp(0, 1)
    save_image(images, out, nrow=len(rows[0]), padding=1, pad_value=1.0)
    return out
