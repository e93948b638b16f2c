"""What a metric reads, as typed containers: the decoded sample sets and the latents of one cell.

A metric is a function of the scoring context (``latentbench.score.scorer.ScoreContext``), whose
stages return plain dicts. ``sample_sets(ctx)`` and ``latent_set(ctx)`` give the same tensors as
:class:`SampleSets` and :class:`LatentSet`, so a plugin names fields instead of dict keys and a type
checker sees what it gets. They read the context's cached stages: asking for them computes nothing the
scorer would not, and no number changes (every draw comes from a named stream of the cell's seed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch

# The image sets of a cell (``ScoreContext.samples``): the seed question's three, the noise floor's two
# posterior-mixture draws, N(mu(x), I), and the swap interventions when the informative subspace is
# neither empty nor the whole latent.
IMAGE_SETS = ("prior", "post", "post_a", "post2", "mu_unit", "data",
              "swap_sub", "swap_rest", "swap_sub_rand", "swap_rest_rand")


class _Context(Protocol):
    def samples(self) -> dict[str, Any]: ...

    def posteriors(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class SampleSets:
    """The decoded image sets of one cell, each ``(n, C, H, W)`` in [0, 1] on the CPU.

    ``images`` maps a set's name to its images: ``prior`` (z ~ p(z)), ``post`` (the posterior mixture:
    x uniform over the held-out images, z ~ q(z|x)), ``post_a`` and ``post2`` (posterior-mixture draws
    from disjoint halves of the held-out images: the noise floor), ``mu_unit`` (z ~ N(mu(x), I)),
    ``data`` (held-out images) and, where they exist, the swap sets (``swap_sub``, ``swap_rest``,
    ``swap_sub_rand``, ``swap_rest_rand``). ``z_prior`` holds the prior's latents the geometry metrics
    use, ``(n_geometry, *latent shape)``.
    """

    images: dict[str, torch.Tensor]
    z_prior: torch.Tensor

    @classmethod
    def from_stage(cls, stage: Mapping[str, Any]) -> SampleSets:
        return cls(images=dict(stage["images"]), z_prior=stage["z_prior"])

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.images[name]

    def __contains__(self, name: object) -> bool:
        return name in self.images

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.images)


@dataclass(frozen=True)
class LatentSet:
    """The latents of one cell: the held-out posteriors and the prior's samples.

    ``mu`` and ``logvar`` are q(z|x) of the held-out images, ``(N, *latent shape)``, float32 on the
    model's device; ``z_prior`` the prior's samples of :class:`SampleSets`. ``mixture`` and
    ``reference`` index the two halves of the held-out posteriors (the mixture half draws, the reference
    half checks), and ``subspace`` is the informative subspace of the mixture half's means
    (``latentbench.score.subspace.principal_subspace``: ``basis``, ``center``, ``k``, ...).
    """

    mu: torch.Tensor
    logvar: torch.Tensor
    z_prior: torch.Tensor
    mixture: torch.Tensor
    reference: torch.Tensor
    subspace: Mapping[str, Any]

    @property
    def dim(self) -> int:
        """D, the flat latent size."""
        return int(self.mu[0].numel())

    @property
    def k(self) -> int:
        """The informative subspace's size (0 for a collapsed latent)."""
        return int(self.subspace["k"])


def sample_sets(ctx: _Context) -> SampleSets:
    """The decoded image sets of the context's cell (computed once per cell, shared with the scorer)."""
    return SampleSets.from_stage(ctx.samples())


def latent_set(ctx: _Context) -> LatentSet:
    """The held-out posteriors and prior samples of the context's cell (shared with the scorer)."""
    post = ctx.posteriors()
    mixture, reference = post["split"]
    return LatentSet(mu=post["mu"], logvar=post["logvar"], z_prior=ctx.samples()["z_prior"],
                     mixture=mixture, reference=reference, subspace=post["subspace"])
