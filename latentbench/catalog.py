"""The built-in names, registered lazily: nothing here imports torch-heavy code until it is used."""

from __future__ import annotations

from latentbench.registry import DATASETS, NETS, REMEDIES

_REMEDIES = {
    "vae": ("latentbench.remedies.vae:VAERemedy", "Plain VAE, N(0, I) prior (Kingma & Welling 2014)"),
    "beta_vae": ("latentbench.remedies.beta_vae:BetaVAERemedy", "beta-VAE: KL weighted by beta (Higgins et al. 2017)"),
    "mog_prior": ("latentbench.remedies.mog_prior:MoGPriorRemedy",
                  "Learnable mixture of K diagonal Gaussians as p(z) (Tomczak & Welling 2018)"),
    "vamp": ("latentbench.remedies.vamp:VampRemedy",
             "VampPrior: mixture of posteriors at K learned pseudo-inputs (Tomczak & Welling 2018)"),
    "flow_prior": ("latentbench.remedies.flow_prior:FlowPriorRemedy",
                   "Coupling-flow prior trained jointly (RealNVP / Glow-style; Xu et al. 2019)"),
    "expost_gaussian": ("latentbench.remedies.expost_gaussian:ExpostGaussianRemedy",
                        "Plain VAE + one Gaussian moment-matched to the aggregate posterior (Ghosh et al. 2020, K = 1)"),
    "expost_gmm": ("latentbench.remedies.expost_gmm:ExpostGMMRemedy",
                   "Plain VAE + GMM fitted on the codes after training, K by BIC (Ghosh et al. 2020)"),
    "expost_flow": ("latentbench.remedies.expost_flow:ExpostFlowRemedy",
                    "Plain VAE + RealNVP flow fitted on the codes after training (Dinh et al. 2017)"),
    "two_stage": ("latentbench.remedies.two_stage:TwoStageRemedy",
                  "A second VAE with learned variance on the codes (Dai & Wipf 2019)"),
    "ncp_prior": ("latentbench.remedies.ncp_prior:NCPPriorRemedy",
                  "Plain VAE + noise-contrastive reweighting of N(0, I), SIR sampling (Aneja et al. 2021)"),
    "expost_diffusion": ("latentbench.remedies.expost_diffusion:ExpostDiffusionRemedy",
                         "Plain VAE + DDPM fitted on the codes after training (Ho et al. 2020; Vahdat et al. 2021)"),
    "wae_mmd": ("latentbench.remedies.wae_mmd:WAEMMDRemedy",
                "Wasserstein autoencoder, MMD penalty with an IMQ kernel (Tolstikhin et al. 2018)"),
    "info_vae": ("latentbench.remedies.info_vae:InfoVAERemedy",
                 "InfoVAE: (1 - alpha) KL + (alpha + lambda - 1) MMD(q(z), N(0, I)) (Zhao et al. 2019)"),
    "aae": ("latentbench.remedies.aae:AAERemedy",
            "Adversarial autoencoder: latent discriminator q(z) vs N(0, I) (Makhzani et al. 2016)"),
    "rae": ("latentbench.remedies.rae:RAERemedy",
            "Regularized autoencoder (L2) + ex-post 10-component GMM (Ghosh et al. 2020)"),
    "lars_prior": ("latentbench.remedies.lars_prior:LARSPriorRemedy",
                   "Learned accept/reject sampling prior, N(0, I) x a(z) / Z, truncated at T (Bauer & Mnih 2019)"),
}

_DATASETS = {
    "digits": ("latentbench.data.digits:load", "scikit-learn's 1797 real 8x8 digits, embedded (default)"),
    "mnist": ("latentbench.data.idx:mnist", "MNIST 28x28 from its idx files, .gz or not (--data-root, --download)"),
    "fashion_mnist": ("latentbench.data.idx:fashion_mnist",
                      "Fashion-MNIST 28x28 idx files; found in Debian's dataset-fashion-mnist by itself"),
    "cifar10": ("latentbench.data.vision:cifar10", "CIFAR-10 32x32 colour via torchvision (--data-root, --download)"),
    "synthetic": ("latentbench.data.synthetic:load", "procedural shapes with known factors, any size"),
}

_NETS = {
    "mlp": ("latentbench.nets.mlp:build", "fully connected encoder/decoder (flat view of any latent)"),
    "conv": ("latentbench.nets.conv:build", "DCGAN-style conv nets; spatial latents stay feature maps"),
}


def register_builtins() -> None:
    for registry, table in ((REMEDIES, _REMEDIES), (DATASETS, _DATASETS), (NETS, _NETS)):
        for name, (target, desc) in table.items():
            registry.register(name, target, description=desc)
