"""Calibrated latent scoring: every latent metric of a cell from (prior, held-out posteriors, prior samples).

**The split.** The held-out posteriors q(z | x_n) are split at random (stream ``latents/split``) into a
*mixture* half A and a *reference* half B. A defines the estimated aggregate posterior
q_A(z) = 1/N_A sum_{n in A} q(z | x_n) (ELBO surgery, Hoffman & Johnson 2016); B gives fresh draws from
the population's aggregate posterior, z_B ~ q(z | x_B), that are never part of q_A. A statistic computed
the same way on prior samples and on z_B is therefore calibrated: when p = q the two sets are exchangeable
and the statistic reads its null value at every D and N (scorer v3 took its reference samples from the
posteriors that define q, so once KL(q(z|x) || p) >> log N every prior sample looked like a hole).

- ``hole_fraction``: share of prior samples with log q_A(z) below the 1% quantile of log q_A(z_B); 0.01
  (within its binomial floor) when p = q. At large D, q_A is a kernel density estimate with the
  posteriors as kernels, so this is a calibrated two-sample statistic, not the population's hole mass.
- ``mutual_info``: I_N = E[log q(z|x_n) - log q_A(z)], z ~ q(z|x_n), n in A: a lower bound on I(x; z)
  that cannot exceed log N_A (the InfoNCE bound, Poole et al. 2019, Eq. 12); ``mi_saturated`` when it
  is within half a nat of log N_A. ``marginal_kl`` = E_{q_A}[log q_A - log p] = kl - I_N: an upper
  bound on KL(q(z) || p(z)) in expectation (KL is convex in q, and E[q_A] = q). Both are bounds,
  never ranked.
- ``mmd_latent``: unbiased MMD^2 (Gretton et al. 2012, Eq. 3) between prior samples and one draw from
  each reference posterior (i.i.d. draws from q; repeated draws of a few posteriors would bias it up),
  with the spread of its permutation null as its floor.
- The **spectrum** (both ends): directions are the top and bottom eigenvectors of Cov_q estimated on A
  (Cov_x mu(x) + E_x diag sigma^2(x), the law of total covariance; at large D by Rayleigh-Ritz on a
  candidate span, see ``_eig_directions``); along each, the variance of q is
  measured on B (out of sample, so the Marchenko-Pastur spread of the estimate on A cannot leak in) and
  the prior's from its samples (exactly 1 for N(0, I)). ``spec_wide`` = max_j Var_q / Var_p (the prior
  too narrow somewhere), ``spec_narrow`` = max_j Var_p / Var_q (the prior too wide somewhere); both 1
  when matched. ``mean_offset`` = ||E_q z - E_p z|| from the unbiased cross-product of two independent
  halves' means (so it does not grow with D / N when the means agree).
- ``active_units`` (Burda et al. 2016, Sec. 5.2) and ``norm_prior`` / ``norm_post`` (mean ||z|| / sqrt(D),
  the soap-bubble radius; post from z_B).
- The informative subspace (``latentbench.score.subspace``): PCA of the posterior means of A; the
  subspace figures compare prior samples with z_B in it.

Each calibrated figure carries its sampling floor in ``notes["floors"]``: the value it can reach when the
prior is right, from the sample counts.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from latentbench.score.geometry import (
    MEM_BYTES,
    _norms,
    active_units,
    aggregate_log_q,
    mmd2_with_null,
    prior_has_density,
    prior_log_prob,
)
from latentbench.score.streams import stream
from latentbench.score.subspace import principal_subspace, subspace_metrics

HOLE_QUANTILE = 0.01
SPECTRUM_DIRS = 16  # directions probed at each end of the spectrum
DENSE_MAX = 2048  # up to this D the spectrum's directions come from a dense eigendecomposition
SPECTRUM_ROWS = 256  # posterior means the directions are estimated from above DENSE_MAX (Rayleigh-Ritz)
MI_SAMPLES = 1000  # samples for mutual_info / marginal_kl (bounds; descriptive)
Z_FLOOR = 3.0  # floors of the binomial and mean figures: 3 standard errors of their sampling noise
FAMILY_ALPHA = 0.01  # floors of a maximum over directions: its sampling range at this family-wise level


def split_index(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random split of n posteriors into the mixture half A (ceil(n / 2)) and the reference half B, each
    in random order (so a stage that estimates from the first rows of a half, the principal subspace or
    the spectrum's directions at large D, reads a random subset, not the first test images)."""
    if n < 4:
        raise ValueError(f"latent scoring needs at least 4 held-out posteriors, got {n}")
    perm = torch.randperm(n, generator=stream(seed, "latents/split"))
    half = (n + 1) // 2
    return perm[:half], perm[half:]


def draw_posterior(mu: torch.Tensor, logvar: torch.Tensor, m: int,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """m draws from the mixture of the posteriors (x uniform, z ~ q(z|x)): (z (m, D), index (m,))."""
    idx = torch.randint(len(mu), (m,), generator=generator)
    eps = torch.randn((m, *mu.shape[1:]), generator=generator).to(mu.device)
    idx_d = idx.to(mu.device)
    return (mu[idx_d] + torch.exp(0.5 * logvar[idx_d]) * eps).flatten(1), idx_d


def _log_cond(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, index: torch.Tensor,
              mem_bytes: int = MEM_BYTES) -> torch.Tensor:
    """log q(z_m | x_{index_m}) in float64, in chunks of rows (no (M, D) float64 copy at D = 65536)."""
    from latentbench.priors.base import LOG_2PI

    rows = max(1, mem_bytes // (8 * 8 * 4 * z.shape[1]))
    out = []
    for i in range(0, len(z), rows):
        idx = index[i : i + rows]
        m, lv = mu[idx].flatten(1).double(), logvar[idx].flatten(1).double()
        out.append(-0.5 * ((z[i : i + rows].double() - m).pow(2) * torch.exp(-lv) + lv + LOG_2PI).sum(1))
    return torch.cat(out)


def _eig_directions(x: torch.Tensor, s: torch.Tensor, r: int) -> torch.Tensor:
    """Orthonormal (D, <= 2r) top and bottom eigenvectors of C = x^T x / (n - 1) + diag(s), float64.

    Dense up to ``DENSE_MAX``. Above it, no D x D matrix is formed: Rayleigh-Ritz (Parlett 1998,
    Ch. 11) in the span of the n centred means (where C differs from diag(s), so its top lies there)
    and of the 2r coordinate axes with the smallest diagonal of C (mean-field posteriors are narrow
    along axes): exact for the top when diag(s) is isotropic, a candidate set for the bottom. The
    directions only choose where to look; the variances along them are measured out of sample."""
    n, d = x.shape
    r = max(1, min(r, d // 2))
    if d <= DENSE_MAX:
        c = x.T @ x / max(n - 1, 1) + torch.diag(s)
        _, vecs = torch.linalg.eigh(c)
        v = torch.cat([vecs[:, -r:].flip(1), vecs[:, :r]], 1)
    else:
        diag = x.pow(2).sum(0) / max(n - 1, 1) + s
        axes = torch.topk(diag, 2 * r, largest=False).indices
        e = torch.zeros(d, len(axes), dtype=x.dtype, device=x.device)
        e[axes, torch.arange(len(axes), device=x.device)] = 1.0
        b = torch.cat([x.T, e], 1)  # (D, n + 2r)
        lam, u = torch.linalg.eigh(b.T @ b)
        keep = lam > lam.max() * 1e-10
        w = b @ (u[:, keep] / lam[keep].sqrt())  # an orthonormal basis of the candidate span
        xw = x @ w
        cw = xw.T @ xw / max(n - 1, 1) + (w * s[:, None]).T @ w
        _, vecs = torch.linalg.eigh(cw)
        rr = min(r, vecs.shape[1] // 2)
        v = w @ torch.cat([vecs[:, -rr:].flip(1), vecs[:, :rr]], 1)
    q, _ = torch.linalg.qr(v)
    return q


def _chunks64(x: torch.Tensor, rows: int = 512):
    """Rows of ``x`` (N, ...) flattened, as float64 chunks (no float64 copy of the whole of x)."""
    x = x.flatten(1)
    for i in range(0, len(x), rows):
        yield x[i : i + rows].double()


def _col_mean(x: torch.Tensor) -> torch.Tensor:
    return sum(c.sum(0) for c in _chunks64(x)) / len(x)


def _col_var(x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    return sum((c - mean).pow(2).sum(0) for c in _chunks64(x)) / max(len(x) - 1, 1)


def _times(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """x (N, ...) flattened times v (D, r) in float64, in chunks of rows: (N, r)."""
    return torch.cat([c @ v for c in _chunks64(x)])


CROSS_ROWS = 512  # rows per set of the tr(C_x C_y) estimate of the mean offset's floor


def _cross_trace(x: torch.Tensor, mx: torch.Tensor, y: torch.Tensor, my: torch.Tensor) -> float:
    """tr(C_x C_y) for the covariances of two independent sets (their first ``CROSS_ROWS`` rows, centred
    at mx and my): E[((x_i - mx)^T (y_j - my))^2] = tr(C_x C_y), from the (n_x, n_y) Gram matrix, so
    correlated coordinates count (a per-coordinate sum of variance products would not)."""
    a = torch.cat(list(_chunks64(x[:CROSS_ROWS]))) - mx
    b = torch.cat(list(_chunks64(y[:CROSS_ROWS]))) - my
    return (a @ b.T).pow(2).mean().item()


def _quad(x: torch.Tensor, mx: torch.Tensor, u: torch.Tensor) -> float:
    """u^T C_x u for the covariance of the rows of x: the variance of x along u (unnormalised u)."""
    return (_times(x, u[:, None]).squeeze(1) - mx @ u).var().item() if len(x) > 1 else 0.0


@torch.no_grad()
def spectrum(prior, mu_a: torch.Tensor, logvar_a: torch.Tensor, mu_b: torch.Tensor, logvar_b: torch.Tensor,
             z_prior: torch.Tensor, seed: int, r: int = SPECTRUM_DIRS) -> dict[str, Any]:
    """Variances of q (measured on B) and of the prior along the top and bottom eigenvectors of Cov_q
    (estimated on A), and the mean offset; see the module docstring. No (N, D) float64 copy is made:
    sums run over row chunks (at D = 65536 a half of 10000 posteriors would be 2.6 GB in float64)."""
    from latentbench.priors.standard_normal import StandardNormal

    d = mu_a.flatten(1).shape[1]
    rows = len(mu_a) if d <= DENSE_MAX else min(len(mu_a), SPECTRUM_ROWS)  # A is in random order
    xa_r = torch.cat(list(_chunks64(mu_a[:rows])))
    xa_c = xa_r - xa_r.mean(0)
    s_a = _col_mean(logvar_a.flatten(1).exp())
    v = _eig_directions(xa_c, s_a, r)
    del xa_r, xa_c
    proj_b = _times(mu_b, v)
    var_mu = proj_b.var(0)
    var_q = var_mu + _col_mean(logvar_b.flatten(1).exp()) @ v.pow(2)
    exact_prior = type(prior) is StandardNormal
    zp = z_prior.flatten(1).to(v.device)
    if exact_prior:
        var_p = torch.ones_like(var_q)
    else:
        var_p = _times(zp, v).var(0).clamp_min(1e-12)
    ratio = var_q / var_p
    # floors: the ratio's sampling range at family-wise level 1% over the probed directions, from the
    # chi-square law of a variance estimated from n draws (Gaussian along each direction)
    from scipy.stats import chi2

    alpha = FAMILY_ALPHA / (2 * len(ratio))
    frac = (var_mu / var_q).max().item()  # the estimated share of Var_q (the posterior variances are exact)

    def band(n_draws: int, share: float) -> tuple[float, float]:
        dof = max(n_draws - 1, 1)
        lo, hi = chi2.ppf(alpha, dof) / dof, chi2.ppf(1 - alpha, dof) / dof
        return 1 + share * (lo - 1), 1 + share * (hi - 1)

    q_lo, q_hi = band(len(mu_b), frac)
    p_lo, p_hi = (1.0, 1.0) if exact_prior else band(len(zp), 1.0)
    floor = max(q_hi / p_lo, p_hi / q_lo)
    # mean offset: the unbiased ||m_q - m_p||^2 = d1^T d2 from two independent estimates of the
    # difference (A and B for q; two halves of the prior samples), and its standard deviation
    # sqrt(tr(S1 S2) + d2^T S1 d2 + d1^T S2 d1), S_i the covariances of the estimates, with the
    # trace from Gram matrices so that correlated coordinates count
    m_a, m_b = _col_mean(mu_a), _col_mean(mu_b)
    na, nb = len(mu_a), len(mu_b)
    if exact_prior:
        d1, d2 = m_a, m_b
        tr = _cross_trace(mu_a, m_a, mu_b, m_b) / (na * nb)
        quad = _quad(mu_a, m_a, d2) / na + _quad(mu_b, m_b, d1) / nb
    else:
        half = len(zp) // 2
        p1, p2 = zp[:half], zp[half:]
        n1, n2 = len(p1), len(p2)
        mp1, mp2 = _col_mean(p1), _col_mean(p2)
        d1, d2 = m_a - mp1, m_b - mp2
        tr = (_cross_trace(mu_a, m_a, mu_b, m_b) / (na * nb) + _cross_trace(mu_a, m_a, p2, mp2) / (na * n2)
              + _cross_trace(p1, mp1, mu_b, m_b) / (n1 * nb) + _cross_trace(p1, mp1, p2, mp2) / (n1 * n2))
        quad = (_quad(mu_a, m_a, d2) / na + _quad(p1, mp1, d2) / n1
                + _quad(mu_b, m_b, d1) / nb + _quad(p2, mp2, d1) / n2)
    est = (d1 @ d2).item()
    sd = math.sqrt(max(tr + quad, 0.0))
    return {"spec_wide": ratio.max().item(), "spec_narrow": (1 / ratio).max().item(),
            "mean_offset": math.sqrt(max(est, 0.0)), "var_q": var_q.cpu().tolist(), "var_p": var_p.cpu().tolist(),
            "floor": floor, "offset_floor": math.sqrt(Z_FLOOR * sd),
            "wide_dims": int((ratio > floor).sum().item()), "narrow_dims": int((1 / ratio > floor).sum().item())}


MMD_PERMUTATIONS = 50  # relabellings of the permutation null behind the MMD floors


def hole_floor(m: int, n_ref: int, q: float = HOLE_QUANTILE) -> float:
    """The hole fraction's sampling floor for m prior samples and a threshold at the q-quantile of n_ref
    reference draws: when p = q the threshold's quantile level is an order statistic, Beta(j, n_ref - j + 1)
    with j = ceil(q n_ref), and the hole count is binomial given it, so the count is beta-binomial (exact
    for continuous statistics at any n); the floor is its upper quantile at 3 standard errors' level."""
    from scipy.stats import betabinom, norm

    j = max(1, math.ceil(q * n_ref))
    return float(betabinom.ppf(norm.cdf(Z_FLOOR), m, j, n_ref - j + 1)) / m


@torch.no_grad()
def score_latents(prior, mu: torch.Tensor, logvar: torch.Tensor, z_prior: torch.Tensor, *, seed: int,
                  analytic_kl: torch.Tensor | None = None, mmd_n: int = 2000, mem_bytes: int = MEM_BYTES,
                  n_reference: int | None = None, split: tuple[torch.Tensor, torch.Tensor] | None = None,
                  sub: dict[str, Any] | None = None,
                  deterministic: bool = False) -> tuple[dict[str, float | None], dict[str, Any]]:
    """Every latent metric (see the module docstring) from the held-out posteriors ``(mu, logvar)``
    (N, ...), the prior and its samples ``z_prior`` (M, ...). Returns (metrics, notes).

    ``analytic_kl`` (N,) is KL(q(z|x_n) || p) where the prior has it in closed form; ``n_reference`` the
    reference draws z_B (default M); ``split`` and ``sub`` (the principal subspace of the mixture half's
    means) may be passed in so that the scorer's image-space swaps use the same ones. Random draws come
    from named streams of ``seed``; the numbers do not depend on call order or ``mem_bytes``.

    ``deterministic``: the encoder is a point map z = mu(x) (WAE, AAE, RAE): the aggregate posterior is the
    empirical distribution of the codes, so z_B are the reference half's codes, ``logvar`` is ignored, and
    the figures that need a posterior density (hole fractions, mutual_info, kl, marginal_kl,
    sub_marginal_kl) are absent, with a note saying why.
    """
    mu = mu.flatten(1)
    logvar = torch.full_like(mu, -math.inf) if deterministic else logvar.flatten(1)
    z_prior = z_prior.flatten(1).to(mu.device)
    n, d = mu.shape
    m = len(z_prior)
    ia, ib = split if split is not None else split_index(n, seed)
    ia, ib = ia.to(mu.device), ib.to(mu.device)
    mu_a, lv_a, mu_b, lv_b = mu[ia], logvar[ia], mu[ib], logvar[ib]
    metrics: dict[str, float | None] = {"hole_fraction": None, "mutual_info": None, "kl": None,
                                        "marginal_kl": None}
    # one draw per reference posterior: i.i.d. draws from q, for the MMD (repeated posteriors bias it up)
    z_b1 = (mu_b if deterministic
            else mu_b + torch.exp(0.5 * lv_b) * torch.randn(mu_b.shape, generator=stream(seed, "latents/reference_iid")).to(mu.device))
    if deterministic:
        z_b, z_a = mu_b, mu_a
    else:
        z_b, _ = draw_posterior(mu_b, lv_b, n_reference or m, stream(seed, "latents/reference"))
        logq_ref = aggregate_log_q(z_b, mu_a, lv_a, mem_bytes)
        logq_prior = aggregate_log_q(z_prior, mu_a, lv_a, mem_bytes)
        threshold = torch.quantile(logq_ref, HOLE_QUANTILE)
        metrics["hole_fraction"] = (logq_prior < threshold).double().mean().item()
        # bounds: I_N (lower, <= log N_A) and marginal_kl = kl - I_N (upper, in expectation)
        z_a, idx_a = draw_posterior(mu_a, lv_a, min(m, MI_SAMPLES), stream(seed, "latents/mixture"))
        logq_a = aggregate_log_q(z_a, mu_a, lv_a, mem_bytes)
        log_cond = _log_cond(z_a, mu_a, lv_a, idx_a, mem_bytes)
        mi = (log_cond - logq_a).mean().item()
        metrics["mutual_info"] = mi
        if prior_has_density(prior):
            with torch.random.fork_rng(devices=[]):  # Monte Carlo log p (two_stage): seeded, the caller's RNG untouched
                torch.manual_seed(stream(seed, "latents/prior_log_prob").initial_seed())
                log_p = prior_log_prob(prior, z_a.reshape(len(z_a), *prior.latent.shape))
            metrics["marginal_kl"] = (logq_a - log_p).mean().item()
            if analytic_kl is not None:
                metrics["kl"] = analytic_kl.double().mean().item()
            else:
                metrics["kl"] = (log_cond - log_p).mean().item()
    k = min(mmd_n, m, len(z_b1))
    metrics["mmd_latent"], mmd_null = mmd2_with_null(z_prior[:k], z_b1[:k], mem_bytes=mem_bytes,
                                                     generator=stream(seed, "latents/mmd_null"), n_perm=MMD_PERMUTATIONS)
    metrics["active_units"] = active_units(mu)
    npri, npost = _norms(z_prior, mem_bytes), _norms(z_b, mem_bytes)
    metrics.update({"norm_prior": npri.mean().item(), "norm_prior_std": npri.std().item(),
                    "norm_post": npost.mean().item(), "norm_post_std": npost.std().item()})
    spec = spectrum(prior, mu_a, lv_a, mu_b, lv_b, z_prior, seed)
    metrics.update({k_: spec[k_] for k_ in ("spec_wide", "spec_narrow", "mean_offset")})
    sub = sub if sub is not None else principal_subspace(mu_a, mu_eval=mu_b)
    sm = subspace_metrics(prior, mu_a, lv_a, mu_b, lv_b, z_prior, z_b, z_a, sub, mem_bytes=mem_bytes, mmd_n=mmd_n,
                          z_b_iid=z_b1, generator=stream(seed, "latents/sub_mmd_null"), deterministic=deterministic)
    metrics.update({k_: sm[k_] for k_ in ("sub_dims", "sub_spread", "sub_marginal_kl", "sub_mmd",
                                          "sub_hole_fraction")})
    # the threshold is a quantile of draws from N_B posteriors: it is as noisy as min(draws, N_B) samples
    n_ref = min(len(z_b), len(ib))
    h_floor = hole_floor(m, n_ref)
    floors: dict[str, float] = {"spec_wide": spec["floor"], "spec_narrow": spec["floor"],
                                "mean_offset": spec["offset_floor"]}
    if mmd_null is not None:
        floors["mmd_latent"] = Z_FLOOR * mmd_null
    if not deterministic:
        floors["hole_fraction"] = h_floor
    if sm["sub_dims"]:
        if not deterministic:
            floors["sub_hole_fraction"] = h_floor
        floors["sub_spread"] = sm["spread_floor"]
        if sm["mmd_null"] is not None:
            floors["sub_mmd"] = Z_FLOOR * sm["mmd_null"]
    notes: dict[str, Any] = {
        "n_mixture": len(ia), "n_reference": len(ib), "n_reference_draws": len(z_b), "n_prior_latents": m,
        "n_mmd_reference": k,
        "bounds": {"mutual_info": "lower", "marginal_kl": "upper", "sub_marginal_kl": "upper"},
        "spec_var_post": [round(x, 4) for x in spec["var_q"]],
        "spec_var_prior": [round(x, 4) for x in spec["var_p"]],
        "spec_wide_dims": spec["wide_dims"], "spec_narrow_dims": spec["narrow_dims"],
        "sub_var_post": [round(x, 4) for x in sm["var_post"]],
        "sub_var_prior": [round(x, 4) for x in sm["var_prior"]],
        "collapsed": sm["sub_dims"] == 0,
        "floors": floors,
    }
    if deterministic:
        notes["deterministic_encoder"] = ("q(z|x) is a point mass at mu(x): the aggregate posterior is the "
                                          "empirical distribution of the codes; hole_fraction, mutual_info, kl, "
                                          "marginal_kl and sub_marginal_kl need a posterior density and are absent")
    else:
        notes["mi_saturated"] = bool(metrics["mutual_info"] >= math.log(len(ia)) - 0.5)
    return metrics, notes
