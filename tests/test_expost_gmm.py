"""The ex-post GMM's subspace at D / N = 16 and its record notes (chosen K, BIC curve, skipped K)."""

import math

import pytest
import torch

from latentbench.latent import LatentShape
from latentbench.priors.gmm import ExpostGMMPrior


def _spiked(d: int, n: int, spikes: list[float], seed: int = 0, noise: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(d, len(spikes), generator=g, dtype=torch.float64)).Q.T.float()
    a = torch.randn(n, len(spikes), generator=g) * torch.tensor(spikes).sqrt()
    return a @ u + math.sqrt(noise) * torch.randn(n, d, generator=g), u


def _noise_directions(x: torch.Tensor, u: torch.Tensor, m: int = 64) -> torch.Tensor:
    """The codes' own top-m principal directions with the true ones projected out: where a top-m PCA
    of noisy codes puts its noise directions."""
    top = torch.linalg.svd(x - x.mean(0), full_matrices=False).Vh[:m]
    top = top - (top @ u.T) @ u
    return top / top.norm(dim=1, keepdim=True)


def _three_clusters(n: int = 3000) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[-4.0, 0.0], [0.0, 4.0], [4.0, -1.0]])
    return centers[torch.randint(3, (n,), generator=g)] + 0.5 * torch.randn(n, 2, generator=g)


@pytest.mark.parametrize("how", ["codes", "posterior"])
def test_at_d_over_n_16_noise_directions_are_sampled_at_their_variance(how):
    """D = 8192, N = 512: codes = 3 informative directions + N(0, 1) noise. A top-64 PCA of the codes
    takes 61 directions from the noise bulk, whose sample variance is ~20 (the Marchenko-Pastur edge is
    25); the fitted prior must sample those directions at the aggregate posterior's variance, 1."""
    d, n = 8192, 512
    prior = ExpostGMMPrior(LatentShape.parse(str(d)), ks=(1, 2, 3))
    if how == "codes":
        x, u = _spiked(d, n, [100.0, 60.0, 40.0])
        prior.fit(x, torch.Generator().manual_seed(0))
    else:  # the remedy's path: informative means, N(0, 1) posteriors elsewhere, one z ~ q(z|x) each
        mu, u = _spiked(d, n, [4.0, 3.0, 2.0], noise=1e-4)
        logvar = torch.zeros(n, d) + math.log(0.05) * u.pow(2).sum(0)
        # the codes the fit draws (noise first from its generator, as the base class draws it)
        x = mu + torch.exp(0.5 * logvar) * torch.randn(n, d, generator=torch.Generator().manual_seed(0))
        prior.fit_posterior(mu, logvar, torch.Generator().manual_seed(0), codes="sample")
    assert prior.components.shape == (3, d)
    # the codes' principal directions are the true ones tilted by the noise (Baik-Ben Arous-Peche:
    # cos^2 = (1 - g / (l - 1)^2) / (1 + g / (l - 1)) = 0.70 for l = 40, g = D / N = 16); the means' are exact
    assert torch.linalg.svdvals(prior.components @ u.T).min() > (0.8 if how == "codes" else 0.99)
    noise_dirs = _noise_directions(x, u)
    assert (noise_dirs @ (x - x.mean(0)).T).var(1)[3:].mean() > 15  # what a top-64 PCA would sample
    s = prior.sample(4000, torch.Generator().manual_seed(1))
    var_noise = (s @ noise_dirs.T).var(0)[3:]
    assert (var_noise - 1).abs().max() < 0.15, var_noise
    notes = prior.score_notes()
    assert notes["expost_dims"] == 3 and "noise edge" in notes["expost_basis"]


def test_notes_hold_the_chosen_k_and_the_bic_curve():
    prior = ExpostGMMPrior(LatentShape.parse("2"))
    prior.fit(_three_clusters(), torch.Generator().manual_seed(0))
    notes = prior.score_notes()
    assert notes["gmm_k"] == prior.n_components == 3
    assert set(notes["gmm_bic"]) == {"1", "2", "3", "5", "10", "20"}
    assert min(notes["gmm_bic"], key=notes["gmm_bic"].get) == "3"
    assert "gmm_skipped" not in notes and notes["expost_dims"] == 2


def test_a_k_whose_fit_raises_is_skipped_with_a_note(monkeypatch):
    from sklearn.mixture import GaussianMixture

    fit = GaussianMixture.fit

    def failing(self, x, y=None):
        if self.n_components == 20:
            raise ValueError("Fitting the mixture model failed because some components have ill-defined "
                             "empirical covariance")
        return fit(self, x, y)

    monkeypatch.setattr(GaussianMixture, "fit", failing)
    prior = ExpostGMMPrior(LatentShape.parse("2"))
    prior.fit(_three_clusters(), torch.Generator().manual_seed(0))
    notes = prior.score_notes()
    assert notes["gmm_k"] == 3 and "20" not in notes["gmm_bic"]
    assert notes["gmm_skipped"]["20"].startswith("ValueError: Fitting the mixture model failed")
    assert torch.isfinite(prior.log_prob(prior.sample(5))).all()


def test_when_every_k_raises_the_prior_is_the_moment_matched_gaussian(monkeypatch):
    from sklearn.mixture import GaussianMixture

    def failing(self, x, y=None):
        raise ValueError("ill-defined empirical covariance")

    monkeypatch.setattr(GaussianMixture, "fit", failing)
    x = _three_clusters()
    prior = ExpostGMMPrior(LatentShape.parse("2"), ks=(1, 5, 20))
    prior.fit(x)
    notes = prior.score_notes()
    assert notes["gmm_k"] == 1 and set(notes["gmm_skipped"]) == {"1", "5", "20"} and "gmm_fallback" in notes
    cov = prior.chol[0] @ prior.chol[0].T
    assert torch.allclose(cov, torch.cov(x.T, correction=0), atol=1e-3)


def test_notes_survive_the_checkpoint_and_older_checkpoints_load_without_them():
    prior = ExpostGMMPrior(LatentShape.parse("2"), ks=(1, 3))
    prior.fit(_three_clusters())
    again = ExpostGMMPrior(LatentShape.parse("2"), ks=(1, 3))
    again.load_state_dict(prior.state_dict())
    assert again.score_notes() == prior.score_notes() and again.score_notes()["gmm_k"] == 3
    old = {k: v for k, v in prior.state_dict().items() if k != "fit_log"}  # written before the notes
    older = ExpostGMMPrior(LatentShape.parse("2"), ks=(1, 3))
    older.load_state_dict(old)
    assert older.score_notes() == {} and older.n_components == 3
    z = prior.sample(4, torch.Generator().manual_seed(0))
    assert torch.equal(older.log_prob(z), prior.log_prob(z))
