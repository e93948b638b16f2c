"""A normalizing-flow prior trained jointly with the VAE.

p(z) = N(f(z); 0, I) |det df/dz| with f a stack of affine couplings: RealNVP (Dinh et al. 2017,
Eqs. 3, 7-8) for flat latents, Glow-style channel-wise couplings (Kingma & Dhariwal 2018, Sec. 3.3)
for spatial ones; a learned flow prior for VAEs as in Xu et al. (2019), "On the Necessity and
Effectiveness of Learning the Prior of Variational Auto-Encoder". The KL is the Monte Carlo
estimate. Tuned: number of coupling layers and their width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from latentbench.priors.flow import FlowPrior as _Flow
from latentbench.remedies import Remedy, register_remedy


@register_remedy
class FlowPriorRemedy(Remedy):
    """Coupling-flow prior trained jointly (RealNVP / Glow-style; Dinh et al. 2017; Xu et al. 2019)."""

    name = "flow_prior"

    @dataclass(frozen=True)
    class Params:
        n_layers: int = 4
        hidden: int = 128

    def build_prior(self, latent, image_shape):
        return _Flow(latent, self.params.n_layers, self.params.hidden)

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            "n_layers": trial.suggest_int("n_layers", 2, 8),
            "hidden": trial.suggest_categorical("hidden", [64, 128, 256]),
        }
