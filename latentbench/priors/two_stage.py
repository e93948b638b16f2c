"""The second stage of the two-stage VAE (Dai & Wipf 2019, "Diagnosing and Enhancing VAE Models").

After the first VAE is trained, a second VAE is fitted on its codes z with latent u (same dim by
default, Sec. 4) and a learned decoder variance gamma (Eq. 4's gamma, one scalar, learned):
    p(z | u) = N(z; g(u), gamma I),   p(u) = N(0, I),   q(u | z) = N(mu(z), diag sigma^2(z)).
Sampling draws u ~ N(0, I) and z ~ N(g(u), gamma I), so that samples and ``log_prob`` describe one
density (the paper decodes the mean g(u); the two agree as the learned gamma shrinks).
``log_prob(z)`` has no closed form; it is the importance-weighted bound with ``n_iw`` draws from
q(u | z) (Burda et al. 2016, Eq. 8), a lower bound on log p(z).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from latentbench.fitting import fit_module
from latentbench.latent import LatentShape
from latentbench.nets.mlp import mlp
from latentbench.priors.base import LOG_2PI, Prior, diag_gaussian_log_prob, randn
from latentbench.streams import stream_seed


class TwoStagePrior(Prior):
    def __init__(self, latent: LatentShape, u_dim: int | None = None, hidden: int = 512, depth: int = 2,
                 epochs: int = 200, lr: float = 1e-3, batch_size: int = 128, n_iw: int = 32,
                 patience: int = 10) -> None:
        super().__init__(latent)
        d = latent.dim
        self.u_dim = u_dim or d
        self.encoder = mlp([d] + [hidden] * depth + [2 * self.u_dim], nn.GELU)
        self.decoder = mlp([self.u_dim] + [hidden] * depth + [d], nn.GELU)
        self.log_gamma = nn.Parameter(torch.zeros(()))
        self.register_buffer("loc", torch.zeros(d))
        self.register_buffer("scale", torch.ones(d))
        self.epochs, self.lr, self.batch_size, self.n_iw, self.patience = epochs, lr, batch_size, n_iw, patience

    # codes are standardised per dimension; the change of variables adds -sum log scale to log p(z)
    def _encode(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(y).chunk(2, dim=1)
        return mu, logvar.clamp(-12, 8)

    def _log_lik(self, y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        gamma = self.log_gamma.exp()
        sq = (y - self.decoder(u)).pow(2).sum(-1)
        return -0.5 * sq / gamma - 0.5 * y.shape[-1] * (self.log_gamma + LOG_2PI)

    def _neg_elbo(self, y: torch.Tensor) -> torch.Tensor:
        mu, logvar = self._encode(y)
        u = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        return (-self._log_lik(y, u) + kl).mean()

    def fit(self, codes: torch.Tensor, generator: torch.Generator | None = None, quiet: bool = True) -> None:
        """Fit the second VAE on the standardised ``codes`` through :func:`latentbench.fitting.fit_module`."""
        x = codes.flatten(1).float()
        self.loc.copy_(x.mean(0))
        self.scale.copy_(x.std(0) + 1e-4)
        y = (x - self.loc) / self.scale
        fit_module(self, self._neg_elbo, y, seed=stream_seed(generator, "two_stage"), lr=self.lr,
                   batch_size=self.batch_size, epochs=self.epochs, patience=self.patience,
                   desc="fit second stage", quiet=quiet)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        # n_iw draws per code: chunk the batch so that no (n_iw, B, D) tensor exceeds ~2^22 elements
        rows = max(1, (1 << 22) // (self.n_iw * max(self.dim, self.u_dim)))
        z = z.flatten(1).float()
        return torch.cat([self._log_prob(z[i : i + rows]) for i in range(0, len(z), rows)])

    def _log_prob(self, z: torch.Tensor) -> torch.Tensor:
        y = (z - self.loc) / self.scale
        mu, logvar = self._encode(y)
        k = self.n_iw
        u = mu[None] + torch.exp(0.5 * logvar)[None] * torch.randn(k, *mu.shape, device=mu.device)
        log_w = (self._log_lik(y[None].expand(k, *y.shape), u)
                 - 0.5 * (u.pow(2) + LOG_2PI).sum(-1)
                 - diag_gaussian_log_prob(u.reshape(-1, mu.shape[1]), mu.repeat(k, 1), logvar.repeat(k, 1)).reshape(k, -1))
        return torch.logsumexp(log_w, 0) - math.log(k) - torch.log(self.scale).sum()

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        u = randn((n, self.u_dim), generator, self._device())
        noise = randn((n, self.dim), generator, self._device()) * torch.exp(0.5 * self.log_gamma)
        z = (self.decoder(u) + noise) * self.scale + self.loc
        return z.reshape(n, *self.latent.shape)
