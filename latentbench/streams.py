"""Named random streams: one generator per (seed, stage name), independent of call order.

``stream(seed, "train/epoch/3")`` is seeded from a hash of the cell's seed and the stage's name, so
adding a stage, skipping one or running stages in another order never shifts another stage's draws
(no seed offsets, no throwaway draws). A stage that hands its generator to a part (an ex-post prior's
fit) lets the part name sub-streams of it: ``stream(generator, "split")`` hashes the generator's seed
(``initial_seed``), never draws from it. Where a library needs an int seed (sklearn, Optuna), use
``stream_seed(seed, name) % 2**32``.
"""

from __future__ import annotations

import hashlib

import torch

Seed = int | torch.Generator | None


def seed_of(parent: Seed) -> int:
    """The integer seed of ``parent``: an int as it is, a generator's ``initial_seed()``, 0 for None."""
    if parent is None:
        return 0
    if isinstance(parent, torch.Generator):
        return int(parent.initial_seed())
    return int(parent)


def stream_seed(seed: Seed, name: str) -> int:
    """A 63-bit seed for the stage ``name`` of a cell (or a parent stream) seeded with ``seed``."""
    digest = hashlib.sha256(f"latentbench:{seed_of(seed)}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def stream(seed: Seed, name: str, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh generator for the stage ``name`` of a cell (or a parent stream) seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(stream_seed(seed, name))
