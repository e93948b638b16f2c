"""Normalizing-flow priors built from affine coupling layers.

RealNVP (Dinh et al. 2017, Eqs. 7-8): split z = (z_a, z_b); u_b = (z_b - t(z_a)) * exp(-s(z_a)),
u_a = z_a, with log|det du/dz| = -sum s(z_a); halves swap between layers (a flip along dim 1).
For spatial latents the split is over channels and s, t are conv nets (Glow-style channel-wise
coupling, Kingma & Dhariwal 2018, Sec. 3.3), so an 8x8x1024 latent needs no flattening.
log p(z) = log N(f(z); 0, I) + log|det df/dz|  (change of variables, Dinh et al. 2017, Eq. 3).

A first element-wise affine layer (like Glow's actnorm) is initialised from the codes' mean and
scale when the flow is fitted ex post.
"""

from __future__ import annotations

import torch
from torch import nn

from latentbench.fitting import fit_module
from latentbench.latent import LatentShape
from latentbench.priors.base import LOG_2PI, Prior, randn
from latentbench.streams import stream_seed


class ElementwiseAffine(nn.Module):
    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(shape))
        self.log_scale = nn.Parameter(torch.zeros(shape))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = (z - self.loc) * torch.exp(-self.log_scale)
        return u, (-self.log_scale.sum()).expand(z.shape[0])

    def inverse(self, u: torch.Tensor) -> torch.Tensor:
        return u * torch.exp(self.log_scale) + self.loc

    @torch.no_grad()
    def init_from(self, codes: torch.Tensor) -> None:
        self.loc.copy_(codes.mean(0))
        self.log_scale.copy_(torch.log(codes.std(0) + 1e-4))


class Coupling(nn.Module):
    """Affine coupling over dim 1 (features for flat latents, channels for spatial ones)."""

    def __init__(self, shape: tuple[int, ...], hidden: int) -> None:
        super().__init__()
        n = shape[0]
        self.na, self.nb = n // 2, n - n // 2
        self.spatial = len(shape) == 3
        if self.na == 0:  # nothing to condition on (D = 1): a learned constant affine
            self.const = nn.Parameter(torch.zeros(2 * self.nb, *shape[1:]))
            self.net = None
        elif self.spatial:
            self.net = nn.Sequential(
                nn.Conv2d(self.na, hidden, 3, padding=1), nn.ReLU(),
                nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
                nn.Conv2d(hidden, 2 * self.nb, 3, padding=1),
            )
        else:
            self.net = nn.Sequential(
                nn.Linear(self.na, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                nn.Linear(hidden, 2 * self.nb),
            )
        if self.net is not None:  # start at the identity
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)

    def _st(self, za: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.const.expand(za.shape[0], *self.const.shape) if self.net is None else self.net(za)
        s, t = h.chunk(2, dim=1)
        return 2.0 * torch.tanh(s / 2.0), t  # bounded log-scale keeps training stable

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        za, zb = z[:, : self.na], z[:, self.na :]
        s, t = self._st(za)
        u = torch.cat([za, (zb - t) * torch.exp(-s)], dim=1)
        return u.flip(1), -s.flatten(1).sum(1)

    def inverse(self, u: torch.Tensor) -> torch.Tensor:
        u = u.flip(1)
        za, ub = u[:, : self.na], u[:, self.na :]
        s, t = self._st(za)
        return torch.cat([za, ub * torch.exp(s) + t], dim=1)


class Flow(nn.Module):
    """z -> u: an element-wise affine layer followed by ``n_layers`` couplings."""

    def __init__(self, shape: tuple[int, ...], n_layers: int = 4, hidden: int = 128) -> None:
        super().__init__()
        self.affine = ElementwiseAffine(shape)
        self.couplings = nn.ModuleList(Coupling(shape, hidden) for _ in range(n_layers))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u, logdet = self.affine(z)
        for c in self.couplings:
            u, ld = c(u)
            logdet = logdet + ld
        return u, logdet

    def inverse(self, u: torch.Tensor) -> torch.Tensor:
        for c in reversed(self.couplings):
            u = c.inverse(u)
        return self.affine.inverse(u)


class FlowPrior(Prior):
    """A RealNVP / Glow-style flow prior trained jointly with the VAE."""

    def __init__(self, latent: LatentShape, n_layers: int = 4, hidden: int = 128) -> None:
        super().__init__(latent)
        self.flow = Flow(latent.shape, n_layers, hidden)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        u, logdet = self.flow(z.float())
        return -0.5 * (u.pow(2) + LOG_2PI).flatten(1).sum(1) + logdet

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.flow.inverse(randn((n, *self.latent.shape), generator, self._device()))


class ExpostFlowPrior(FlowPrior):
    """The same flow, fitted by maximum likelihood on aggregate-posterior codes after training."""

    def __init__(self, latent: LatentShape, n_layers: int = 4, hidden: int = 128, epochs: int = 100,
                 lr: float = 1e-3, batch_size: int = 256, patience: int = 10) -> None:
        super().__init__(latent, n_layers, hidden)
        self.epochs, self.lr, self.batch_size, self.patience = epochs, lr, batch_size, patience

    def fit(self, codes: torch.Tensor, generator: torch.Generator | None = None, quiet: bool = True) -> None:
        """Maximum likelihood on ``codes`` (N, *latent) through :func:`latentbench.fitting.fit_module`;
        the element-wise affine layer starts at the codes' mean and scale."""
        codes = codes.reshape(len(codes), *self.latent.shape).float()
        self.flow.affine.init_from(codes)
        fit_module(self.flow, lambda z: -self.log_prob(z).mean(), codes, seed=stream_seed(generator, "flow"),
                   lr=self.lr, batch_size=self.batch_size, epochs=self.epochs, patience=self.patience,
                   desc="fit ex-post flow", quiet=quiet)
        self.eval()
