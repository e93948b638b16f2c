"""The peer cross-check: a pythae VAE (Chadebec et al. 2022) trained here, sampled by pythae's own
samplers and by latentbench's, graded in one feature space. They agree within the noise floor."""

import logging

import numpy as np
import pytest
import torch

pythae = pytest.importorskip("pythae", reason="pythae is not installed (pip install 'latentbench[pythae]')")

N = 1000


@pytest.fixture(scope="module")
def pythae_dir(tmp_path_factory):
    """A small pythae VAE (MLP nets, latent 4, BCE) trained on the digits train split, saved as pythae saves."""
    from pythae.models import VAE, VAEConfig

    from latentbench.data import load_data

    logging.getLogger("pythae").setLevel(logging.WARNING)
    x = load_data("digits", seed=0).train
    torch.manual_seed(0)
    model = VAE(VAEConfig(input_dim=(1, 8, 8), latent_dim=4, reconstruction_loss="bce"))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(60):
        for xb in x[torch.randperm(len(x))].split(128):
            loss = model({"data": xb}).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    folder = tmp_path_factory.mktemp("pythae") / "final_model"
    model.eval().save(str(folder))
    return folder, model, x


@pytest.mark.slow  # the peer cross-check: the full suite
def test_pythae_samplers_and_latentbench_priors_agree_within_the_floor(pythae_dir, tmp_path):
    from pythae.samplers import GaussianMixtureSampler, GaussianMixtureSamplerConfig, NormalSampler

    import latentbench as lb

    folder, model, x = pythae_dir
    torch.manual_seed(0)
    np.random.seed(0)  # pythae's GMM fit draws from numpy's global generator
    gmm = GaussianMixtureSampler(model=model, sampler_config=GaussianMixtureSamplerConfig(n_components=10))
    gmm.fit(train_data=x)
    peer = {"gmm": gmm.sample(num_samples=N, return_gen=True, save_sampler_config=False),
            "normal": NormalSampler(model=model).sample(num_samples=N, return_gen=True)}
    peer = {k: lb.score_samples(v.detach().float(), "digits", device="cpu").record["metrics"]["fid_prior"]
            for k, v in peer.items()}
    # pythae's GMM: 10 full-covariance components on the posterior means; latentbench's expost_gmm likewise
    same_fit = lb.create_remedy("expost_gmm", codes="mean", max_components=10)
    fx = lb.fix_model(f"pythae:{folder}", "digits", remedies=[same_fit], out=tmp_path / "fix", n_samples=N,
                      iw_k=4, device="cpu")
    ours = {k.split("-")[0]: v["fid_prior"] for k, v in fx.metrics.items()}
    floor = fx.metrics["as_brought"]["fid_floor"]
    print(f"pythae GMM {peer['gmm']:.2f} vs expost_gmm {ours['expost_gmm']:.2f}; pythae N(0, I) "
          f"{peer['normal']:.2f} vs latentbench N(0, I) {ours['as_brought']:.2f}; floor {floor:.2f}")
    assert abs(peer["normal"] - ours["as_brought"]) <= floor
    assert abs(peer["gmm"] - ours["expost_gmm"]) <= floor
    assert ours["expost_gmm"] < ours["as_brought"] and peer["gmm"] < peer["normal"]


def test_a_saved_pythae_folder_loads_as_a_model_with_its_latent_and_output_convention(pythae_dir):
    import latentbench as lb
    from latentbench.api import bring

    folder, model, x = pythae_dir
    m, _, cell, warned = bring(f"pythae:{folder}", "digits", device="cpu", n_samples=200)
    assert str(m.latent) == "4" and m.output == "means" and not warned and cell.arch == "external"
    with torch.no_grad():
        mu, _ = m.encode(x[:5])
        assert torch.allclose(mu, model.encoder(x[:5]).embedding)
        assert torch.allclose(m.decode_mean(mu), model.decoder(mu).reconstruction.reshape(5, 1, 8, 8))
    assert isinstance(lb.load_model(f"pythae:{folder}"), type(m))
