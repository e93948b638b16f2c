"""beta-VAE of Higgins et al. (2017), "beta-VAE: Learning Basic Visual Concepts with a Constrained
Variational Framework".

Loss = -E_q[log p(x|z)] + beta * KL(q(z|x) || N(0, I))   (Eq. 4). beta > 1 pulls the aggregate
posterior towards the prior (fewer holes) at the cost of reconstructions; the paper tunes beta.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from latentbench.remedies import Remedy, register_remedy


@register_remedy
class BetaVAERemedy(Remedy):
    """beta-VAE: KL term weighted by beta (Higgins et al. 2017)."""

    name = "beta_vae"

    @dataclass(frozen=True)
    class Params:
        beta: float = 4.0

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {"beta": trial.suggest_float("beta", 0.25, 16.0, log=True)}
