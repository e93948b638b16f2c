"""Early stopping on a held-out loss, shared by every loop that fits something (the VAE harness,
ex-post flows, the two-stage second VAE, the noise-contrastive classifier, the diffusion prior).

The best weights are kept in preallocated buffers (copied in place on each improvement), never by a
``deepcopy`` of the model.
"""

from __future__ import annotations

import math

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


class EarlyStopping:
    """Track a held-out loss (lower is better); ``step`` returns True when patience has run out.

    ``patience = 0`` never stops. With ``module`` given, the weights of the best step are kept and
    :meth:`restore` puts them back.
    """

    def __init__(self, patience: int, module: nn.Module | None = None, best: float | None = None,
                 bad: int = 0, best_state: dict[str, torch.Tensor] | None = None) -> None:
        self.patience = int(patience)
        self.module = module
        self.best = math.inf if best is None else float(best)
        self.bad = int(bad)
        # the best weights of a run resumed from a checkpoint (saved with it), else filled on improvement
        self._state: dict[str, torch.Tensor] | None = (
            None if best_state is None else {k: v.detach().clone() for k, v in best_state.items()})

    @property
    def best_state(self) -> dict[str, torch.Tensor] | None:
        """The best weights kept so far (None before the first step or without a module)."""
        return self._state

    def step(self, loss: float) -> bool:
        """Record one held-out ``loss``; True means stop now."""
        if loss < self.best:
            self.best, self.bad = float(loss), 0
            if self.module is not None:
                self._state = snapshot(self.module, self._state)
            return False
        self.bad += 1
        return self.patience > 0 and self.bad >= self.patience

    def restore(self) -> bool:
        """Load the best weights seen (if any were kept); True when something was restored."""
        if self.module is None or self._state is None:
            return False
        self.module.load_state_dict(self._state)
        return True
