"""Latent geometry: the seed question's picture (prior bubble vs posterior bubbles) in numbers.

q(z) is the aggregate posterior of N held-out images, the mixture 1/N sum_n q(z | x_n), evaluated
exactly (ELBO surgery, Hoffman & Johnson 2016): log q(z) = logsumexp_n log q(z | x_n) - log N.
It is computed in float64 by expanding the square into matrix products, in chunks, so that no
(M, N, D) tensor exists and memory stays within a bound at D = 65536.

- ``marginal_kl`` = E_q(z)[log q(z) - log p(z)];  ``mutual_info`` = E[log q(z|x) - log q(z)];
  ``kl`` = E_x KL(q(z|x) || p(z)) (= mutual_info + marginal_kl).
- ``hole_fraction``: share of prior samples whose log q(z) is below the 1% quantile of log q over
  aggregate-posterior samples (exactly 0.01 when p = q).
- ``mmd_latent``: unbiased MMD^2 (Gretton et al. 2012, Eq. 3), RBF kernel, median-heuristic bandwidth.
- ``active_units``: Cov_x(E_q[z_u]) > 0.01 (Burda et al. 2016, Sec. 5.2).
- ``norm_prior`` / ``norm_post``: mean ||z|| / sqrt(D) (the "soap bubble" radius), with stds.
"""

from __future__ import annotations

import math

import torch

from latentbench.priors.base import LOG_2PI

MEM_BYTES = 1 << 30  # bound for any one large array built here


def sample_cap(d: int) -> int:
    """Most latent samples per set at dimension d (two float32 sets stay within MEM_BYTES)."""
    return max(2, MEM_BYTES // (8 * d))


def posterior_cap(d: int) -> int:
    """Most held-out posteriors defining q(z) (two float64 (N, D) arrays within MEM_BYTES)."""
    return max(2, MEM_BYTES // (16 * d))


def _rows(d: int, copies: int = 4) -> int:
    """Rows per chunk so that ``copies`` float64 (rows, d) temporaries stay within MEM_BYTES / 8."""
    return max(1, MEM_BYTES // (8 * 8 * copies * d))


def aggregate_log_q(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log (1/N sum_n N(z_m; mu_n, diag exp(logvar_n))) for z (M, D) -> (M,), float64.

    Chunked over posteriors (running logsumexp) and over samples, so that memory stays near
    MEM_BYTES / 4 whatever M, N and D are.
    """
    z, mu, logvar = z.flatten(1), mu.flatten(1), logvar.flatten(1)
    n, d = mu.shape
    step = _rows(d, 3)
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


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, bandwidth: float | None = None) -> float:
    """Unbiased MMD^2 with an RBF kernel; bandwidth = median pairwise distance of the pooled set.

    Distances are computed in float32 (relative error ~1e-7 of ||z||^2, far below any bandwidth here)
    and the kernel sums in float64.
    """
    x, y = x.flatten(1).float(), y.flatten(1).float()
    m, n = len(x), len(y)
    pooled = torch.cat([x, y])
    d2 = torch.cdist(pooled, pooled).double().pow(2)
    del pooled
    if bandwidth is None:
        off = d2[~torch.eye(len(d2), dtype=torch.bool, device=d2.device)]
        bandwidth = math.sqrt(max(off.median().item(), 1e-12) / 2.0)
    k = torch.exp(-d2 / (2 * bandwidth**2))
    kxx, kyy, kxy = k[:m, :m], k[m:, m:], k[:m, m:]
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(sxx + syy - 2 * kxy.mean())


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> int:
    """Number of latent units whose posterior mean varies across inputs: Cov_x(E_q[z_u]) > threshold."""
    return int((mu.flatten(1).double().var(0) > threshold).sum().item())


def _norms(z: torch.Tensor) -> torch.Tensor:
    z = z.flatten(1)
    rows = _rows(z.shape[1], 1)
    return torch.cat([z[i : i + rows].double().norm(dim=1) for i in range(0, len(z), rows)]) / math.sqrt(z.shape[1])


def _log_cond(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """log q(z_m | x_{index_m}) in float64, in chunks of rows."""
    z, mu, logvar = z.flatten(1), mu.flatten(1), logvar.flatten(1)
    rows, out = _rows(z.shape[1]), []
    for i in range(0, len(z), rows):
        zc, idx = z[i : i + rows].double(), index[i : i + rows]
        m, lv = mu[idx].double(), logvar[idx].double()
        out.append(-0.5 * ((zc - m).pow(2) * torch.exp(-lv) + lv + LOG_2PI).sum(1))
    return torch.cat(out)


@torch.no_grad()
def latent_metrics(
    prior,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    z_prior: torch.Tensor,
    z_post: torch.Tensor,
    post_index: torch.Tensor,
    analytic_kl: torch.Tensor | None = None,
    mmd_n: int = 2000,
) -> dict[str, float]:
    """Geometry metrics from the held-out posteriors (mu, logvar), prior samples and posterior-mixture
    samples ``z_post`` drawn from q(z | x_{post_index})."""
    logq_post = aggregate_log_q(z_post, mu, logvar)
    logq_prior = aggregate_log_q(z_prior, mu, logvar)
    dev = mu.device
    log_cond = _log_cond(z_post, mu, logvar, post_index)
    log_p = torch.cat([prior.log_prob(z_post[i : i + 512].to(dev)).double() for i in range(0, len(z_post), 512)])
    threshold = torch.quantile(logq_post, 0.01)
    mi = (log_cond - logq_post).mean().item()
    mkl = (logq_post - log_p).mean().item()
    kl = analytic_kl.double().mean().item() if analytic_kl is not None else (log_cond - log_p).mean().item()
    # the pooled (2k, D) float32 set for MMD stays within MEM_BYTES / 2
    k = min(mmd_n, len(z_prior), len(z_post), max(2, MEM_BYTES // (16 * z_prior[0].numel())))
    npri, npost = _norms(z_prior), _norms(z_post)
    return {
        "kl": kl,
        "marginal_kl": mkl,
        "mutual_info": mi,
        "hole_fraction": (logq_prior < threshold).double().mean().item(),
        "mmd_latent": mmd2_unbiased(z_prior[:k], z_post[:k]),
        "active_units": active_units(mu),
        "norm_prior": npri.mean().item(),
        "norm_prior_std": npri.std().item(),
        "norm_post": npost.mean().item(),
        "norm_post_std": npost.std().item(),
    }
