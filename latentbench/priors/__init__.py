"""Priors p(z). One file per prior; the contract is :class:`latentbench.priors.base.Prior`."""

from latentbench.priors.base import Prior, diag_gaussian_log_prob, mixture_log_prob
from latentbench.priors.standard_normal import StandardNormal

__all__ = ["Prior", "StandardNormal", "diag_gaussian_log_prob", "mixture_log_prob"]
