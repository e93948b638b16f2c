import pytest
import torch

from latentbench import create_remedy, list_remedies
from latentbench.errors import UserError
from latentbench.spec import Cell
from latentbench.training.loop import load_checkpoint, train_cell

BUILTINS = ["vae", "beta_vae", "mog_prior", "vamp", "flow_prior", "expost_gaussian", "expost_gmm", "expost_flow",
            "two_stage"]
# trained in tests/test_new_priors.py with small settings; here: registration, papers, search spaces
NEW = ["ncp_prior", "expost_diffusion"]
SMALL = {"two_stage": {"hidden": 32, "fit_epochs": 5}, "expost_flow": {"fit_epochs": 5, "hidden": 32}}


def test_every_builtin_is_registered_and_cites_its_paper():
    import importlib

    assert set(BUILTINS + NEW) <= set(list_remedies())
    for name in BUILTINS + NEW:
        cls = type(create_remedy(name))
        doc = importlib.import_module(cls.__module__).__doc__
        assert doc and any(ch.isdigit() for ch in doc) and ("Eq" in doc or "Sec" in doc), name


def test_unknown_remedy_parameter_names_the_known_ones():
    with pytest.raises(UserError, match="no parameter 'k'; its parameters: n_pseudo"):
        create_remedy("vamp", k=3)


@pytest.mark.parametrize("name", BUILTINS + NEW)
def test_search_space_suggests_only_known_parameters(name):
    import optuna

    remedy_cls = type(create_remedy(name))
    trial = optuna.trial.FixedTrial({})
    study = optuna.create_study()
    trial = study.ask()
    params = remedy_cls.search_space(trial)
    create_remedy(name, **params)  # accepted


@pytest.mark.parametrize("name", BUILTINS)
def test_each_remedy_trains_on_digits_at_latent_2(name, cpu):
    cell = Cell(remedy=name, latent="2", epochs=3, net={"hidden": [32]}, remedy_params=SMALL.get(name, {}))
    model, data, info = train_cell(cell, cpu, quiet=True)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in info["history"])
    s = model.generative_prior.sample(7)
    assert s.shape == (7, 2) and torch.isfinite(s).all()
    assert torch.isfinite(model.generative_prior.log_prob(s)).all()


@pytest.mark.parametrize("name", BUILTINS)
def test_each_remedy_trains_with_a_spatial_latent_on_synthetic_16x16(name, cpu):
    cell = Cell(remedy=name, dataset="synthetic", arch="conv", latent="4x4x2", epochs=2,
                data={"n_train": 128, "n_test": 32, "size": 16}, net={"channels": 8},
                remedy_params=SMALL.get(name, {}))
    model, data, info = train_cell(cell, cpu, quiet=True)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in info["history"])
    s = model.generative_prior.sample(3)
    assert s.shape == (3, 2, 4, 4)
    assert model.decode_mean(s).shape == (3, 1, 16, 16)


@pytest.mark.parametrize("name", ["expost_gaussian", "expost_gmm", "expost_flow", "two_stage"])
def test_checkpoint_keeps_the_fitted_expost_prior(name, cpu, tmp_path):
    cell = Cell(remedy=name, latent="3", epochs=2, net={"hidden": [32]}, remedy_params=SMALL.get(name, {}))
    ckpt = tmp_path / "c.pt"
    model, _, _ = train_cell(cell, cpu, checkpoint=ckpt, quiet=True)
    loaded, _, _ = load_checkpoint(ckpt, cpu)
    assert loaded.expost is not None and type(loaded.expost) is type(model.expost)
    a = model.generative_prior.sample(20, torch.Generator().manual_seed(3))
    b = loaded.generative_prior.sample(20, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_expost_code_budget_does_not_follow_the_machine(cpu, monkeypatch):
    import latentbench.device as device
    from latentbench.model import VAE
    from latentbench.training.expost import expost_code_count, fit_expost

    assert expost_code_count(60000, 65536) == 4096 and expost_code_count(60000, 8) == 60000
    assert expost_code_count(60000, 1 << 22) == 1000 and expost_code_count(500, 1 << 22) == 500
    cell = Cell(remedy="expost_gmm", latent="3", epochs=1, net={"hidden": [16]})
    model, data, _ = train_cell(cell, cpu, quiet=True)
    seen = []
    encode = VAE.posterior_params

    def spy(self, x, batch_size=1024):
        seen.append(len(x))
        return encode(self, x, batch_size)

    monkeypatch.setattr(VAE, "posterior_params", spy)
    for tiny in (False, True):  # a machine (or --memory-gb) with little memory fits on the same codes
        if tiny:
            monkeypatch.setattr(device, "memory_bytes", lambda dev: 1 << 20)
            monkeypatch.setattr(device, "stable_memory_bytes", lambda dev: 1 << 20)
        fit_expost(model, create_remedy("expost_gmm"), data.train, seed=0)
    assert seen == [len(data.train)] * 2
