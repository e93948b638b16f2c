"""Importance-weighted bound on log p(x) (Burda et al. 2016, "Importance Weighted Autoencoders", Eq. 8):

log p(x) >= L_k = E[ log 1/k sum_i p(x | z_i) p(z_i) / q(z_i | x) ],  z_i ~ q(z | x).

L_1 is the ELBO; L_k is non-decreasing in k and tends to log p(x). ``nll_iw`` = -L_k in nats per image,
under the generative prior (the fitted ex-post prior where the remedy has one).
"""

from __future__ import annotations

import math

import torch

from latentbench.priors.base import diag_gaussian_log_prob


@torch.no_grad()
def iwae_bound(model, x: torch.Tensor, k: int = 100, generator: torch.Generator | None = None,
               max_elements: int = 1 << 24) -> dict[str, float]:
    """Mean ``nll_iw`` (-L_k) and ``elbo_iw`` (mean of the k single-sample ELBOs) over ``x``."""
    model.eval()
    dev = model.device
    prior = model.generative_prior
    per_image = k * max(x[0].numel(), model.latent.dim)
    bs = max(1, max_elements // per_image)
    nll, elbo = [], []
    for i in range(0, len(x), bs):
        xb = x[i : i + bs].to(dev)
        b = len(xb)
        mu, logvar = model.encode(xb)
        mu, logvar = mu.float().repeat(k, *[1] * (mu.dim() - 1)), logvar.float().repeat(k, *[1] * (mu.dim() - 1))
        eps = torch.randn(mu.shape, generator=generator).to(dev)
        z = mu + torch.exp(0.5 * logvar) * eps
        log_px = model.likelihood.log_prob(xb.repeat(k, *[1] * (xb.dim() - 1)), model.decode(z).float())
        log_w = (log_px + prior.log_prob(z).float() - diag_gaussian_log_prob(z, mu, logvar)).reshape(k, b).double()
        nll.append(-(torch.logsumexp(log_w, 0) - math.log(k)))
        elbo.append(log_w.mean(0))
    return {"nll_iw": torch.cat(nll).mean().item(), "elbo_iw": torch.cat(elbo).mean().item()}
