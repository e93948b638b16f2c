import math

import pytest
import torch

from latentbench.latent import LatentShape
from latentbench.model import VAE
from latentbench.nets import build_nets
from latentbench.nets.likelihood import make_likelihood
from latentbench.priors.flow import ExpostFlowPrior, FlowPrior
from latentbench.priors.gaussian import ExpostGaussianPrior
from latentbench.priors.gmm import ExpostGMMPrior
from latentbench.priors.mog import MixturePrior
from latentbench.priors.standard_normal import StandardNormal
from latentbench.priors.two_stage import TwoStagePrior
from latentbench.priors.vamp import VampPrior
from latentbench.score.geometry import mmd2_unbiased


def _toy_codes(d: int, n: int = 2000, seed: int = 0) -> torch.Tensor:
    """A non-Gaussian toy aggregate posterior: two offset, stretched blobs."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(2, (n, 1), generator=g).float()
    return (2.0 * k - 1.0) * 1.5 + torch.randn(n, d, generator=g) * torch.linspace(0.3, 0.8, d)


def _perturb(module: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def make_prior(kind: str, d: int) -> torch.nn.Module:
    lat = LatentShape.parse(str(d))
    torch.manual_seed(0)
    if kind == "standard_normal":
        return StandardNormal(lat)
    if kind == "mog":
        p = MixturePrior(lat, 3)
        _perturb(p)
        return p
    if kind == "vamp":
        p = VampPrior(lat, (1, 2, 2), n_pseudo=4)
        enc, dec = build_nets("mlp", (1, 2, 2), lat, hidden=[8])
        VAE(enc, dec, p, make_likelihood("bernoulli"), lat)
        _perturb(p, scale=2.0)
        return p
    if kind == "flow":
        p = FlowPrior(lat, n_layers=3, hidden=16)
        _perturb(p, scale=0.3)
        return p
    codes = _toy_codes(d)
    if kind == "expost_gaussian":
        p = ExpostGaussianPrior(lat)
    elif kind == "expost_gmm":
        p = ExpostGMMPrior(lat)
    elif kind == "expost_flow":
        p = ExpostFlowPrior(lat, n_layers=3, hidden=32, epochs=30)
    else:
        p = TwoStagePrior(lat, hidden=64, epochs=60, n_iw=256)
    p.fit(codes, torch.Generator().manual_seed(0))
    return p


KINDS = ["standard_normal", "mog", "vamp", "flow", "expost_gaussian", "expost_gmm", "expost_flow", "two_stage"]


@pytest.mark.parametrize("kind", [*KINDS[:-1], pytest.param("two_stage", marks=pytest.mark.slow)])
@pytest.mark.parametrize("d", [1, 2])
def test_density_integrates_to_one(kind, d):
    prior = make_prior(kind, d)
    n = 4001 if d == 1 else 241
    lo, hi = -12.0, 12.0
    axis = torch.linspace(lo, hi, n)
    cell = ((hi - lo) / (n - 1)) ** d
    grid = axis[:, None] if d == 1 else torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        mass = torch.cat([prior.log_prob(grid[i : i + 8192]).exp() for i in range(0, len(grid), 8192)]).sum() * cell
    # the two-stage density is an importance-weighted lower bound, so it may fall slightly short
    tol = (0.85, 1.02) if kind == "two_stage" else (0.98, 1.02)
    assert tol[0] < mass.item() < tol[1], mass.item()


@pytest.mark.parametrize("kind", KINDS)
def test_log_prob_agrees_with_the_histogram_of_samples_in_1d(kind):
    prior = make_prior(kind, 1)
    with torch.no_grad():
        s = prior.sample(100_000, torch.Generator().manual_seed(1)).flatten()
    lo, hi = s.quantile(0.001).item(), s.quantile(0.999).item()
    edges = torch.linspace(lo, hi, 41)
    hist = torch.histogram(s, edges).hist / len(s)
    centers = (edges[:-1] + edges[1:]) / 2
    with torch.no_grad():
        dens = prior.log_prob(centers[:, None]).exp() * (edges[1] - edges[0])
    # total variation between the binned sample and the binned density
    assert 0.5 * (hist - dens).abs().sum().item() < 0.05


@pytest.mark.parametrize("shape", ["4", "2x2x2", "1x1x3"])
def test_flow_inverts_and_its_logdet_matches_autograd(shape):
    lat = LatentShape.parse(shape)
    prior = FlowPrior(lat, n_layers=3, hidden=8)
    _perturb(prior, scale=0.5)
    flow = prior.flow.double()
    z = torch.randn(3, *lat.shape, dtype=torch.float64)
    u, logdet = flow(z)
    assert torch.allclose(flow.inverse(u), z, atol=1e-10)
    for i in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: flow(v.reshape(1, *lat.shape))[0].flatten(), z[i].flatten())
        assert torch.allclose(torch.linalg.slogdet(jac).logabsdet, logdet[i], atol=1e-8)


def test_expost_gmm_recovers_a_known_three_component_mixture():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[-4.0, 0.0], [0.0, 4.0], [4.0, -1.0]])
    idx = torch.randint(3, (3000,), generator=g)
    codes = centers[idx] + 0.5 * torch.randn(3000, 2, generator=g)
    prior = ExpostGMMPrior(LatentShape.parse("2"))
    prior.fit(codes, torch.Generator().manual_seed(0))
    assert prior.n_components == 3
    means = prior.means + prior.center  # the mixture is fitted on centred codes
    found = means[means[:, 0].argsort()]
    assert torch.allclose(found, centers, atol=0.1)
    assert torch.allclose(prior.log_weights.exp().sort().values, torch.full((3,), 1 / 3), atol=0.05)


def test_expost_gmm_large_d_uses_pca_and_stays_a_density():
    lat = LatentShape.parse("4x4x8")  # D = 128 > max_full_dim
    codes = _toy_codes(128, n=600)
    prior = ExpostGMMPrior(lat, max_full_dim=16)
    prior.fit(codes, torch.Generator().manual_seed(0))
    assert prior.components.shape == (16, 128)
    s = prior.sample(500, torch.Generator().manual_seed(0))
    assert s.shape == (500, 8, 4, 4)
    lp = prior.log_prob(s)
    assert torch.isfinite(lp).all()
    # samples from the fit score higher under it than a standard normal's samples do
    assert lp.mean() > prior.log_prob(torch.randn(500, 8, 4, 4) * 3).mean()


@pytest.mark.slow  # 150 epochs of a second stage: the full suite
def test_two_stage_brings_mmd_to_the_codes_well_below_standard_normal():
    d = 4
    codes = _toy_codes(d, n=2000)
    prior = TwoStagePrior(LatentShape.parse(str(d)), hidden=128, epochs=150)
    prior.fit(codes, torch.Generator().manual_seed(0))
    held = _toy_codes(d, n=1000, seed=5)
    with torch.no_grad():
        s = prior.sample(1000, torch.Generator().manual_seed(1))
    mmd_two = mmd2_unbiased(s, held)
    mmd_normal = mmd2_unbiased(torch.randn(1000, d), held)
    assert mmd_two < 0.25 * mmd_normal, (mmd_two, mmd_normal)


def test_mixture_log_prob_paths_agree():
    from latentbench.priors import base

    g = torch.Generator().manual_seed(0)
    z, m, v = torch.randn(50, 30, generator=g), torch.randn(7, 30, generator=g), 0.3 * torch.randn(7, 30, generator=g)
    direct = base.mixture_log_prob(z, m, v)
    old = base.DIRECT_LIMIT
    try:
        base.DIRECT_LIMIT = 0
        assert torch.allclose(base.mixture_log_prob(z, m, v), direct, atol=1e-3)
    finally:
        base.DIRECT_LIMIT = old
    assert math.isfinite(direct.sum().item())


def test_expost_priors_fit_the_aggregate_posterior_not_the_means():
    """Unused dimensions (mu = 0, sigma = 1) beside used ones: a GMM fitted on posterior means puts
    almost no variance there, so log p of z ~ q(z) is far below log q; fitted on z ~ q(z|x) (the
    default of every ex-post remedy) it is a density of q(z)."""
    from latentbench import create_remedy

    g = torch.Generator().manual_seed(0)
    n, used, d = 1500, 2, 12
    mu = torch.zeros(n, d)
    mu[:, :used] = _toy_codes(used, n)
    logvar = torch.zeros(n, d)
    logvar[:, :used] = math.log(0.01)
    held = mu + torch.exp(0.5 * logvar) * torch.randn(n, d, generator=g)  # z ~ q(z)
    gaps = {}
    for codes in ("mean", "sample"):
        prior = ExpostGMMPrior(LatentShape.parse(str(d)), reg_covar=1e-6)
        prior.fit_posterior(mu, logvar, torch.Generator().manual_seed(1), codes=codes)
        with torch.no_grad():
            gaps[codes] = (StandardNormal(LatentShape.parse(str(d))).log_prob(held) - prior.log_prob(held)).mean().item()
    # the N(0, I) prior is within a few nats of q here; the means' GMM is thousands of nats worse
    assert gaps["mean"] > 1000 and gaps["sample"] < 0, gaps
    for name in ("expost_gaussian", "expost_gmm", "expost_flow", "two_stage", "ncp_prior", "expost_diffusion"):
        assert create_remedy(name).expost_codes == "sample", name
