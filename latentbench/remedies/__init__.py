"""Remedies: named recipes of prior + beta + ex-post fit + an Optuna search space.

Write one by subclassing :class:`Remedy` and registering it (``@REMEDIES.register("name")`` in-process,
or the ``latentbench.remedies`` entry-point group from a package). ``params`` holds the remedy's own
hyperparameters with their defaults; ``search_space(trial)`` returns values for some of them.

A remedy whose objective is not the beta-ELBO overrides ``loss(model, x, beta)``; one that trains a
network of its own beside the VAE (the adversarial autoencoder's discriminator) builds it in
``setup(model)``, returns it from ``aux_modules()`` and updates it in ``aux_step`` with the optimizer
the training loop gives it (that network and its optimizer are saved in the checkpoint). A remedy
with a deterministic encoder (z = mu(x), no posterior noise) sets ``deterministic = True``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from latentbench.errors import UserError
from latentbench.latent import LatentShape
from latentbench.priors.base import Prior
from latentbench.priors.standard_normal import StandardNormal
from latentbench.registry import REMEDIES

if TYPE_CHECKING:
    import torch
    from torch import nn


class Remedy:
    """Base recipe: a plain VAE with an N(0, I) prior and beta = 1."""

    name: ClassVar[str] = "remedy"
    description: ClassVar[str] = ""
    #: The remedy's own hyperparameters and their defaults.
    params: ClassVar[dict[str, Any]] = {}
    #: True for a deterministic encoder: the VAE trains and encodes with z = mu(x), and the scorer
    #: takes the codes mu(x) as the aggregate posterior's samples.
    deterministic: ClassVar[bool] = False

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

    def setup(self, model: nn.Module) -> None:
        """Called once by ``build_model`` with the untrained VAE; a remedy that owns networks builds them
        here (before any checkpoint weights are loaded into them)."""

    def loss(self, model: nn.Module, x: torch.Tensor, beta: float | torch.Tensor) -> torch.Tensor:
        """The training loss of one batch, a scalar; by default the negative beta-ELBO ``model.loss``.
        ``beta`` is the remedy's beta times the KL warm-up factor of the epoch."""
        return model.loss(x, beta)

    def aux_modules(self) -> nn.Module | None:
        """Networks trained beside the VAE with an optimizer of their own (None: there are none)."""
        return None

    def aux_step(self, model: nn.Module, x: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """One update of ``aux_modules()`` on the batch ``x``, after the VAE's step on it."""

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
