"""Importance-weighted bound on log p(x) (Burda et al. 2016, "Importance Weighted Autoencoders", Eq. 8):

log p(x) >= L_k = E[ log 1/k sum_i p(x | z_i) p(z_i) / q(z_i | x) ],  z_i ~ q(z | x).

L_1 is the ELBO; L_k is non-decreasing in k and tends to log p(x). ``nll_iw`` = -L_k in nats per image,
under the generative prior (the fitted ex-post prior where the remedy has one). Images are batched to
a memory bound; the k draws of image i come from their own named stream (``item/<i>`` of the stage's
stream), so the numbers do not depend on the batch size beyond float noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from latentbench.priors.base import diag_gaussian_log_prob
from latentbench.score.geometry import MEM_BYTES
from latentbench.score.sampling import bytes_per_item, decoder_activations, keyed_normal
from latentbench.streams import seed_of


def iwae_rows(k: int, d: int, img_numel: int, mem_bytes: int, activations: int = 0) -> int:
    """Images per batch so that their k latents, decoded images and temporaries (the decoder's
    ``activations`` per latent included) stay within the bound."""
    return max(1, mem_bytes // (k * bytes_per_item(d, img_numel, activations)))


@torch.no_grad()
def iwae_bound(model, x: torch.Tensor, k: int = 100, generator: torch.Generator | None = None,
               mem_bytes: int = MEM_BYTES, on_batch: Callable[[float], None] | None = None) -> dict[str, float]:
    """Mean ``nll_iw`` (-L_k) and ``elbo_iw`` (mean of the k single-sample ELBOs) over ``x``;
    ``on_batch(fraction)`` is told the share of ``x`` done after each batch."""
    model.eval()
    dev = model.device
    prior = model.generative_prior
    seed = seed_of(generator)  # the stage's stream: item i draws from its sub-stream item/<i>
    bs = iwae_rows(k, model.latent.dim, x[0].numel(), mem_bytes, decoder_activations(model))
    nll, elbo = [], []
    for i in range(0, len(x), bs):
        xb = x[i : i + bs].to(dev)
        b = len(xb)
        mu, logvar = model.encode(xb)
        mu, logvar = mu.float().repeat(k, *[1] * (mu.dim() - 1)), logvar.float().repeat(k, *[1] * (mu.dim() - 1))
        eps = keyed_normal(seed, i, b, (k, *mu.shape[1:]), dev).transpose(0, 1).reshape(mu.shape)
        z = mu + torch.exp(0.5 * logvar) * eps
        log_px = model.likelihood.log_prob(xb.repeat(k, *[1] * (xb.dim() - 1)), model.decode(z).float())
        log_w = (log_px + prior.log_prob(z).float() - diag_gaussian_log_prob(z, mu, logvar)).reshape(k, b).double()
        nll.append(-(torch.logsumexp(log_w, 0) - math.log(k)))
        elbo.append(log_w.mean(0))
        if on_batch is not None:
            on_batch((i + b) / len(x))
    return {"nll_iw": torch.cat(nll).mean().item(), "elbo_iw": torch.cat(elbo).mean().item()}


@torch.no_grad()
def reconstruction(model, x: torch.Tensor, generator: torch.Generator | None = None,
                   mem_bytes: int = MEM_BYTES) -> float:
    """``rec`` = -E_q[log p(x|z)], one z ~ q(z|x) per held-out image (drawn per image, batch-free)."""
    model.eval()
    dev = model.device
    seed = seed_of(generator)  # the stage's stream: item i draws from its sub-stream item/<i>
    bs = iwae_rows(1, model.latent.dim, x[0].numel(), mem_bytes, decoder_activations(model))
    total = 0.0
    for i in range(0, len(x), bs):
        xb = x[i : i + bs].to(dev)
        mu, logvar = model.encode(xb)
        mu, logvar = mu.float(), logvar.float()
        z = mu + torch.exp(0.5 * logvar) * keyed_normal(seed, i, len(xb), tuple(mu.shape[1:]), dev)
        total += -model.likelihood.log_prob(xb, model.decode(z).float()).double().sum().item()
    return total / len(x)
