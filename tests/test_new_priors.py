"""The noise-contrastive prior (ncp_prior) and the ex-post diffusion prior (expost_diffusion)."""

import dataclasses
import math

import pytest
import torch

from latentbench.errors import UserError
from latentbench.latent import LatentShape
from latentbench.priors.diffusion import DiffusionPrior
from latentbench.priors.ncp import NCPPrior
from latentbench.score.geometry import mmd2_unbiased
from latentbench.spec import Cell
from latentbench.training.loop import load_checkpoint, train_cell

CENTERS = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.0]])
SMALL = {"ncp_prior": {"fit_epochs": 20, "hidden": 32, "n_sir": 32},
         "expost_diffusion": {"fit_epochs": 20, "hidden": 32, "depth": 1, "sample_steps": 20}}


def _mixture(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return CENTERS[torch.randint(3, (n,), generator=g)] + 0.5 * torch.randn(n, 2, generator=g)


def _mixture_log_prob(z: torch.Tensor) -> torch.Tensor:
    comp = -0.5 * (z[:, None] - CENTERS[None]).pow(2).sum(-1) / 0.25 - math.log(2 * math.pi * 0.25)
    return torch.logsumexp(comp, 1) - math.log(3)


@pytest.fixture(scope="module")
def ncp_2d():
    prior = NCPPrior(LatentShape.parse("2"), hidden=64, epochs=100, batch_size=256, lr=2e-3, patience=100)
    prior.fit(_mixture(3000, 0), torch.Generator().manual_seed(0))
    return prior


def test_ncp_recovers_a_2d_mixture_density_up_to_the_normaliser(ncp_2d):
    z = _mixture(2000, 5)
    with torch.no_grad():
        gap = ncp_2d.log_prob(z) - _mixture_log_prob(z)
        base_gap = -0.5 * (z.pow(2).sum(1) + 2 * math.log(2 * math.pi)) - _mixture_log_prob(z)
    # log p_ncp - log p_true is nearly constant where the mixture lives (the density up to a constant)
    assert gap.std() < 0.45 and gap.std() < 0.35 * base_gap.std(), (gap.std(), base_gap.std())
    # and the Monte Carlo normaliser makes that constant close to zero
    assert abs(gap.mean().item()) < 0.3, gap.mean()


def test_ncp_density_integrates_to_one_with_its_monte_carlo_normaliser(ncp_2d):
    axis = torch.linspace(-8, 8, 241)
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        mass = ncp_2d.log_prob(grid).exp().sum() * (16 / 240) ** 2
    assert 0.9 < mass.item() < 1.1, mass.item()
    assert "Monte Carlo" in ncp_2d.score_notes()["log_normaliser"]


def test_ncp_states_log_z_with_its_error_and_the_sir_ess(ncp_2d):
    """log Z by 2-D quadrature of N(y; 0, I) r(y) (the classifier sees the rotated codes y) agrees with
    the Monte Carlo estimate within its stated standard error; nll_iw is marked as no bound."""
    axis = torch.linspace(-8, 8, 321)
    y = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        log_integrand = ncp_2d.logit(y) - 0.5 * y.pow(2).sum(1) - math.log(2 * math.pi)
    log_z_grid = (torch.logsumexp(log_integrand.double(), 0) + 2 * math.log(16 / 320)).item()
    notes = ncp_2d.score_notes()
    assert notes["nll_iw_bound"] is False
    assert 0 < notes["log_z_se"] < 0.05
    assert abs(notes["log_z"] - log_z_grid) < 4 * notes["log_z_se"] + 1e-3, (notes["log_z"], log_z_grid)
    assert 1 <= notes["sir_ess"] <= ncp_2d.n_sir


def _linear_ncp(a: list[float], n_sir: int = 256) -> NCPPrior:
    """An NCP prior whose log-ratio is log N(y; a, I) - log N(y; 0, I) = a.y - |a|^2 / 2: Z = 1 exactly,
    E_N[r^2] = exp(|a|^2), so SIR's ESS is ~ n_sir exp(-|a|^2) (the large-n_sir limit, close at
    |a| <= 1; heavier tails need far larger pools) and log Z's standard error from n base draws is
    ~ sqrt((exp(|a|^2) - 1) / n)."""
    prior = NCPPrior(LatentShape.parse(str(len(a))), n_sir=n_sir, n_normaliser=1 << 16)
    lin = torch.nn.Linear(len(a), 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([a]))
        lin.bias.fill_(-0.5 * sum(v * v for v in a))
    prior.classifier = lin
    return prior


@pytest.mark.parametrize("a", [[0.0, 0.0], [0.3, 0.4], [1.0, 0.0], [0.6, -0.8]])
def test_ncp_log_z_and_sir_ess_on_a_reweighting_with_a_known_answer(a):
    prior = _linear_ncp(a)
    sq = sum(v * v for v in a)
    log_z, se = prior._log_normaliser(torch.Generator().manual_seed(0))
    assert abs(se - math.sqrt((math.exp(sq) - 1) / (1 << 16))) <= 0.1 * se + 1e-12
    assert abs(log_z) < 4 * se + 1e-9  # the true log Z is 0
    ess = prior._sir_ess(torch.Generator().manual_seed(1))
    assert abs(ess / (prior.n_sir * math.exp(-sq)) - 1) < 0.1, ess


def test_ncp_checkpoint_from_before_the_error_and_ess_estimates_them_again():
    prior = _linear_ncp([1.0, 0.0])
    prior.log_z.fill_(prior._log_normaliser(torch.Generator().manual_seed(0))[0])
    prior.fitted.fill_(True)  # as fit() leaves it, but without the newer buffers:
    old = {k: v for k, v in prior.state_dict().items() if k not in ("log_z_se", "sir_ess")}
    again = _linear_ncp([1.0, 0.0])
    again.load_state_dict(old)
    notes = again.score_notes()
    assert "fresh estimate" in notes["log_normaliser"] and notes["nll_iw_bound"] is False
    assert abs(notes["sir_ess"] / (256 * math.exp(-1)) - 1) < 0.1
    assert abs(notes["log_z_se"] - math.sqrt((math.e - 1) / (1 << 16))) < 0.001


def test_ncp_sir_samples_match_the_mixture(ncp_2d):
    held = _mixture(1000, 7)
    s = ncp_2d.sample(1000, torch.Generator().manual_seed(1))
    assert mmd2_unbiased(s, held) < 0.2 * mmd2_unbiased(torch.randn(1000, 2), held)


def test_ncp_finds_the_informative_subspace_of_a_large_latent():
    """D = 512: two informative directions (a 3-cluster mixture) hidden among 510 unused ones whose
    posteriors are N(0, 1); the classifier works on the means' principal directions."""
    d, n = 512, 1500
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(d, 2, generator=g)).Q.T  # (2, D), orthonormal rows
    mu = torch.zeros(n, d)
    mu += _mixture(n, 1) @ basis
    logvar = torch.zeros(n, d) + 0.0
    logvar += (math.log(0.01) * basis.pow(2).sum(0))  # tight posteriors along the informative plane
    prior = NCPPrior(LatentShape.parse(str(d)), hidden=64, max_dim=8, epochs=60, batch_size=512, n_sir=128)
    prior.fit_posterior(mu, logvar, torch.Generator().manual_seed(0), codes="sample")
    overlap = (prior.components[:2] @ basis.T).svd().S  # cosines of the principal angles
    assert overlap.min() > 0.99, overlap
    s = prior.sample(800, torch.Generator().manual_seed(2))
    held = _mixture(800, 9)
    assert mmd2_unbiased(s @ basis.T, held) < 0.25 * mmd2_unbiased(torch.randn(800, d) @ basis.T, held)
    # the unused directions keep the base prior's N(0, 1)
    rest = s - (s @ basis.T) @ basis
    assert abs(rest.pow(2).sum(1).mean().item() / (d - 2) - 1.0) < 0.05


def test_diffusion_samples_match_a_known_2d_distribution_by_mmd():
    prior = DiffusionPrior(LatentShape.parse("2"), hidden=64, depth=2, epochs=80, batch_size=512, lr=2e-3,
                           sample_steps=50)
    prior.fit(_mixture(3000, 0), torch.Generator().manual_seed(0))
    held = _mixture(1000, 7)
    s = prior.sample(1000, torch.Generator().manual_seed(1))
    assert s.shape == (1000, 2)
    assert mmd2_unbiased(s, held) < 0.1 * mmd2_unbiased(torch.randn(1000, 2), held)
    # same generator, same samples
    assert torch.equal(prior.sample(5, torch.Generator().manual_seed(3)), prior.sample(5, torch.Generator().manual_seed(3)))


def test_diffusion_sampler_keeps_its_x0_within_the_range_of_the_codes():
    """A poor denoiser (here: scrambled) must not compound over the steps into samples far outside the
    codes: the predicted x_0 is clipped to the standardised codes' range, so the last step lands in it."""
    prior = DiffusionPrior(LatentShape.parse("4"), hidden=32, depth=1, epochs=2, timesteps=100, sample_steps=10)
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(300, 4, generator=g) * 2
    prior.fit_posterior(mu, torch.full_like(mu, -4.0), g)
    with torch.no_grad():
        for p in prior.net.parameters():
            p.mul_(50.0)
        z = prior.sample(500, torch.Generator().manual_seed(1))
    y = (z - prior.loc) / prior.scale
    assert torch.isfinite(z).all() and y.abs().max() <= prior.x0_bound + 1e-4


def test_diffusion_checkpoint_from_before_the_x0_clip_loads_unclipped():
    prior = DiffusionPrior(LatentShape.parse("3"), hidden=16, depth=1, epochs=1, timesteps=20, sample_steps=5)
    g = torch.Generator().manual_seed(0)
    prior.fit(torch.randn(64, 3, generator=g), g)
    assert "clipped to +-" in prior.score_notes()["prior_sampler"]
    old = {k: v for k, v in prior.state_dict().items() if k != "x0_bound"}
    again = DiffusionPrior(LatentShape.parse("3"), hidden=16, depth=1, epochs=1, timesteps=20, sample_steps=5)
    old.pop("mix_logit")
    again.load_state_dict(old)
    assert again.x0_bound.item() == float("inf") and bool(again.fitted)
    assert "plain eps" in again.score_notes()["prior_sampler"]  # written before the mixed score
    assert "unclipped" in again.score_notes()["prior_sampler"]
    assert torch.isfinite(again.sample(4, torch.Generator().manual_seed(1))).all()


def test_diffusion_mixed_score_is_the_exact_eps_of_a_standard_normal():
    """Vahdat et al. 2021, Sec. 3.2: with a = 0 the mixed score is sqrt(1 - abar_t) x_t, the exact
    E[eps | x_t] when x_0 ~ N(0, I). With sigma_t^2 = beta (Ho et al. Sec. 3.2: optimal for
    x_0 ~ N(0, I)) the respaced sampler then returns N(0, I) with no net at all; with beta~ (optimal
    for a deterministic x_0) it is under-dispersed, the more so the fewer the steps."""
    x, t = torch.randn(5, 6), torch.tensor([0, 10, 50, 150, 199])
    spread = {}
    for variance in ("beta", "posterior"):
        prior = DiffusionPrior(LatentShape.parse("6"), hidden=16, depth=1, timesteps=200, sample_steps=50,
                               variance=variance)
        prior.fitted.fill_(True)
        with torch.no_grad():
            prior.mix_logit.fill_(float("-inf"))
            assert torch.allclose(prior.eps(x, t), (1 - prior.abar[t]).sqrt()[:, None] * x)
            s = prior.sample(20000, torch.Generator().manual_seed(0))
            assert s.mean(0).abs().max() < 0.03
            spread[variance] = s.std(0)
            prior.mix_logit.fill_(float("inf"))  # a = 1: the net alone
            assert torch.equal(prior.eps(x, t), prior.net(x, t))
    assert (spread["beta"] - 1).abs().max() < 0.02
    assert (spread["posterior"] < 0.95).all()  # 0.92 here: 50 of 200 steps
    with pytest.raises(UserError, match="variance must be"):
        DiffusionPrior(LatentShape.parse("2"), variance="learned")
    assert "mixed" in DiffusionPrior(LatentShape.parse("2")).score_notes()["prior_sampler"]
    assert "plain eps" in DiffusionPrior(LatentShape.parse("2"), mixed=False).score_notes()["prior_sampler"]


@pytest.mark.slow  # a large latent: the full suite
def test_diffusion_mixed_score_keeps_the_unused_dimensions_of_a_large_latent_normal():
    """The seed's large-latent case in small: a 2-D mixture in 2 dimensions, N(0, 1) in 62 more. The net
    alone blows the unused dimensions up (mean |var - 1| 3.4 here); the mixed score keeps them N(0, 1)
    and still learns the mixture."""
    def codes(n: int, seed: int) -> torch.Tensor:
        return torch.cat([_mixture(n, seed), torch.randn(n, 62, generator=torch.Generator().manual_seed(seed + 100))], 1)

    out = {}
    for mixed in (True, False):
        prior = DiffusionPrior(LatentShape.parse("64"), hidden=64, depth=2, epochs=40, batch_size=256, lr=2e-3,
                               timesteps=200, sample_steps=50, mixed=mixed)
        prior.fit(codes(3000, 0), torch.Generator().manual_seed(0))
        s = prior.sample(1500, torch.Generator().manual_seed(1))
        held = codes(1500, 7)
        out[mixed] = (mmd2_unbiased(s, held), (s[:, 2:].var(0) - 1).abs().mean().item(),
                      mmd2_unbiased(s[:, :2], held[:, :2]))
    base_2d = mmd2_unbiased(torch.randn(1500, 2), codes(1500, 7)[:, :2])
    assert out[True][0] < 0.1 * out[False][0]
    assert out[True][1] < 0.25 < out[False][1]
    assert out[True][2] < 0.5 * base_2d


def test_diffusion_prior_has_no_log_prob():
    prior = DiffusionPrior(LatentShape.parse("3"))
    assert prior.has_log_prob is False and NCPPrior.has_log_prob is True
    with pytest.raises(NotImplementedError):
        prior.log_prob(torch.zeros(2, 3))
    with pytest.raises(UserError, match="sample_steps"):
        DiffusionPrior(LatentShape.parse("3"), timesteps=10, sample_steps=20)


def test_ddpm_schedule_ends_in_noise_for_any_number_of_timesteps():
    from latentbench.priors.diffusion import ddpm_betas

    # the default T = 1000 keeps Ho et al.'s schedule exactly
    assert torch.equal(ddpm_betas(1000), torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))
    for t in (2, 10, 50, 100, 1000, 4000):
        abar = torch.cumprod(1 - ddpm_betas(t), 0)
        assert abar[-1] < 1e-3 and (ddpm_betas(t) < 1).all(), t  # 1e-4 .. 0.02 at T = 100 ended at 0.37
    assert ddpm_betas(100)[0].item() == pytest.approx(1e-3)
    with pytest.raises(UserError, match="sample_steps must be in 2..100"):
        DiffusionPrior(LatentShape.parse("3"), timesteps=100, sample_steps=1)
    with pytest.raises(UserError, match="timesteps must be at least 2"):
        DiffusionPrior(LatentShape.parse("3"), timesteps=1, sample_steps=1)


@pytest.mark.parametrize("name", ["ncp_prior", "expost_diffusion"])
def test_new_remedy_trains_on_digits_at_latent_2(name, cpu):
    cell = Cell(remedy=name, latent="2", epochs=2, net={"hidden": [32]}, remedy_params=SMALL[name])
    model, _, _ = train_cell(cell, cpu, quiet=True)
    s = model.generative_prior.sample(7)
    assert s.shape == (7, 2) and torch.isfinite(s).all()
    if model.generative_prior.has_log_prob:
        assert torch.isfinite(model.generative_prior.log_prob(s)).all()


@pytest.mark.parametrize("name", ["ncp_prior", "expost_diffusion"])
def test_new_remedy_trains_with_a_spatial_latent_on_synthetic_16x16(name, cpu):
    cell = Cell(remedy=name, dataset="synthetic", arch="conv", latent="4x4x2", epochs=2,
                data={"n_train": 128, "n_test": 32, "size": 16}, net={"channels": 8}, remedy_params=SMALL[name])
    model, _, _ = train_cell(cell, cpu, quiet=True)
    s = model.generative_prior.sample(3)
    assert s.shape == (3, 2, 4, 4) and torch.isfinite(s).all()
    assert model.decode_mean(s).shape == (3, 1, 16, 16)


@pytest.mark.parametrize("name", ["ncp_prior", "expost_diffusion"])
def test_checkpoint_round_trip_gives_identical_samples(name, cpu, tmp_path):
    cell = Cell(remedy=name, latent="3", epochs=2, net={"hidden": [32]}, remedy_params=SMALL[name])
    ckpt = tmp_path / "c.pt"
    model, _, _ = train_cell(cell, cpu, checkpoint=ckpt, quiet=True)
    loaded, _, _ = load_checkpoint(ckpt, cpu)
    assert type(loaded.expost) is type(model.expost)
    a = model.generative_prior.sample(20, torch.Generator().manual_seed(3))
    b = loaded.generative_prior.sample(20, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    if name == "ncp_prior":
        z = torch.randn(5, 3)
        assert torch.equal(model.expost.log_prob(z), loaded.expost.log_prob(z))


def test_train_cli_reports_kl_and_elbo_under_the_training_prior_for_a_diffusion_prior(cpu, tmp_path, capsys,
                                                                                        monkeypatch):
    from latentbench.cli import main
    from latentbench.remedies.expost_diffusion import ExpostDiffusionRemedy

    small = dataclasses.make_dataclass("Params", [(k, type(v), dataclasses.field(default=v))
                                                  for k, v in SMALL["expost_diffusion"].items()],
                                       bases=(ExpostDiffusionRemedy.Params,), frozen=True)
    monkeypatch.setattr(ExpostDiffusionRemedy, "Params", small)  # small defaults: the CLI takes none
    assert main(["train", "--remedy", "expost_diffusion", "--latent", "2", "--epochs", "1", "--device", "cpu",
                 "--out", str(tmp_path), "--quiet"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("held-out"))
    assert "under the training prior StandardNormal (DiffusionPrior has no log-density)" in line
    assert "kl " in line and "elbo " in line and "nan" not in line
