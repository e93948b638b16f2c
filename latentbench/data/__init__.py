"""Datasets. Every dataset ends as in-memory float tensors in [0, 1], shaped (N, C, H, W)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

from latentbench.errors import UserError
from latentbench.registry import DATASETS


@dataclass
class Data:
    """A dataset split into train and held-out test tensors (values in [0, 1])."""

    name: str
    train: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return int(self.train_labels.max().item()) + 1 if self.train_labels is not None else 0


# Datasets named by a path rather than a registered name: ``npz:PATH`` (or ``npy:PATH``) and
# ``folder:PATH``. The prefix picks the loader; the rest of the name is the path.
PREFIXES = {"npz": "latentbench.data.arrays:load", "npy": "latentbench.data.arrays:load",
            "folder": "latentbench.data.folder:load"}


def _loader(name: str) -> tuple[Any, tuple[str, ...]]:
    """The loader for ``name`` and its leading positional arguments (the path of a prefixed name)."""
    import importlib

    prefix, sep, rest = name.partition(":")
    if sep and prefix in PREFIXES:
        if not rest.strip():
            raise UserError(f"dataset {name!r}: no path after {prefix + ':'!r}; write e.g. {prefix}:path/to/data")
        module, _, attr = PREFIXES[prefix].partition(":")
        return getattr(importlib.import_module(module), attr), (rest,)
    if name not in DATASETS and (name.endswith((".npz", ".npy")) or os.path.isdir(name)):
        kind = "folder" if os.path.isdir(name) else "npz"
        raise UserError(f"dataset {name!r} is a path, not a registered name; write --dataset {kind}:{name}")
    return DATASETS.get(name), ()


# where a dataset lives: every loader accepts them (a built-in one that needs no files ignores them)
LOCATION_KEYS = ("data_root", "download")


def _check_keys(name: str, loader: Any, params: dict[str, Any]) -> None:
    """Refuse ``[data]`` keys the loader does not take (``max_trian`` would otherwise train on the full
    set): a loader's named parameters, ``max_train`` and the location keys. A plugin loader that takes
    ``**kwargs`` reads its own keys and is not checked."""
    import difflib
    import inspect

    try:
        sig = inspect.signature(loader)
    except (TypeError, ValueError):
        return
    sig_params = list(sig.parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in sig_params) and not getattr(loader, "__module__", "").startswith(
            "latentbench."):
        return
    known = {p.name for p in sig_params if p.kind is not p.VAR_KEYWORD and p.name != "seed"}
    known |= {"max_train", *LOCATION_KEYS}
    for key in params:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(f"dataset {name!r}: unknown [data] key {key!r}{hint} known: {', '.join(sorted(known))}")


def load_data(name: str, seed: int = 0, **params: Any) -> Data:
    """Load a dataset: a registered name (``digits``, ``fashion_mnist``, ...) or ``npz:PATH`` /
    ``folder:PATH``; ``params`` go to its loader (``data_root``, ``download``, ``test_fraction``, ...).

    This is the one call that finds, checks and loads a dataset; whatever a user can fix (a missing
    or truncated file, an unknown name, a bad ``[data]`` key) is a one-line :class:`UserError`.
    ``max_train`` keeps the first ``max_train`` training images.
    """
    loader, args = _loader(name)
    _check_keys(name, loader, params)
    max_train = params.pop("max_train", None)
    if max_train is not None and (not isinstance(max_train, int) or isinstance(max_train, bool) or max_train < 1):
        raise UserError(f"dataset {name!r}: max_train must be a positive integer, got {max_train!r}")
    try:
        data = loader(*args, seed=seed, **params)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise UserError(f"dataset {name!r}: {exc}; check the [data] settings") from None
        raise
    data.name = name
    if max_train is not None and max_train < len(data.train):
        data.train = data.train[:max_train]
        if data.train_labels is not None:
            data.train_labels = data.train_labels[:max_train]
        data.info["max_train"] = max_train
    return data
