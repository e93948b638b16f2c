"""Procedural images with known factors (shape class, position, size, angle) at any resolution.

Five shape classes (disk, square, ring, plus, stroke) drawn with soft edges; the class is the label,
so the domain feature extractor has something to learn. Used by tests and CPU runs of the conv path.
"""

from __future__ import annotations

import math

import torch

from latentbench.data import Data
from latentbench.streams import stream

SHAPES = ("disk", "square", "ring", "plus", "stroke")


def render(n: int, size: int = 16, channels: int = 1, generator: torch.Generator | None = None):
    """Render ``n`` images; returns (images (n, C, size, size) in [0, 1], labels, factors dict)."""
    g = generator
    cls = torch.randint(len(SHAPES), (n,), generator=g)
    cx = 0.3 + 0.4 * torch.rand(n, generator=g)
    cy = 0.3 + 0.4 * torch.rand(n, generator=g)
    r = 0.15 + 0.15 * torch.rand(n, generator=g)
    theta = math.pi * torch.rand(n, generator=g)
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    dx = xx[None] - cx[:, None, None]
    dy = yy[None] - cy[:, None, None]
    rr = r[:, None, None]
    t = 1.5 / size  # stroke half-width
    sharp = size * 2.0
    dist = torch.sqrt(dx**2 + dy**2)
    cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    along, across = dx * cos + dy * sin, -dx * sin + dy * cos
    # Signed "inside" margins per class; a sigmoid turns them into anti-aliased masks.
    margins = torch.stack(
        [
            rr - dist,
            rr - torch.maximum(dx.abs(), dy.abs()),
            t - (dist - rr).abs(),
            torch.maximum(
                torch.minimum(t - dx.abs(), rr - dy.abs()), torch.minimum(t - dy.abs(), rr - dx.abs())
            ),
            torch.minimum(t - across.abs(), rr - along.abs()),
        ],
        dim=1,
    )
    margin = margins[torch.arange(n), cls]
    img = torch.sigmoid(sharp * margin)[:, None]
    if channels > 1:
        colour = 0.4 + 0.6 * torch.rand(n, channels, 1, 1, generator=g)
        img = img * colour
    factors = {"cls": cls, "cx": cx, "cy": cy, "r": r, "theta": theta}
    return img.clamp_(0, 1), cls, factors


def load(
    seed: int = 0, n_train: int = 2000, n_test: int = 500, size: int = 16, channels: int = 1, **_: object
) -> Data:
    """Synthetic shapes; the images and the split are fixed by ``seed``."""
    g = stream(seed, "data/synthetic")
    x, y, _ = render(n_train + n_test, size, channels, g)
    return Data(
        "synthetic", x[:n_train], x[n_train:], y[:n_train], y[n_train:],
        info={"split": f"generated seed={seed} n_train={n_train} n_test={n_test} size={size}"},
    )
