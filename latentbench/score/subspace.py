"""Latent geometry in the informative subspace: where a prior misses the aggregate posterior at large D.

At large D almost every coordinate of q(z|x) is N(~0, ~1), so full-space metrics (hole fraction,
MMD, norm shells) are dominated by unused coordinates, while the information (and the prior's miss)
lives in a few directions spread coherently over many coordinates. Those directions are the principal
components of the held-out posterior means mu(x) (PCA, Pearson 1901; Tipping & Bishop 1999, Eq. 7 for
the probabilistic reading): V = the top k eigenvectors of Cov_x mu(x), k the fewest that cover 99% of
tr Cov_x mu(x), at most ``MAX_DIMS``. With c = E_x mu(x) and y = V^T (z - c):

- ``sub_spread``: along each direction v_j, the aggregate posterior's variance Var_{q(z)}[v_j^T z]
  (from held-out posteriors that did not choose the directions) against the prior's
  Var_{p(z)}[v_j^T z] (from its samples, so it works for every prior); the metric is the largest ratio
  either way, max_j max(r_j, 1/r_j), 1 when the prior matches.
- ``sub_marginal_kl`` = E_{q}[log q_V(y) - log p_V(y)] with the projected aggregate posterior
  q_V(y) = 1/N sum_n N(y; V^T(mu_n - c), V^T diag(sigma_n^2) V) (ELBO surgery, Hoffman & Johnson 2016,
  restricted to the projection) and p_V the prior's exact marginal on the subspace, which exists in
  closed form for Gaussian-mixture priors (N(0, I), MoG, VampPrior, the ex-post GMM); None otherwise.
- ``sub_hole_fraction`` and ``sub_mmd``: the calibrated full-space definitions (``latents``) on the
  projections.
- ``fid_swap_sub`` / ``fid_swap_rest`` (image space, scored in ``scorer``): latents that take their
  subspace component from one set and the rest from the other, z = z_b + V V^T (z_a - z_b), compared
  with an independent posterior-mixture draw, beside the same swap in a random subspace of equal k.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from latentbench.priors.base import LOG_2PI
from latentbench.score.geometry import MEM_BYTES, mmd2_with_null, prior_has_density

VAR_SHARE = 0.99
MAX_DIMS = 64
MAX_PCA_ROWS = 4096  # posterior means the directions are estimated from (the variances use all)
COLLAPSE_VAR = 0.01  # a direction with Var_x v^T mu(x) below this carries no information (active_units' rule)


@torch.no_grad()
def principal_subspace(mu: torch.Tensor, var_share: float = VAR_SHARE, max_dims: int = MAX_DIMS,
                       max_rows: int = MAX_PCA_ROWS, mu_eval: torch.Tensor | None = None) -> dict[str, Any]:
    """PCA of the posterior means ``mu`` (N, ...): ``basis`` (D, k) orthonormal, ``center`` (D,),
    ``eigvals`` (the top min(max_dims, rank) variances of the means along them), ``k`` and ``coverage``
    (the share of tr Cov mu the k directions hold). k = 0 when no direction has variance above
    ``COLLAPSE_VAR`` (a collapsed latent).

    ``mu_eval``, posterior means that did not choose the directions (the reference half of the held-out
    set), gives the variances along them out of sample. In sample, at D / N >> 1 the top eigenvalues of a
    pure-noise Cov mu are inflated by (1 + sqrt(D / N))^2 (Marchenko & Pastur 1967), so noise directions
    would count as informative and a collapsed latent would read as used; out of sample a noise
    direction holds only the noise's variance. Directions whose out-of-sample variance is below
    ``COLLAPSE_VAR`` are left out of k. The rows the directions come from are the first ``max_rows``
    of ``mu``: pass them in random order (``latents.split_index`` does)."""
    x = mu.flatten(1).double()
    center = x.mean(0)
    xs = x[:max_rows] - center
    n, d = xs.shape
    if n <= d:  # Gram matrix: eigenvectors in D-space are X^T u / sqrt(lambda)
        lam, u = torch.linalg.eigh(xs @ xs.T)
        lam, u = lam.flip(0).clamp_min(0), u.flip(1)
        m = min(max_dims, n)
        vecs = xs.T @ u[:, :m] / lam[:m].clamp_min(1e-30).sqrt()
    else:
        lam, u = torch.linalg.eigh(xs.T @ xs)
        lam, u = lam.flip(0).clamp_min(0), u.flip(1)
        m = min(max_dims, d)
        vecs = u[:, :m]
    ev = x if mu_eval is None else mu_eval.flatten(1).double().to(x.device)
    ev_center = ev.mean(0)
    total = (ev - ev_center).pow(2).sum().item() / max(len(ev) - 1, 1)
    # the variances along the directions, over every posterior mean (of mu_eval where given)
    var_all = ((ev - ev_center) @ vecs).var(0) if len(ev) > 1 else torch.zeros(m, dtype=x.dtype, device=x.device)
    if total <= 0 or var_all.max().item() < COLLAPSE_VAR:
        k = 0
    else:
        cum = torch.cumsum(var_all, 0) / total
        reached = (cum >= var_share).nonzero()
        k = int(reached[0].item()) + 1 if len(reached) else m
        if mu_eval is not None:  # the leading directions, up to the last one that holds variance out of sample
            used = (var_all[:k] >= COLLAPSE_VAR).nonzero()
            k = int(used[-1].item()) + 1 if len(used) else 0
    coverage = float(var_all[:k].sum().item() / total) if total > 0 else 0.0
    return {"basis": vecs[:, :k].float(), "center": center.float(), "eigvals": var_all.cpu(), "k": k,
            "coverage": coverage, "total_var": total, "pca_rows": n,
            "out_of_sample": mu_eval is not None}


def project(z: torch.Tensor, sub: dict[str, Any]) -> torch.Tensor:
    """y = V^T (z - c), float64, (M, k)."""
    v, c = sub["basis"].to(z.device).double(), sub["center"].to(z.device).double()
    return (z.flatten(1).double() - c) @ v


def swap(z_a: torch.Tensor, z_b: torch.Tensor, sub: dict[str, Any]) -> torch.Tensor:
    """Latents with the subspace component of ``z_a`` and the rest of ``z_b``: z_b + V V^T (z_a - z_b)."""
    v = sub["basis"].to(z_b.device)
    a, b = z_a.flatten(1).float(), z_b.flatten(1).float()
    return (b + ((a - b) @ v) @ v.T).reshape(z_b.shape)


def random_subspace(d: int, k: int, generator: torch.Generator) -> dict[str, Any]:
    """A uniformly random k-dimensional subspace of R^d (QR of a Gaussian matrix), shaped like
    :func:`principal_subspace`'s output: the control of the swap interventions."""
    q, _ = torch.linalg.qr(torch.randn(d, k, generator=generator, dtype=torch.float64))
    return {"basis": q.float(), "center": torch.zeros(d), "k": k}


def projected_posteriors(mu: torch.Tensor, logvar: torch.Tensor, sub: dict[str, Any],
                         mem_bytes: int = MEM_BYTES) -> tuple[torch.Tensor, torch.Tensor]:
    """Means V^T (mu_n - c) (N, k) and covariances V^T diag(sigma_n^2) V (N, k, k), float64.

    The covariances are one matrix product, sigma^2 (N, D) @ [v_i * v_j]_{i <= j} (D, k(k+1)/2), in
    float32 chunks of D accumulated in float64 (a batched (N, k, D) @ (D, k) product cost 25 s at
    D = 65536, k = 64; this is ~10x faster)."""
    v = sub["basis"].to(mu.device).float()
    d, k = v.shape
    means = project(mu, sub)
    iu = torch.triu_indices(k, k, device=mu.device)
    n_pairs = iu.shape[1]
    var = logvar.flatten(1).float().exp()
    acc = torch.zeros(len(mu), n_pairs, dtype=torch.float64, device=mu.device)
    step = max(1, mem_bytes // (4 * 4 * (n_pairs + len(mu))))
    for i in range(0, d, step):
        vc = v[i : i + step]
        acc += (var[:, i : i + step] @ (vc[:, iu[0]] * vc[:, iu[1]])).double()
    covs = torch.zeros(len(mu), k, k, dtype=torch.float64, device=mu.device)
    covs[:, iu[0], iu[1]] = acc
    covs[:, iu[1], iu[0]] = acc
    return means, covs


def gaussian_mixture_log_prob(y: torch.Tensor, means: torch.Tensor, covs: torch.Tensor,
                              log_weights: torch.Tensor | None = None, mem_bytes: int = MEM_BYTES) -> torch.Tensor:
    """log sum_n w_n N(y; m_n, S_n) for y (M, k), full covariances (N, k, k) -> (M,), float64.

    The quadratic forms expand into matrix products over vec(y y^T), so no (M, N, k) tensor exists.
    """
    y, means, covs = y.double(), means.double(), covs.double()
    n, k = means.shape
    if log_weights is None:
        log_weights = torch.full((n,), -math.log(n), dtype=torch.float64, device=y.device)
    eye = torch.eye(k, dtype=torch.float64, device=y.device)
    chol = torch.linalg.cholesky(covs + 1e-10 * eye)
    prec = torch.cholesky_inverse(chol)  # (N, k, k)
    logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    pm = (prec @ means.unsqueeze(-1)).squeeze(-1)  # (N, k)
    const = (means * pm).sum(1) + logdet + k * LOG_2PI - 2 * log_weights.double()
    prec_flat = prec.reshape(n, k * k)
    rows = max(1, mem_bytes // (8 * 8 * (n + k * k)))
    out = []
    for i in range(0, len(y), rows):
        yc = y[i : i + rows]
        yy = (yc[:, :, None] * yc[:, None, :]).reshape(len(yc), k * k)
        out.append(torch.logsumexp(-0.5 * (yy @ prec_flat.T - 2 * yc @ pm.T + const[None]), dim=1))
    return torch.cat(out)


def projected_prior(prior, sub: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The prior's exact marginal on the subspace as (log_weights, means, covs), or None when it has no
    closed form (flows, two-stage, diffusion priors)."""
    from latentbench.priors.gmm import ExpostGMMPrior
    from latentbench.priors.mog import MixturePrior
    from latentbench.priors.standard_normal import StandardNormal
    from latentbench.priors.vamp import VampPrior

    if not prior_has_density(prior):
        return None
    dev = prior._anchor.device
    v, c = sub["basis"].to(dev).double(), sub["center"].to(dev).double()
    k = v.shape[1]
    if type(prior) is StandardNormal:
        return torch.zeros(1, dtype=torch.float64), (-c @ v)[None], torch.eye(k, dtype=torch.float64, device=dev)[None]
    if isinstance(prior, (MixturePrior, VampPrior)):
        if isinstance(prior, VampPrior):
            m, lv = prior.components()
            logw = torch.full((len(m),), -math.log(len(m)), dtype=torch.float64, device=dev)
        else:
            m, lv = prior.means, prior.logvars
            logw = torch.log_softmax(prior.logits.double(), 0)
        means = (m.double() - c) @ v
        covs = (v.T[None] * lv.double().exp()[:, None, :]) @ v
        return logw, means, covs
    if isinstance(prior, ExpostGMMPrior) and prior.fitted:
        sigma = prior.chol.double() @ prior.chol.double().transpose(-1, -2)  # (K, d, d)
        if prior.components.numel() == 0:
            w = v  # the mixture lives on all D dims
            resid = torch.zeros(k, k, dtype=torch.float64, device=dev)
        else:
            w = prior.components.double() @ v  # (d, k)
            resid = prior.resid_var.double() * (torch.eye(k, dtype=torch.float64, device=dev) - w.T @ w)
        mean_d = prior.means.double() if prior.components.numel() == 0 else prior.means.double() @ prior.components.double()
        means = (mean_d + prior.center.double() - c) @ v
        covs = w.T[None] @ sigma @ w[None] + resid[None]
        return prior.log_weights.double(), means, covs
    return None


@torch.no_grad()
def subspace_metrics(prior, mu_a: torch.Tensor, logvar_a: torch.Tensor, mu_b: torch.Tensor, logvar_b: torch.Tensor,
                     z_prior: torch.Tensor, z_b: torch.Tensor, z_a: torch.Tensor, sub: dict[str, Any],
                     mem_bytes: int = MEM_BYTES, mmd_n: int = 2000, z_b_iid: torch.Tensor | None = None,
                     generator: torch.Generator | None = None, deterministic: bool = False) -> dict[str, Any]:
    """The subspace metrics (see the module docstring), calibrated by the split of
    ``latentbench.score.latents``: ``sub`` is the principal subspace of the mixture half's means
    ``mu_a``; the projected mixture q_A,V is built from the posteriors (mu_a, logvar_a); the reference
    is the other half: its posteriors (mu_b, logvar_b) give the aggregate posterior's variance along
    each direction (Var_x of the projected means plus the mean projected posterior variance) and its
    draws ``z_b`` the threshold of ``sub_hole_fraction`` and the other set of ``sub_mmd``.
    ``sub_marginal_kl`` = E_{q_A,V}[log q_A,V - log p_V] over draws ``z_a`` from the mixture half: an
    upper bound in expectation (KL is convex in q). With k = 0 (a collapsed latent) only ``sub_dims``
    is set. ``sub_mmd`` compares the prior's projections with those of ``z_b_iid`` (one draw per reference
    posterior; default ``z_b``) and ``mmd_null`` is its permutation null's spread (drawn from
    ``generator``). ``deterministic`` (point-mass posteriors): the figures that need a posterior density
    (``sub_hole_fraction``, ``sub_marginal_kl``) are None.
    """
    k = sub["k"]
    out: dict[str, Any] = {"sub_dims": k, "sub_spread": None, "sub_marginal_kl": None, "sub_mmd": None,
                           "sub_hole_fraction": None, "var_post": [], "var_prior": [], "spread_floor": None,
                           "mmd_null": None}
    if k == 0:
        return out
    v = sub["basis"].to(mu_b.device).double()
    y_b, y_prior, y_a = project(z_b, sub), project(z_prior, sub), project(z_a, sub)
    pm_b = project(mu_b, sub)
    var_mu = pm_b.var(0)
    var_post = var_mu + logvar_b.flatten(1).double().exp().mean(0) @ v.pow(2)
    var_prior = y_prior.var(0)
    ratio = var_post / var_prior.clamp_min(1e-12)
    out["sub_spread"] = torch.maximum(ratio, 1 / ratio.clamp_min(1e-12)).max().item()
    from scipy.stats import chi2

    alpha = 0.01 / (2 * k)  # the sampling range of the largest ratio, family-wise 1% (chi-square variances)
    frac = (var_mu / var_post).max().item()
    dq, dp = max(len(pm_b) - 1, 1), max(len(y_prior) - 1, 1)
    q_lo, q_hi = (1 + frac * (chi2.ppf(a, dq) / dq - 1) for a in (alpha, 1 - alpha))
    p_lo, p_hi = (chi2.ppf(a, dp) / dp for a in (alpha, 1 - alpha))
    out["spread_floor"] = max(q_hi / p_lo, p_hi / q_lo)
    out["var_post"], out["var_prior"] = var_post.cpu().tolist(), var_prior.cpu().tolist()
    y_iid = y_b if z_b_iid is None else project(z_b_iid, sub)
    m = min(mmd_n, len(y_prior), len(y_iid))  # (2m)^2 kernel entries: 128 MB at m = 2000
    out["sub_mmd"], out["mmd_null"] = mmd2_with_null(y_prior[:m], y_iid[:m], mem_bytes=mem_bytes,
                                                     generator=generator, n_perm=50 if generator is not None else 0)
    if deterministic:
        return out
    means, covs = projected_posteriors(mu_a, logvar_a, sub, mem_bytes)
    logq_ref = gaussian_mixture_log_prob(y_b, means, covs, mem_bytes=mem_bytes)
    logq_prior = gaussian_mixture_log_prob(y_prior, means, covs, mem_bytes=mem_bytes)
    out["sub_hole_fraction"] = (logq_prior < torch.quantile(logq_ref, 0.01)).double().mean().item()
    pp = projected_prior(prior, sub)
    if pp is not None:
        logw, pmeans, pcovs = (t.to(y_a.device) for t in pp)
        log_p = gaussian_mixture_log_prob(y_a, pmeans, pcovs, logw, mem_bytes=mem_bytes)
        logq_a = gaussian_mixture_log_prob(y_a, means, covs, mem_bytes=mem_bytes)
        out["sub_marginal_kl"] = (logq_a - log_p).mean().item()
    return out
