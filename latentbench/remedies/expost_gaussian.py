"""Ex-post Gaussian: the K = 1 case of ex-post density estimation (Ghosh et al. 2020, "From Variational
to Deterministic Autoencoders", Sec. 4), the baseline any ex-post prior has to beat.

Train a plain VAE (N(0, I) prior, Kingma & Welling 2014 Eq. 3), then replace N(0, I) by one Gaussian
whose mean and covariance are the aggregate posterior's: p(z) = N(z; E_q z, Cov_q z). Everything an
ex-post mixture, flow or diffusion gains over this prior comes from modelling q(z) beyond its first two
moments. Above ``max_dim`` dimensions the covariance is full in the principal subspace of the posterior
means that clears the Marchenko-Pastur noise edge and isotropic outside it (probabilistic PCA, Tipping &
Bishop 1999); see ``latentbench.priors.gaussian``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from latentbench.priors.base import ExpostCodes
from latentbench.priors.gaussian import ExpostGaussianPrior
from latentbench.remedies import Remedy, register_remedy


@register_remedy
class ExpostGaussianRemedy(Remedy):
    """Plain VAE + one Gaussian moment-matched to the aggregate posterior (Ghosh et al. 2020, K = 1)."""

    name = "expost_gaussian"

    @dataclass(frozen=True)
    class Params:
        codes: ExpostCodes = "sample"
        max_dim: int = 128

    def build_expost(self, latent):
        return ExpostGaussianPrior(latent, max_dim=self.params.max_dim)

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            "max_dim": trial.suggest_categorical("max_dim", [16, 32, 64, 128, 256]),
            "codes": trial.suggest_categorical("codes", ["mean", "sample"]),
        }
