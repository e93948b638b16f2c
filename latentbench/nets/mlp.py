"""Fully connected encoder/decoder. Spatial latents are flattened in and reshaped out."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from latentbench.latent import LatentShape


def mlp(sizes: Sequence[int], activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Linear layers of the given widths with ``activation`` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    def __init__(self, image_shape: tuple[int, ...], latent: LatentShape, hidden: Sequence[int]):
        super().__init__()
        self.latent_shape = latent.shape
        self.net = mlp([math.prod(image_shape), *hidden, 2 * latent.dim])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.net(x.flatten(1)).chunk(2, dim=1)
        return mu.reshape(-1, *self.latent_shape), logvar.reshape(-1, *self.latent_shape)


class MLPDecoder(nn.Module):
    def __init__(self, image_shape: tuple[int, ...], latent: LatentShape, hidden: Sequence[int]):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.net = mlp([latent.dim, *reversed(hidden), math.prod(image_shape)])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.flatten(1)).reshape(-1, *self.image_shape)


def build(
    image_shape: tuple[int, int, int], latent: LatentShape, hidden: Sequence[int] = (256, 256)
) -> tuple[nn.Module, nn.Module]:
    """MLP ``pixels -> hidden... -> 2D`` and back (default widths 256, 256)."""
    hidden = [int(h) for h in hidden]
    return MLPEncoder(image_shape, latent, hidden), MLPDecoder(image_shape, latent, hidden)
