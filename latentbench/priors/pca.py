"""A principal subspace that noise cannot fill: the ex-post priors' basis at large D.

PCA of N codes in D dimensions (Tipping & Bishop 1999, "Probabilistic Principal Component
Analysis", Sec. 3: the top principal directions carry the signal, an isotropic sigma^2 the rest). When
D is not small against N, pure noise has principal directions too: the eigenvalues of the sample
covariance of N(0, s2 I) codes spread over the Marchenko-Pastur bulk up to

    s2 (1 + sqrt(D / N))^2,

25 s2 at D / N = 16. A PCA that keeps its top k directions regardless then keeps noise directions
and gives them up to 25 times their true variance. Here a direction is kept only where its eigenvalue
exceeds that edge; s2 is the mean variance left outside the kept directions, re-estimated until the
count stops changing (it only grows, since s2 falls as directions are kept). The edge includes the
finite-size spread of the largest noise eigenvalue: Johnstone 2001 (Ann. Statist. 29, Theorem 1.1),
centre (sqrt(n) + sqrt(D))^2 / n and scale (sqrt(n) + sqrt(D)) (1/sqrt(n) + 1/sqrt(D))^(1/3) / n with
n = N - 1 degrees of freedom, plus 2.02 scales, the Tracy-Widom 99% quantile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from latentbench.streams import stream_seed

#: the Tracy-Widom (beta = 1) 99% quantile: a noise eigenvalue exceeds the edge about 1% of the time
TW1_Q99 = 2.02
# Largest n * D * min(n, D) done exactly (an eigendecomposition of the smaller Gram matrix); above it a
# randomized SVD finds the top directions (it underestimates bulk eigenvalues, never adds noise ones).
_EXACT_LIMIT = 1 << 36


@dataclass
class Subspace:
    """Kept directions ``components`` (k, D) with orthonormal rows, their sample variances
    ``eigenvalues`` (k,), the noise level ``noise_var`` (s2) and the ``edge`` (s2 times the factor)
    an eigenvalue had to exceed."""

    components: torch.Tensor
    eigenvalues: torch.Tensor
    noise_var: float
    edge: float

    @property
    def k(self) -> int:
        return int(self.components.shape[0])


def noise_edge_factor(n: int, d: int) -> float:
    """The largest eigenvalue of the sample covariance of ``n`` centred N(0, I_d) codes stays below this
    factor 99% of the time: ~(1 + sqrt(d / n))^2 (Marchenko-Pastur) plus Johnstone's finite-size spread."""
    m = max(n - 1, 1)
    a, b = math.sqrt(m), math.sqrt(d)
    centre = (a + b) ** 2
    scale = (a + b) * (1 / a + 1 / b) ** (1 / 3)
    return (centre + TW1_Q99 * scale) / m


def _top_eigen(xc: torch.Tensor, q: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The top ``q`` eigenvalues of xc^T xc (descending, float64) and their eigenvectors as rows (q, D)."""
    n, d = xc.shape
    q = min(q, n, d)
    if n * d * min(n, d) <= _EXACT_LIMIT:
        if d <= n:
            evals, evecs = torch.linalg.eigh((xc.T @ xc).double())
            order = evals.argsort(descending=True)[:q]
            return evals[order].clamp_min(0), evecs[:, order].T.to(xc.dtype)
        evals, u = torch.linalg.eigh((xc @ xc.T).double())
        order = evals.argsort(descending=True)[:q]
        lam = evals[order].clamp_min(0)
        rows = (u[:, order].T.to(xc.dtype) @ xc) / lam.sqrt().clamp_min(1e-30).to(xc.dtype)[:, None]
        return lam, rows
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(generator, "pca/svd_lowrank"))
        _, s, v = torch.svd_lowrank(xc, q=min(q + 10, n, d), niter=4)
    return s[:q].double().pow(2), v[:, :q].T.contiguous()


def _chunks(x: torch.Tensor):
    rows = max(1, (1 << 22) // max(1, x.shape[1]))  # float64 temporaries of ~32 MB, not a copy of x
    return (x[i : i + rows].double() for i in range(0, len(x), rows))


def column_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of the rows of ``x`` (N, D), accumulated in float64 -> (D,) float64."""
    return sum(c.sum(0) for c in _chunks(x)) / len(x)


def sum_of_squares(x: torch.Tensor) -> float:
    """sum of x^2 over all entries, accumulated in float64."""
    return float(sum(c.pow(2).sum() for c in _chunks(x)))


def signal_subspace(x: torch.Tensor, max_dim: int, generator: torch.Generator | None = None,
                    centered: bool = False) -> Subspace:
    """The principal directions of ``x`` (N, D) whose variance exceeds the noise edge, at most
    ``max_dim`` of them (``generator`` seeds the randomized SVD used at large N x D). ``centered``:
    the rows of x are already centred (no copy is made)."""
    x = x.flatten(1).float()
    n, d = x.shape
    xc = x if centered else x - column_mean(x).float()
    m = max(n - 1, 1)
    total = sum_of_squares(xc) / m
    kmax = min(max_dim, d - 1, n - 1)
    if kmax <= 0 or total <= 0:
        return Subspace(torch.zeros(0, d, device=x.device), torch.zeros(0, dtype=torch.float64), total / d, 0.0)
    lam, rows = _top_eigen(xc, kmax, generator)
    lam = lam / m
    factor = noise_edge_factor(n, d)
    k = 0
    while True:
        s2 = (total - float(lam[:k].sum())) / (d - k)
        above = (lam[:kmax] > factor * s2).long()
        k_new = int(above.cumprod(0).sum())  # the leading directions above the edge
        if k_new <= k:
            break
        k = k_new
    return Subspace(rows[:k].to(x.device), lam[:k].cpu(), s2, factor * s2)
