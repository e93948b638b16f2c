"""The built-in metrics, each a function of a scoring context registered with its direction.

``latentbench.score.scorer.score_model`` loops over the ``METRICS`` registry and calls each metric
on one :class:`~latentbench.score.scorer.ScoreContext`; the expensive stages a metric reads from
(sampling, features, torch-fidelity, latent geometry, the IWAE bound) are computed once per cell and
shared. A plugin adds a metric the same way, through the ``latentbench.metrics`` entry-point group
(see README). The names are fixed by the record schema: add new ones, never rename.

Papers: FID (Heusel et al. 2017, Eq. 6), KID (Binkowski et al. 2018, Eq. 5 / unbiased MMD with a
cubic kernel), precision / recall (Kynkaanniemi et al. 2019, Eqs. 1-2) through torch-fidelity; the
latent geometry, informative-subspace and likelihood metrics cite theirs in ``geometry``,
``subspace`` and ``likelihood``. Density metrics (``nll_iw``, ``elbo``, ``kl``, ``marginal_kl``,
``sub_marginal_kl``) are absent (None) for a prior without a tractable density.
"""

from __future__ import annotations

from latentbench.registry import register_metric

_PAIRS = {
    "prior": "prior samples vs held-out data",
    "post": "posterior-mixture samples vs held-out data",
    "prior_post": "prior samples vs posterior-mixture samples",
}


def _fidelity_metric(kind: str, pair: str, higher: bool, description: str) -> None:
    register_metric(f"{kind}_{pair}", higher_is_better=higher, description=description)(
        lambda ctx: ctx.fidelity(pair)[kind])


for _pair, _what in _PAIRS.items():
    _fidelity_metric("fid", _pair, False, f"FID, {_what} (domain features)")
    _fidelity_metric("kid", _pair, False, f"KID (mean), {_what}")
    _fidelity_metric("precision", _pair, True, f"precision, {_what}")
    _fidelity_metric("recall", _pair, True, f"recall, {_what}")


def _swap_metric(name: str, pair: str, description: str) -> None:
    def metric(ctx) -> float | None:
        r = ctx.fidelity(pair)
        return None if r is None else r["fid"]

    register_metric(name, higher_is_better=False, description=description)(metric)


_swap_metric("fid_swap_sub", "swap_sub", "FID vs the posterior mixture of prior samples given the posterior "
             "mixture's informative-subspace component: the part of fid_prior_post outside the subspace")
_swap_metric("fid_swap_rest", "swap_rest", "FID vs the posterior mixture of posterior-mixture samples given the "
             "prior's informative-subspace component: the part of fid_prior_post inside the subspace")


def _likelihood_metric(name: str, key: str, higher: bool, description: str) -> None:
    register_metric(name, higher_is_better=higher, description=description)(lambda ctx: ctx.likelihood()[key])


_likelihood_metric("nll_iw", "nll_iw", False, "importance-weighted NLL bound on held-out data (nats)")
_likelihood_metric("elbo", "elbo_iw", True, "held-out ELBO (nats)")
_likelihood_metric("rec", "rec", False, "reconstruction term -E_q log p(x|z) (nats)")


def _geometry_metric(name: str, higher: bool | None, description: str) -> None:
    register_metric(name, higher_is_better=higher, description=description)(lambda ctx: ctx.geometry().get(name))


_geometry_metric("kl", True, "mean KL(q(z|x) || p(z)) (nats)")
_geometry_metric("marginal_kl", False, "KL(q(z) || p(z)), aggregate posterior vs prior (nats)")
_geometry_metric("mutual_info", True, "I(x; z) under q (nats)")
_geometry_metric("mmd_latent", False, "unbiased MMD^2 between prior and aggregate-posterior samples")
_geometry_metric("active_units", True, "latent units with Cov_x E_q[z_u] > 0.01")
_geometry_metric("norm_prior", True, "mean ||z|| / sqrt(D) of prior samples")
_geometry_metric("norm_post", True, "mean ||z|| / sqrt(D) of aggregate-posterior samples")
_geometry_metric("norm_prior_std", None, "std of ||z|| / sqrt(D) over prior samples")
_geometry_metric("norm_post_std", None, "std of ||z|| / sqrt(D) over aggregate-posterior samples")
_geometry_metric("hole_fraction", False, "share of prior samples below the 1% quantile of log q(z)")


def _subspace_metric(name: str, higher: bool | None, description: str) -> None:
    register_metric(name, higher_is_better=higher, description=description)(lambda ctx: ctx.subspace().get(name))


_subspace_metric("sub_dims", None, "principal directions of the posterior means holding 99% of Var_x mu(x) "
                 "(at most 64; 0 = collapsed latent)")
_subspace_metric("sub_spread", False, "largest variance ratio either way between aggregate posterior and prior "
                 "along the informative directions (1 = matched)")
_subspace_metric("sub_marginal_kl", False, "KL(q(z) || p(z)) of the projections on the informative subspace (nats)")
_subspace_metric("sub_mmd", False, "unbiased MMD^2 between projected prior and aggregate-posterior samples")
_subspace_metric("sub_hole_fraction", False, "share of projected prior samples below the 1% quantile of the "
                 "projected log q")


@register_metric("classifier_acc", higher_is_better=True,
                 description="held-out accuracy of the domain feature extractor")
def classifier_acc(ctx) -> float | None:
    return ctx.features().get("accuracy")
