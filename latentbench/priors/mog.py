"""A learnable mixture of K diagonal Gaussians as the prior, trained jointly with the VAE.

p(z) = sum_k pi_k N(z; m_k, diag(exp(v_k)))  with pi = softmax(w)
(the MoG prior baseline of Tomczak & Welling 2018, Sec. 3, and Dilokthanakul et al. 2016). The KL in
the ELBO has no closed form and is estimated by Monte Carlo (``VAE.terms``).
"""

from __future__ import annotations

import torch
from torch import nn

from latentbench.latent import LatentShape
from latentbench.priors.base import Prior, mixture_log_prob, sample_mixture


class MixturePrior(Prior):
    def __init__(self, latent: LatentShape, n_components: int = 10, init_spread: float = 1.0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(latent)
        d = latent.dim
        g = generator or torch.Generator().manual_seed(0)
        self.means = nn.Parameter(init_spread * torch.randn(n_components, d, generator=g))
        self.logvars = nn.Parameter(torch.zeros(n_components, d))
        self.logits = nn.Parameter(torch.zeros(n_components))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return mixture_log_prob(z.flatten(1).float(), self.means, self.logvars, torch.log_softmax(self.logits, 0))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = sample_mixture(n, self.means, self.logvars, torch.softmax(self.logits, 0), generator)
        return z.reshape(n, *self.latent.shape)
