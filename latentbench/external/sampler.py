"""Fitted ex-post samplers saved on their own: ``load_sampler(path).sample(n)`` needs latentbench and
the remedy that made it, never the model's code. Feed the samples to your decoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from latentbench.atomic import atomic_torch_save
from latentbench.errors import UserError
from latentbench.latent import LatentShape
from latentbench.priors.base import Prior

SAMPLER_FORMAT = "latentbench-sampler"
SAMPLER_VERSION = 1


class Sampler:
    """A fitted prior over one latent shape: ``sample(n)`` gives ``(n, *shape)`` codes for the decoder."""

    def __init__(self, prior: Prior, remedy: str, info: dict[str, Any]) -> None:
        self.prior = prior.eval()
        self.remedy = remedy
        self.info = info

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """The per-sample shape of the codes, ``(D,)`` or ``(C, H, W)``."""
        return self.prior.latent.shape

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, seed: int | None = None) -> torch.Tensor:
        """``n`` codes, float32 on the CPU; ``seed`` (or a ``generator``) makes them repeatable."""
        if seed is not None and generator is None:
            generator = torch.Generator().manual_seed(seed)
        return self.prior.sample(n, generator).float().cpu()

    @torch.no_grad()
    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z), ``(B,)`` (for a prior with a tractable density)."""
        return self.prior.log_prob(z)

    def __repr__(self) -> str:
        return f"Sampler({self.remedy}, latent {self.prior.latent})"


def save_sampler(path: str | Path, prior: Prior, remedy: str, params: dict[str, Any],
                 info: dict[str, Any] | None = None) -> Path:
    """Write ``prior`` (fitted by ``remedy`` with ``params``) to ``path`` atomically."""
    path = Path(path)
    atomic_torch_save({"format": SAMPLER_FORMAT, "version": SAMPLER_VERSION, "remedy": remedy,
                       "params": dict(params), "latent": str(prior.latent),
                       "state": {k: v.cpu() for k, v in prior.state_dict().items()}, "info": info or {}}, path)
    return path


def load_sampler(path: str | Path) -> Sampler:
    """A sampler written by ``latentbench fix`` (``OUT/samplers/<remedy>.pt``), on the CPU."""
    from latentbench.remedies import create_remedy

    path = Path(path)
    if not path.is_file():
        raise UserError(f"no sampler file {path}; `latentbench fix` writes them to OUT/samplers/<remedy>.pt")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a foreign or truncated file
        raise UserError(f"{path}: not a readable sampler ({type(exc).__name__}); write it again with "
                        "`latentbench fix`") from None
    if not isinstance(payload, dict) or payload.get("format") != SAMPLER_FORMAT:
        raise UserError(f"{path}: not a latentbench sampler; `latentbench fix` writes them to OUT/samplers/")
    if payload.get("version", 0) > SAMPLER_VERSION:
        raise UserError(f"{path}: sampler version {payload['version']} is newer than this latentbench reads; "
                        "upgrade latentbench")
    latent = LatentShape.parse(payload["latent"])
    prior = create_remedy(payload["remedy"], **payload["params"]).build_expost(latent)
    if prior is None:
        raise UserError(f"{path}: remedy {payload['remedy']!r} has no ex-post prior to load")
    prior.load_state_dict(payload["state"])
    return Sampler(prior, payload["remedy"], dict(payload.get("info") or {}))
