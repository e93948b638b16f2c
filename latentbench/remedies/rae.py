"""The regularized autoencoder with the L2 regulariser, RAE-L2 (Ghosh et al. 2020, "From Variational to
Deterministic Autoencoders", ICLR; Eq. 11 with L_REG = ||theta||^2 of the decoder, Sec. 3.1), sampled
through ex-post density estimation (their Sec. 4).

A deterministic encoder z = E(x) and a decoder D minimise

    L_RAE = ||x - D(E(x))||^2 + beta * 1/2 ||z||^2 + lambda * ||theta_D||^2,

the latent L2 penalty standing in for the VAE's KL and the decoder weight decay for its noise (Eqs. 9,
11). After training a 10-component full-covariance GMM (their choice for every dataset) is fitted on
the codes, and samples are drawn from it (``latentbench.priors.gmm``; above ``max_full_dim``
dimensions the covariance rule documented there).

Defaults: beta = 1e-4 and lambda = 1e-7, pythae's RAE_L2 defaults (the paper tunes them per dataset in
its appendix and gives no single pair). Both weigh the squared error; against latentbench's ``rec`` in
nats they are scaled by the likelihood's nats per unit of squared error
(``matching.nats_per_squared_error``). The epoch's KL warm-up factor multiplies both. Deterministic
encoder: ``post`` is the decoded codes, and metrics that need a posterior variance are absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from latentbench.priors.gmm import ExpostGMMPrior
from latentbench.remedies import Remedy, register_remedy
from latentbench.remedies.matching import nats_per_squared_error, reconstruct


@register_remedy
class RAERemedy(Remedy):
    """Regularized autoencoder (L2) + ex-post 10-component GMM (Ghosh et al. 2020)."""

    name = "rae"
    deterministic = True

    @dataclass(frozen=True)
    class Params:
        beta_z: float = 1e-4
        weight_decay: float = 1e-7
        n_components: int = 10
        max_full_dim: int = 64

    def loss(self, model, x: torch.Tensor, beta: float | torch.Tensor) -> torch.Tensor:
        rec, z, _, _ = reconstruct(model, x)
        latent_l2 = 0.5 * z.flatten(1).float().pow(2).sum(1).mean()
        decay = sum(p.float().pow(2).sum() for p in model.decoder.parameters())
        s = nats_per_squared_error(model)
        return rec.mean() + beta * s * (self.params.beta_z * latent_l2 + self.params.weight_decay * decay)

    def build_expost(self, latent):
        return ExpostGMMPrior(latent, ks=(self.params.n_components,), max_full_dim=self.params.max_full_dim)

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {"beta_z": trial.suggest_float("beta_z", 1e-6, 1e-1, log=True),
                "weight_decay": trial.suggest_float("weight_decay", 1e-9, 1e-4, log=True),
                "n_components": trial.suggest_categorical("n_components", [1, 10, 20])}
