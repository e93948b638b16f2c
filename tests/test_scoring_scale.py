"""Scoring that scales with the board: the likelihood bound on ``iw_images`` held-out images (recorded,
a fair-comparison field), progress inside each scoring stage, and the feature classifier trained once
before the first cell of a grid."""

import inspect
import os

import pytest

from latentbench.spec import Cell, Grid

BASE = {"epochs": 2, "n_samples": 150, "iw_k": 4, "net": {"hidden": [32]}, "data": {"max_train": 300}}


def _trained(cpu):
    from latentbench.training.loop import train_cell

    model, data, _ = train_cell(Cell(**BASE, latent="2"), cpu, quiet=True)
    return model, data


def test_iw_images_bounds_the_likelihood_on_the_first_images_and_is_recorded(cpu):
    import torch

    from latentbench.score.likelihood import iwae_bound
    from latentbench.score.scorer import score_model
    from latentbench.score.streams import stream

    model, data = _trained(cpu)
    full = Cell(**BASE, latent="2")
    part = Cell(**BASE, latent="2", iw_images=40)
    assert full.id == Cell(**BASE, latent="2", iw_images=0).id  # the default keeps every existing id
    assert part.id != full.id
    m_full, n_full, _ = score_model(model, data, full, cpu)
    m_part, n_part, _ = score_model(model, data, part, cpu)
    assert n_full["iw_images"] == len(data.test) and n_part["iw_images"] == 40
    assert m_part["nll_iw"] != m_full["nll_iw"]
    with torch.random.fork_rng(devices=[]):
        want = iwae_bound(model, data.test[:40], k=4, generator=stream(0, "likelihood/iwae"))["nll_iw"]
    assert m_part["nll_iw"] == pytest.approx(want, rel=1e-6)  # the images' own draws, as in the whole set
    assert m_part["fid_prior"] == m_full["fid_prior"]  # nothing else changes
    more = Cell(**BASE, latent="2", iw_images=10**9)
    assert score_model(model, data, more, cpu)[1]["iw_images"] == len(data.test)


def test_iw_images_is_a_setting_of_the_fair_comparison_and_a_spec_key(tmp_path):
    from latentbench.errors import UserError
    from latentbench.report.compare import settings
    from latentbench.runner.records import make_record
    from latentbench.spec import load_grid

    a = make_record(Cell(latent="2"), status="ok", notes={"scorer_version": 5})
    b = make_record(Cell(latent="2", iw_images=500), status="ok", notes={"scorer_version": 5})
    old = {**a, "cell": {k: v for k, v in a["cell"].items() if k != "iw_images"}}  # a record before the field
    assert settings(a) != settings(b) and settings(old) == settings(a)
    spec = tmp_path / "s.toml"
    spec.write_text('remedies = ["vae"]\nlatents = ["2"]\n[score]\niw_images = 500\n')
    assert load_grid(spec).cells()[0].iw_images == 500
    with pytest.raises(UserError, match="iw_images must be >= 0"):
        Cell(iw_images=-1)


def test_the_likelihood_stage_reports_its_progress(cpu):
    from latentbench.score.scorer import score_model

    model, data = _trained(cpu)
    seen = []
    score_model(model, data, Cell(**BASE, latent="2"), cpu, mem_bytes=1 << 20,
                on_stage=lambda name, fraction=0.0: seen.append((name, fraction)))
    likelihood = [f for name, f in seen if name == "likelihood"]
    assert likelihood[0] == 0.0 and len(likelihood) > 2
    assert likelihood == sorted(likelihood) and 0.9 <= likelihood[-1] <= 1.0
    assert any(name == "sample" and f > 0 for name, f in seen)


def test_the_bar_moves_inside_a_scoring_stage():
    from latentbench.runner.progress import GridProgress

    p = GridProgress("g", 1, quiet=False, file=open(os.devnull, "w"))
    p.start("a", "vae z=2 s0")
    p.stage("a", "likelihood")
    start = p.bar.n
    p.stage("a", "likelihood", 0.5)
    assert p.bar.n > start and "scoring likelihood 50%" in p.active["a"]["where"]
    p.stage("a", "fidelity")
    assert p.bar.n > start
    p.close()


def test_the_feature_classifier_is_trained_once_before_the_first_cell(tmp_path, cpu, monkeypatch):
    import latentbench.score.features as features
    from latentbench.runner.grid import run_grid

    monkeypatch.setenv("LATENTBENCH_CACHE", str(tmp_path / "cache"))
    trained = []
    real = features._train_classifier

    def spy(*a, **k):
        trained.append([f.function for f in inspect.stack()])
        return real(*a, **k)

    monkeypatch.setattr(features, "_train_classifier", spy)
    g = Grid(name="c", remedies=["vae", "beta_vae"], latents=["2"], seeds=[0], base=dict(BASE))
    assert run_grid(g, tmp_path / "run", cpu, quiet=True)["done"] == 2
    assert len(trained) == 1
    assert "prepare_features" in trained[0] and "run_cell" not in trained[0]
