"""The standard normal prior p(z) = N(0, I) of the VAE (Kingma & Welling 2014, Eq. 10 for the KL).

KL(N(mu, diag sigma^2) || N(0, I)) = 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2).
"""

from __future__ import annotations

import torch

from latentbench.priors.base import LOG_2PI, Prior, randn


class StandardNormal(Prior):
    """N(0, I) over the flattened latent."""

    gaussian = True

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return -0.5 * (z.pow(2) + LOG_2PI).flatten(1).sum(1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return randn((n, *self.latent.shape), generator, self._device())

    def analytic_kl(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return 0.5 * (mu.pow(2) + torch.exp(logvar) - 1.0 - logvar).flatten(1).sum(1)
