"""Remedies: named recipes of prior + beta + ex-post fit + an Optuna search space.

Write one by subclassing :class:`Remedy` and registering it (``@REMEDIES.register("name")`` in-process,
or the ``latentbench.remedies`` entry-point group from a package). ``params`` holds the remedy's own
hyperparameters with their defaults; ``search_space(trial)`` returns values for some of them.
"""

from __future__ import annotations

from typing import Any, ClassVar

from latentbench.errors import UserError
from latentbench.latent import LatentShape
from latentbench.priors.base import Prior
from latentbench.priors.standard_normal import StandardNormal
from latentbench.registry import REMEDIES


class Remedy:
    """Base recipe: a plain VAE with an N(0, I) prior and beta = 1."""

    name: ClassVar[str] = "remedy"
    description: ClassVar[str] = ""
    #: The remedy's own hyperparameters and their defaults.
    params: ClassVar[dict[str, Any]] = {}

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            known = ", ".join(sorted(self.params)) or "none"
            raise UserError(
                f"remedy {self.name!r} has no parameter {unknown[0]!r}; its parameters: {known}"
            )
        self.p: dict[str, Any] = {**self.params, **params}

    @property
    def beta(self) -> float:
        return float(self.p.get("beta", 1.0))

    def build_prior(self, latent: LatentShape, image_shape: tuple[int, int, int]) -> Prior:
        """The prior the VAE is trained with."""
        return StandardNormal(latent)

    def build_expost(self, latent: LatentShape) -> Prior | None:
        """An ex-post prior fitted on aggregate-posterior codes after training, or None."""
        return None

    @property
    def expost_codes(self) -> str:
        """Codes for the ex-post fit: ``mean`` (posterior means) or ``sample`` (z ~ q(z|x))."""
        return str(self.p.get("codes", "mean"))

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        """Optuna suggestions for this remedy's own parameters (none by default)."""
        return {}


def create_remedy(name: str, **params: Any) -> Remedy:
    """Instantiate a registered remedy with parameters over its defaults (timm's ``create_model``)."""
    cls = REMEDIES.get(name)
    return cls(**params)


def list_remedies(pattern: str | None = None) -> list[str]:
    """Registered remedy names, optionally filtered by an fnmatch pattern like ``"*prior*"``."""
    return REMEDIES.names(pattern)
