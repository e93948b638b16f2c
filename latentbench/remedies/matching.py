"""What the remedies that match q(z) to p(z) while training share: the MMD estimator, its kernels, and
the scale that turns a paper's squared-error reconstruction cost into latentbench's nats.

MMD^2(P, Q) = E k(x, x') + E k(y, y') - 2 E k(x, y),  x, x' ~ P, y, y' ~ Q  (Gretton et al. 2012,
Eq. 3). The estimator is the unbiased U-statistic of Gretton et al.'s Lemma 6, the one WAE-MMD's
Algorithm 2 writes (Tolstikhin et al. 2018):

    1/(n(n-1)) sum_{i != j} k(x_i, x_j) + 1/(m(m-1)) sum_{i != j} k(y_i, y_j) - 2/(nm) sum_{i,j} k(x_i, y_j),

whose expectation is MMD^2 exactly, so it is ~0 (and can be negative) when P = Q.

Kernels, on the flattened codes, with C = 2 d sigma_z^2 the expected squared distance between two
draws of N(0, sigma_z^2 I_d) (Tolstikhin et al. 2018, Sec. 4):
- ``imq``: the inverse multiquadratics k(x, y) = C / (C + ||x - y||^2), summed over ``scales`` x C
  (the WAE authors' code sums the seven scales 0.1 ... 10; one scale is the paper's text);
- ``rbf``: the Gaussian k(x, y) = exp(-||x - y||^2 / C) (InfoVAE's MMD-VAE uses a Gaussian kernel).

Units. The papers write the reconstruction cost as a squared error c(x, x_hat) = f ||x - x_hat||^2;
latentbench's ``rec`` is -log p(x|z) in nats. Under the Gaussian likelihood with sigma,
rec = ||x - x_hat||^2 / (2 sigma^2) + const, so a penalty weighted lambda against f ||x - x_hat||^2 is
weighted lambda * s / f against ``rec``, with s = 1 / (2 sigma^2) nats per unit of squared error
(:func:`nats_per_squared_error`): the optimum is the paper's, and Adam's steps are nearly so. Under the
Bernoulli likelihood s = 2, the curvature of the cross-entropy at p = 1/2 (an approximation).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

WAE_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def kernel_matrix(x: torch.Tensor, y: torch.Tensor, kernel: str = "imq", scales: Sequence[float] = (1.0,),
                  sigma2: float = 1.0) -> torch.Tensor:
    """k(x_i, y_j) for flat x (n, d) and y (m, d) -> (n, m); C = 2 d sigma2 (see the module doc)."""
    d = x.shape[1]
    c = 2.0 * d * sigma2
    sq = torch.cdist(x, y).pow(2) if x.shape[0] * y.shape[0] * d > 1 << 22 else (x[:, None] - y[None]).pow(2).sum(-1)
    if kernel == "imq":
        return sum(s * c / (s * c + sq) for s in scales)
    if kernel == "rbf":
        return sum(torch.exp(-sq / (s * c)) for s in scales)
    raise ValueError(f"kernel must be 'imq' or 'rbf', got {kernel!r}")


def mmd_unbiased(x: torch.Tensor, y: torch.Tensor, kernel: str = "imq", scales: Sequence[float] = (1.0,),
                 sigma2: float = 1.0) -> torch.Tensor:
    """The unbiased estimate of MMD^2 between the samples ``x`` (n, ...) and ``y`` (m, ...), n, m >= 2."""
    x, y = x.flatten(1).float(), y.flatten(1).float()
    n, m = len(x), len(y)
    kxx = kernel_matrix(x, x, kernel, scales, sigma2)
    kyy = kernel_matrix(y, y, kernel, scales, sigma2)
    kxy = kernel_matrix(x, y, kernel, scales, sigma2)
    return ((kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
            + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1)) - 2 * kxy.mean())


def nats_per_squared_error(model) -> float | torch.Tensor:
    """s: how many nats of ``rec`` one unit of squared reconstruction error is worth (module doc)."""
    log_sigma = getattr(model.likelihood, "log_sigma", None)
    if log_sigma is None:
        return 2.0
    return 0.5 * torch.exp(-2 * log_sigma.detach().float())


def reconstruct(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rec, z, mu, logvar): the per-image -log p(x|z) (B,) at the code z the model trains with (mu(x)
    for a deterministic encoder, one z ~ q(z|x) otherwise)."""
    mu, logvar = model.encode(x)
    z = mu if model.deterministic else model.reparameterize(mu, logvar)
    rec = -model.likelihood.log_prob(x, model.decoder(z).float())
    return rec, z, mu, logvar
