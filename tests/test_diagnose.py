import math

import pytest
import torch

from latentbench.cli import main
from latentbench.latent import LatentShape
from latentbench.priors.standard_normal import StandardNormal
from latentbench.report.diagnose import verdict
from latentbench.score.latents import score_latents
from latentbench.score.subspace import principal_subspace
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
    assert f"| {metrics['hole_fraction']:.3f} (floor " in report and f"{metrics['sub_spread']:.2f}" in report
    assert "numbers computed now with the cell's scoring settings (" in report and "-0.00" not in report
    # the run folder's verdicts in one table: both checkpoints (they have no record)
    summary = (tmp_path / "diagnose" / "summary.md").read_text()
    assert "2 records:" in summary and summary.count("| vae | ") == 2


def test_diagnose_missing_target_is_one_line(tmp_path, capsys):
    assert main(["diagnose", str(tmp_path / "nothing")]) == 2
    assert "no such checkpoint or run folder" in capsys.readouterr().err


def _verdict(mu, logvar, m=1000, seed=0):
    """The verdict on held-out posteriors (mu, logvar) under an N(0, I) prior, from the scorer's
    calibrated latent metrics (``score_latents``) alone, as for a record without FIDs."""
    d = mu.shape[1]
    prior = StandardNormal(LatentShape.parse(str(d)))
    z_prior = prior.sample(m, torch.Generator().manual_seed(seed + 1))
    metrics, notes = score_latents(prior, mu, logvar, z_prior, seed=seed)
    return verdict(metrics, d, notes)[0]


def _isotropic(d, var=None, offset=None, n=1000, s=0.3, seed=0):
    """q(z|x) = N(m_x, s^2 I), m_x ~ N(offset, diag(var) - s^2 I): the aggregate posterior is exactly
    N(offset, diag(var)) (N(0, I) by default: p = q), every direction informative."""
    g = torch.Generator().manual_seed(seed)
    var = torch.ones(d) if var is None else var
    mu = torch.randn(n, d, generator=g) * (var - s**2).sqrt() + (0.0 if offset is None else offset)
    return mu, torch.full((n, d), 2 * math.log(s))


def _few_used(d, k, var=1.0, offset=0.0, modes=False, n=1000, s=0.3, seed=0):
    """k informative directions (variance ``var`` of q along them, or 2^k separated modes at
    (±0.98, ...) with s = 0.2, unit variance), the other D - k unused (q(z|x) = N(0, 1)), as in a VAE at
    a large latent."""
    g = torch.Generator().manual_seed(seed)
    mu, logvar = torch.zeros(n, d), torch.zeros(n, d)
    if modes:
        s = 0.2
        mu[:, :k] = math.sqrt(1 - s**2) * torch.sign(torch.randn(n, k, generator=g))
    else:
        mu[:, :k] = torch.randn(n, k, generator=g) * math.sqrt(var - s**2) + offset
    logvar[:, :k] = 2 * math.log(s)
    return mu, logvar


def _narrow_along(d, k, var):
    v = torch.ones(d)
    v[:k] = var
    return v


CASES = {
    # p = q exactly
    "matched small": (lambda: _isotropic(8), "matched"),
    "matched large": (lambda: _few_used(1024, 3, n=600), "matched"),
    # the prior too narrow (q 4x wider) and too wide (q 4x narrower) along k of D directions
    "too narrow small": (lambda: _isotropic(8, var=_narrow_along(8, 1, 4.0)), "low_rank"),
    "too narrow large": (lambda: _few_used(1024, 3, var=4.0, n=600), "low_rank"),
    "too wide small": (lambda: _isotropic(8, var=_narrow_along(8, 1, 0.25)), "low_rank"),
    "too wide large": (lambda: _few_used(1024, 3, var=0.25, n=600), "low_rank"),
    "mean offset large": (lambda: _few_used(512, 1, offset=2.0), "low_rank"),
    # well-separated modes under a prior with the same mean and covariance
    "modes small": (lambda: _few_used(2, 2, modes=True), "holes"),
    "modes large": (lambda: _few_used(2048, 2, modes=True, n=600), "low_rank"),
    # an isotropic aggregate posterior half the prior's variance: different spheres once D is large
    "shells small": (lambda: _isotropic(64, var=torch.full((64,), 0.5)), "shells"),
    "shells large": (lambda: _isotropic(512, var=torch.full((512,), 0.5)), "shells"),
    # the prior too narrow along every direction of a small latent: no shells, no holes
    "mismatch small": (lambda: _isotropic(8, var=torch.full((8,), 2.0)), "mismatch"),
    "collapsed small": (lambda: (torch.zeros(500, 8), torch.zeros(500, 8)), "collapsed"),
    "collapsed large": (lambda: (torch.zeros(500, 1024), torch.zeros(500, 1024)), "collapsed"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_diagnose_names_the_right_picture_on_populations_with_known_answers(case):
    make, picture = CASES[case]
    assert _verdict(*make()) == picture


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
             "n_geometry_posteriors": 55, "n_mixture": 28, "scorer_version": SCORER_VERSION, "sub_coverage": 0.5,
             "floors": {"hole_fraction": 0.0123}}
    write_record(ckpt.with_suffix(".json"), make_record(cell, status="ok", metrics=metrics, notes=notes))
    report = diagnose_checkpoint(ckpt, tmp_path / "diag", cpu).read_text()
    assert "numbers from the record beside the checkpoint (111 prior and 111" in report
    assert "geometry on 77 samples per set over\n55 held-out" in report
    assert f"log N_A = {math.log(28):.2f}" in report and "| 0.200 (floor 0.012) |" in report
