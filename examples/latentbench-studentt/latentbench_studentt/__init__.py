"""A heavy-tailed prior as a latentbench plugin: independent Student-t marginals with learned scales.

p(z) = prod_j t_nu(z_j / s_j) / s_j, the Student-t prior family studied for VAEs by Takahashi et al.
(2018), "Student-t Variational Autoencoder for Robust Density Estimation" (Eq. 4 gives the density).
Heavy tails put prior mass where a Gaussian's soap bubble is thin. The KL term is estimated by Monte
Carlo, as for every prior without a closed form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from latentbench.priors.base import Prior
from latentbench.remedies import Remedy


class StudentTPrior(Prior):
    def __init__(self, latent, df: float = 3.0) -> None:
        super().__init__(latent)
        self.df = df
        self.log_scale = nn.Parameter(torch.zeros(latent.dim))

    def _dist(self) -> torch.distributions.StudentT:
        return torch.distributions.StudentT(self.df, torch.zeros_like(self.log_scale), self.log_scale.exp())

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self._dist().log_prob(z.flatten(1).float()).sum(1)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        # t = N / sqrt(Chi2(df) / df), drawn from the generator for reproducibility
        d = self.latent.dim
        normal = torch.randn(n, d, generator=generator)
        chi2 = 2.0 * torch._standard_gamma(torch.full((n, d), self.df / 2.0), generator=generator)
        t = normal / torch.sqrt(chi2 / self.df)
        return (t.to(self.log_scale.device) * self.log_scale.exp()).reshape(n, *self.latent.shape)


class StudentTRemedy(Remedy):
    """Learned-scale Student-t prior, heavy tails (Takahashi et al. 2018) [plugin]."""

    name = "studentt_prior"

    @dataclass(frozen=True)
    class Params:
        df: float = 3.0  # degrees of freedom nu; a spec's `df = 5` arrives here as 5.0

    def build_prior(self, latent, image_shape):
        return StudentTPrior(latent, self.params.df)

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {"df": trial.suggest_float("df", 1.0, 30.0, log=True)}
