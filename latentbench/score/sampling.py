"""The three sample sets every cell is scored on, drawn reproducibly from one generator.

- ``prior``: z ~ p(z) of the remedy (its fitted ex-post prior where it has one);
- ``post``: the posterior mixture, x uniform over held-out data, z ~ q(z|x);
- ``data``: the held-out images themselves.
"""

from __future__ import annotations

from typing import Any

import torch

from latentbench.score.geometry import posterior_cap


@torch.no_grad()
def decode_batched(model, z: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """Mean images of p(x|z) for every z, decoded in batches on the model's device, on the CPU."""
    dev = model.device
    return torch.cat([model.decode_mean(z[i : i + batch].to(dev)).float().cpu() for i in range(0, len(z), batch)])


@torch.no_grad()
def draw_latents(model, test_x: torch.Tensor, n: int, generator: torch.Generator) -> dict[str, Any]:
    """Prior and posterior-mixture latents, plus the held-out posteriors they are compared with."""
    model.eval()
    d = model.latent.dim
    n_post_params = min(len(test_x), posterior_cap(d))
    mu, logvar = model.posterior_params(test_x[:n_post_params])
    idx = torch.randint(len(mu), (n,), generator=generator)
    eps = torch.randn((n, *mu.shape[1:]), generator=generator).to(mu.device)
    z_post = mu[idx] + torch.exp(0.5 * logvar[idx]) * eps
    z_prior = model.generative_prior.sample(n, generator).float()
    return {"mu": mu, "logvar": logvar, "z_post": z_post, "z_prior": z_prior, "post_index": idx.to(mu.device)}


@torch.no_grad()
def sample_snapshot(model, test_x: torch.Tensor, seed: int, n_images: int = 16, n_norms: int = 2000) -> dict[str, Any]:
    """Small arrays for plots and reports: decoded images from z ~ p(z), z ~ q(z|x) and
    z ~ N(mu(x), I) (the seed question's third decoder input), and ||z||/sqrt(D) of prior and
    aggregate-posterior samples."""
    import numpy as np

    g = torch.Generator().manual_seed(seed + 99)
    lat = draw_latents(model, test_x, max(n_images, n_norms), g)
    mu = lat["mu"][lat["post_index"][:n_images]]
    z_unit = mu + torch.randn(mu.shape, generator=g).to(mu.device)
    d = model.latent.dim
    norm = lambda z: (z.flatten(1).double().norm(dim=1) / d**0.5).cpu().numpy()  # noqa: E731
    return {
        "prior_images": decode_batched(model, lat["z_prior"][:n_images]).numpy(),
        "post_images": decode_batched(model, lat["z_post"][:n_images]).numpy(),
        "unit_images": decode_batched(model, z_unit).numpy(),
        "data_images": test_x[lat["post_index"][:n_images].cpu()].numpy(),
        "norm_prior": norm(lat["z_prior"][:n_norms]),
        "norm_post": norm(lat["z_post"][:n_norms]),
        "latent_dim": np.array(d),
    }
