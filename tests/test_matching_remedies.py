"""The remedies that match q(z) to p(z) while training (wae_mmd, info_vae, aae, rae, lars_prior): the
maths each rests on, checked on known answers, and one tiny cell of each through the real runner."""

import importlib
import json
import math

import pytest
import torch

from latentbench import create_remedy, list_remedies
from latentbench.latent import LatentShape
from latentbench.priors.lars import LARSPrior
from latentbench.remedies.aae import LatentDiscriminator, discriminator_loss
from latentbench.remedies.matching import WAE_SCALES, kernel_matrix, mmd_unbiased
from latentbench.spec import Cell
from latentbench.training.loop import load_checkpoint, train_cell

NEW = ["wae_mmd", "info_vae", "aae", "rae", "lars_prior"]
DETERMINISTIC = {"wae_mmd", "aae", "rae"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These nets are small: one intra-op thread (two threads on a busy 2-core machine ran the
    discriminator's 1500 steps 45 times slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_each_matching_remedy_is_registered_and_cites_its_paper_and_equation():
    assert set(NEW) <= set(list_remedies())
    for name in NEW:
        cls = type(create_remedy(name))
        doc = importlib.import_module(cls.__module__).__doc__
        assert doc and any(ch.isdigit() for ch in doc) and ("Eq" in doc or "Algorithm" in doc), name
        assert cls.deterministic == (name in DETERMINISTIC), name


@pytest.mark.parametrize("name", NEW)
def test_search_space_suggests_only_known_parameters(name):
    import optuna

    study = optuna.create_study()
    create_remedy(name, **type(create_remedy(name)).search_space(study.ask()))


# --- MMD: the unbiased U-statistic on distributions whose MMD^2 is known exactly -------------------

_SUPPORT = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [-1.5, 1.0]])


def _exact_mmd2(p: torch.Tensor, q: torch.Tensor, kernel: str, scales) -> float:
    """MMD^2 of two distributions on the same four points: (p - q)^T K (p - q)."""
    k = kernel_matrix(_SUPPORT.double(), _SUPPORT.double(), kernel, scales)
    d = (p - q).double()
    return float(d @ k @ d)


def _estimates(p: torch.Tensor, q: torch.Tensor, kernel: str, scales, reps: int = 3000, n: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    ix = torch.multinomial(p.expand(reps, -1), n, replacement=True, generator=g)
    iy = torch.multinomial(q.expand(reps, -1), n, replacement=True, generator=g)
    return torch.stack([mmd_unbiased(_SUPPORT[a], _SUPPORT[b], kernel, scales) for a, b in zip(ix, iy)]).double()


@pytest.mark.parametrize("kernel,scales", [("imq", WAE_SCALES), ("imq", (1.0,)), ("rbf", (1.0,))])
def test_mmd_estimator_is_unbiased_on_a_known_answer(kernel, scales):
    p, q = torch.tensor([0.4, 0.3, 0.2, 0.1]), torch.tensor([0.1, 0.2, 0.3, 0.4])
    truth = _exact_mmd2(p, q, kernel, scales)
    est = _estimates(p, q, kernel, scales)
    se = float(est.std() / math.sqrt(len(est)))
    assert truth > 10 * se  # a real difference, measured
    assert abs(float(est.mean()) - truth) < 4 * se, (float(est.mean()), truth, se)


@pytest.mark.parametrize("kernel,scales", [("imq", WAE_SCALES), ("rbf", (1.0,))])
def test_mmd_estimator_is_zero_in_expectation_for_p_equal_q(kernel, scales):
    p = torch.tensor([0.4, 0.3, 0.2, 0.1])
    est = _estimates(p, p, kernel, scales)
    se = float(est.std() / math.sqrt(len(est)))
    assert abs(float(est.mean())) < 4 * se
    # the biased V-statistic (diagonal kept) would sit clearly above zero: the U-statistic matters here
    x = _SUPPORT[torch.multinomial(p, 6, replacement=True, generator=torch.Generator().manual_seed(1))]
    assert float(kernel_matrix(x, x, kernel, scales).diagonal().mean()) > 0


def test_mmd_of_large_samples_from_one_gaussian_is_near_zero_and_of_shifted_ones_is_not():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1000, 8, generator=g), torch.randn(1000, 8, generator=g)
    same = float(mmd_unbiased(a, b, "imq", WAE_SCALES))
    shifted = float(mmd_unbiased(a, b + 0.5, "imq", WAE_SCALES))
    assert abs(same) < 3e-3 and shifted > 20 * abs(same) and shifted > 0.02


# --- AAE: the discriminator learns D*(z) = q / (q + p) --------------------------------------------

def test_aae_discriminator_reaches_its_optimum_q_over_q_plus_p_in_1d():
    # codes q = N(1, 1), prior p = N(0, 1): D*(z) = q / (q + p) = sigmoid(log q - log p) = sigmoid(z - 1/2)
    torch.manual_seed(0)
    disc = LatentDiscriminator(1, hidden=32)
    opt = torch.optim.Adam(disc.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(1500):
        codes = torch.randn(512, 1, generator=g) + 1.0
        loss = discriminator_loss(disc, codes, torch.randn(512, 1, generator=g))
        opt.zero_grad()
        loss.backward()
        opt.step()
    z = torch.linspace(-1.5, 2.5, 81)[:, None]
    with torch.no_grad():
        d = torch.sigmoid(disc(z))
    assert float((d - torch.sigmoid(z[:, 0] - 0.5)).abs().max()) < 0.06


# --- LARS: the truncated density is normalised and is the sampler's law ---------------------------

def _lars_2d(T: int) -> LARSPrior:
    torch.manual_seed(3)
    prior = LARSPrior(LatentShape.parse("2"), hidden=16, T=T, n_normaliser=1 << 16)
    with torch.no_grad():
        for m in prior.acceptance:
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(3.0)  # an acceptance far from constant, so that Z and a(z) matter
    return prior.eval()


def _grid(lim: float = 7.0, n: int = 351):
    t = torch.linspace(-lim, lim, n)
    zz = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    return zz, float(t[1] - t[0]) ** 2


@pytest.mark.parametrize("T", [2, 5, 100])
def test_lars_normalised_density_integrates_to_one_in_2d(T):
    prior = _lars_2d(T)
    zz, da = _grid()
    with torch.no_grad():
        mass = float(torch.exp(prior.log_prob(zz).double()).sum() * da)
    notes = prior.score_notes()
    assert 0 < notes["log_z_se"] < 0.02 and notes["nll_iw_bound"] is False
    assert "Monte Carlo" in notes["log_normaliser"] and notes["lars_T"] == T
    assert math.exp(notes["log_z"]) < 0.9  # a real reweighting: a third or more of proposals rejected
    assert abs(mass - 1) < 4 * notes["log_z_se"] + 2e-3, (mass, notes)


def test_lars_truncated_sampler_draws_from_its_truncated_density():
    prior = _lars_2d(T=3)  # truncation at 3 proposals leaves a visible share of plain N(0, I) draws
    zz, da = _grid()
    with torch.no_grad():
        w = torch.exp(prior.log_prob(zz).double()) * da
        a_grid = torch.sigmoid(prior.logit(zz)).double()
        s = prior.sample(40000, torch.Generator().manual_seed(0))
        a_s = torch.sigmoid(prior.logit(s)).double()
    assert s.shape == (40000, 2)
    # E[a(z)] under p_T by quadrature and by the sampler's draws
    assert abs(float((w * a_grid).sum()) - float(a_s.mean())) < 4 * float(a_s.std()) / 200 + 2e-3
    mean_grid = (w[:, None] * zz.double()).sum(0)
    assert torch.allclose(s.double().mean(0), mean_grid, atol=0.03)


def test_lars_normaliser_is_estimated_again_after_training_changes_the_weights():
    prior = _lars_2d(T=100)
    first = prior.score_notes()["log_z"]
    prior.train()
    with torch.no_grad():
        prior.acceptance[-1].bias.add_(2.0)  # accept more
    prior.eval()
    assert prior.score_notes()["log_z"] > first + 0.1


# --- deterministic encoders -----------------------------------------------------------------------

def test_a_deterministic_encoder_trains_with_z_equal_to_mu_and_no_kl(cpu):
    from latentbench.model import build_model

    model, remedy = build_model(Cell(remedy="wae_mmd", latent="3", net={"hidden": [16]}), (1, 8, 8))
    assert model.deterministic and remedy.deterministic
    x = torch.rand(5, 1, 8, 8)
    a, b = model.terms(x), model.terms(x)
    assert torch.equal(a["rec"], b["rec"]) and torch.equal(a["kl"], torch.zeros(5))
    vae, _ = build_model(Cell(remedy="vae", latent="3", net={"hidden": [16]}), (1, 8, 8))
    assert not vae.deterministic


@pytest.mark.parametrize("name", NEW)
def test_each_matching_remedy_trains_with_a_spatial_latent_on_synthetic_16x16(name, cpu):
    cell = Cell(remedy=name, dataset="synthetic", arch="conv", latent="4x4x2", epochs=2,
                data={"n_train": 128, "n_test": 32, "size": 16}, net={"channels": 8},
                remedy_params={"disc_hidden": 32} if name == "aae" else {})
    model, _, info = train_cell(cell, cpu, quiet=True)
    assert all(math.isfinite(h["loss"]) for h in info["history"])
    s = model.generative_prior.sample(3, torch.Generator().manual_seed(0))
    assert s.shape == (3, 2, 4, 4) and torch.isfinite(s).all()
    assert model.decode_mean(s).shape == (3, 1, 16, 16)


def test_a_resumed_aae_cell_gives_the_numbers_of_an_uninterrupted_run(cpu, tmp_path):
    cell = Cell(remedy="aae", latent="3", epochs=3, net={"hidden": [32]}, remedy_params={"disc_hidden": 64})
    whole, _, _ = train_cell(cell, cpu, quiet=True)
    ckpt = tmp_path / "c.pt"
    calls = []

    def stop_in_epoch_two():
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_cell(cell, cpu, checkpoint=ckpt, quiet=True, checkpoint_every=1, guard=stop_in_epoch_two)
    partial = torch.load(ckpt, weights_only=False)
    assert partial["epoch"] == 1 and partial["aux"] and partial["aux_optimizer"]["state"]
    resumed, _, _ = train_cell(cell, cpu, checkpoint=ckpt, quiet=True)
    for k, v in whole.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    loaded, remedy, payload = load_checkpoint(ckpt, cpu)
    assert loaded.deterministic and payload["complete"]
    again = torch.load(ckpt, weights_only=False)["aux"]
    assert all(torch.equal(again[k], remedy.aux_modules().state_dict()[k]) for k in again)


# --- one tiny cell of each through the real runner ------------------------------------------------

@pytest.fixture(scope="module")
def matching_run(tmp_path_factory):
    from latentbench.cli import main

    out = tmp_path_factory.mktemp("matching") / "run"
    args = ["run", "--remedies", ",".join(NEW), "--latents", "2", "--epochs", "2", "--n-samples", "150",
            "--iw-k", "4", "--quiet", "--out", str(out)]
    assert main(args) == 0
    records = {}
    for path in (out / "records").glob("*.json"):
        rec = json.loads(path.read_text())
        records[rec["cell"]["remedy"]] = rec
    return records


@pytest.mark.parametrize("name", NEW)
def test_a_tiny_cell_of_each_matching_remedy_is_scored_with_fids(matching_run, name):
    rec = matching_run[name]
    assert rec["status"] == "ok", rec.get("error")
    m = rec["metrics"]
    for key in ("fid_prior", "fid_post", "fid_prior_post"):
        assert m.get(key) is not None and math.isfinite(m[key]), key


@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
def test_a_deterministic_remedy_records_no_metric_that_needs_a_posterior_variance(matching_run, name):
    m = matching_run[name]["metrics"]
    assert m.get("kl") is None and m.get("nll_iw") is None


def test_info_vae_and_lars_records_keep_their_density_metrics(matching_run):
    for name in ("info_vae", "lars_prior"):
        m = matching_run[name]["metrics"]
        assert m.get("kl") is not None and m.get("nll_iw") is not None, name


def test_lars_record_states_its_normaliser_with_its_error_and_the_sampler(matching_run):
    notes = matching_run["lars_prior"]["notes"]
    assert notes["log_z_se"] > 0 and math.isfinite(notes["log_z"]) and notes["nll_iw_bound"] is False
    assert "truncated accept/reject" in notes["prior_sampler"] and notes["lars_T"] == 100


def test_rae_record_samples_from_a_ten_component_gmm(matching_run):
    assert matching_run["rae"]["notes"]["gmm_k"] == 10
