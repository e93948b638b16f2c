"""Learnable mixture-of-Gaussians prior trained jointly with the VAE.

p(z) = sum_k pi_k N(z; m_k, diag exp(v_k)); the ELBO's KL term is the Monte Carlo estimate
log q(z|x) - log p(z) (Tomczak & Welling 2018, Sec. 3, the "MoG" baseline of their Table 1;
Dilokthanakul et al. 2016, "Deep Unsupervised Clustering with Gaussian Mixture VAEs").
The papers tune K, the number of components.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from latentbench.priors.mog import MixturePrior
from latentbench.remedies import Remedy, register_remedy


@register_remedy
class MoGPriorRemedy(Remedy):
    """Learnable mixture of K diagonal Gaussians as p(z) (Tomczak & Welling 2018, MoG baseline)."""

    name = "mog_prior"

    @dataclass(frozen=True)
    class Params:
        n_components: int = 10

    def build_prior(self, latent, image_shape):
        return MixturePrior(latent, self.params.n_components)

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {"n_components": trial.suggest_int("n_components", 2, 100, log=True)}
