import torch

from latentbench.latent import LatentShape
from latentbench.priors.base import diag_gaussian_log_prob
from latentbench.priors.standard_normal import StandardNormal
from latentbench.training.checkpoint import load_checkpoint
from latentbench.training.loop import train_cell


def test_closed_form_kl_matches_monte_carlo():
    torch.manual_seed(0)
    prior = StandardNormal(LatentShape.parse("5"))
    mu, logvar = torch.randn(4, 5), torch.randn(4, 5) * 0.5
    exact = prior.analytic_kl(mu, logvar)
    z = mu + torch.exp(0.5 * logvar) * torch.randn(200_000, 4, 5)
    mc = (diag_gaussian_log_prob(z.reshape(-1, 5), mu.repeat(200_000, 1), logvar.repeat(200_000, 1))
          - prior.log_prob(z.reshape(-1, 5))).reshape(200_000, 4).mean(0)
    assert torch.allclose(exact, mc, atol=0.02)


def test_training_improves_the_heldout_elbo_on_digits(tiny_cell, cpu):
    cell = tiny_cell(epochs=15, latent="8")
    _, _, info = train_cell(cell, cpu, quiet=True)
    h = info["history"]
    assert h[-1]["val_elbo"] > h[0]["val_elbo"] + 50
    assert h[-1]["loss"] < h[0]["loss"]


def test_same_seed_same_numbers_other_seed_other_numbers(tiny_cell, cpu):
    def run(seed):
        model, _, info = train_cell(tiny_cell(seed=seed), cpu, quiet=True)
        return model.state_dict(), info["history"][-1]["loss"]

    (a, la), (b, lb), (_c, lc) = run(0), run(0), run(1)
    assert la == lb and all(torch.equal(a[k], b[k]) for k in a)
    assert la != lc


def test_checkpoint_round_trip_gives_identical_outputs(tiny_cell, cpu, tmp_path):
    ckpt = tmp_path / "c.pt"
    model, data, _ = train_cell(tiny_cell(), cpu, checkpoint=ckpt, quiet=True)
    loaded, _, payload = load_checkpoint(ckpt, cpu)
    assert payload["complete"]
    model.eval()
    loaded.eval()
    for a, b in zip(model.posterior_params(data.test), loaded.posterior_params(data.test)):
        assert torch.equal(a, b)
    z = torch.randn(5, 32)
    assert torch.equal(model.decode_mean(z), loaded.decode_mean(z))


def test_interrupted_training_resumes_to_the_same_weights(tiny_cell, cpu, tmp_path):
    cell = tiny_cell(epochs=4)
    straight, _, _ = train_cell(cell, cpu, quiet=True)

    class Stop(Exception):
        pass

    def stop_after_two(epoch, stats):
        if epoch == 2:
            raise Stop

    ckpt = tmp_path / "c.pt"
    try:
        train_cell(cell, cpu, checkpoint=ckpt, quiet=True, on_epoch=stop_after_two, checkpoint_every=1)
    except Stop:
        pass
    _, _, partial = load_checkpoint(ckpt, cpu)
    assert partial["epoch"] == 2 and not partial["complete"]
    resumed, _, info = train_cell(cell, cpu, checkpoint=ckpt, quiet=True)
    assert [h["epoch"] for h in info["history"]] == [1, 2, 3, 4]
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
