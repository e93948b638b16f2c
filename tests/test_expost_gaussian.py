"""The ex-post Gaussian (expost_gaussian) and the noise-edge subspace it shares with the ex-post GMM:
known Gaussians, low-rank plus isotropic, at small D and at D / N = 16."""

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

from latentbench.latent import LatentShape
from latentbench.priors.gaussian import ExpostGaussianPrior
from latentbench.priors.pca import noise_edge_factor, signal_subspace
from latentbench.priors.standard_normal import StandardNormal


def _spiked(d: int, n: int, spikes: list[float], seed: int = 0, noise: float = 1.0):
    """n codes from N(0, U^T diag(spikes) U + noise I) with random orthonormal rows U (k, d)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(d, len(spikes), generator=g, dtype=torch.float64)).Q.T.float()
    a = torch.randn(n, len(spikes), generator=g) * torch.tensor(spikes).sqrt()
    return a @ u + math.sqrt(noise) * torch.randn(n, d, generator=g), u


def _outside(u: torch.Tensor, m: int, seed: int = 5) -> torch.Tensor:
    """m (at most D - k) random orthonormal directions orthogonal to the rows of u (k, D)."""
    r = torch.randn(u.shape[1], min(m, u.shape[1] - u.shape[0]), generator=torch.Generator().manual_seed(seed))
    return torch.linalg.qr(r - u.T @ (u @ r)).Q.T


def _fitted_cov(prior: ExpostGaussianPrior) -> torch.Tensor:
    return prior.covariance_along(torch.eye(prior.dim)).double()


def test_both_gaussian_priors_say_they_are_gaussian():
    assert ExpostGaussianPrior.gaussian and StandardNormal.gaussian
    from latentbench.priors.gmm import ExpostGMMPrior

    assert not ExpostGMMPrior.gaussian


def test_small_d_fit_is_the_sample_moments_and_log_prob_is_torchs_multivariate_normal():
    x, _ = _spiked(3, 4000, [4.0], noise=0.5)
    x = x + torch.tensor([1.0, -2.0, 0.5])
    prior = ExpostGaussianPrior(LatentShape.parse("3"))
    prior.fit(x, torch.Generator().manual_seed(0))
    assert prior.k == 3 and float(prior.noise_edge) < 0  # full covariance, no edge
    cov = torch.cov(x.double().T)
    assert torch.allclose(prior.center.double(), x.double().mean(0), atol=1e-5)
    assert torch.allclose(_fitted_cov(prior), cov, atol=1e-4)
    mvn = MultivariateNormal(x.double().mean(0), cov + 1e-6 * torch.eye(3))
    z = torch.randn(50, 3) * 3
    assert torch.allclose(prior.log_prob(z).double(), mvn.log_prob(z.double()), atol=1e-3)


def test_subspace_rule_is_a_proper_gaussian_and_matches_torch_on_a_small_case():
    x, _ = _spiked(6, 3000, [9.0, 4.0])
    prior = ExpostGaussianPrior(LatentShape.parse("6"), max_dim=3)  # D > max_dim: subspace + isotropic rest
    prior.fit(x, torch.Generator().manual_seed(0))
    assert prior.k == 2 and float(prior.noise_edge) > 0
    cov = _fitted_cov(prior)
    # every moment along the subspace and the total variance match the codes
    w = prior.components.double()
    sample_cov = torch.cov(x.double().T)
    assert torch.allclose(w @ cov @ w.T, w @ sample_cov @ w.T + 1e-6 * torch.eye(2), atol=1e-4)
    assert abs(torch.trace(cov) - torch.trace(sample_cov)) < 1e-3
    mvn = MultivariateNormal(prior.center.double(), cov)
    z = torch.randn(50, 6) * 2
    assert torch.allclose(prior.log_prob(z).double(), mvn.log_prob(z.double()), atol=1e-3)


@pytest.mark.parametrize("d", [1, 2])
def test_density_integrates_to_one_on_both_rules(d):
    x, _ = _spiked(d, 2000, [3.0], noise=0.4)
    for max_dim in (8, 0):  # full covariance; isotropic only (no direction kept)
        prior = ExpostGaussianPrior(LatentShape.parse(str(d)), max_dim=max_dim)
        prior.fit(x)
        n = 4001 if d == 1 else 241
        axis = torch.linspace(-12, 12, n)
        grid = axis[:, None] if d == 1 else torch.cartesian_prod(axis, axis)
        mass = prior.log_prob(grid).exp().sum() * (24 / (n - 1)) ** d
        assert 0.99 < mass.item() < 1.01, (max_dim, mass.item())


@pytest.mark.parametrize("rule", ["full", "subspace"])
def test_analytic_kl_matches_torchs_kl_divergence(rule):
    x, _ = _spiked(5, 2000, [6.0, 2.0], noise=0.7)
    prior = ExpostGaussianPrior(LatentShape.parse("5"), max_dim=8 if rule == "full" else 2)
    prior.fit(x)
    g = torch.Generator().manual_seed(3)
    mu, logvar = torch.randn(7, 5, generator=g), 0.5 * torch.randn(7, 5, generator=g)
    p = MultivariateNormal(prior.center.double(), _fitted_cov(prior))
    want = torch.stack([kl_divergence(MultivariateNormal(m.double(), torch.diag(lv.double().exp())), p)
                        for m, lv in zip(mu, logvar)])
    assert torch.allclose(prior.analytic_kl(mu, logvar).double(), want, atol=1e-3)


def test_samples_have_the_fitted_moments():
    x, _ = _spiked(6, 3000, [9.0, 4.0])
    x = x + 2.0
    lat = LatentShape.parse("2x3x1")  # spatial: samples come back as (C, H, W) maps
    prior = ExpostGaussianPrior(lat, max_dim=3)
    prior.fit(x)
    s = prior.sample(40000, torch.Generator().manual_seed(1))
    assert s.shape == (40000, *lat.shape) == (40000, 1, 2, 3)
    s = s.flatten(1).double()
    cov = _fitted_cov(prior)
    assert torch.allclose(s.mean(0), prior.center.double(), atol=0.05)
    assert torch.allclose(torch.cov(s.T), cov, atol=0.06 * cov.diagonal().max().item() ** 0.5)


@pytest.mark.parametrize("d,n", [(40, 4000), (8192, 512)], ids=["small_d", "d_over_n_16"])
def test_fitted_variance_along_the_true_directions_and_the_rest(d, n):
    spikes = [100.0, 50.0, 30.0]
    x, u = _spiked(d, n, spikes)
    prior = ExpostGaussianPrior(LatentShape.parse(str(d)), max_dim=8)
    prior.fit(x, torch.Generator().manual_seed(0))
    assert prior.k == 3  # the three spikes, no noise direction
    along = prior.covariance_along(u).diagonal()
    se = torch.tensor(spikes) * math.sqrt(2 / n)  # sampling error of a variance from n codes
    assert ((along - torch.tensor(spikes)).abs() < 3.5 * se).all(), along
    rest = prior.covariance_along(_outside(u, 50)).diagonal()
    assert (rest - 1).abs().max() < 0.05, rest
    # the codes' own top principal directions outside the truth: noise, fitted at ~1, not at the
    # ~(1 + sqrt(D / N))^2 = 25 a top-k PCA of the codes would give them at D / N = 16
    xc = x - x.mean(0)
    top = torch.linalg.svd(xc, full_matrices=False).Vh[:64]
    top = top - (top @ u.T) @ u
    top = top / top.norm(dim=1, keepdim=True)
    assert (prior.covariance_along(top).diagonal()[3:] - 1).abs().max() < 0.1
    assert abs(float(prior.rest_var) - 1) < 0.02


def test_pure_noise_at_d_over_n_16_keeps_no_direction():
    x = torch.randn(512, 8192, generator=torch.Generator().manual_seed(0))
    sub = signal_subspace(x, 64)
    assert sub.k == 0 and abs(sub.noise_var - 1) < 0.01
    assert 25 < noise_edge_factor(512, 8192) < 25.5  # (1 + sqrt(16))^2 plus the finite-size spread
    lam = torch.linalg.svdvals(x - x.mean(0))[0] ** 2 / 511
    assert 23 < lam < sub.edge  # the largest noise eigenvalue sits just under the edge


def test_fit_posterior_matches_the_aggregate_posterior_moments_exactly():
    """q(z) = mean_n N(mu_n, diag sigma_n^2): mean = mean(mu), Cov = Cov(mu) + diag(mean sigma^2)."""
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(3000, 4, generator=g) @ torch.randn(4, 4, generator=g)
    logvar = torch.randn(3000, 4, generator=g) - 1
    prior = ExpostGaussianPrior(LatentShape.parse("4"))
    prior.fit_posterior(mu, logvar, torch.Generator().manual_seed(1), codes="sample")
    want = torch.cov(mu.double().T) + torch.diag(logvar.double().exp().mean(0))
    assert torch.allclose(_fitted_cov(prior), want, atol=1e-4)
    prior.fit_posterior(mu, logvar, codes="mean")  # the means alone
    assert torch.allclose(_fitted_cov(prior), torch.cov(mu.double().T), atol=1e-4)


def test_fit_posterior_takes_the_subspace_from_the_means_at_d_over_n_16():
    """Three informative directions in the means, N(0, 1) posteriors elsewhere: the basis is the means'
    (posterior noise cannot fill it), the variances are the aggregate posterior's."""
    d, n = 8192, 512
    mu, u = _spiked(d, n, [4.0, 3.0, 2.0], noise=1e-4)
    logvar = torch.zeros(n, d) + math.log(0.05) * u.pow(2).sum(0)  # tight along the informative directions
    prior = ExpostGaussianPrior(LatentShape.parse(str(d)), max_dim=64)
    prior.fit_posterior(mu, logvar, torch.Generator().manual_seed(0), codes="sample")
    assert prior.k == 3
    overlap = torch.linalg.svdvals(prior.components @ u.T)
    assert overlap.min() > 0.99
    var_post = torch.exp(logvar).mean(0)
    want = torch.cov((mu @ u.T).double().T).diagonal() + (u.double().pow(2) @ var_post.double())
    assert torch.allclose(prior.covariance_along(u).diagonal().double(), want, rtol=0.02)
    assert (prior.covariance_along(_outside(u, 20)).diagonal() - 1).abs().max() < 0.01


def test_the_fitted_prior_survives_a_state_dict_round_trip():
    x, _ = _spiked(300, 400, [20.0])
    prior = ExpostGaussianPrior(LatentShape.parse("300"), max_dim=16)
    prior.fit(x)
    again = ExpostGaussianPrior(LatentShape.parse("300"), max_dim=16)
    again.load_state_dict(prior.state_dict())
    a = prior.sample(5, torch.Generator().manual_seed(2))
    assert torch.equal(a, again.sample(5, torch.Generator().manual_seed(2)))
    assert torch.equal(prior.log_prob(a), again.log_prob(a)) and again.score_notes() == prior.score_notes()
