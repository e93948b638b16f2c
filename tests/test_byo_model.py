"""Bring your own VAE: a model trained outside latentbench, wrapped, diagnosed, fixed and graded."""

import json
import textwrap

import numpy as np
import pytest
import torch

import latentbench as lb
from latentbench.cli import main

# A user's model file: an MLP VAE on 8x8 digits whose decoder returns sigmoid images (as most user code does).
MODEL_PY = textwrap.dedent('''
    import torch
    from torch import nn


    class Enc(nn.Module):
        def __init__(self, d=4, nan=False, shape_bug=False):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2 * d))
            self.nan, self.shape_bug = nan, shape_bug

        def forward(self, x):
            mu, logvar = self.net(x).chunk(2, dim=1)
            if self.nan:
                mu = mu * float("nan")
            if self.shape_bug:
                return mu, logvar[:, :2]
            return mu, logvar


    class Dec(nn.Module):
        def __init__(self, d=4, size=8):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(d, 64), nn.ReLU(), nn.Linear(64, size * size))
            self.size = size

        def forward(self, z):
            return torch.sigmoid(self.net(z)).view(-1, 1, self.size, self.size)


    class MyVAE(nn.Module):
        def __init__(self, d=4):
            super().__init__()
            self.encoder, self.decoder = Enc(d), Dec(d)


    def build():
        m = MyVAE()
        return m.encoder, m.decoder

    def build_wide():
        return MyVAE(d=6).encoder, MyVAE(d=6).decoder

    def build_nan():
        return Enc(nan=True), Dec()

    def build_shape_bug():
        return Enc(shape_bug=True), Dec()

    def build_big_images():
        return Enc(), Dec(size=9)

    def build_raises():
        raise ValueError("no GPU here")

    def build_wrong():
        return 42

    def train(x, epochs, d=4, seed=0):
        torch.manual_seed(seed)
        m = MyVAE(d)
        opt = torch.optim.Adam(m.parameters(), 3e-3)
        for _ in range(epochs):
            for xb in x[torch.randperm(len(x))].split(256):
                mu, logvar = m.encoder(xb)
                z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
                rec = ((m.decoder(z) - xb) ** 2).flatten(1).sum(1) / (2 * 0.05**2)
                kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(1)
                opt.zero_grad()
                (rec + kl).mean().backward()
                opt.step()
        return m
''')

SCORE = ["--n-samples", "200", "--iw-k", "4", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory):
    """A folder with the user's model file and its trained weights (w.pt); tests chdir into it."""
    import importlib
    import sys

    from latentbench.data import load_data

    folder = tmp_path_factory.mktemp("user")
    (folder / "mymodel.py").write_text(MODEL_PY)
    sys.path.insert(0, str(folder))
    try:
        mod = importlib.import_module("mymodel")
        model = mod.train(load_data("digits", seed=0).train, epochs=40)
    finally:
        sys.path.remove(str(folder))
    torch.save(model.state_dict(), folder / "w.pt")
    return folder, mod, model


@pytest.fixture
def in_user_dir(user_dir, monkeypatch):
    monkeypatch.chdir(user_dir[0])
    return user_dir


def test_a_wrapped_model_is_scored_with_its_latent_shape_read_from_the_encoder(user_dir):
    _, _, m = user_dir
    model = lb.wrap(m.encoder, m.decoder)
    res = lb.score_model(model, "digits", n_samples=200, iw_k=4, device="cpu")
    assert str(model.latent) == "4" and model.deterministic is False
    assert res.metrics["fid_post"] < res.metrics["fid_prior"]  # a plain VAE's prior hole
    assert np.isfinite(res.metrics["nll_iw"])


def test_declared_logits_from_a_sigmoid_decoder_warn_and_so_do_means_outside_0_1(user_dir):
    from latentbench.api import bring
    from latentbench.external.wrap import ConventionWarning

    _, _, m = user_dir
    with pytest.warns(ConventionWarning, match="output='means'"):
        bring(lb.wrap(m.encoder, m.decoder, output="logits"), "digits", device="cpu", n_samples=200)
    raw = torch.nn.Sequential(m.decoder.net, torch.nn.Unflatten(1, (1, 8, 8)))  # the same net without its sigmoid
    with pytest.warns(ConventionWarning, match="output='logits'"):
        bring(lb.wrap(m.encoder, raw, output="means"), "digits", device="cpu", n_samples=200)


def test_fix_fits_each_expost_prior_writes_a_board_and_samplers_that_load_without_the_model(in_user_dir, capsys):
    folder, _, m = in_user_dir
    assert main(["fix", "--model", "mymodel:build", "--weights", "w.pt", "--remedies", "expost_gmm,expost_gaussian",
                 "--out", "fixed", *SCORE]) == 0
    out = folder / "fixed"
    assert (out / "leaderboard.md").is_file() and list((out / "plots").glob("*.png"))
    recs = {json.loads(p.read_text())["cell"]["remedy"]: json.loads(p.read_text())
            for p in (out / "records").glob("*.json")}
    assert set(recs) == {"as_brought", "expost_gmm", "expost_gaussian"}
    gap = {k: r["metrics"]["fid_prior_post"] for k, r in recs.items()}
    assert gap["expost_gmm"] < gap["as_brought"] and gap["expost_gaussian"] < gap["as_brought"]

    s = lb.load_sampler(out / "samplers" / "expost_gmm.pt")  # the user's five lines
    z = s.sample(16, seed=0)
    assert z.shape == (16, 4) and torch.equal(z, s.sample(16, seed=0))
    images = m.decoder(z)
    assert images.shape == (16, 1, 8, 8)
    assert "sampler expost_gmm" in capsys.readouterr().out


def test_diagnose_a_model_from_outside_writes_the_report_of_a_builtin_cell(in_user_dir, capsys):
    folder, _, _ = in_user_dir
    assert main(["diagnose", "--model", "mymodel:build", "--weights", "w.pt", "--out", "diag", *SCORE]) == 0
    text = (folder / "diag" / "report.md").read_text()
    assert "brought from outside" in text and "| picture |" in text
    assert {"grids.png", "norms.png", "dimensions.png"} <= {p.name for p in (folder / "diag").iterdir()}


def test_score_samples_grades_any_images_and_the_leaderboard_shows_them_beside_a_matching_board(in_user_dir, capsys):
    folder, _, m = in_user_dir
    if not (folder / "fixed" / "records").is_dir():
        assert main(["fix", "--model", "mymodel:build", "--weights", "w.pt", "--remedies", "expost_gaussian",
                     "--out", "fixed", *SCORE]) == 0
    z = lb.load_sampler(folder / "fixed" / "samplers" / "expost_gaussian.pt").sample(200, seed=1)
    np.save(folder / "mine.npy", m.decoder(z).detach().numpy())
    assert main(["score-samples", "mine.npy", "--dataset", "digits", "--out", "mine.json", "--device", "cpu",
                 "--quiet"]) == 0
    rec = json.loads((folder / "mine.json").read_text())
    assert rec["kind"] == "samples" and rec["notes"]["n_prior"] == 200
    assert 0 < rec["metrics"]["fid_floor"] < rec["metrics"]["fid_prior"]
    capsys.readouterr()
    assert main(["leaderboard", "fixed", "mine.json"]) == 0
    assert "| external: mine.npy |" in capsys.readouterr().out

    assert main(["score-samples", "mine.npy", "--n", "100", "--out", "few.json", "--device", "cpu", "--quiet"]) == 0
    assert main(["leaderboard", "fixed", "few.json"]) == 0
    cap = capsys.readouterr()
    assert "external:" not in cap.out and "n=100) is not shown" in cap.err


@pytest.mark.parametrize("args, words", [
    (["--model", "nosuchmodule:build"], "no module 'nosuchmodule' here or on PYTHONPATH"),
    (["--model", "mymodel"], "write MODULE:FACTORY"),
    (["--model", "mymodel:nosuch"], "has no 'nosuch'; its callables:"),
    (["--model", "mymodel:build_raises"], "build_raises() raised ValueError: no GPU here"),
    (["--model", "mymodel:build_wrong"], "returned a int; return (encoder, decoder)"),
    (["--model", "mymodel:build_nan"], "non-finite mu"),
    (["--model", "mymodel:build_shape_bug"], "both must be shaped (B, *latent)"),
    (["--model", "mymodel:build_big_images"], "the dataset's images are (B, 1, 8, 8)"),
    (["--model", "mymodel:build_wide", "--weights", "w.pt"], "do not fit mymodel:build_wide's encoder"),
    (["--model", "mymodel:build", "--weights", "nosuch.pt"], "no such file"),
    (["--model", "mymodel:build", "--weights", "mymodel.py"], "not a readable torch state dict"),
    (["--model", "pythae:."], "not a pythae model folder"),
    (["--model", "mymodel:build", "--remedies", "vae"], "has no ex-post prior"),
])
def test_bad_models_are_one_line_exit_2_and_write_nothing(args, words, in_user_dir, capsys):
    folder = in_user_dir[0]
    assert main(["fix", *args, "--out", "never", *SCORE]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and words in err, err
    assert not (folder / "never").exists()


@pytest.mark.parametrize("images, words", [
    (np.zeros((10, 1, 9, 9), np.float32), "shaped (1, 9, 9) (C, H, W) but digits's are (1, 8, 8)"),
    (np.full((10, 1, 8, 8), -3.0, np.float32), "rescale them"),
    (np.full((10, 1, 8, 8), "a"), "dtype"),
])
def test_bad_samples_are_one_line_exit_2_and_write_nothing(images, words, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save("bad.npy", images)
    assert main(["score-samples", "bad.npy", "--out", "out.json", "--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and words in err, err
    assert not (tmp_path / "out.json").exists()
