"""The adversarial autoencoder (Makhzani et al. 2016, "Adversarial Autoencoders", ICLR workshop;
Sec. 2, Eq. 1 and the two-phase training of Fig. 1).

A discriminator D(z) learns to tell codes z = Q(x) of the aggregate posterior q(z) from prior draws
z ~ p(z) = N(0, I), and the encoder Q is trained to fool it, which pushes q(z) to p(z) (the GAN game of
Goodfellow et al. 2014, Eq. 1, played in the latent space). Here D(z) is the probability that z is a
code, so the discriminator minimises

    -E_q log D(z) - E_p log(1 - D(z)),      optimum D*(z) = q(z) / (q(z) + p(z))

(Goodfellow et al. 2014, Prop. 1), and the autoencoder minimises rec + w * (-E_q log(1 - D(Q(x)))), the
non-saturating generator loss. Each step updates the autoencoder on that loss, then D on the same
batch (``Remedy.aux_step``), pythae's one-step form of the paper's reconstruction and regularisation
phases. The encoder is deterministic, as in the paper's experiments.

Defaults: D is an MLP with two hidden layers of 1000 ReLU units (the paper's MNIST adversarial
network); w = 1 against the squared error ||x - x_hat||^2 (pythae's Adversarial_AE: the two losses
weighted 1/2 and 1/2), scaled to latentbench's ``rec`` in nats by the likelihood's nats per unit of
squared error (``matching.nats_per_squared_error``). D has its own Adam at the cell's learning rate and
is saved in the checkpoint with its optimizer. The epoch's KL warm-up factor multiplies w.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from latentbench.nets.mlp import mlp
from latentbench.remedies import Remedy
from latentbench.remedies.matching import nats_per_squared_error, reconstruct


class LatentDiscriminator(nn.Module):
    """logit D(z) for flat or spatial codes z (B, *latent) -> (B,)."""

    def __init__(self, dim: int, hidden: int = 1000, depth: int = 2) -> None:
        super().__init__()
        self.net = mlp([dim] + [hidden] * depth + [1], nn.ReLU)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.flatten(1).float()).squeeze(-1)


def discriminator_loss(disc: nn.Module, codes: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """-E_q log D - E_p log(1 - D) over a batch of codes (label 1) and prior draws (label 0)."""
    lc, lp = disc(codes), disc(prior)
    return (F.binary_cross_entropy_with_logits(lc, torch.ones_like(lc))
            + F.binary_cross_entropy_with_logits(lp, torch.zeros_like(lp)))


class AAERemedy(Remedy):
    """Adversarial autoencoder: a latent discriminator q(z) vs N(0, I), the encoder fools it (Makhzani et al. 2016)."""

    name = "aae"
    description = "Adversarial autoencoder: latent discriminator q(z) vs N(0, I) (Makhzani et al. 2016)"
    params = {"weight": 1.0, "disc_hidden": 1000, "disc_depth": 2}
    deterministic = True

    def setup(self, model) -> None:
        self.discriminator = LatentDiscriminator(model.latent.dim, int(self.p["disc_hidden"]),
                                                 int(self.p["disc_depth"]))

    def aux_modules(self) -> nn.Module:
        return self.discriminator

    def loss(self, model, x: torch.Tensor, beta: float | torch.Tensor) -> torch.Tensor:
        rec, z, _, _ = reconstruct(model, x)
        logit = self.discriminator(z)
        fool = F.binary_cross_entropy_with_logits(logit, torch.zeros_like(logit))  # -log(1 - D(Q(x)))
        return rec.mean() + beta * float(self.p["weight"]) * nats_per_squared_error(model) * fool

    def aux_step(self, model, x: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        with torch.no_grad():
            codes = model.encode(x)[0]
        loss = discriminator_loss(self.discriminator, codes, torch.randn_like(codes))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {"weight": trial.suggest_float("weight", 0.01, 100.0, log=True),
                "disc_hidden": trial.suggest_categorical("disc_hidden", [256, 1000])}
