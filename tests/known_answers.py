"""Latent populations whose answers are exact: the scorer's specification (tests/test_known_answers.py).

Every population is a set of Gaussian posteriors q(z | x_n) = N(m_n, s^2 I) whose means are drawn so
that the aggregate posterior q(z) = E_n q(z | x_n) is known in closed form, scored against the prior
N(0, I):

- ``matched``: m_n ~ N(0, (1 - s^2) I), so q = N(0, I) = p exactly. Truths: marginal KL 0, hole
  fraction 0.01, I(x; z) = kl = (D / 2) log(1 / s^2), spectrum ratios 1, mean offset 0.
- ``narrow_prior`` (the prior too narrow along k of D directions): m_n has variance a^2 - s^2 along
  the first k axes of a random rotation, 1 - s^2 elsewhere: q = N(0, R diag(a^2 on k, 1) R^T).
- ``wide_prior`` (the prior too wide along k directions): the same with a < 1.
- ``offset``: m_n ~ N(delta e_1, (1 - s^2) I): q = N(delta e_1, I).
- ``modes``: in low D, m_n at one of 2^D corners (+-c, ..., +-c) plus N(0, tau^2 I): well separated
  modes with the prior's variance (c^2 + tau^2 + s^2 = 1), so N(0, I) puts mass between them.
- ``collapsed``: m_n = 0 and s = 1: q(z | x) = p(z) for every x, nothing is encoded.
"""

from __future__ import annotations

import math

import torch

from latentbench.latent import LatentShape
from latentbench.priors.standard_normal import StandardNormal


def population(kind: str, d: int, n: int, *, s: float = 0.3, k: int = 4, a: float = 3.0, delta: float = 2.0,
               seed: int = 0, rotate: bool = True) -> dict:
    """Posterior parameters (mu, logvar) of ``n`` held-out images and the exact aggregate posterior
    (``cov`` along the rotated axes: ``rot``, ``var``; ``mean``), for ``kind`` (see the module)."""
    g = torch.Generator().manual_seed(seed)
    var = torch.full((d,), 1.0)
    mean = torch.zeros(d)
    if kind == "collapsed":
        s = 1.0
    if kind in ("narrow_prior", "wide_prior"):
        var[:k] = a * a
    if kind == "offset":
        mean[0] = delta
    rot = None
    if kind == "modes":
        c, tau = 0.9, 0.2
        s = math.sqrt(1 - c * c - tau * tau)
        corners = (torch.randint(2, (n, d), generator=g) * 2 - 1).float() * c
        mu = corners + tau * torch.randn(n, d, generator=g)
    elif kind == "collapsed":
        mu = torch.zeros(n, d)
    else:
        mu = torch.randn(n, d, generator=g) * (var - s * s).sqrt()
        if rotate and kind in ("narrow_prior", "wide_prior") and d <= 4096:
            rot, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
            rot = rot.float()
            mu = mu @ rot.T
        mu = mu + mean
    logvar = torch.full((n, d), math.log(s * s))
    return {"mu": mu, "logvar": logvar, "s": s, "var": var, "mean": mean, "rot": rot, "d": d, "n": n}


def prior_samples(d: int, m: int, seed: int = 1) -> tuple[StandardNormal, torch.Tensor]:
    prior = StandardNormal(LatentShape.parse(str(d)))
    return prior, prior.sample(m, torch.Generator().manual_seed(seed))


def modes_log_q(z: torch.Tensor, c: float = 0.9, tau: float = 0.2) -> torch.Tensor:
    """Exact log q(z) of the ``modes`` population: a product over dimensions of two-component mixtures."""
    v = tau * tau + (1 - c * c - tau * tau)
    comp = torch.stack([-(z - c).pow(2), -(z + c).pow(2)]) / (2 * v) - 0.5 * math.log(2 * math.pi * v)
    return (torch.logsumexp(comp, 0) - math.log(2)).sum(-1)


def true_hole_fraction(log_q, sample_q, sample_p, m: int = 200_000, seed: int = 7) -> float:
    """P_p(log q(z) < the 1% quantile of log q under q), by Monte Carlo with the exact density."""
    g = torch.Generator().manual_seed(seed)
    thr = torch.quantile(log_q(sample_q(m, g))[:100_000], 0.01)
    return (log_q(sample_p(m, g)) < thr).double().mean().item()
