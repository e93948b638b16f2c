"""DCGAN-style conv encoder/decoder for any image size, with flat or spatial latents.

Images are resized (bilinear) to a working size that halves cleanly down to the latent grid:
``S = 4 * 2**k`` for flat latents (the last feature map is 4x4, then a linear head), and
``S = H_z * 2**k`` for spatial latents, which stay conv feature maps end to end, like the seed's
8x8x1024 model (28x28 MNIST works at 32x32 with two stride-2 stages). The decoder mirrors the
encoder and resizes back to the image size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from latentbench.latent import LatentShape


def _stages(image_hw: tuple[int, int], target_hw: tuple[int, int]) -> int:
    ratio = max(image_hw[0] / target_hw[0], image_hw[1] / target_hw[1])
    return max(0, math.ceil(math.log2(ratio) - 1e-9)) if ratio > 1 else 0


def _widths(base: int, k: int, cap: int) -> list[int]:
    return [min(base * 2**i, cap) for i in range(k + 1)]


class ConvEncoder(nn.Module):
    def __init__(self, image_shape, latent: LatentShape, channels: int, max_channels: int):
        super().__init__()
        c, h, w = image_shape
        self.latent = latent
        grid = latent.shape[1:] if latent.spatial else (4, 4)
        self.k = _stages((h, w), grid)
        self.work = (grid[0] * 2**self.k, grid[1] * 2**self.k)
        ws = _widths(channels, self.k, max_channels)
        layers: list[nn.Module] = [nn.Conv2d(c, ws[0], 3, padding=1), nn.SiLU()]
        for a, b in zip(ws[:-1], ws[1:]):
            layers += [nn.Conv2d(a, b, 4, stride=2, padding=1), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        if latent.spatial:
            self.head = nn.Sequential(
                nn.Conv2d(ws[-1], ws[-1], 3, padding=1), nn.SiLU(), nn.Conv2d(ws[-1], 2 * latent.shape[0], 1)
            )
        else:
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(ws[-1] * grid[0] * grid[1], 2 * latent.dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if tuple(x.shape[-2:]) != self.work:
            x = F.interpolate(x, size=self.work, mode="bilinear", align_corners=False)
        mu, logvar = self.head(self.body(x)).chunk(2, dim=1)
        return mu.reshape(-1, *self.latent.shape), logvar.reshape(-1, *self.latent.shape)


class ConvDecoder(nn.Module):
    def __init__(self, image_shape, latent: LatentShape, channels: int, max_channels: int):
        super().__init__()
        c, h, w = image_shape
        self.image_hw = (h, w)
        self.latent = latent
        grid = latent.shape[1:] if latent.spatial else (4, 4)
        k = _stages((h, w), grid)
        self.work = (grid[0] * 2**k, grid[1] * 2**k)
        ws = list(reversed(_widths(channels, k, max_channels)))
        if latent.spatial:
            self.stem = nn.Sequential(nn.Conv2d(latent.shape[0], ws[0], 3, padding=1), nn.SiLU())
        else:
            self.stem = nn.Sequential(
                nn.Linear(latent.dim, ws[0] * grid[0] * grid[1]), nn.SiLU(), nn.Unflatten(1, (ws[0], *grid))
            )
        layers: list[nn.Module] = []
        for a, b in zip(ws[:-1], ws[1:]):
            layers += [nn.ConvTranspose2d(a, b, 4, stride=2, padding=1), nn.SiLU()]
        layers.append(nn.Conv2d(ws[-1], c, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z if self.latent.spatial else z.flatten(1)
        out = self.body(self.stem(z))
        if tuple(out.shape[-2:]) != self.image_hw:
            out = F.interpolate(out, size=self.image_hw, mode="bilinear", align_corners=False)
        return out


def build(
    image_shape: tuple[int, int, int], latent: LatentShape, channels: int = 32, max_channels: int = 256
) -> tuple[nn.Module, nn.Module]:
    """Conv encoder/decoder; ``channels`` doubles per stride-2 stage up to ``max_channels``."""
    return (
        ConvEncoder(image_shape, latent, channels, max_channels),
        ConvDecoder(image_shape, latent, channels, max_channels),
    )
