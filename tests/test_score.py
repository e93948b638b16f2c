import math

import pytest
import torch
from torch import nn

from latentbench.data import load_data
from latentbench.latent import LatentShape
from latentbench.model import VAE
from latentbench.priors.standard_normal import StandardNormal
from latentbench.score.features import ensure_classifier
from latentbench.score.fidelity import compare
from latentbench.score.geometry import active_units
from latentbench.score.latents import score_latents
from latentbench.score.likelihood import iwae_bound


def _posteriors(n=2000, d=2, shift=0.0, seed=0):
    """Posteriors whose aggregate is exactly N(shift, I): mu ~ N(shift, 0.5 I), var = 0.5."""
    g = torch.Generator().manual_seed(seed)
    mu = shift + math.sqrt(0.5) * torch.randn(n, d, generator=g)
    logvar = torch.full((n, d), math.log(0.5))
    z_prior = torch.randn(n, d, generator=g)
    return mu, logvar, z_prior


def _geometry(shift, d=2):
    mu, logvar, zp = _posteriors(d=d, shift=shift)
    prior = StandardNormal(LatentShape.parse(str(d)))
    return score_latents(prior, mu, logvar, zp, seed=0, analytic_kl=prior.analytic_kl(mu, logvar))[0]


def test_feature_space_gives_torch_fidelitys_own_numbers(cpu):
    """Each set through the extractor once, compared through torch-fidelity's statistics, KID and PRC
    functions: the numbers of torch_fidelity.calculate_metrics on the same inputs."""
    from latentbench.score.fidelity import compare_reference

    data = load_data("digits")
    weights, _ = ensure_classifier(data, cpu)
    a, b = data.train[:300], data.test[:300]
    ours = compare(a, b, features="domain", weights=weights, device=cpu, seed=3)
    ref = compare_reference(a, b, features="domain", weights=weights, device=cpu, seed=3)
    for key, v in ref.items():
        assert ours[key] == pytest.approx(v, rel=1e-6, abs=1e-9), key


def test_identical_sample_sets_have_zero_fid_and_full_precision_recall(cpu):
    data = load_data("digits")
    weights, info = ensure_classifier(data, cpu)
    assert info["accuracy"] > 0.9
    r = compare(data.test, data.test, features="domain", weights=weights, device=cpu, seed=0)
    assert abs(r["fid"]) < 1e-3
    assert r["precision"] > 0.99 and r["recall"] > 0.99
    other = compare(data.test, torch.rand_like(data.test), features="domain", weights=weights, device=cpu, seed=0)
    assert other["fid"] > 10 and other["precision"] < 0.5
    # KID's unbiased estimate is ~0 (slightly negative) for identical sets, far above for different ones
    assert other["kid"] > 10 * abs(r["kid"])


def test_aggregate_posterior_equal_to_the_prior_has_no_gap():
    m = _geometry(0.0)
    assert abs(m["marginal_kl"]) < 0.05
    assert abs(m["mmd_latent"]) < 2e-3
    assert 0.003 < m["hole_fraction"] < 0.025
    assert abs(m["norm_prior"] - m["norm_post"]) < 0.05


@pytest.mark.slow
def test_gap_metrics_grow_with_the_shift_of_the_aggregate_posterior():
    ms = [_geometry(s) for s in (0.0, 0.5, 1.0, 2.0)]
    for key in ("marginal_kl", "mmd_latent", "hole_fraction", "mean_offset"):
        vals = [m[key] for m in ms]
        assert all(a < b for a, b in zip(vals, vals[1:])), (key, vals)


def test_mutual_info_plus_marginal_kl_is_the_mean_kl_over_the_mixture_half():
    g = torch.Generator().manual_seed(0)
    mu, logvar = 0.7 * torch.randn(2000, 3, generator=g), torch.full((2000, 3), math.log(0.5))
    prior = StandardNormal(LatentShape.parse("3"))
    m, _ = score_latents(prior, mu, logvar, torch.randn(2000, 3, generator=g), seed=0)  # kl by Monte Carlo
    assert abs(m["mutual_info"] + m["marginal_kl"] - m["kl"]) < 1e-6


def test_active_units_counts_the_informative_dimensions():
    g = torch.Generator().manual_seed(0)
    mu = torch.zeros(500, 8)
    mu[:, [1, 4, 6]] = torch.randn(500, 3, generator=g)
    mu[:, 0] = 0.01 * torch.randn(500, generator=g)  # var 1e-4: inactive
    assert active_units(mu) == 3


class _IdentityGaussian(nn.Module):
    def __init__(self, sigma):
        super().__init__()
        self.sigma = sigma

    def log_prob(self, x, out):
        return (-0.5 * ((x - out) / self.sigma) ** 2 - math.log(self.sigma) - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)

    def mean(self, out):
        return out


class _Linear(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, v):
        return self.fn(v)


def _linear_gaussian(var_scale):
    """x = W z + b + sigma eps, z ~ N(0, I). The encoder is the exact posterior with its variance
    scaled by ``var_scale`` (1 = exact)."""
    torch.manual_seed(0)
    d, p, sigma = 2, 5, 0.5
    q, _ = torch.linalg.qr(torch.randn(p, d))
    w, b = q * torch.tensor([1.5, 0.7]), torch.randn(p)  # orthogonal columns: a diagonal posterior
    cov_post = torch.linalg.inv(torch.eye(d) + w.T @ w / sigma**2)
    a = cov_post @ w.T / sigma**2
    logvar = torch.log(torch.diagonal(cov_post) * var_scale)

    enc = _Linear(lambda x: ((x.flatten(1) - b) @ a.T, logvar.expand(len(x), d)))
    dec = _Linear(lambda z: (z @ w.T + b).reshape(-1, 1, 1, p))
    model = VAE(enc, dec, StandardNormal(LatentShape.parse(str(d))), _IdentityGaussian(sigma), LatentShape.parse(str(d)))
    x = (torch.randn(300, d) @ w.T + b + sigma * torch.randn(300, p)).reshape(-1, 1, 1, p)
    marg = torch.distributions.MultivariateNormal(b, w @ w.T + sigma**2 * torch.eye(p))
    exact = -marg.log_prob(x.flatten(1)).mean().item()
    return model, x, exact


def test_iwae_is_exact_with_the_true_posterior_and_tightens_with_k_otherwise():
    model, x, exact = _linear_gaussian(1.0)
    r = iwae_bound(model, x, k=10, generator=torch.Generator().manual_seed(0))
    assert abs(r["nll_iw"] - exact) < 1e-3 and abs(-r["elbo_iw"] - exact) < 1e-3
    model, x, exact = _linear_gaussian(3.0)
    nlls = []
    for k in (1, 10, 100, 2000):
        r = iwae_bound(model, x, k=k, generator=torch.Generator().manual_seed(1))
        assert r["nll_iw"] <= -r["elbo_iw"] + 1e-6  # the bound is at least the ELBO
        nlls.append(r["nll_iw"])
    assert all(a >= b - 1e-3 for a, b in zip(nlls, nlls[1:])), nlls
    assert nlls[0] - exact > 0.1 and abs(nlls[-1] - exact) < 0.02


def test_feature_cache_is_reused_and_invalidated_when_its_key_changes(cpu, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTBENCH_CACHE", str(tmp_path))
    data = load_data("digits")
    p1, i1 = ensure_classifier(data, cpu, {"epochs": 2})
    p2, i2 = ensure_classifier(data, cpu, {"epochs": 2})
    assert not i1["cached"] and i2["cached"] and p1 == p2
    p3, i3 = ensure_classifier(data, cpu, {"epochs": 3})
    assert not i3["cached"] and p3 != p1
    data.train = data.train[1:]
    data.train_labels = data.train_labels[1:]
    p4, i4 = ensure_classifier(data, cpu, {"epochs": 2})
    assert not i4["cached"] and p4 != p1


def test_inception_without_weights_fails_with_one_line(monkeypatch, tmp_path):
    from latentbench.errors import UserError

    monkeypatch.setenv("LATENTBENCH_INCEPTION_WEIGHTS", str(tmp_path / "missing.pth"))
    with pytest.raises(UserError, match="Inception weights not found at .*missing.pth"):
        compare(torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8), features="inception", weights=None,
                device=torch.device("cpu"), seed=0)


def test_score_cli_prints_metrics_and_writes_a_record(tiny_cell, cpu, tmp_path, capsys):
    import json

    from latentbench.cli import main
    from latentbench.training.loop import train_cell

    ckpt = tmp_path / "m.pt"
    train_cell(tiny_cell(), cpu, checkpoint=ckpt, quiet=True)
    assert main(["score", str(ckpt), "--n", "300", "--iw-k", "5", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "fid_prior_post" in out and "hole_fraction" in out
    rec_path = next(line.split("record: ", 1)[1] for line in out.splitlines() if line.startswith("record: "))
    rec = json.loads(open(rec_path).read())
    assert rec["status"] == "ok" and rec["notes"]["n_prior"] == 300 and rec["cell"]["n_samples"] == 300


def test_scores_do_not_depend_on_what_ran_before_in_the_process(cpu):
    from latentbench.score.scorer import score_model
    from latentbench.spec import Cell
    from latentbench.training.loop import train_cell

    cell = Cell(remedy="two_stage", latent="3", epochs=2, n_samples=200, iw_k=4, net={"hidden": [32]},
                remedy_params={"hidden": 32, "fit_epochs": 3})
    model, data, _ = train_cell(cell, cpu, quiet=True)
    a, _, _ = score_model(model, data, cell, cpu)
    torch.randn(1000)  # disturb the global RNG, as earlier cells of a grid would
    b, _, _ = score_model(model, data, cell, cpu)
    assert a == b


@pytest.mark.slow
def test_numbers_do_not_change_with_the_memory_bound(tiny_cell, cpu):
    from latentbench.score.scorer import ScoreContext
    from latentbench.training.loop import train_cell

    cell = tiny_cell(latent="4x2x2", n_samples=1500, iw_k=6)  # 1500 > one draw block: several blocks
    model, data, _ = train_cell(cell, cpu, quiet=True)
    small = ScoreContext(model, data, cell, cpu, mem_bytes=1 << 20, geometry_bytes=1 << 30)
    large = ScoreContext(model, data, cell, cpu, mem_bytes=1 << 32, geometry_bytes=1 << 30)
    assert small.notes["n_prior"] == 1500 and small.notes["n_post"] == 1500
    a, b = small.samples()["images"], large.samples()["images"]
    swaps = {"swap_sub", "swap_rest", "swap_sub_rand", "swap_rest_rand"}
    assert set(a) == set(b) == {"prior", "post", "post_a", "post2", "mu_unit", "data"} | swaps
    for key in a:
        assert a[key].shape[0] == (1500 if key != "data" else len(data.test))
        assert torch.allclose(a[key], b[key], atol=1e-5), key
    for stage in ("latents", "likelihood"):
        x, y = getattr(small, stage)(), getattr(large, stage)()
        for key, v in x.items():
            if isinstance(v, float):
                assert v == pytest.approx(y[key], rel=1e-6, abs=1e-9), (stage, key)


def test_memory_bound_follows_the_device_unless_overridden(monkeypatch, cpu):
    from latentbench.device import MEMORY_ENV, memory_bytes, set_memory_gb, stable_memory_bytes
    from latentbench.errors import UserError

    monkeypatch.delenv(MEMORY_ENV, raising=False)
    free, stable = memory_bytes(cpu), stable_memory_bytes(cpu)
    assert free >= 1 << 28 and stable >= 1 << 28
    set_memory_gb(0.5)
    assert memory_bytes(cpu) == 1 << 29
    assert stable_memory_bytes(cpu) == stable  # --memory-gb sets batch sizes only, never a sample count
    set_memory_gb(None)
    monkeypatch.setenv(MEMORY_ENV, "lots")
    with pytest.raises(UserError, match="LATENTBENCH_MEMORY_GB"):
        memory_bytes(cpu)
    with pytest.raises(UserError, match="memory-gb must be > 0"):
        set_memory_gb(0)


def test_fair_merge_guard_refuses_a_different_sample_count():
    from latentbench.report.compare import differences

    def rec(n):
        return {"status": "ok", "cell": {"remedy": "vae", "latent": "8", "seed": 0, "n_samples": 10000},
                "notes": {"scorer_version": 3, "n_prior": n, "n_post": n, "n_data": n}}

    diffs = differences([rec(10000)], [rec(2048)])
    assert any(d.startswith("n_prior") for d in diffs) and any(d.startswith("n_post") for d in diffs)


@pytest.mark.slow
def test_mmd_latent_does_not_depend_on_the_memory_bound():
    from latentbench.score.geometry import mmd2_unbiased

    mu, logvar, zp = _posteriors(n=600, d=8, shift=0.3)
    zq = mu + math.sqrt(0.5) * torch.randn(mu.shape, generator=torch.Generator().manual_seed(5))
    prior = StandardNormal(LatentShape.parse("8"))
    small, _ = score_latents(prior, mu, logvar, zp, seed=0, mem_bytes=1 << 12)  # chunks of a row or two
    large, _ = score_latents(prior, mu, logvar, zp, seed=0, mem_bytes=1 << 30)
    for key, v in large.items():
        assert small[key] == pytest.approx(v, rel=1e-6, abs=1e-9), key
    # against the textbook formula on the pooled distance matrix
    x, y = zp[:300].double(), zq[:300].double()
    d2 = torch.cdist(torch.cat([x, y]), torch.cat([x, y])).pow(2)
    bw = math.sqrt(d2[~torch.eye(600, dtype=torch.bool)].median().item() / 2)
    k = torch.exp(-d2 / (2 * bw**2))
    ref = ((k[:300, :300].sum() - 300) / (300 * 299) + (k[300:, 300:].sum() - 300) / (300 * 299)
           - 2 * k[:300, 300:].mean()).item()
    assert mmd2_unbiased(zp[:300], zq[:300], mem_bytes=1 << 12) == pytest.approx(ref, rel=1e-4, abs=1e-7)


def test_iwae_batches_count_a_conv_decoders_feature_maps():
    """The generic per-latent memory guess (16 x (latent + image) floats) is kept where it is generous
    (MLP decoders: same batches as before), and replaced by the decoder's measured activations where
    they are larger: a conv decoder's feature maps are ~100x its 28x28 image, and IWAE batches sized
    by the guess ran a 2-core, 24 GB machine out of memory at latent 7x7x16."""
    from latentbench.model import build_model
    from latentbench.score.likelihood import iwae_rows
    from latentbench.score.sampling import bytes_per_item, decoder_activations
    from latentbench.spec import Cell

    mem = 6 << 30
    conv, _ = build_model(Cell(arch="conv", latent="7x7x16", dataset="fashion_mnist"), (1, 28, 28))
    mlp, _ = build_model(Cell(arch="mlp", latent="4096", net={"hidden": [256, 256]}), (1, 28, 28))
    a_conv, a_mlp = decoder_activations(conv), decoder_activations(mlp)
    assert a_conv > 50 * 784 and a_mlp < 16 * (4096 + 784)
    assert bytes_per_item(4096, 784, a_mlp) == bytes_per_item(4096, 784)
    assert iwae_rows(20, 784, 784, mem, a_conv) * 20 * 2 * a_conv * 4 <= mem < iwae_rows(20, 784, 784, mem) * 20 * 2 * a_conv * 4
