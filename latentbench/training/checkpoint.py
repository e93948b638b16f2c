"""Checkpoints: model + prior (+ fitted ex-post prior) + optimizer + the cell spec, written atomically.

A checkpoint is enough to rebuild and re-score a cell without retraining: the spec rebuilds the nets
from the registry, and the saved ex-post prior (e.g. a fitted GMM) is restored with its weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from latentbench.atomic import atomic_torch_save
from latentbench.errors import UserError
from latentbench.model import build_model
from latentbench.spec import Cell

CHECKPOINT_SCHEMA = 1


def save_checkpoint(path: str | Path, model, cell, image_shape, *, optimizer=None, epoch: int = 0,
                    history: list | None = None, complete: bool = False, info: dict | None = None,
                    extra: dict | None = None) -> None:
    from latentbench import __version__

    payload: dict[str, Any] = {
        "schema": CHECKPOINT_SCHEMA,
        "latentbench": __version__,
        "cell": cell.to_dict(),
        "image_shape": list(image_shape),
        "epoch": epoch,
        "complete": complete,
        "has_expost": model.expost is not None,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "history": history or [],
        "info": info or {},
        **(extra or {}),
    }
    atomic_torch_save(payload, path)


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu", expect_cell=None):
    """Rebuild (model, remedy, payload) from a checkpoint file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file
        why = (str(exc).strip().splitlines() or [""])[0]
        raise UserError(f"{path}: not a readable latentbench checkpoint, corrupt or truncated "
                        f"({type(exc).__name__}: {why}); delete it to retrain that cell") from None
    if not isinstance(payload, dict) or "schema" not in payload or "cell" not in payload:
        raise UserError(f"{path}: not a latentbench checkpoint (no schema or cell); delete it or point at "
                        "another file")
    if payload["schema"] > CHECKPOINT_SCHEMA:
        raise UserError(
            f"{path}: checkpoint schema {payload['schema']} is newer than this latentbench reads "
            f"({CHECKPOINT_SCHEMA}); upgrade latentbench"
        )
    cell = Cell.from_dict(payload["cell"])
    if expect_cell is not None and cell.train_key != expect_cell.train_key:
        raise UserError(f"{path}: checkpoint belongs to another cell; delete it or use another --out")
    model, remedy = build_model(cell, tuple(payload["image_shape"]))
    if payload.get("has_expost"):
        model.set_expost(remedy.build_expost(model.latent))
    model.load_state_dict(payload["model"])
    model.to(device)
    return model, remedy, payload
