"""The built-in metrics, each a function of a scoring context registered with its direction.

``latentbench.score.scorer.score_model`` loops over the ``METRICS`` registry and calls each metric
on one :class:`~latentbench.score.scorer.ScoreContext`; the expensive stages a metric reads from
(sampling, features, torch-fidelity, latent geometry, the IWAE bound) are computed once per cell and
shared. A plugin adds a metric the same way, through the ``latentbench.metrics`` entry-point group
(see README). The names are fixed by the record schema: add new ones, never rename. Each metric has a goal (minimise,
maximise, a target value, or descriptive) and, where its estimator is a bound, says so: bounds are shown,
never ranked.

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


def _fidelity_metric(kind: str, pair: str, goal: str, description: str) -> None:
    register_metric(f"{kind}_{pair}", goal=goal, description=description)(lambda ctx: ctx.fidelity(pair)[kind])


for _pair, _what in _PAIRS.items():
    _fidelity_metric("fid", _pair, "min", f"FID, {_what} (domain features)")
    _fidelity_metric("kid", _pair, "min", f"KID (mean), {_what}")
    _fidelity_metric("precision", _pair, "max", f"precision, {_what}")
    _fidelity_metric("recall", _pair, "max", f"recall, {_what}")


def _fid_of(pair: str, key: str = "fid"):
    def metric(ctx) -> float | None:
        r = ctx.fidelity(pair)
        return None if r is None else r[key]

    return metric


register_metric("fid_floor", goal="describe", description="FID between two posterior-mixture draws of n_samples "
                "each from disjoint halves of the held-out images: the noise floor of every FID in the record")(
    _fid_of("floor"))
register_metric("kid_floor", goal="describe", description="KID between the same two draws: the noise floor of every "
                "KID in the record")(_fid_of("floor", "kid"))
register_metric("fid_mu_unit", goal="describe", description="FID vs held-out data of z ~ N(mu(x), I): the seed "
                "question's third decoder input")(_fid_of("mu_unit"))
for _name, _pair, _what in (
        ("fid_swap_sub", "swap_sub", "prior samples given the posterior mixture's informative-subspace component"),
        ("fid_swap_rest", "swap_rest", "posterior-mixture samples given the prior's informative-subspace component"),
        ("fid_swap_sub_rand", "swap_sub_rand", "the fid_swap_sub intervention in a random subspace of the same k"),
        ("fid_swap_rest_rand", "swap_rest_rand", "the fid_swap_rest intervention in a random subspace of the same k")):
    register_metric(_name, goal="describe", description=f"FID vs an independent posterior-mixture draw of {_what} "
                    "(an intervention; absent when the subspace is empty or the whole latent)")(_fid_of(_pair))


def _likelihood_metric(name: str, key: str, goal: str, description: str) -> None:
    register_metric(name, goal=goal, description=description)(lambda ctx: ctx.likelihood()[key])


_likelihood_metric("nll_iw", "nll_iw", "min", "importance-weighted NLL bound on held-out data (nats; not a bound, "
                   "and not ranked, where the record's notes say nll_iw_bound: false)")
_likelihood_metric("elbo", "elbo_iw", "max", "held-out ELBO (nats)")
_likelihood_metric("rec", "rec", "min", "reconstruction term -E_q log p(x|z) (nats)")


def _latent_metric(name: str, description: str, goal: str, target: float | None = None,
                   bound: str | None = None) -> None:
    register_metric(name, goal=goal, target=target, bound=bound, description=description)(
        lambda ctx: ctx.latents().get(name))


_latent_metric("kl", "mean KL(q(z|x) || p(z)) over held-out x (nats)", "describe")
_latent_metric("marginal_kl", "KL(q(z) || p(z)) over the mixture half's posteriors = kl - mutual_info: an upper "
               "bound (nats)", "describe", bound="upper")
_latent_metric("mutual_info", "I(x; z) under q over N_A held-out posteriors: a lower bound, at most log N_A "
               "(nats; notes mi_saturated when within 0.5 of it)", "describe", bound="lower")
_latent_metric("mmd_latent", "unbiased MMD^2 between prior samples and held-out posterior samples", "min")
_latent_metric("active_units", "latent units with Cov_x E_q[z_u] > 0.01", "describe")
_latent_metric("norm_prior", "mean ||z|| / sqrt(D) of prior samples", "describe")
_latent_metric("norm_post", "mean ||z|| / sqrt(D) of aggregate-posterior samples", "describe")
_latent_metric("norm_prior_std", "std of ||z|| / sqrt(D) over prior samples", "describe")
_latent_metric("norm_post_std", "std of ||z|| / sqrt(D) over aggregate-posterior samples", "describe")
_latent_metric("hole_fraction", "share of prior samples whose log q(z) is below the 1% quantile of log q over "
               "held-out posterior samples not in the mixture (0.01 when p = q)", "target", target=0.01)
_latent_metric("spec_wide", "largest Var_q / Var_p along the top and bottom eigen-directions of Cov_q: the prior "
               "too narrow somewhere (1 = matched)", "target", target=1.0)
_latent_metric("spec_narrow", "largest Var_p / Var_q along the same directions: the prior too wide somewhere "
               "(1 = matched)", "target", target=1.0)
_latent_metric("mean_offset", "||E_q z - E_p z|| (unbiased split estimate)", "min")
_latent_metric("sub_dims", "principal directions of the posterior means holding 99% of Var_x mu(x) (at most 64; "
               "0 = collapsed latent)", "describe")
_latent_metric("sub_spread", "largest variance ratio either way between aggregate posterior and prior along the "
               "informative directions (1 = matched)", "target", target=1.0)
_latent_metric("sub_marginal_kl", "KL(q(z) || p(z)) of the projections on the informative subspace: an upper bound "
               "(nats)", "describe", bound="upper")
_latent_metric("sub_mmd", "unbiased MMD^2 between projected prior and held-out posterior samples", "min")
_latent_metric("sub_hole_fraction", "hole_fraction of the projections on the informative subspace (0.01 when "
               "p = q)", "target", target=0.01)


@register_metric("classifier_acc", goal="describe", description="held-out accuracy of the domain feature extractor")
def classifier_acc(ctx) -> float | None:
    return ctx.features().get("accuracy")
