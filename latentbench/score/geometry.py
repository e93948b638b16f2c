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


def aggregate_log_q(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log (1/N sum_n N(z_m; mu_n, diag exp(logvar_n))) for z (M, D) -> (M,), float64."""
    dev = z.device
    mu64, lv64 = mu.flatten(1).double(), logvar.flatten(1).double()
    n, d = mu64.shape
    prec = torch.exp(-lv64)  # (N, D)
    mp = mu64 * prec
    const = (mu64 * mp).sum(1) + lv64.sum(1) + d * LOG_2PI  # (N,)
    rows = max(1, MEM_BYTES // (8 * max(d, n)) // 2)
    out = []
    for i in range(0, len(z), rows):
        zc = z[i : i + rows].flatten(1).to(dev).double()
        comp = -0.5 * (zc.pow(2) @ prec.T - 2.0 * zc @ mp.T + const[None])
        out.append(torch.logsumexp(comp, dim=1) - math.log(n))
    return torch.cat(out)


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, bandwidth: float | None = None) -> float:
    """Unbiased MMD^2 with an RBF kernel; bandwidth = median pairwise distance of the pooled set."""
    x, y = x.flatten(1).double(), y.flatten(1).double()
    m, n = len(x), len(y)
    pooled = torch.cat([x, y])
    d2 = torch.cdist(pooled, pooled).pow(2)
    if bandwidth is None:
        off = d2[~torch.eye(len(pooled), dtype=torch.bool, device=d2.device)]
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
    return z.flatten(1).double().norm(dim=1) / math.sqrt(z[0].numel())


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
    zf = z_post.flatten(1).double()
    mu_i, lv_i = mu.flatten(1)[post_index].double(), logvar.flatten(1)[post_index].double()
    log_cond = -0.5 * ((zf - mu_i).pow(2) * torch.exp(-lv_i) + lv_i + LOG_2PI).sum(1)
    log_p = torch.cat([prior.log_prob(z_post[i : i + 512].to(dev)).double() for i in range(0, len(z_post), 512)])
    threshold = torch.quantile(logq_post, 0.01)
    mi = (log_cond - logq_post).mean().item()
    mkl = (logq_post - log_p).mean().item()
    kl = analytic_kl.double().mean().item() if analytic_kl is not None else (log_cond - log_p).mean().item()
    k = min(mmd_n, len(z_prior), len(z_post))
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
