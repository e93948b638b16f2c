"""Metric plugins read typed sample and latent sets: the very tensors of the scoring context's stages."""

import torch

from latentbench.score.containers import LatentSet, SampleSets, latent_set, sample_sets


class _Ctx:
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.mu, self.logvar = torch.randn(10, 4, generator=g), torch.zeros(10, 4)
        self.images = {"prior": torch.rand(6, 1, 8, 8, generator=g), "post": torch.rand(6, 1, 8, 8, generator=g),
                       "data": torch.rand(6, 1, 8, 8, generator=g)}
        self.z_prior = torch.randn(6, 4, generator=g)
        self.split = (torch.arange(5), torch.arange(5, 10))
        self.calls = 0

    def samples(self):
        self.calls += 1
        return {"images": self.images, "z_prior": self.z_prior}

    def posteriors(self):
        return {"mu": self.mu, "logvar": self.logvar, "split": self.split, "subspace": {"k": 2, "coverage": 0.9}}


def test_sample_sets_name_the_context_images():
    ctx = _Ctx()
    sets = sample_sets(ctx)
    assert isinstance(sets, SampleSets) and sets.names == ("prior", "post", "data")
    assert sets["prior"] is ctx.images["prior"] and "post" in sets and "swap_sub" not in sets
    assert sets.z_prior is ctx.z_prior


def test_latent_set_holds_the_posteriors_the_prior_samples_and_the_halves():
    ctx = _Ctx()
    lat = latent_set(ctx)
    assert isinstance(lat, LatentSet)
    assert lat.mu is ctx.mu and lat.logvar is ctx.logvar and lat.z_prior is ctx.z_prior
    assert lat.mixture is ctx.split[0] and lat.reference is ctx.split[1]
    assert lat.dim == 4 and lat.k == 2
