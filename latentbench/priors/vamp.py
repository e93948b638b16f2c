"""VampPrior: p(z) = 1/K sum_k q(z | u_k), with K learned pseudo-inputs u_k.

Tomczak & Welling (2018), "VAE with a VampPrior", Eq. 9. The pseudo-inputs live in image space
(sigmoid of learned logits, so they stay in [0, 1]) and are encoded by the VAE's own encoder, so the
prior is the aggregate posterior of K learned points.
"""

from __future__ import annotations

import torch
from torch import nn

from latentbench.latent import LatentShape
from latentbench.priors.base import Prior, mixture_log_prob, sample_mixture


class VampPrior(Prior):
    def __init__(self, latent: LatentShape, image_shape: tuple[int, int, int], n_pseudo: int = 50,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(latent)
        g = generator or torch.Generator().manual_seed(0)
        # logits near 0: grey pseudo-images with a little noise to break symmetry
        self.pseudo_logits = nn.Parameter(0.1 * torch.randn(n_pseudo, *image_shape, generator=g))
        self._model: list = []  # a plain list, so the encoder is not registered twice

    def attach(self, model: nn.Module) -> None:
        self._model[:] = [model]

    def components(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._model:
            raise RuntimeError("VampPrior needs its VAE: construct the VAE with this prior first")
        mu, logvar = self._model[0].encode(torch.sigmoid(self.pseudo_logits))
        return mu.flatten(1).float(), logvar.flatten(1).float()

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.components()
        return mixture_log_prob(z.flatten(1).float(), mu, logvar)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        mu, logvar = self.components()
        return sample_mixture(n, mu, logvar, None, generator).reshape(n, *self.latent.shape)
