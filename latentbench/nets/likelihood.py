"""Per-pixel likelihoods p(x | z). The decoder emits one number per pixel; ``mean`` maps it to [0, 1].

- ``bernoulli``: the decoder output is a logit; log p = -BCE (Kingma & Welling 2014, Appendix C.1).
- ``gaussian``: N(x; sigmoid(out), sigma^2) with a fixed sigma.
- ``gaussian_learned``: the same with one learned log-sigma (Dai & Wipf 2019, the learned gamma).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from latentbench.errors import UserError


class Bernoulli(nn.Module):
    def log_prob(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return -F.binary_cross_entropy_with_logits(out, x, reduction="none").flatten(1).sum(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(out)


class Gaussian(nn.Module):
    def __init__(self, sigma: float = 0.1, learn: bool = False) -> None:
        super().__init__()
        log_sigma = torch.tensor(math.log(sigma))
        if learn:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    def log_prob(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        ls = self.log_sigma.float()
        mu = torch.sigmoid(out.float())
        d = x[0].numel()
        sq = (x - mu).pow(2).flatten(1).sum(1)
        return -0.5 * sq * torch.exp(-2 * ls) - d * (ls + 0.5 * math.log(2 * math.pi))

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(out)


LIKELIHOODS = ("bernoulli", "gaussian", "gaussian_learned")


def make_likelihood(name: str, sigma: float = 0.1) -> nn.Module:
    """Build a likelihood by name (``bernoulli``, ``gaussian``, ``gaussian_learned``)."""
    if name == "bernoulli":
        return Bernoulli()
    if name == "gaussian":
        return Gaussian(sigma, learn=False)
    if name == "gaussian_learned":
        return Gaussian(sigma, learn=True)
    raise UserError(f"unknown likelihood {name!r}; known: {', '.join(LIKELIHOODS)}")
