"""Latent geometry's building blocks, memory-bounded at D = 65536 (the metrics that use them, calibrated,
are in ``latentbench.score.latents``).

- ``aggregate_log_q``: log q(z) for the mixture 1/N sum_n q(z | x_n) of N posteriors (ELBO surgery,
  Hoffman & Johnson 2016): logsumexp_n log q(z | x_n) - log N, in float64 by expanding the square into
  matrix products, in chunks, so that no (M, N, D) tensor exists.
- ``mmd2_unbiased`` / ``mmd2_with_null``: unbiased MMD^2 (Gretton et al. 2012, Eq. 3), RBF kernel,
  median-heuristic bandwidth, and the spread of its permutation null (the noise floor).
- ``active_units``: Cov_x(E_q[z_u]) > 0.01 (Burda et al. 2016, Sec. 5.2).
- ``_norms``: ||z|| / sqrt(D) (the "soap bubble" radius).
- the sample caps that keep the geometry within the machine's memory.
"""

from __future__ import annotations

import math

import torch

from latentbench.priors.base import LOG_2PI

# The default bound for any one large array built here, when the caller passes none; the scorer passes
# the device's bound (``latentbench.device.memory_bytes``). Chunk sizes never change a result beyond
# float noise; the sample caps below do, so the scorer takes them from the stable bound and records them.
MEM_BYTES = 1 << 30


def sample_cap(d: int, mem_bytes: int = MEM_BYTES) -> int:
    """Most latent samples per set for the geometry at dimension d (two float32 sets within the bound)."""
    return max(2, mem_bytes // (8 * d))


def posterior_cap(d: int, mem_bytes: int = MEM_BYTES) -> int:
    """Most held-out posteriors defining q(z) for the geometry (two float64 (N, D) arrays within the bound)."""
    return max(2, mem_bytes // (16 * d))


def mmd_cap(d: int, mem_bytes: int = MEM_BYTES, mmd_n: int = 2000) -> int:
    """Samples per set for ``mmd_latent`` (two (k, D) float32 sets within half the bound). The scorer
    takes it from the stable bound and records it: the kernel sums are chunked, so the free memory
    never caps it again."""
    return max(2, min(mmd_n, mem_bytes // (16 * d)))


def _rows(d: int, copies: int = 4, mem_bytes: int = MEM_BYTES) -> int:
    """Rows per chunk so that ``copies`` float64 (rows, d) temporaries stay within an eighth of the bound."""
    return max(1, mem_bytes // (8 * 8 * copies * d))


def aggregate_log_q(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                    mem_bytes: int = MEM_BYTES) -> torch.Tensor:
    """log (1/N sum_n N(z_m; mu_n, diag exp(logvar_n))) for z (M, D) -> (M,), float64.

    Chunked over posteriors (running logsumexp) and over samples, so that memory stays near a quarter
    of ``mem_bytes`` whatever M, N and D are.
    """
    z, mu, logvar = z.flatten(1), mu.flatten(1), logvar.flatten(1)
    n, d = mu.shape
    step = _rows(d, 3, mem_bytes)
    acc = torch.full((len(z),), -math.inf, dtype=torch.float64, device=z.device)
    for j in range(0, n, step):
        lv = logvar[j : j + step].double()
        m = mu[j : j + step].double()
        prec = torch.exp(-lv)
        mp = m * prec
        const = (m * mp).sum(1) + lv.sum(1) + d * LOG_2PI
        del m, lv
        for i in range(0, len(z), step):
            zc = z[i : i + step].double()
            comp = -0.5 * (zc.pow(2) @ prec.T - 2.0 * zc @ mp.T + const[None])
            acc[i : i + step] = torch.logaddexp(acc[i : i + step], torch.logsumexp(comp, dim=1))
    return acc - math.log(n)


def _sq_dists(a: torch.Tensor, b: torch.Tensor, mem_bytes: int) -> torch.Tensor:
    """Squared Euclidean distances (len(a), len(b)) in float64, from float32 products in chunks of
    rows of ``a``, so that no copy of either set is made whatever D is."""
    rows = max(1, (mem_bytes // 8) // (4 * a.shape[1] + 24 * len(b)))  # a float32 square, three products
    bn = torch.cat([b[i : i + rows].pow(2).sum(1) for i in range(0, len(b), rows)]).double()
    out = torch.empty(len(a), len(b), dtype=torch.float64, device=a.device)
    for i in range(0, len(a), rows):
        ac = a[i : i + rows]
        an = ac.pow(2).sum(1).double()
        out[i : i + rows] = (an[:, None] + bn[None] - 2.0 * (ac @ b.T).double()).clamp_min_(0.0)
    return out


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, bandwidth: float | None = None,
                  mem_bytes: int = MEM_BYTES) -> float:
    """Unbiased MMD^2 with an RBF kernel; bandwidth = median pairwise distance of the pooled set.

    Distances come from float32 products (relative error ~1e-7 of ||z||^2, far below any bandwidth
    here), in chunks of rows within ``mem_bytes`` (the sets are never copied), and the kernel sums are
    in float64. Memory beyond the inputs is the (m + n)^2 float64 distance matrix.
    """
    return mmd2_with_null(x, y, bandwidth=bandwidth, mem_bytes=mem_bytes)[0]


def mmd2_with_null(x: torch.Tensor, y: torch.Tensor, bandwidth: float | None = None,
                   mem_bytes: int = MEM_BYTES, generator: torch.Generator | None = None,
                   n_perm: int = 0) -> tuple[float, float | None]:
    """(unbiased MMD^2 of Gretton et al. 2012, Eq. 3, and the standard deviation of its permutation null).

    The null is the statistic over ``n_perm`` random relabellings of the pooled sample (Gretton et al.
    2012, Sec. 5; exact in law when x and y come from one distribution), each a quadratic form in the one
    pooled kernel matrix, so it costs one matrix product. ``None`` when ``n_perm`` is 0 or a set has
    fewer than 2 rows."""
    x, y = x.flatten(1).float(), y.flatten(1).float()
    m, n = len(x), len(y)
    pooled = torch.cat([x, y])
    dist = _sq_dists(pooled, pooled, mem_bytes)
    dist.fill_diagonal_(0.0)
    if bandwidth is None:
        off = dist[~torch.eye(m + n, dtype=torch.bool, device=dist.device)]
        bandwidth = math.sqrt(max(off.median().item(), 1e-12) / 2.0)
        del off
    kern = torch.exp_(dist.div_(-2 * bandwidth**2))
    kern.fill_diagonal_(0.0)

    def stat(a: torch.Tensor) -> torch.Tensor:  # a: (m + n, P) 0/1 labels of the x set
        ka = kern @ a
        k1 = kern.sum(1, keepdim=True)
        sxx = (a * ka).sum(0) / (m * (m - 1))
        kb = k1 - ka  # K (1 - a)
        syy = ((1 - a) * kb).sum(0) / (n * (n - 1))
        sxy = (a * kb).sum(0) / (m * n)
        return sxx + syy - 2 * sxy

    labels = torch.zeros(m + n, 1, dtype=torch.float64, device=kern.device)
    labels[:m] = 1.0
    value = float(stat(labels)[0])
    if n_perm <= 0 or m < 2 or n < 2:
        return value, None
    perms = torch.stack([torch.randperm(m + n, generator=generator) for _ in range(n_perm)], 1).to(kern.device)
    null = stat((perms < m).double())
    return value, float(null.std())


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> int:
    """Number of latent units whose posterior mean varies across inputs: Cov_x(E_q[z_u]) > threshold."""
    return int((mu.flatten(1).double().var(0) > threshold).sum().item())


def _norms(z: torch.Tensor, mem_bytes: int = MEM_BYTES) -> torch.Tensor:
    z = z.flatten(1)
    rows = _rows(z.shape[1], 1, mem_bytes)
    return torch.cat([z[i : i + rows].double().norm(dim=1) for i in range(0, len(z), rows)]) / math.sqrt(z.shape[1])


def prior_has_density(prior) -> bool:
    """Whether ``prior.log_prob`` is a tractable density (a diffusion prior, e.g., has none)."""
    return bool(getattr(prior, "has_log_prob", True))


@torch.no_grad()
def prior_log_prob(prior, z: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """log p(z) in float64 on the prior's device, in batches."""
    dev = prior._anchor.device if hasattr(prior, "_anchor") else z.device
    return torch.cat([prior.log_prob(z[i : i + batch].to(dev)).double().to(z.device) for i in range(0, len(z), batch)])
