"""Known answers for the informative-subspace metrics (latentbench.score.subspace)."""

import math

import pytest
import torch

from latentbench.latent import LatentShape
from latentbench.priors.base import Prior, sample_mixture
from latentbench.priors.gmm import ExpostGMMPrior
from latentbench.priors.standard_normal import StandardNormal
from latentbench.score.latents import score_latents
from latentbench.score.subspace import principal_subspace, project, random_subspace, swap


def _low_rank(d=4096, r=5, n=600, seed=0):
    """Posteriors N(A u_n, I) in D dims: a rank-r structured part (scales 3, 2.5, 2, 1.5, 1.2 along r
    random orthonormal directions) plus unit noise, as a large-latent VAE's aggregate posterior."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, r, generator=g))
    scales = torch.tensor([3.0, 2.5, 2.0, 1.5, 1.2][:r])
    mu = (torch.randn(n, r, generator=g) * scales) @ q.T
    logvar = torch.zeros(n, d)
    idx = torch.randint(n, (n,), generator=g)
    z_post = mu[idx] + torch.randn(n, d, generator=g)
    z_prior = torch.randn(n, d, generator=g)
    return mu, logvar, z_prior, z_post, idx, scales


def test_low_rank_mismatch_in_4096_dims_is_found_by_the_subspace_and_missed_by_the_full_space():
    mu, logvar, zp, zq, idx, scales = _low_rank()
    sub = principal_subspace(mu)
    assert sub["k"] == 5 and sub["coverage"] > 0.99
    m, notes = score_latents(StandardNormal(LatentShape.parse("4096")), mu, logvar, zp, seed=0)
    assert m["sub_dims"] == 5
    expected = 1 + scales[0].item() ** 2  # Var along the top direction: 9 + 1 against the prior's 1
    assert abs(m["sub_spread"] - expected) / expected < 0.2
    assert abs(m["spec_wide"] - expected) / expected < 0.2 and notes["spec_wide_dims"] == 5
    assert m["sub_marginal_kl"] > 5.0 and m["sub_mmd"] > 0.1
    assert m["sub_hole_fraction"] < 0.02  # a too-narrow prior leaves no holes: its samples sit in the core
    assert sorted(notes["sub_var_post"], reverse=True)[0] > 5 and max(notes["sub_var_prior"]) < 1.3
    assert abs(m["norm_prior"] - m["norm_post"]) < 0.01  # one shell
    assert abs(m["mmd_latent"]) < 0.01 and m["hole_fraction"] <= notes["floors"]["hole_fraction"]


def test_aggregate_posterior_equal_to_the_prior_has_no_subspace_gap():
    g = torch.Generator().manual_seed(1)
    n, d = 3000, 6
    mu = math.sqrt(0.5) * torch.randn(n, d, generator=g)  # q(z) = N(0, I) exactly
    logvar = torch.full((n, d), math.log(0.5))
    zp = torch.randn(n, d, generator=g)
    m, notes = score_latents(StandardNormal(LatentShape.parse(str(d))), mu, logvar, zp, seed=0)
    assert m["sub_dims"] == d
    assert m["sub_spread"] <= notes["floors"]["sub_spread"]
    assert -0.05 < m["sub_marginal_kl"] < 0.05
    assert abs(m["sub_mmd"]) < 2e-3
    assert 0.003 < m["sub_hole_fraction"] < 0.025


def test_an_expost_gaussian_fitted_to_the_posterior_samples_closes_the_spread():
    mu, logvar, zp, zq, idx, scales = _low_rank(d=256, n=1000)
    prior = ExpostGMMPrior(LatentShape.parse("256"), ks=(1,))
    prior.fit(zq, generator=torch.Generator().manual_seed(0))
    z_fit = prior.sample(1000, torch.Generator().manual_seed(3))
    vae, _ = score_latents(StandardNormal(LatentShape.parse("256")), mu, logvar, zp, seed=0)
    fitted, notes = score_latents(prior, mu, logvar, z_fit, seed=0)
    assert vae["sub_spread"] > 5 and fitted["sub_spread"] <= notes["floors"]["sub_spread"]
    assert fitted["sub_marginal_kl"] < 0.1 * vae["sub_marginal_kl"]


def test_collapsed_latent_has_no_subspace():
    mu = 1e-3 * torch.randn(200, 16, generator=torch.Generator().manual_seed(0))
    sub = principal_subspace(mu)
    assert sub["k"] == 0
    m, notes = score_latents(StandardNormal(LatentShape.parse("16")), mu, torch.zeros(200, 16), torch.randn(50, 16),
                             seed=0)
    assert m["sub_dims"] == 0 and m["sub_spread"] is None and notes["collapsed"]


def test_a_random_subspace_is_orthonormal_and_seeded():
    a = random_subspace(64, 5, torch.Generator().manual_seed(0))
    b = random_subspace(64, 5, torch.Generator().manual_seed(0))
    assert torch.allclose(a["basis"].T @ a["basis"], torch.eye(5), atol=1e-5)
    assert torch.equal(a["basis"], b["basis"])


def test_swap_takes_the_subspace_part_of_one_set_and_the_rest_of_the_other():
    mu, _, zp, zq, _, _ = _low_rank(d=64, n=100)
    sub = principal_subspace(mu)
    z = swap(zq, zp, sub)
    assert torch.allclose(project(z, sub), project(zq, sub), atol=1e-4)
    v = sub["basis"]
    rest = lambda t: t - (t - sub["center"]) @ v @ v.T  # noqa: E731
    assert torch.allclose(rest(z), rest(zp), atol=1e-4)


class _HeldOutMixture(Prior):
    """p = the aggregate posterior of the held-out images itself (q = p); no density on purpose."""

    has_log_prob = False

    def __init__(self, latent, mu, logvar):
        super().__init__(latent)
        self.register_buffer("mu", mu.flatten(1))
        self.register_buffer("logvar", logvar.flatten(1))

    def log_prob(self, z):
        raise NotImplementedError

    def sample(self, n, generator=None):
        return sample_mixture(n, self.mu, self.logvar, None, generator).reshape(n, *self.latent.shape)


@pytest.mark.parametrize("latent", ["5"])
def test_prior_equal_to_the_aggregate_posterior_scores_no_gap_and_no_made_up_density(tiny_cell, cpu, latent):
    from latentbench.score.scorer import score_model
    from latentbench.training.loop import train_cell

    cell = tiny_cell(latent=latent, n_samples=200)
    model, data, _ = train_cell(cell, cpu, quiet=True)
    mu, logvar = model.posterior_params(data.test)
    model.set_expost(_HeldOutMixture(model.latent, mu, logvar))
    metrics, notes, _ = score_model(model, data, cell, cpu)
    for absent in ("nll_iw", "elbo", "kl", "marginal_kl", "sub_marginal_kl"):
        assert absent not in metrics, absent
    assert "no tractable log-density" in notes["density_metrics"]
    assert metrics["sub_dims"] >= 1 and metrics["sub_spread"] < 1.6  # 200 samples: ratio noise ~0.15 per direction
    assert metrics["hole_fraction"] < 0.05 and metrics["sub_hole_fraction"] < 0.05
    assert metrics["fid_prior_post"] < 3 * metrics["fid_floor"] + 0.5  # no gap beyond the sampling floor
    if 0 < metrics["sub_dims"] < 5:  # the swaps exist only for a proper subspace (0 < k < D)
        for swapped in ("fid_swap_sub", "fid_swap_rest", "fid_swap_sub_rand", "fid_swap_rest_rand"):
            assert metrics[swapped] < 3 * metrics["fid_floor"] + 0.5, swapped
    else:
        assert not any(k.startswith("fid_swap") for k in metrics)
    assert "rec" in metrics and "fid_prior" in metrics and "fid_mu_unit" in metrics
