"""A learned accept/reject sampling prior, LARS (Bauer & Mnih 2019, "Resampled Priors for Variational
Autoencoders", AISTATS; Eq. 4, the truncated density, trained jointly with the VAE).

p_T(z) = [(1 - alpha_T) a(z) / Z + alpha_T] N(z; 0, I), alpha_T = (1 - Z)^(T - 1), with a(z) a learned
acceptance network and Z = E_N[a] estimated by Monte Carlo (its standard error in the record's notes);
samples come from the truncated accept/reject sampler of their Algorithm 1. The loss is the negative
ELBO with the Monte Carlo KL log q(z|x) - log p_T(z); see ``latentbench.priors.lars``.

Defaults from the paper's VAE experiments: a(z) an MLP with two hidden layers of 100 tanh units,
T = 100, and Z estimated from 1024 proposals per training step; 2^16 proposals at evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from latentbench.priors.lars import LARSPrior
from latentbench.remedies import Remedy, register_remedy


@register_remedy
class LARSPriorRemedy(Remedy):
    """Learned accept/reject sampling prior, N(0, I) x a(z) / Z, truncated at T (Bauer & Mnih 2019)."""

    name = "lars_prior"

    @dataclass(frozen=True)
    class Params:
        hidden: int = 100
        depth: int = 2
        T: int = 100
        n_train: int = 1024
        n_normaliser: int = 65536

    def build_prior(self, latent, image_shape):
        return LARSPrior(latent, self.params.hidden, self.params.depth, self.params.T,
                         self.params.n_train, self.params.n_normaliser)

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {"hidden": trial.suggest_categorical("hidden", [50, 100, 200]),
                "T": trial.suggest_categorical("T", [10, 100, 1000])}
