"""The adversarial autoencoder (Makhzani et al. 2016, "Adversarial Autoencoders", ICLR workshop;
Sec. 2, Eq. 1 and the two-phase training of Fig. 1).

A discriminator D(z) learns to tell codes z = Q(x) of the aggregate posterior q(z) from prior draws
z ~ p(z) = N(0, I), and the encoder Q is trained to fool it, which pushes q(z) to p(z) (the GAN game of
Goodfellow et al. 2014, Eq. 1, played in the latent space). Here D(z) is the probability that z is a
code, so the discriminator minimises

    -E_q log D(z) - E_p log(1 - D(z)),      optimum D*(z) = q(z) / (q(z) + p(z))

(Goodfellow et al. 2014, Prop. 1), and the encoder minimises -E_q log(1 - D(Q(x))), the non-saturating
generator loss. Each batch goes through the paper's two phases: the reconstruction phase updates the
encoder and decoder on rec (the training loop's step: ``loss`` is the reconstruction term alone), then
the regularisation phase (``Remedy.aux_step``) updates D, then the encoder against D. The two phases
have optimizers of their own, so no weight trades reconstruction against the adversarial term (with
pythae's single weighted loss, w = 1 against the squared error, the adversarial term swamped the
reconstruction on 8x8 digits: rec 780 nats against the VAE's 34). The encoder is deterministic, as in
the paper's experiments.

Defaults: D is an MLP with two hidden layers of 1000 ReLU units (the paper's MNIST adversarial
network). The regularisation phase has an Adam of its own over D and the encoder, at the cell's
learning rate for D and ``gen_lr`` = 0.1 times it for the encoder's step against D. The paper gives
each phase its own learning rate (with SGD); 0.1 is our choice, measured on digits at latent 32, 60
epochs: at 1.0 the encoder chases D and reconstructs badly (rec 328 nats), at 0.01 the codes stay far
from N(0, I) (IMQ MMD^2 0.36 against 0.18 at 0.1, mean norm 2.3 against 1.4 per sqrt(D)). That
optimizer is saved in the checkpoint with D, so an interrupted cell resumes exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from latentbench.nets.mlp import mlp
from latentbench.remedies import Remedy, register_remedy


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


@register_remedy
class AAERemedy(Remedy):
    """Adversarial autoencoder: latent discriminator q(z) vs N(0, I) (Makhzani et al. 2016)."""

    name = "aae"
    deterministic = True

    @dataclass(frozen=True)
    class Params:
        disc_hidden: int = 1000
        disc_depth: int = 2
        gen_lr: float = 0.1

    def setup(self, model) -> None:
        self.discriminator = LatentDiscriminator(model.latent.dim, self.params.disc_hidden,
                                                 self.params.disc_depth)
        # the regularisation phase's optimizer steps D and the encoder (the generator); the encoder's
        # weights are the model's own, so loading them back from the checkpoint changes nothing
        self._phase = nn.ModuleDict({"discriminator": self.discriminator, "encoder": model.encoder})

    def aux_modules(self) -> nn.Module:
        return self._phase

    def aux_step(self, model, x: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        with torch.no_grad():
            codes = model.encode(x)[0]
        loss = discriminator_loss(self.discriminator, codes, torch.randn_like(codes))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()  # D only: the encoder has no gradient here
        logit = self.discriminator(model.encode(x)[0])
        fool = F.binary_cross_entropy_with_logits(logit, torch.zeros_like(logit))  # -log(1 - D(Q(x)))
        optimizer.zero_grad(set_to_none=True)
        fool.backward()
        for p in self.discriminator.parameters():
            p.grad = None
        ratio = self.params.gen_lr
        for group in optimizer.param_groups:
            group["lr"] *= ratio
        optimizer.step()  # the encoder only, at gen_lr times the cell's learning rate
        for group in optimizer.param_groups:
            group["lr"] /= ratio

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {"disc_hidden": trial.suggest_categorical("disc_hidden", [256, 1000]),
                "disc_depth": trial.suggest_int("disc_depth", 1, 3),
                "gen_lr": trial.suggest_float("gen_lr", 0.01, 1.0, log=True)}
