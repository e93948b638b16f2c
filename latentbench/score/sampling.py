"""The three sample sets every cell is scored on, drawn reproducibly from one generator.

- ``prior``: z ~ p(z) of the remedy (its fitted ex-post prior where it has one);
- ``post``: the posterior mixture, x uniform over held-out data, z ~ q(z|x);
- ``data``: the held-out images themselves.

Every set has the cell's ``n_samples`` at every latent size: latents are drawn in blocks whose size
depends on D only (so the draws, and the numbers, never depend on the device's memory) and decoded in
batches sized to the device's memory bound. Only the latent-geometry part keeps a capped number of
latents (``latentbench.score.geometry.sample_cap``).
"""

from __future__ import annotations

from typing import Any

import torch

from latentbench.score.geometry import posterior_cap
from latentbench.streams import stream

DRAW_BYTES = 1 << 28  # one block of drawn latents (float32) at most; depends on D only


def draw_block(d: int) -> int:
    """Latents drawn per block at dimension d (at most 1000, and 256 MiB of float32)."""
    return max(1, min(1000, DRAW_BYTES // (4 * d)))


def bytes_per_item(d: int, img_numel: int = 3 * 64 * 64, activations: int = 0) -> int:
    """A generous estimate of the memory one latent costs through an encoder or decoder pass (latent,
    activations, image; float32), for batch sizes. ``activations``: the decoder's own count per latent
    (:func:`decoder_activations`), where it is larger than the generic guess (conv nets)."""
    return 4 * max(16 * (d + img_numel), 2 * activations + d + img_numel)


@torch.no_grad()
def decoder_activations(model) -> int:
    """Floats the decoder's layers output for one latent, measured once on a zero latent (the
    intermediate feature maps of a conv decoder are many times the image)."""
    cached = getattr(model, "_decoder_activations", None)
    if cached is not None:
        return cached
    total = 0

    def count(_module, _inputs, out):
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out.numel()

    handles = [m.register_forward_hook(count) for m in model.decoder.modules() if not list(m.children())]
    was_training = model.training
    model.eval()  # a plugin decoder's batch-norm statistics must not see the probe
    try:
        model.decode(torch.zeros(1, *model.latent.shape, device=model.device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    model._decoder_activations = int(total)
    return model._decoder_activations


def decode_rows(model, img_numel: int = 3 * 64 * 64, mem_bytes: int | None = None) -> int:
    """Latents per decoder batch within the memory bound (the device's when None)."""
    from latentbench.device import memory_bytes

    mem = memory_bytes(model.device) if mem_bytes is None else mem_bytes
    return max(1, min(8192, mem // bytes_per_item(model.latent.dim, img_numel)))


@torch.no_grad()
def decode_batched(model, z: torch.Tensor, batch: int | None = None) -> torch.Tensor:
    """Mean images of p(x|z) for every z, decoded in batches on the model's device, on the CPU.

    ``batch`` defaults to what the device's memory bound allows; it changes nothing but speed.
    """
    dev = model.device
    batch = batch or decode_rows(model)
    return torch.cat([model.decode_mean(z[i : i + batch].to(dev)).float().cpu() for i in range(0, len(z), batch)])


def keyed_normal(seed: int, first: int, count: int, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Standard normal draws of shape ``shape`` for items first .. first+count-1, item i from its own
    named stream ``item/<i>`` of ``seed`` on ``device``: an item's draws do not depend on how items are
    batched."""
    out = torch.empty((count, *shape), device=device)
    for j in range(count):
        g = stream(seed, f"item/{first + j}", device)
        out[j] = torch.randn(shape, generator=g, device=device)
    return out


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

    lat = draw_latents(model, test_x, max(n_images, n_norms), stream(seed, "snapshot/latents"))
    mu = lat["mu"][lat["post_index"][:n_images]]
    z_unit = mu + torch.randn(mu.shape, generator=stream(seed, "snapshot/unit")).to(mu.device)
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
