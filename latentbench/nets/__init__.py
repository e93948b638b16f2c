"""Encoder/decoder families. A family is ``build(image_shape, latent, **params) -> (encoder, decoder)``.

An encoder maps images (B, C, H, W) to ``(mu, logvar)``, each (B, *latent.shape); a decoder maps
z (B, *latent.shape) to per-pixel likelihood parameters (B, C, H, W).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from latentbench.errors import UserError
from latentbench.latent import LatentShape
from latentbench.registry import NETS


def build_nets(
    arch: str, image_shape: tuple[int, int, int], latent: LatentShape, **params: Any
) -> tuple[nn.Module, nn.Module]:
    """Build the encoder and decoder of the registered family ``arch``."""
    family = NETS.get(arch)
    try:
        return family(image_shape, latent, **params)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise UserError(f"net {arch!r}: {exc}; check the [net] settings") from None
        raise
