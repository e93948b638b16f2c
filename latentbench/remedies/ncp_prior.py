"""Noise-contrastive prior (Aneja et al. 2021, "A Contrastive Learning Approach for Training
Variational Autoencoder Priors", NeurIPS; Eq. 4 for the reweighted prior, Sec. 3.2 for SIR).

Train a plain VAE (N(0, I) prior, Kingma & Welling 2014 Eq. 3), then fit a binary classifier that
tells z ~ q(z) from z ~ N(0, I); the prior is p(z) = N(z; 0, I) r(z) / Z with r = D / (1 - D), sampled
by sampling-importance-resampling from ``n_sir`` base draws. The classifier works in the top
``max_dim`` principal directions of the posterior means so that it stays a density-ratio estimator at
large D; Z is a Monte Carlo estimate (the record's notes say so). See ``latentbench.priors.ncp``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from latentbench.priors.base import ExpostCodes
from latentbench.priors.ncp import NCPPrior
from latentbench.remedies import Remedy, register_remedy


@register_remedy
class NCPPriorRemedy(Remedy):
    """Plain VAE + noise-contrastive reweighting of N(0, I), SIR sampling (Aneja et al. 2021)."""

    name = "ncp_prior"

    @dataclass(frozen=True)
    class Params:
        codes: ExpostCodes = "sample"
        hidden: int = 128
        depth: int = 2
        max_dim: int = 32
        n_sir: int = 256
        fit_epochs: int = 100

    def build_expost(self, latent):
        return NCPPrior(latent, hidden=self.params.hidden, depth=self.params.depth,
                        max_dim=self.params.max_dim, n_sir=self.params.n_sir,
                        epochs=self.params.fit_epochs)

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            "hidden": trial.suggest_categorical("hidden", [64, 128, 256]),
            "depth": trial.suggest_int("depth", 1, 3),
            "max_dim": trial.suggest_categorical("max_dim", [8, 16, 32, 64]),
            "n_sir": trial.suggest_categorical("n_sir", [64, 256, 1024]),
        }
