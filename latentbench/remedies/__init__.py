"""Remedies: named recipes of prior + beta + ex-post fit + an Optuna search space.

Write one by subclassing :class:`Remedy`: a docstring whose first line is what ``latentbench list
remedies`` shows, a ``name``, its own hyperparameters as a dataclass ``Params`` (types and defaults,
read as ``self.params.beta``; see :mod:`latentbench.remedies.params`), and ``search_space(trial)``
returning Optuna suggestions for some of them. A built-in registers beside its definition with
``@register_remedy`` (every module of this package is imported on the first lookup of a remedy name, not
by ``import latentbench``); a third-party remedy arrives through the ``latentbench.remedies`` entry-point
group, or ``@REMEDIES.register("name")`` in-process.

A remedy whose objective is not the beta-ELBO overrides ``loss(model, x, beta)``; one that trains a
network of its own beside the VAE (the adversarial autoencoder's discriminator) builds it in
``setup(model)``, returns it from ``aux_modules()`` and updates it in ``aux_step`` with the optimizer
the training loop gives it (that network and its optimizer are saved in the checkpoint). A remedy
with a deterministic encoder (z = mu(x), no posterior noise) sets ``deterministic = True``.

Remedies written against the dict API (``params = {"df": 3.0}`` read as ``self.p["df"]``) keep working:
the dict becomes their ``Params`` (values taken as given, as that API did), and ``self.p`` is a read-only
mapping of the parameters for every remedy.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from latentbench.latent import LatentShape
from latentbench.priors.base import ExpostCodes, Prior
from latentbench.priors.standard_normal import StandardNormal
from latentbench.registry import REMEDIES
from latentbench.remedies.params import ParamView, make_params, params_from_dict

if TYPE_CHECKING:
    import torch
    from torch import nn

R = TypeVar("R", bound="type[Remedy]")


@dataclasses.dataclass(frozen=True)
class NoParams:
    """A remedy without parameters of its own."""


class Remedy:
    """Base recipe: a plain VAE with an N(0, I) prior and beta = 1."""

    name: ClassVar[str] = "remedy"
    #: The remedy's own hyperparameters: a dataclass whose fields have types and defaults.
    Params: ClassVar[type] = NoParams
    #: True for a deterministic encoder: the VAE trains and encodes with z = mu(x), and the scorer
    #: takes the codes mu(x) as the aggregate posterior's samples.
    deterministic: ClassVar[bool] = False
    #: This remedy's parameters, an instance of ``Params`` (checked and coerced at creation).
    params: Any
    #: The same as a read-only mapping, ``p["beta"]`` (the dict API).
    p: Mapping[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = cls.__dict__.get("params")
        if isinstance(declared, Mapping):  # the dict API: params = {"df": 3.0}
            cls.Params = params_from_dict(cls.__name__, declared)
        if not (isinstance(cls.Params, type) and dataclasses.is_dataclass(cls.Params)):
            raise TypeError(f"{cls.__qualname__}.Params must be a dataclass of the remedy's parameters "
                            "(@dataclass class Params: beta: float = 4.0)")

    def __init__(self, **params: Any) -> None:
        self.params = make_params(self.name, self.Params, params)
        self.p = ParamView(self.params)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every parameter of this remedy with its default value."""
        return dict(ParamView(cls.Params()))

    @property
    def beta(self) -> float:
        return float(getattr(self.params, "beta", 1.0))

    def build_prior(self, latent: LatentShape, image_shape: tuple[int, int, int]) -> Prior:
        """The prior the VAE is trained with."""
        return StandardNormal(latent)

    def build_expost(self, latent: LatentShape) -> Prior | None:
        """An ex-post prior fitted on aggregate-posterior codes after training, or None."""
        return None

    @property
    def expost_codes(self) -> ExpostCodes:
        """Codes for the ex-post fit: the ``codes`` parameter where the remedy has one, else one
        z ~ q(z|x) per image (``"sample"``), or the means for a deterministic encoder, whose q(z|x) is
        the point mass at mu(x)."""
        codes = getattr(self.params, "codes", None)
        if codes is None:
            return "mean" if self.deterministic else "sample"
        return codes

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


def register_remedy(cls: R) -> R:
    """Class decorator: register a remedy under its ``name`` (beside its definition)."""
    if "name" not in cls.__dict__:
        raise TypeError(f"{cls.__qualname__} needs a name of its own to be registered")
    REMEDIES.register(cls.name, cls)
    return cls


def import_builtins() -> None:
    """Import every module of this package, whose remedies register themselves (the registry calls this
    on the first lookup of a remedy name)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def create_remedy(name: str, **params: Any) -> Remedy:
    """Instantiate a registered remedy with parameters over its defaults (timm's ``create_model``)."""
    cls = REMEDIES.get(name)
    return cls(**params)


def list_remedies(pattern: str | None = None) -> list[str]:
    """Registered remedy names, optionally filtered by an fnmatch pattern like ``"*prior*"``."""
    return REMEDIES.names(pattern)
