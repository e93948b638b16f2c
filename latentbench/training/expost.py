"""The ex-post fit: after training, a remedy's ex-post prior is fitted on aggregate-posterior codes
(posterior means, or one z ~ q(z|x) per image) of the training images, and becomes the prior that
samples are drawn from (Ghosh et al. 2020, Sec. 4; Dai & Wipf 2019, Sec. 4).
"""

from __future__ import annotations

import time

import torch

from latentbench.fitting import fit_precision
from latentbench.model import VAE
from latentbench.remedies import Remedy
from latentbench.streams import stream

EXPOST_CODE_BYTES = 1 << 30  # at most ~1 GiB of float32 codes (4096 at D = 65536)


def expost_code_count(n_train: int, d: int) -> int:
    """How many training images the ex-post prior is fitted on at latent dimension ``d``: a fixed
    budget, independent of the machine and of ``--memory-gb``."""
    return min(n_train, max(1000, EXPOST_CODE_BYTES // (4 * d)))


def fit_expost(model: VAE, remedy: Remedy, train_x: torch.Tensor, seed: int, quiet: bool = True,
               precision: str = "fp32") -> float:
    """Fit the remedy's ex-post prior on the training codes, if it has one; returns seconds spent.
    Randomness comes from the streams ``expost/subset`` and ``expost/fit`` of the cell's ``seed``;
    ``precision`` is the cell's (see :func:`latentbench.fitting.fit_precision`)."""
    prior = remedy.build_expost(model.latent)
    if prior is None:
        return 0.0
    t0 = time.perf_counter()
    # A fixed code budget, the same on every machine since the count changes the fit; a seeded subset
    # beyond it. Encoding batches follow the free memory (they change nothing but speed).
    from latentbench.device import memory_bytes

    d, img = model.latent.dim, train_x[0].numel()
    n_codes = expost_code_count(len(train_x), d)
    if n_codes < len(train_x):
        train_x = train_x[torch.randperm(len(train_x), generator=stream(seed, "expost/subset"))[:n_codes].to(train_x.device)]
    batch = max(1, min(8192, memory_bytes(model.device) // (4 * 16 * (d + img))))
    mode = remedy.expost_codes  # checked when the remedy was created (and by the prior's fit)
    model.eval()
    mu, logvar = model.posterior_params(train_x, batch)
    prior.to(mu.device)
    # the prior sees the posteriors: by default it draws one z ~ q(z|x) per image from them
    with fit_precision(precision):  # a prior fitted through fitting.fit_module follows the cell's precision
        prior.fit_posterior(mu, logvar, generator=stream(seed, "expost/fit"), quiet=quiet, codes=mode)
    model.set_expost(prior)
    return time.perf_counter() - t0
