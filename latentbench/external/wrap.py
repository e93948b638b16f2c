"""``wrap``: any encoder and decoder as a VAE the scorer accepts.

The contract: ``encoder(x) -> (mu, logvar)``, each ``(B, *latent_shape)`` (flat ``(B, D)`` or spatial
``(B, C, H, W)``), the diagonal Gaussian q(z|x) = N(mu, diag exp(logvar)) of Kingma & Welling (2014);
``decoder(z) -> (B, C, H, W)``: image means in [0, 1] (``output="means"``) or logits whose sigmoid is
the mean (``output="logits"``, what latentbench's own decoders emit). The latent shape is read from
the encoder's output the first time the model sees images (:func:`check_model`); the prior defaults to
N(0, I). A decoder whose outputs contradict the declared convention is warned about: a sigmoid image
passed through a second sigmoid scores fid_post 233 instead of 2.8.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn

from latentbench.errors import UserError
from latentbench.latent import LatentShape
from latentbench.model import VAE
from latentbench.nets.likelihood import make_likelihood
from latentbench.priors.base import Prior
from latentbench.priors.standard_normal import StandardNormal

Output = Literal["means", "logits"]
OUTPUTS = ("means", "logits")


class ConventionWarning(UserWarning):
    """The decoder's outputs contradict the declared ``output`` convention."""


class GaussianOfMeans(nn.Module):
    """N(x; out, sigma^2) per pixel, for a decoder that returns the mean image itself."""

    log_sigma: torch.Tensor

    def __init__(self, sigma: float = 0.05) -> None:
        super().__init__()
        self.register_buffer("log_sigma", torch.tensor(math.log(sigma)))

    def log_prob(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        ls = self.log_sigma.float()
        sq = (x - out.float()).pow(2).flatten(1).sum(1)
        return -0.5 * sq * torch.exp(-2 * ls) - x[0].numel() * (ls + 0.5 * math.log(2 * math.pi))

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return out.clamp(0, 1)


class BernoulliOfMeans(nn.Module):
    """Bernoulli(x; out) per pixel, for a decoder that returns probabilities."""

    def log_prob(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        p = out.float().clamp(1e-6, 1 - 1e-6)
        return (x * p.log() + (1 - x) * (-p).log1p()).flatten(1).sum(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return out.clamp(0, 1)


def make_output_likelihood(likelihood: str | nn.Module, output: str, sigma: float) -> nn.Module:
    """The per-pixel likelihood for a decoder of the given output convention."""
    if output not in OUTPUTS:
        raise UserError(f"output must be 'means' (decoder returns images in [0, 1]) or 'logits', got {output!r}")
    if isinstance(likelihood, nn.Module):
        if not (hasattr(likelihood, "log_prob") and hasattr(likelihood, "mean")):
            raise UserError("a likelihood module needs log_prob(x, out) and mean(out); or pass 'gaussian' or "
                            "'bernoulli'")
        return likelihood
    if output == "logits":
        return make_likelihood(likelihood, sigma)
    if likelihood == "gaussian":
        return GaussianOfMeans(sigma)
    if likelihood == "bernoulli":
        return BernoulliOfMeans()
    raise UserError(f"unknown likelihood {likelihood!r} for a decoder of means; give 'gaussian' or 'bernoulli'")


class _Call(nn.Module):
    """Holds a user's module (or plain callable) under ``module``, so its weights are the model's."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        super().__init__()
        if isinstance(fn, nn.Module):
            self.module = fn
        else:
            self.fn = fn

    def call(self, x: torch.Tensor) -> Any:
        return self.module(x) if hasattr(self, "module") else self.fn(x)


class EncoderAdapter(_Call):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.call(x)
        return out[0], out[1]


class DecoderAdapter(_Call):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.call(z)


def latent_of(shape: tuple[int, ...]) -> LatentShape:
    """The latent shape of per-sample encoder outputs shaped ``(D,)`` or ``(C, H, W)``."""
    if len(shape) == 1:
        return LatentShape((shape[0],))
    if len(shape) == 3:
        c, h, w = shape
        return LatentShape((h, w, c))
    raise UserError(f"the encoder returns mu shaped (B, {', '.join(map(str, shape))}); return (B, D) or "
                    "(B, C, H, W)")


class WrappedVAE(VAE):
    """A VAE built from a user's encoder and decoder (see :func:`wrap`)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, *, likelihood: nn.Module, output: str,
                 prior: Prior | None = None, latent: LatentShape | None = None, source: str = "wrap") -> None:
        shape = latent or (prior.latent if prior is not None else LatentShape((1,)))
        super().__init__(encoder, decoder, prior or StandardNormal(shape), likelihood, shape)
        self.deterministic = False
        self.output = output
        self.source = source
        self.bound = latent is not None or prior is not None

    @property
    def device(self) -> torch.device:
        """The device of the model's first weight or buffer."""
        for t in [*self.parameters(), *self.buffers()]:
            return t.device
        return torch.device("cpu")

    def bind(self, latent: LatentShape) -> None:
        """Fix the latent shape read from the encoder (an N(0, I) prior of that shape unless one was given)."""
        if self.bound:
            if latent != self.latent:
                raise UserError(f"the encoder returns latents of shape {latent} but the prior is over {self.latent}; "
                                "give a prior of the encoder's latent shape")
            return
        dev = self.device
        self.latent = latent
        self.prior = StandardNormal(latent).to(dev)
        self.prior.attach(self)
        self.bound = True


def wrap(encoder: Callable[..., Any], decoder: Callable[..., Any], *,
         likelihood: str | nn.Module = "gaussian", prior: Prior | None = None, output: Output = "means",
         sigma: float = 0.05, latent: str | None = None) -> WrappedVAE:
    """A model the scorer accepts, from any PyTorch encoder and decoder.

    ``encoder(x) -> (mu, logvar)``, each ``(B, *latent_shape)``; ``decoder(z) -> (B, C, H, W)``, image
    means in [0, 1] (``output="means"``) or logits (``output="logits"``). ``likelihood`` is
    ``"gaussian"`` (fixed ``sigma``), ``"bernoulli"`` or a module with ``log_prob(x, out)`` and
    ``mean(out)``; it enters only nll_iw and rec. ``prior`` defaults to N(0, I) over the encoder's
    latent shape, read from its output on the first images it sees (or given as ``latent``, e.g.
    ``"8x8x16"``)."""
    for name, fn in (("encoder", encoder), ("decoder", decoder)):
        if not callable(fn):
            raise UserError(f"the {name} is a {type(fn).__name__}, not a module or function; pass the "
                            f"{name} nn.Module")
    lik = make_output_likelihood(likelihood, output, sigma)
    if prior is not None and not isinstance(prior, Prior):
        raise UserError(f"prior must be a latentbench Prior (log_prob and sample), got {type(prior).__name__}")
    shape = LatentShape.parse(latent) if latent is not None else None
    return WrappedVAE(EncoderAdapter(encoder), DecoderAdapter(decoder), likelihood=lik, output=output,
                      prior=prior, latent=shape)


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor shaped {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}"


@torch.no_grad()
def check_model(model: VAE, images: torch.Tensor, *, what: str = "the model") -> list[str]:
    """Run the model on a few of the dataset's images and check the contract: the encoder returns two
    finite float tensors of one shape (B, *latent), the decoder images of the dataset's shape. Fixes a
    wrapped model's latent shape. Returns the warnings about the decoder's output convention (also
    issued as :class:`ConventionWarning`). A broken contract is a :class:`UserError`."""
    model.eval()
    x = images[:64].to(model.device)
    shape = tuple(images.shape[1:])
    try:
        out = model.encoder(x) if not isinstance(model.encoder, EncoderAdapter) else model.encoder.call(x)
    except Exception as exc:  # noqa: BLE001 - the user's code
        raise UserError(f"{what}'s encoder failed on a batch of images shaped {tuple(x.shape)} "
                        f"({type(exc).__name__}: {_first(exc)}); it must take (B, {', '.join(map(str, shape))}) "
                        "images in [0, 1]") from None
    if not (isinstance(out, (tuple, list)) and len(out) == 2
            and all(isinstance(t, torch.Tensor) for t in out)):
        raise UserError(f"{what}'s encoder returned {_describe(out)}; it must return (mu, logvar), two tensors "
                        "shaped (B, *latent)")
    mu, logvar = out
    if mu.shape != logvar.shape or len(mu) != len(x):
        raise UserError(f"{what}'s encoder returned mu {tuple(mu.shape)} and logvar {tuple(logvar.shape)} for "
                        f"{len(x)} images; both must be shaped (B, *latent) with B = {len(x)}")
    if not (mu.is_floating_point() and logvar.is_floating_point()):
        raise UserError(f"{what}'s encoder returned {mu.dtype} / {logvar.dtype} tensors; return float tensors")
    for name, t in (("mu", mu), ("logvar", logvar)):
        if not torch.isfinite(t).all():
            raise UserError(f"{what}'s encoder returned non-finite {name} (NaN or inf) on the dataset's images; "
                            "check its weights (--weights) and that it expects images in [0, 1]")
    latent = latent_of(tuple(mu.shape[1:]))
    if isinstance(model, WrappedVAE):
        model.bind(latent)
    elif latent != model.latent:
        raise UserError(f"{what}'s encoder returns latents {latent}, its prior is over {model.latent}")
    try:
        dec = model.decode(mu)
    except Exception as exc:  # noqa: BLE001 - the user's code
        raise UserError(f"{what}'s decoder failed on latents shaped {tuple(mu.shape)} "
                        f"({type(exc).__name__}: {_first(exc)}); it must take z shaped like the encoder's mu") from None
    if not isinstance(dec, torch.Tensor) or tuple(dec.shape) != (len(x), *shape):
        got = _describe(dec)
        raise UserError(f"{what}'s decoder returned {got}, but the dataset's images are "
                        f"(B, {', '.join(map(str, shape))}); decode to the dataset's image shape, or pick the "
                        "dataset the model was trained on")
    if not dec.is_floating_point() or not torch.isfinite(dec).all():
        raise UserError(f"{what}'s decoder returned non-finite or non-float values ({dec.dtype}); check its "
                        "weights")
    return convention_warnings(dec, getattr(model, "output", "logits"), what)


def convention_warnings(dec: torch.Tensor, output: str, what: str = "the model") -> list[str]:
    """What the decoder's outputs say about its convention, when they contradict ``output``."""
    lo, hi = float(dec.min()), float(dec.max())
    found = []
    if output == "means" and (lo < -1e-3 or hi > 1 + 1e-3):
        found.append(f"{what}'s decoder is declared to return means in [0, 1], but its outputs span "
                     f"[{lo:.3g}, {hi:.3g}]: they look like logits; pass output='logits' (CLI: --output logits), "
                     "or images are clipped to [0, 1]")
    elif output == "logits" and lo > 0 and hi < 1:
        found.append(f"{what}'s decoder is declared to return logits, but every output lies in "
                     f"[{lo:.3g}, {hi:.3g}] inside (0, 1), the look of sigmoid images; pass output='means' "
                     "(CLI: --output means), or they go through a second sigmoid")
    for text in found:
        warnings.warn(text, ConventionWarning, stacklevel=3)
    return found


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no message"
