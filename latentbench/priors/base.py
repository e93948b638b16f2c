"""The Prior contract and the Gaussian-mixture arithmetic several priors and metrics share.

A prior is an ``nn.Module`` with ``log_prob(z) -> (B,)`` and ``sample(n, generator) -> (n, *shape)``,
working on the flattened view of flat and spatial latents alike. An ex-post prior (what a remedy's
``build_expost`` returns) also has ``fit(codes)``: it is fitted on aggregate-posterior codes after
training and saved with the checkpoint, so a cell can be re-scored from disk.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal, get_args

import torch
from torch import nn

from latentbench.errors import UserError
from latentbench.latent import LatentShape

LOG_2PI = math.log(2 * math.pi)
# Largest number of (batch x component x dim) elements handled by the direct formula; above it the
# mixture log-density goes through matrix products, which keep memory at O(B*K + K*D).
DIRECT_LIMIT = 1 << 18

#: The codes an ex-post prior is fitted on: one draw z ~ q(z|x) per image (``"sample"``, the aggregate
#: posterior itself, the default) or the posterior means (``"mean"``, whose unused dimensions get almost
#: no variance, so that the density metrics measure that variance: nll_iw 2292 against 95 at latent 32
#: on digits for the ex-post GMM).
ExpostCodes = Literal["mean", "sample"]


def check_codes(codes: object) -> ExpostCodes:
    """``codes`` if it is one of :data:`ExpostCodes`, else a one-line :class:`UserError`."""
    if codes not in get_args(ExpostCodes):
        raise UserError(f"codes must be 'mean' or 'sample', got {codes!r}")
    return codes  # type: ignore[return-value]


class Prior(nn.Module):
    """Base class: subclasses implement ``log_prob`` and ``sample`` (and ``fit`` if ex-post)."""

    #: False for a prior whose ``log_prob`` has no tractable value (it raises NotImplementedError);
    #: density metrics of such a prior are recorded as absent.
    has_log_prob: ClassVar[bool] = True
    #: True for a prior whose law is exactly one Gaussian (its moments say everything about it); the
    #: scorer's Gaussian moment-match metrics are defined only for such priors.
    gaussian: ClassVar[bool] = False

    def __init__(self, latent: LatentShape) -> None:
        super().__init__()
        self.latent = latent
        # A non-persistent anchor so that every prior knows its device, even one with no parameters.
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    @property
    def dim(self) -> int:
        return self.latent.dim

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def analytic_kl(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor | None:
        """KL(q(z|x) || p(z)) in closed form, or None when only a Monte Carlo estimate exists."""
        return None

    def attach(self, model: nn.Module) -> None:
        """Called once by the VAE that owns this prior (the VampPrior needs its encoder)."""

    def fit(self, codes: torch.Tensor, generator: torch.Generator | None = None, quiet: bool = True) -> None:
        raise TypeError(f"{type(self).__name__} is not an ex-post prior")

    def fit_posterior(self, mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None,
                      quiet: bool = True, codes: ExpostCodes = "sample") -> None:
        """Fit on the training posteriors q(z|x) = N(mu, diag exp(logvar)), shapes (N, *latent).

        The default fits ``fit(codes)`` on one draw z ~ q(z|x) per image (``codes = "sample"``, noise
        from ``generator``) or on the posterior means (``codes = "mean"``). Priors that use the
        posteriors themselves (fresh draws every epoch, the means' informative subspace) override it.
        """
        codes = check_codes(codes)
        if codes == "sample":
            eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype).to(mu.device)
            mu = mu + torch.exp(0.5 * logvar) * eps
        self.fit(mu, generator=generator, quiet=quiet)

    def score_notes(self) -> dict[str, Any]:
        """Notes the scorer adds to the record (e.g. how a normaliser was estimated); none by default."""
        return {}

    def _device(self) -> torch.device:
        return self._anchor.device

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        # Fitted priors size their buffers at fit time (e.g. the number of GMM components), so a
        # fresh instance adopts the saved shapes before loading.
        for name, buf in list(self._buffers.items()):
            if name in self._non_persistent_buffers_set:
                continue
            key = prefix + name
            if key in state_dict and (buf is None or buf.shape != state_dict[key].shape):
                self._buffers[name] = torch.empty_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def diag_gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over all non-batch dims -> (B,)."""
    return -0.5 * ((z - mu).pow(2) * torch.exp(-logvar) + logvar + LOG_2PI).flatten(1).sum(1)


def mixture_log_prob(
    z: torch.Tensor, means: torch.Tensor, logvars: torch.Tensor, log_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """log sum_k w_k N(z; m_k, diag v_k) for flat z (B, D), means/logvars (K, D) -> (B,).

    Uniform weights when ``log_weights`` is None. Small problems use the direct formula; large ones
    expand the square into matrix products so that no (B, K, D) tensor is built.
    """
    b, d = z.shape
    k = means.shape[0]
    if log_weights is None:
        log_weights = torch.full((k,), -math.log(k), device=z.device, dtype=z.dtype)
    if b * k * d <= DIRECT_LIMIT:
        diff = z[:, None, :] - means[None]
        comp = -0.5 * (diff.pow(2) * torch.exp(-logvars)[None] + logvars[None] + LOG_2PI).sum(-1)
    else:
        prec = torch.exp(-logvars)  # (K, D)
        const = (means.pow(2) * prec).sum(1) + logvars.sum(1) + d * LOG_2PI  # (K,)
        comp = -0.5 * (z.pow(2) @ prec.T - 2 * z @ (means * prec).T + const[None])
    return torch.logsumexp(comp + log_weights[None], dim=1)


def sample_mixture(
    n: int,
    means: torch.Tensor,
    logvars: torch.Tensor,
    weights: torch.Tensor | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Draw n flat samples from a diagonal Gaussian mixture (uniform weights when None)."""
    k = means.shape[0]
    probs = torch.full((k,), 1.0 / k) if weights is None else weights.detach().float().cpu()
    idx = torch.multinomial(probs, n, replacement=True, generator=generator).to(means.device)
    eps = torch.randn(n, means.shape[1], generator=generator).to(means.device, means.dtype)
    return means[idx] + torch.exp(0.5 * logvars[idx]) * eps


def randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Standard normal noise drawn on the CPU from ``generator`` (reproducible across devices)."""
    return torch.randn(shape, generator=generator).to(device)
