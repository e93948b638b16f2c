"""Datasets. Every dataset ends as in-memory float tensors in [0, 1], shaped (N, C, H, W)."""

from __future__ import annotations

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


def load_data(name: str, seed: int = 0, **params: Any) -> Data:
    """Load a registered dataset; ``params`` go to its loader (``data_root``, ``download``, ...)."""
    loader = DATASETS.get(name)
    max_train = params.pop("max_train", None)
    try:
        data = loader(seed=seed, **params)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise UserError(f"dataset {name!r}: {exc}; check the [data] settings") from None
        raise
    if max_train is not None and max_train < len(data.train):
        data.train = data.train[:max_train]
        if data.train_labels is not None:
            data.train_labels = data.train_labels[:max_train]
    return data
