"""Checkpoints: model + prior (+ fitted ex-post prior) + optimizer + the cell spec, written atomically.

A checkpoint is enough to rebuild and re-score a cell without retraining: the spec rebuilds the nets
from the registry, and the saved ex-post prior (e.g. a fitted GMM) is restored with its weights. A
remedy's own networks (``Remedy.aux_modules``, e.g. the AAE's discriminator) and their optimizer are
saved beside the model, so that a resumed run continues as an uninterrupted one.
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


class CorruptCheckpointError(UserError):
    """A checkpoint file that cannot be read back as its cell's model (truncated, foreign, mismatched,
    non-finite): a run retrains the cell over it; ``score`` and ``diagnose`` name it."""


def save_checkpoint(path: str | Path, model, cell, image_shape, *, optimizer=None, epoch: int = 0,
                    history: list | None = None, complete: bool = False, info: dict | None = None,
                    extra: dict | None = None, remedy=None, aux_optimizer=None) -> None:
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
    aux = remedy.aux_modules() if remedy is not None else None
    if aux is not None:
        payload["aux"] = aux.state_dict()
        payload["aux_optimizer"] = aux_optimizer.state_dict() if aux_optimizer is not None else None
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
        raise CorruptCheckpointError(f"{path}: not a readable latentbench checkpoint, corrupt or truncated "
                        f"({type(exc).__name__}: {why}); delete it to retrain that cell") from None
    if not isinstance(payload, dict) or "schema" not in payload or "cell" not in payload:
        raise CorruptCheckpointError(f"{path}: not a latentbench checkpoint (no schema or cell); delete it or "
                                     "point at another file")
    schema = payload["schema"]
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise CorruptCheckpointError(f"{path}: not a latentbench checkpoint (schema {schema!r} is not a "
                                     "number); delete it or point at another file")
    if schema > CHECKPOINT_SCHEMA:
        raise UserError(
            f"{path}: checkpoint schema {payload['schema']} is newer than this latentbench reads "
            f"({CHECKPOINT_SCHEMA}); upgrade latentbench"
        )
    try:
        cell = Cell.from_dict(payload["cell"])
        cell.id  # noqa: B018 - a cell whose fields are of the wrong type fails here
    except (TypeError, ValueError, AttributeError, KeyError, UserError) as exc:
        raise CorruptCheckpointError(f"{path}: corrupt checkpoint (bad cell: {_first(exc)}); delete it to "
                                     "retrain that cell") from None
    if expect_cell is not None and cell.train_key != expect_cell.train_key:
        raise UserError(f"{path}: checkpoint belongs to another cell; delete it or use another --out")
    try:
        model, remedy = build_model(cell, tuple(payload["image_shape"]))
        if payload.get("has_expost"):
            model.set_expost(remedy.build_expost(model.latent))
        model.load_state_dict(payload["model"])
        aux = remedy.aux_modules()
        if aux is not None and payload.get("aux") is not None:
            aux.load_state_dict(payload["aux"])
            aux.to(device)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - shapes or keys that do not fit the cell's model
        raise CorruptCheckpointError(f"{path}: corrupt checkpoint (its weights do not fit its cell's model: "
                                     f"{_first(exc)}); delete it to retrain that cell") from None
    bad = [name for name, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise CorruptCheckpointError(f"{path}: corrupt checkpoint (non-finite weights in {bad[0]}"
                                     f"{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}); delete it to "
                                     "retrain that cell")
    model.to(device)
    return model, remedy, payload


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
