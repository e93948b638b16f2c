"""Scoring one trained cell: "how far do prior samples fall from what this decoder can produce?"

Three sample sets, all decoded to the mean image:
- ``prior``: z ~ p(z) of the remedy (its fitted ex-post prior where it has one);
- ``post``: the posterior mixture, x uniform over held-out data, z ~ q(z|x);
- ``data``: the held-out images themselves (capped by how many there are; noted in the record).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from latentbench.score.geometry import latent_metrics, posterior_cap, sample_cap
from latentbench.score.likelihood import iwae_bound

SCORER_VERSION = 2


@torch.no_grad()
def decode_batched(model, z: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    dev = next(model.parameters()).device
    return torch.cat([model.decode_mean(z[i : i + batch].to(dev)).float().cpu() for i in range(0, len(z), batch)])


@torch.no_grad()
def posterior_params(model, x: torch.Tensor, batch: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    dev = next(model.parameters()).device
    out = [model.encode(x[i : i + batch].to(dev)) for i in range(0, len(x), batch)]
    return torch.cat([o[0].float() for o in out]), torch.cat([o[1].float() for o in out])


@torch.no_grad()
def draw_latents(model, test_x: torch.Tensor, n: int, generator: torch.Generator) -> dict[str, Any]:
    """Prior and posterior-mixture latents, plus the held-out posteriors they are compared with."""
    model.eval()
    d = model.latent.dim
    n_post_params = min(len(test_x), posterior_cap(d))
    mu, logvar = posterior_params(model, test_x[:n_post_params])
    idx = torch.randint(len(mu), (n,), generator=generator)
    eps = torch.randn((n, *mu.shape[1:]), generator=generator).to(mu.device)
    z_post = mu[idx] + torch.exp(0.5 * logvar[idx]) * eps
    z_prior = model.generative_prior.sample(n, generator).float()
    return {"mu": mu, "logvar": logvar, "z_post": z_post, "z_prior": z_prior, "post_index": idx.to(mu.device)}


def score_model(model, data, cell, device: torch.device, *, quiet: bool = True) -> tuple[dict, dict, dict]:
    """All metrics for one trained model. Returns (metrics, notes, timing in seconds)."""
    from latentbench.score.features import ensure_classifier
    from latentbench.score.fidelity import compare

    timing: dict[str, float] = {}
    g = torch.Generator().manual_seed(cell.seed + 1234)
    d = model.latent.dim
    n = min(cell.n_samples, sample_cap(d))
    notes: dict[str, Any] = {"n_prior": n, "n_post": n, "n_data": min(n, len(data.test)), "iw_k": cell.iw_k,
                             "scorer_version": SCORER_VERSION, "features": cell.features}
    if n < cell.n_samples:
        notes["n_samples_capped"] = f"{cell.n_samples} -> {n} by the latent memory bound at D={d}"
    if notes["n_data"] < n:
        notes["n_data_capped"] = f"held-out data has {len(data.test)} images"

    t = time.perf_counter()
    lat = draw_latents(model, data.test, n, g)
    notes["n_geometry_posteriors"] = len(lat["mu"])
    x_prior = decode_batched(model, lat["z_prior"])
    x_post = decode_batched(model, lat["z_post"])
    x_data = data.test[: notes["n_data"]]
    timing["sample_s"] = time.perf_counter() - t

    t = time.perf_counter()
    metrics: dict[str, float] = {}
    weights = None
    if cell.features == "domain":
        weights, finfo = ensure_classifier(data, device, quiet=quiet)
        metrics["classifier_acc"] = finfo["accuracy"]
        notes["feature_key"] = finfo["key"]
    else:
        notes["feature_key"] = "inception-v3-compat"
    timing["features_s"] = time.perf_counter() - t
    t = time.perf_counter()
    for name, a, b in (("prior", x_prior, x_data), ("post", x_post, x_data), ("prior_post", x_prior, x_post)):
        r = compare(a, b, features=cell.features, weights=weights, device=device, seed=cell.seed)
        metrics[f"fid_{name}"] = r["fid"]
        metrics[f"kid_{name}"] = r["kid"]
        metrics[f"precision_{name}"] = r["precision"]
        metrics[f"recall_{name}"] = r["recall"]
    timing["fidelity_s"] = time.perf_counter() - t

    t = time.perf_counter()
    # Priors whose log_prob is itself a Monte Carlo estimate (two_stage) draw from the global RNG:
    # seed it per cell so that scores do not depend on what ran before in the process.
    torch.manual_seed(cell.seed + 4321)
    prior = model.generative_prior
    akl = prior.analytic_kl(lat["mu"], lat["logvar"])
    metrics.update(latent_metrics(prior, lat["mu"], lat["logvar"], lat["z_prior"], lat["z_post"],
                                  lat["post_index"], analytic_kl=akl))
    timing["geometry_s"] = time.perf_counter() - t

    t = time.perf_counter()
    iw = iwae_bound(model, data.test, k=cell.iw_k, generator=g)
    metrics["nll_iw"] = iw["nll_iw"]
    metrics["elbo"] = iw["elbo_iw"]
    metrics["rec"] = _rec(model, data.test, g)
    timing["likelihood_s"] = time.perf_counter() - t
    return metrics, notes, timing


@torch.no_grad()
def _rec(model, x: torch.Tensor, g: torch.Generator, batch: int = 1000) -> float:
    """-E_q[log p(x|z)], one z per held-out image."""
    dev = next(model.parameters()).device
    total = 0.0
    for i in range(0, len(x), batch):
        xb = x[i : i + batch].to(dev)
        mu, logvar = model.encode(xb)
        z = model.reparameterize(mu, logvar, g)
        total += -model.likelihood.log_prob(xb, model.decode(z).float()).double().sum().item()
    return total / len(x)


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
