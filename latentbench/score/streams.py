"""Named random streams: one generator per (seed, stage name), independent of call order.

``stream(seed, "latents/reference")`` is seeded from a hash of the cell's seed and the stage's name, so
adding a stage, skipping one or asking for metrics in another order never shifts another stage's draws
(no seed offsets, no throwaway draws).
"""

from __future__ import annotations

import hashlib

import torch


def stream_seed(seed: int, name: str) -> int:
    """A 63-bit seed for the stage ``name`` of a cell seeded with ``seed``."""
    digest = hashlib.sha256(f"latentbench:{int(seed)}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def stream(seed: int, name: str, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh generator for the stage ``name`` of a cell seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(stream_seed(seed, name))
