"""The fixed metric names (see the record schema): what each means and which direction is better."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricInfo:
    description: str
    lower_is_better: bool = True


_pairs = {
    "prior": "prior samples vs held-out data",
    "post": "posterior-mixture samples vs held-out data",
    "prior_post": "prior samples vs posterior-mixture samples",
}

METRIC_INFO: dict[str, MetricInfo] = {}
for _suffix, _what in _pairs.items():
    METRIC_INFO[f"fid_{_suffix}"] = MetricInfo(f"FID, {_what} (domain features)")
    METRIC_INFO[f"kid_{_suffix}"] = MetricInfo(f"KID (mean), {_what}")
    METRIC_INFO[f"precision_{_suffix}"] = MetricInfo(f"precision, {_what}", lower_is_better=False)
    METRIC_INFO[f"recall_{_suffix}"] = MetricInfo(f"recall, {_what}", lower_is_better=False)
METRIC_INFO.update(
    {
        "nll_iw": MetricInfo("importance-weighted NLL bound on held-out data (nats)"),
        "elbo": MetricInfo("held-out ELBO (nats)", lower_is_better=False),
        "rec": MetricInfo("reconstruction term -E_q log p(x|z) (nats)"),
        "kl": MetricInfo("mean KL(q(z|x) || p(z)) (nats)", lower_is_better=False),
        "marginal_kl": MetricInfo("KL(q(z) || p(z)), aggregate posterior vs prior (nats)"),
        "mutual_info": MetricInfo("I(x; z) under q (nats)", lower_is_better=False),
        "mmd_latent": MetricInfo("unbiased MMD^2 between prior and aggregate-posterior samples"),
        "active_units": MetricInfo("latent units with Cov_x E_q[z_u] > 0.01", lower_is_better=False),
        "norm_prior": MetricInfo("mean ||z|| / sqrt(D) of prior samples", lower_is_better=False),
        "norm_post": MetricInfo("mean ||z|| / sqrt(D) of aggregate-posterior samples", lower_is_better=False),
        "hole_fraction": MetricInfo("share of prior samples below the 1% quantile of log q(z)"),
        "classifier_acc": MetricInfo("held-out accuracy of the domain feature extractor", lower_is_better=False),
    }
)
