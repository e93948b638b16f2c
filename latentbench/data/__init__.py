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


def load_data(name: str, seed: int = 0, **params: Any) -> Data:
    """Load a dataset: a registered name (``digits``, ``fashion_mnist``, ...) or ``npz:PATH`` /
    ``folder:PATH``; ``params`` go to its loader (``data_root``, ``download``, ``test_fraction``, ...).

    This is the one call that finds, checks and loads a dataset; whatever a user can fix (a missing
    or truncated file, an unknown name, a bad ``[data]`` key) is a one-line :class:`UserError`.
    ``max_train`` keeps the first ``max_train`` training images.
    """
    loader, args = _loader(name)
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
