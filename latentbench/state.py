"""Keep the best weights seen so far without a deepcopy of the model on every improvement."""

from __future__ import annotations

import torch
from torch import nn


def snapshot(module: nn.Module, into: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Copy ``module``'s state into preallocated tensors (allocated on the first call)."""
    sd = module.state_dict()
    if into is None:
        return {k: v.detach().clone() for k, v in sd.items()}
    for k, v in sd.items():
        into[k].copy_(v)
    return into
