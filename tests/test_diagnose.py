import math

import pytest
import torch

from latentbench.cli import main
from latentbench.latent import LatentShape
from latentbench.priors.standard_normal import StandardNormal
from latentbench.report.diagnose import verdict
from latentbench.score.geometry import latent_metrics
from latentbench.score.subspace import principal_subspace, subspace_metrics
from latentbench.training.loop import train_cell


def test_diagnose_writes_a_report_with_every_plot_and_the_records_numbers(tiny_cell, cpu, tmp_path, capsys):
    from latentbench.data import load_data
    from latentbench.score.scorer import score_model

    for latent in ("2", "6"):
        train_cell(tiny_cell(latent=latent), cpu, checkpoint=tmp_path / "records" / f"m{latent}.pt", quiet=True)
    assert main(["diagnose", str(tmp_path), "--quiet"]) == 0
    for latent in ("2", "6"):
        folder = tmp_path / "diagnose" / f"m{latent}"
        report = (folder / "report.md").read_text()
        for key in ("hole_fraction", "marginal_kl", "active_units", "sub_spread", "fid_swap_sub", "**Reading.**"):
            assert key in report, key
        for png in ("norms.png", "spectrum.png", "dimensions.png", "grids.png", "contours.png"):
            assert (folder / png).stat().st_size > 5000, png
            assert f"]({png})" in report
        assert "StandardNormal" in report  # the prior by its real name
    assert "principal components" in (tmp_path / "diagnose" / "m6" / "report.md").read_text()
    # the numbers are the scorer's: same settings, same seed
    cell = tiny_cell(latent="6")
    model, data, _ = train_cell(cell, cpu, quiet=True)
    metrics, _, _ = score_model(model, load_data(cell.dataset, seed=cell.seed), cell, cpu)
    report = (tmp_path / "diagnose" / "m6" / "report.md").read_text()
    assert f"| {metrics['hole_fraction']:.3f} |" in report and f"{metrics['sub_spread']:.2f}" in report


def test_diagnose_missing_target_is_one_line(tmp_path, capsys):
    assert main(["diagnose", str(tmp_path / "nothing")]) == 2
    assert "no such checkpoint or run folder" in capsys.readouterr().err


def _case(mu, logvar, n_draw=1000, seed=0):
    """Metrics of synthetic posteriors (mu, logvar) against an N(0, I) prior, as the scorer computes them."""
    g = torch.Generator().manual_seed(seed)
    n, d = mu.shape
    idx = torch.randint(n, (n_draw,), generator=g)
    zq = mu[idx] + torch.exp(0.5 * logvar[idx]) * torch.randn(n_draw, d, generator=g)
    zp = torch.randn(n_draw, d, generator=g)
    prior = StandardNormal(LatentShape.parse(str(d)))
    m = latent_metrics(prior, mu, logvar, zp, zq, idx)
    m.update(subspace_metrics(prior, mu, logvar, zp, zq, principal_subspace(mu)))
    return verdict(m, d, n)[0]


@pytest.mark.parametrize("name", ["low_rank", "holes", "shells", "collapsed", "matched"])
def test_diagnose_names_the_right_picture_on_synthetic_aggregate_posteriors(name):
    g = torch.Generator().manual_seed(0)
    n = 500
    if name == "low_rank":  # the seed's large latent: rank-5 information in D = 4096 plus unit noise
        q, _ = torch.linalg.qr(torch.randn(4096, 5, generator=g))
        mu = (torch.randn(n, 5, generator=g) * torch.tensor([3.0, 2.5, 2.0, 1.5, 1.2])) @ q.T
        logvar = torch.zeros(n, 4096)
    elif name == "holes":  # a small latent with disjoint posterior bubbles
        mu = 1.5 * torch.randn(n, 8, generator=g)
        logvar = torch.full((n, 8), math.log(0.01))
    elif name == "shells":  # an isotropic aggregate posterior twice as wide as the prior in D = 256
        mu = math.sqrt(1.5) * torch.randn(n, 256, generator=g)
        logvar = torch.full((n, 256), math.log(0.5))
    elif name == "collapsed":  # q(z|x) = N(0, I) for every x
        mu, logvar = torch.zeros(n, 16), torch.zeros(n, 16)
    else:  # q(z) = N(0, I) exactly
        mu = math.sqrt(0.5) * torch.randn(n, 6, generator=g)
        logvar = torch.full((n, 6), math.log(0.5))
    assert _case(mu, logvar) == name


def test_diagnose_plots_in_chunks_without_a_full_svd(tmp_path, monkeypatch):
    from latentbench.report.diagnose import _column_stats, _contours, _per_dimension, _plane

    g = torch.Generator().manual_seed(0)
    d = 300
    mu = 5.0 + torch.randn(400, d, generator=g) * torch.linspace(2, 0.01, d)
    logvar = torch.randn(400, d, generator=g) * 0.1 - 1
    mean, var = _column_stats(mu, rows=7)
    assert torch.allclose(mean, mu.double().mean(0), atol=1e-5) and torch.allclose(var, mu.double().var(0), rtol=1e-4)
    assert torch.allclose(_column_stats(logvar, 7, torch.exp)[0], logvar.double().exp().mean(0), rtol=1e-5)

    def no_svd(*a, **k):
        raise AssertionError("full SVD")

    monkeypatch.setattr(torch.linalg, "svd", no_svd)
    z_post = mu + torch.randn(400, d, generator=g) * 0.5
    prior = StandardNormal(LatentShape.parse(str(d)))
    sub = principal_subspace(mu)
    for s in (sub, {"k": 0, "basis": sub["basis"][:, :0]}, {"k": 1, "basis": sub["basis"][:, :1]}):
        basis = _plane(s, var)
        assert torch.allclose(basis @ basis.T, torch.eye(2, dtype=torch.float64), atol=1e-6)
        if s["k"]:
            assert torch.allclose(basis[0], sub["basis"][:, 0].double(), atol=1e-6)
    how = _contours(prior, torch.randn(300, d, generator=g), z_post, tmp_path / "c.png", sub, mem_bytes=1 << 16)
    assert "principal components" in how and (tmp_path / "c.png").stat().st_size > 5000
    _per_dimension(mu, logvar, torch.randn(300, d, generator=g), "vae", tmp_path / "d.png", mem_bytes=1 << 16)
    assert (tmp_path / "d.png").stat().st_size > 5000


def test_diagnose_shows_the_records_sample_counts_beside_the_records_numbers(tiny_cell, cpu, tmp_path):
    from latentbench.report.diagnose import SHOWN, diagnose_checkpoint
    from latentbench.runner.records import make_record, write_record
    from latentbench.score.scorer import SCORER_VERSION

    cell = tiny_cell(latent="6")
    ckpt = tmp_path / "m.pt"
    train_cell(cell, cpu, checkpoint=ckpt, quiet=True)
    metrics = {k: 0.5 for k in SHOWN} | {"sub_dims": 3, "active_units": 6, "hole_fraction": 0.2}
    notes = {"n_prior": 111, "n_post": 111, "n_data": 111, "iw_k": 8, "n_geometry": 77,
             "n_geometry_posteriors": 55, "scorer_version": SCORER_VERSION, "sub_coverage": 0.5}
    write_record(ckpt.with_suffix(".json"), make_record(cell, status="ok", metrics=metrics, notes=notes))
    report = diagnose_checkpoint(ckpt, tmp_path / "diag", cpu).read_text()
    assert "numbers from the record beside the checkpoint (111 prior and 111" in report
    assert "geometry on 77 samples per set over 55 held-out" in report
    assert f"log N = {math.log(55):.2f}" in report
