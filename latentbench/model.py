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
from latentbench.nets import build_nets
from latentbench.nets.likelihood import make_likelihood
from latentbench.priors.base import Prior, diag_gaussian_log_prob
from latentbench.remedies import Remedy, create_remedy
from latentbench.spec import Cell

LOGVAR_MIN, LOGVAR_MAX = -12.0, 8.0


class VAE(nn.Module):
    """Encoder + decoder + prior + likelihood over one latent shape."""

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
        # A deterministic encoder (set by build_model from the remedy) trains and encodes with z = mu(x).
        self.deterministic = False
        prior.attach(self)

    @property
    def device(self) -> torch.device:
        """The device the model's weights are on."""
        return next(self.parameters()).device

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

    @torch.no_grad()
    def posterior_params(self, x: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of q(z|x) for every image of ``x``, encoded in batches on the model's device,
        as float32 on that device. The one batched encode every stage uses."""
        dev = self.device
        out = [self.encode(x[i : i + batch_size].to(dev)) for i in range(0, len(x), batch_size)]
        return torch.cat([o[0].float() for o in out]), torch.cat([o[1].float() for o in out])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """The mean image of p(x|z), in [0, 1]."""
        return self.likelihood.mean(self.decoder(z).float())

    def terms(self, x: torch.Tensor, prior: Prior | None = None) -> dict[str, torch.Tensor]:
        """Per-sample ``rec`` = -log p(x|z) (one z ~ q) and ``kl``, both (B,), in nats.

        A deterministic encoder decodes z = mu(x); its q(z|x) is a point mass, whose KL to a density
        is not finite, so ``kl`` is 0 there and the ELBO of the history is -rec."""
        prior = prior or self.prior
        mu, logvar = self.encode(x)
        if self.deterministic:
            rec = -self.likelihood.log_prob(x, self.decoder(mu).float())
            return {"rec": rec, "kl": torch.zeros_like(rec)}
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


def build_model(cell: Cell, image_shape: tuple[int, int, int]) -> tuple[VAE, Remedy]:
    """Nets from the registry, the remedy's prior, the likelihood: an untrained VAE for ``cell``."""
    latent = LatentShape.parse(cell.latent)
    remedy = create_remedy(cell.remedy, **cell.remedy_params)
    encoder, decoder = build_nets(cell.arch, image_shape, latent, **cell.net)
    prior = remedy.build_prior(latent, image_shape)
    model = VAE(encoder, decoder, prior, make_likelihood(cell.likelihood, cell.sigma), latent)
    model.deterministic = bool(remedy.deterministic)
    remedy.setup(model)
    return model, remedy
