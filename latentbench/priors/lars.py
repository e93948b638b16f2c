"""The resampled prior of learned accept/reject sampling, LARS (Bauer & Mnih 2019, "Resampled Priors for
Variational Autoencoders", AISTATS; Eqs. 1-2, the truncated sampler of Algorithm 1 and its density,
Eq. 4).

A proposal pi(z) = N(0, I) is reweighted by a learned acceptance function a(z) = sigmoid(f(z)) in (0, 1):

    p(z) = pi(z) a(z) / Z,      Z = E_pi[a(z)]   (the acceptance rate)                       (Eq. 1)

Algorithm 1 samples it by accept/reject, truncated at T proposals (the T-th is accepted whatever
a says), whose density is exactly

    p_T(z) = [(1 - alpha_T) a(z) / Z + alpha_T] pi(z),      alpha_T = (1 - Z)^(T - 1)          (Eq. 4)

which is the prior the VAE is trained with and scored under. Z is a Monte Carlo estimate: in training,
from ``n_train`` fresh proposals per step, differentiated through (their Sec. 3.1); in evaluation, from
``n_normaliser`` proposals of a fixed seed, once after each stretch of training, with its standard error
se(Z) / Z = std(a) / (sqrt(n) mean(a)) recorded as ``log_z_se`` (the delta method). An IW bound through
an estimated log p is no guaranteed bound: ``nll_iw_bound = False``. The KL is the Monte Carlo one.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from latentbench.latent import LatentShape
from latentbench.nets.mlp import mlp
from latentbench.priors.base import LOG_2PI, Prior

_CHUNK = 1 << 22  # largest (proposals x width) evaluated at once


class LARSPrior(Prior):
    """N(0, I) reweighted by a learned acceptance a(z), truncated at T proposals."""

    def __init__(self, latent: LatentShape, hidden: int = 100, depth: int = 2, T: int = 100,
                 n_train: int = 1024, n_normaliser: int = 1 << 16) -> None:
        super().__init__(latent)
        self.T, self.n_train, self.n_normaliser, self.hidden = int(T), int(n_train), int(n_normaliser), hidden
        self.acceptance = mlp([latent.dim] + [hidden] * depth + [1], nn.Tanh)
        self.register_buffer("log_z", torch.zeros(()))
        self.register_buffer("log_z_se", torch.tensor(-1.0))  # -1: not estimated yet
        self._fresh = False  # log_z holds the estimate of the current weights

    def logit(self, z: torch.Tensor) -> torch.Tensor:
        """f(z), with a(z) = sigmoid(f(z)); (B, *latent) -> (B,)."""
        return self.acceptance(z.flatten(1).float()).squeeze(-1)

    def train(self, mode: bool = True):  # noqa: ANN201 - nn.Module's signature
        if mode:
            self._fresh = False  # the weights may change: estimate Z again before the next evaluation
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        self._fresh = False
        super()._load_from_state_dict(*args, **kwargs)

    @torch.no_grad()
    def estimate_normaliser(self, n: int | None = None, seed: int = 0) -> tuple[float, float]:
        """(log Z, its standard error) from ``n`` proposals of a fixed seed; stored in the buffers."""
        n = n or self.n_normaliser
        g = torch.Generator().manual_seed(seed)
        rows = max(2, _CHUNK // max(self.dim, self.hidden))
        acc = torch.cat([torch.sigmoid(self.logit(torch.randn(min(rows, n - i), self.dim, generator=g)
                                                  .to(self._device()))).double()
                         for i in range(0, n, rows)])
        z = float(acc.mean())
        se = float(acc.std() / (math.sqrt(n) * acc.mean())) if n > 1 else 1e30
        self.log_z.fill_(math.log(max(z, 1e-300)))
        self.log_z_se.fill_(se)
        self._fresh = True
        return float(self.log_z), se

    def _log_z(self) -> torch.Tensor:
        if self.training:  # a fresh differentiable estimate each step
            eps = torch.randn(self.n_train, self.dim, device=self._device())
            return torch.log(torch.sigmoid(self.logit(eps)).mean())
        if not self._fresh:
            self.estimate_normaliser()
        return self.log_z

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        base = -0.5 * (z.flatten(1).float().pow(2) + LOG_2PI).sum(1)
        log_z = self._log_z()
        # log alpha_T = (T - 1) log(1 - Z); log[(1 - alpha_T) a / Z + alpha_T] by logaddexp
        log_alpha = (self.T - 1) * torch.log1p(-torch.exp(log_z).clamp(max=1 - 1e-7))
        log_a = F.logsigmoid(self.logit(z))
        first = torch.log1p(-torch.exp(log_alpha).clamp(max=1 - 1e-7)) + log_a - log_z
        return base + torch.logaddexp(first, log_alpha.expand_as(first))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Algorithm 1 with truncation: for each sample, proposals z ~ N(0, I) are accepted with
        probability a(z); the T-th proposal is accepted unconditionally."""
        dev = self._device()
        out = torch.empty(n, self.dim, device=dev)
        pending = torch.arange(n)
        for t in range(self.T):
            if len(pending) == 0:
                break
            prop = torch.randn(len(pending), self.dim, generator=generator).to(dev)
            u = torch.rand(len(pending), generator=generator)
            if t == self.T - 1:
                take = torch.ones(len(pending), dtype=torch.bool)
            else:
                rows = max(1, _CHUNK // max(self.dim, self.hidden))
                a = torch.cat([torch.sigmoid(self.logit(prop[i : i + rows])).cpu() for i in range(0, len(prop), rows)])
                take = u < a
            out[pending[take].to(dev)] = prop[take.to(dev)]
            pending = pending[~take]
        return out.reshape(n, *self.latent.shape)

    def score_notes(self) -> dict[str, Any]:
        if not self._fresh:
            self.estimate_normaliser()
        log_z = float(self.log_z)
        return {"log_normaliser": f"Monte Carlo, {self.n_normaliser} proposals", "log_z": round(log_z, 6),
                "log_z_se": round(float(self.log_z_se), 6), "lars_T": self.T,
                "lars_alpha_T": float((1 - math.exp(log_z)) ** (self.T - 1)),
                "prior_sampler": f"truncated accept/reject (Bauer & Mnih 2019, Alg. 1), T = {self.T}",
                "nll_iw_bound": False}
