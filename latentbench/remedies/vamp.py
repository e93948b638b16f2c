"""VampPrior (Tomczak & Welling 2018, "VAE with a VampPrior").

p(z) = 1/K sum_k q(z | u_k)  (Eq. 9), with K pseudo-inputs u_k learned by backpropagation jointly with
the VAE; the KL term is estimated by Monte Carlo. The paper tunes K (500 on MNIST; 50 here by
default, since digits has 1437 training images).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from latentbench.priors.vamp import VampPrior
from latentbench.remedies import Remedy, register_remedy


@register_remedy
class VampRemedy(Remedy):
    """VampPrior: mixture of posteriors at K learned pseudo-inputs (Tomczak & Welling 2018)."""

    name = "vamp"

    @dataclass(frozen=True)
    class Params:
        n_pseudo: int = 50

    def build_prior(self, latent, image_shape):
        return VampPrior(latent, image_shape, self.params.n_pseudo)

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {"n_pseudo": trial.suggest_int("n_pseudo", 10, 1000, log=True)}
