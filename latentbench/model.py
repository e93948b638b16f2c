"""The VAE: encoder + decoder + prior + likelihood, and the ELBO terms of Kingma & Welling (2014).

ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z))            (Kingma & Welling 2014, Eq. 3)
The training loss is -E_q[log p(x|z)] + beta * KL (Higgins et al. 2017, Eq. 4; beta = 1 is the VAE).
The KL is closed-form when the prior provides it (N(0, I)), else the one-sample Monte Carlo estimate
log q(z|x) - log p(z) at the same z used for the reconstruction term.
"""

from __future__ import annotations

import torch
from torch import nn

from latentbench.latent import LatentShape
from latentbench.priors.base import Prior, diag_gaussian_log_prob

LOGVAR_MIN, LOGVAR_MAX = -12.0, 8.0


class VAE(nn.Module):
    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        prior: Prior,
        likelihood: nn.Module,
        latent: LatentShape,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.prior = prior
        self.likelihood = likelihood
        self.latent = latent
        self.expost: Prior | None = None
        prior.attach(self)

    @property
    def generative_prior(self) -> Prior:
        """The prior that samples come from: the fitted ex-post prior if there is one."""
        return self.expost if self.expost is not None else self.prior

    def set_expost(self, prior: Prior | None) -> None:
        self.expost = prior

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x)
        return mu, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    @staticmethod
    def reparameterize(
        mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        if generator is None:
            eps = torch.randn_like(mu)
        else:
            eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype).to(mu.device)
        return mu + torch.exp(0.5 * logvar) * eps

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """The mean image of p(x|z), in [0, 1]."""
        return self.likelihood.mean(self.decoder(z).float())

    def terms(self, x: torch.Tensor, prior: Prior | None = None) -> dict[str, torch.Tensor]:
        """Per-sample ``rec`` = -log p(x|z) (one z ~ q) and ``kl``, both (B,), in nats."""
        prior = prior or self.prior
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar)
        rec = -self.likelihood.log_prob(x, self.decoder(z).float())
        kl = prior.analytic_kl(mu.float(), logvar.float())
        if kl is None:
            zf = z.float()
            kl = diag_gaussian_log_prob(zf, mu.float(), logvar.float()) - prior.log_prob(zf)
        return {"rec": rec, "kl": kl}

    def loss(self, x: torch.Tensor, beta: float | torch.Tensor = 1.0) -> torch.Tensor:
        """Mean over the batch of rec + beta * KL (the negative beta-ELBO)."""
        t = self.terms(x)
        return (t["rec"] + beta * t["kl"]).mean()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.terms(x)
