"""Latent shapes: ``"32"`` is flat; ``"8x8x1024"`` is spatial, H x W x C as the seed question writes it.

Torch keeps spatial latents channels-first, so ``LatentShape("8x8x1024").shape == (1024, 8, 8)``.
Every prior and metric works on the flattened view of ``dim = H * W * C`` numbers.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from latentbench.errors import UserError

_PART = re.compile(r"^[0-9]+$")


@dataclass(frozen=True)
class LatentShape:
    """A parsed latent size; construct with :meth:`parse`."""

    sizes: tuple[int, ...]  # (D,) or (H, W, C)

    @classmethod
    def parse(cls, spec: str | int | LatentShape) -> LatentShape:
        if isinstance(spec, LatentShape):
            return spec
        text = str(spec).strip().lower()
        parts = text.split("x")
        fix = "write a flat size like '32' or a spatial one like '8x8x1024' (H x W x C)"
        if len(parts) not in (1, 3) or not all(_PART.match(p) for p in parts):
            raise UserError(f"bad latent size {str(spec)!r}: {fix}")
        sizes = tuple(int(p) for p in parts)
        if any(s <= 0 for s in sizes):
            raise UserError(f"bad latent size {str(spec)!r}: sizes must be positive; {fix}")
        return cls(sizes)

    @property
    def spatial(self) -> bool:
        return len(self.sizes) == 3

    @property
    def shape(self) -> tuple[int, ...]:
        """The per-sample tensor shape: ``(D,)`` or ``(C, H, W)``."""
        if self.spatial:
            h, w, c = self.sizes
            return (c, h, w)
        return self.sizes

    @property
    def dim(self) -> int:
        return math.prod(self.sizes)

    def __str__(self) -> str:
        return "x".join(str(s) for s in self.sizes)

    def sort_key(self) -> tuple[int, str]:
        return (self.dim, str(self))
