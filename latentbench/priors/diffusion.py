"""Ex-post latent diffusion prior: a DDPM fitted on the aggregate-posterior codes after training.

The ex-post form of latent score-based priors (Vahdat et al. 2021, "Score-based Generative Modeling
in Latent Space", who train the latent diffusion jointly; here it is fitted after training, like the
other ex-post priors). The diffusion is Ho et al. 2020, "Denoising Diffusion Probabilistic Models":

- forward: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, linear beta schedule 1e-4 .. 0.02 at
  1000 ``timesteps`` (their Sec. 4), both ends scaled by 1000 / ``timesteps`` otherwise (Nichol &
  Dhariwal 2021, "Improved DDPM", their linear schedule for any T; betas clipped at 0.999), so that
  abar_T stays below 1e-3 and x_T is N(0, I) for any T; x_0 = the codes standardised per dimension;
- objective: the simplified loss ||eps - eps_theta(x_t, t)||^2, t uniform (their Eq. 14);
- sampler: their Alg. 2 on a respaced schedule of ``sample_steps`` evenly spaced timesteps (the
  respacing of Nichol & Dhariwal 2021, Sec. 4: beta'_i = 1 - abar_{tau_i} / abar_{tau_{i-1}}), with
  sigma_t^2 = the posterior variance beta~_t (Ho et al. Sec. 3.2; ``variance = "beta"`` takes their
  other choice, sigma_t^2 = beta_t, exact for x_0 ~ N(0, I)). ``sample_steps = timesteps`` is Alg. 2
  exactly.

The denoiser is a residual MLP (width ``hidden``) on flat latents and a small conv net
(``conv_channels`` wide) on spatial ones, both with a sinusoidal timestep embedding. With ``mixed``
(the default) it predicts through the mixed score of Vahdat et al. 2021 (Sec. 3.2, "mixing normal and
neural score"): eps_theta(x_t, t) = (1 - a) * sqrt(1 - abar_t) * x_t + a * eps'(x_t, t), with a =
sigmoid(per-dimension logits) learned with the net and started at sigmoid(-3) as in their released
code. The first term is the exact eps of an N(0, I) distribution: where the standardised codes are
Gaussian (the many unused dimensions at large latents) the net has nothing left to learn. Each epoch sees
fresh z ~ q(z|x) for the training images (``codes = "sample"``, the aggregate posterior itself) or
the posterior means (``codes = "mean"``).

No log-density: the DDPM's exact log p(z) needs the probability-flow ODE with a trace estimator, and
its variational bound is loose by construction at the respaced sampler's first step. ``has_log_prob``
is False and ``log_prob`` raises NotImplementedError; the scorer records the density metrics of this
prior as absent, never as a number.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from latentbench.errors import UserError
from latentbench.fitting import fit_module
from latentbench.latent import LatentShape
from latentbench.priors.base import ExpostCodes, Prior, check_codes
from latentbench.streams import stream, stream_seed


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (B,) -> (B, dim) (Vaswani et al. 2017, Sec. 3.5)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class MLPDenoiser(nn.Module):
    """eps_theta for flat latents: residual MLP blocks with the timestep embedding added to each."""

    def __init__(self, dim: int, hidden: int = 256, depth: int = 3, emb: int = 64) -> None:
        super().__init__()
        self.emb = emb
        self.inp = nn.Linear(dim, hidden)
        self.temb = nn.Sequential(nn.Linear(emb, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
            for _ in range(depth))
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        e = self.temb(timestep_embedding(t, self.emb))
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h + e)
        return self.out(h)


class ConvDenoiser(nn.Module):
    """eps_theta for spatial latents (C, H, W): 3x3 conv residual blocks, the timestep embedding added
    as a per-channel bias."""

    def __init__(self, channels: int, hidden: int = 64, depth: int = 3, emb: int = 64) -> None:
        super().__init__()
        self.emb = emb
        self.inp = nn.Conv2d(channels, hidden, 3, padding=1)
        self.temb = nn.Sequential(nn.Linear(emb, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.SiLU(), nn.Conv2d(hidden, hidden, 3, padding=1), nn.SiLU(),
                          nn.Conv2d(hidden, hidden, 3, padding=1))
            for _ in range(depth))
        self.out = nn.Sequential(nn.SiLU(), nn.Conv2d(hidden, channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        e = self.temb(timestep_embedding(t, self.emb))[:, :, None, None]
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h + e)
        return self.out(h)


def ddpm_betas(timesteps: int) -> torch.Tensor:
    """The linear schedule 1e-4 .. 0.02 of Ho et al. at T = 1000, both ends scaled by 1000 / T for any
    other T (Nichol & Dhariwal 2021), clipped at 0.999; float64. abar_T < 1e-3 for every T >= 2."""
    scale = 1000.0 / timesteps
    betas = torch.linspace(1e-4 * scale, 0.02 * scale, timesteps, dtype=torch.float64).clamp(max=0.999)
    abar_T = torch.prod(1 - betas).item()
    assert abar_T < 1e-3, f"abar_T = {abar_T} at T = {timesteps}: x_T is not N(0, I)"
    return betas


class DiffusionPrior(Prior):
    """DDPM on the standardised codes, fitted ex post; sampled with a respaced Alg. 2."""

    has_log_prob = False

    def __init__(self, latent: LatentShape, hidden: int = 256, depth: int = 3, timesteps: int = 1000,
                 sample_steps: int = 100, epochs: int = 400, lr: float = 1e-3, batch_size: int = 256,
                 patience: int = 30, max_codes: int = 10000, conv_channels: int = 64, mixed: bool = True,
                 mix_init: float = -3.0, variance: str = "posterior") -> None:
        super().__init__(latent)
        if timesteps < 2:
            raise UserError(f"expost_diffusion timesteps must be at least 2, got {timesteps}")
        if not 2 <= sample_steps <= timesteps:  # the respaced sampler must start at t = T - 1
            raise UserError(f"expost_diffusion sample_steps must be in 2..{timesteps} (timesteps), got {sample_steps}")
        self.timesteps, self.sample_steps = int(timesteps), int(sample_steps)
        self.epochs, self.lr, self.batch_size, self.patience, self.max_codes = epochs, lr, batch_size, patience, max_codes
        shape = latent.shape
        if len(shape) == 3:
            self.net: nn.Module = ConvDenoiser(shape[0], conv_channels, depth)
        else:
            self.net = MLPDenoiser(latent.dim, hidden, depth)
        betas = ddpm_betas(self.timesteps)
        self.register_buffer("abar", torch.cumprod(1 - betas, 0).float(), persistent=False)
        self.register_buffer("loc", torch.zeros(shape))
        self.register_buffer("scale", torch.ones(shape))
        self.register_buffer("x0_bound", torch.tensor(float("inf")))  # |standardised code| seen in the fit
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.mixed = bool(mixed)
        if variance not in ("posterior", "beta"):
            raise UserError(f"expost_diffusion variance must be 'posterior' or 'beta', got {variance!r}")
        self.variance = variance
        # +inf (sigmoid 1) is the plain eps'(x_t, t): the value when ``mixed`` is off
        self.mix_logit = nn.Parameter(torch.full(shape, float(mix_init) if self.mixed else float("inf")),
                                      requires_grad=self.mixed)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before the sampler clipped x_0 have no bound: they load unclipped, as
        # they were sampled then (and a rescore says so in its notes through score_notes)
        state_dict.setdefault(prefix + "x0_bound", torch.tensor(float("inf")))
        # and those written before the mixed score predict with the net alone (a = 1)
        state_dict.setdefault(prefix + "mix_logit", torch.full(self.latent.shape, float("inf")))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("the diffusion prior has no tractable log-density (has_log_prob = False)")

    def fit(self, codes: torch.Tensor, generator: torch.Generator | None = None, quiet: bool = True) -> None:
        """Fit on fixed codes (no posterior noise)."""
        self.fit_posterior(codes, None, generator, quiet, codes="mean")

    def eps(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """eps_theta(x_t, t): the net's prediction, mixed with N(0, I)'s exact eps where ``mix_logit`` < inf."""
        out = self.net(xt, t)
        if bool((self.mix_logit == float("inf")).all()):
            return out
        a = torch.sigmoid(self.mix_logit)
        gauss = (1 - self.abar[t]).sqrt().view(-1, *[1] * (xt.dim() - 1)) * xt
        return (1 - a) * gauss + a * out

    def _loss(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        ab = self.abar[t].view(-1, *[1] * (x0.dim() - 1))
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        return (self.eps(xt, t) - eps).pow(2).flatten(1).sum(1).mean() / x0[0].numel()

    def fit_posterior(self, mu: torch.Tensor, logvar: torch.Tensor | None, generator: torch.Generator | None = None,
                      quiet: bool = True, codes: ExpostCodes = "sample") -> None:
        codes = check_codes(codes)
        dev, shape = self._device(), self.latent.shape
        mu = mu.reshape(len(mu), *shape).float().to(dev)
        std = None if logvar is None or codes == "mean" else torch.exp(0.5 * logvar.reshape(mu.shape).float()).to(dev)
        if len(mu) > self.max_codes:
            keep = torch.randperm(len(mu), generator=stream(generator, "diffusion/subset"))[: self.max_codes].to(dev)
            mu, std = mu[keep], None if std is None else std[keep]
        # standardise with the aggregate posterior's moments (means' variance + mean posterior variance)
        var = mu.var(0) + (0 if std is None else std.pow(2).mean(0))
        self.loc.copy_(mu.mean(0))
        self.scale.copy_(var.sqrt() + 1e-4)
        rows = (mu,) if std is None else (mu, std)

        def codes_of(block: tuple[torch.Tensor, ...], g: torch.Generator) -> torch.Tensor:
            """Standardised codes: the means, or fresh z ~ q(z|x)."""
            z = block[0]
            if len(block) > 1:
                z = z + block[1] * torch.randn(z.shape, generator=g).to(dev)
            return (z - self.loc) / self.scale

        def draw(block: tuple[torch.Tensor, ...], g: torch.Generator) -> tuple[torch.Tensor, ...]:
            """(x_0, t, eps) for each row: the forward process's randomness for one epoch."""
            x0 = codes_of(block, g)
            t = torch.randint(self.timesteps, (len(x0),), generator=g).to(dev)
            return x0, t, torch.randn(x0.shape, generator=g).to(dev)

        def val_draw(block: tuple[torch.Tensor, ...], g: torch.Generator) -> tuple[torch.Tensor, ...]:
            # a fixed held-out draw of at least ~2048 (code, timestep, noise) triples: the early-stopping
            # loss is not noisier than it must be
            reps = max(1, 2048 // len(block[0]))
            return draw(tuple(t.repeat(reps, *[1] * (t.dim() - 1)) for t in block), g)

        self.x0_bound.fill_(float(codes_of(rows, stream(generator, "diffusion/bound")).abs().max()))
        fitted = fit_module(self, self._loss, rows, seed=stream_seed(generator, "diffusion/denoiser"), lr=self.lr,
                            batch_size=self.batch_size, epochs=self.epochs, patience=self.patience, draw=draw,
                            val_draw=val_draw, desc="fit ex-post diffusion", quiet=quiet)
        self.val_loss = fitted.best
        self.fitted.fill_(True)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if not bool(self.fitted):
            raise RuntimeError("DiffusionPrior.sample before fit()")
        dev, shape = self._device(), self.latent.shape
        taus = torch.linspace(0, self.timesteps - 1, self.sample_steps).round().long().unique()
        abar = self.abar.double().cpu()
        x = torch.randn(n, *shape, generator=generator).to(dev)
        for i in range(len(taus) - 1, -1, -1):
            t = int(taus[i])
            ab_t = abar[t]
            ab_prev = abar[int(taus[i - 1])] if i > 0 else torch.tensor(1.0, dtype=torch.float64)
            beta = 1 - ab_t / ab_prev  # the respaced step's beta'
            eps = self.eps(x, torch.full((n,), t, device=dev, dtype=torch.long))
            # Alg. 2, line 4, written through the predicted x_0 (Ho et al. Eqs. 6-7 and 15): the same
            # step, except that x_0 is clipped to the range of the standardised training codes, as
            # Ho et al.'s released sampler clips to the data range; without the clip a poor eps at
            # large D compounds over the steps into samples far outside the codes.
            x0 = ((x - float((1 - ab_t).sqrt()) * eps) / float(ab_t.sqrt())).clamp(-self.x0_bound, self.x0_bound)
            x = (float(ab_prev.sqrt() * beta / (1 - ab_t)) * x0
                 + float((1 - beta).sqrt() * (1 - ab_prev) / (1 - ab_t)) * x)
            if i > 0:
                # beta~ (the forward posterior's variance) or beta (Ho et al. Sec. 3.2: the two extremes)
                var = float(beta * (1 - ab_prev) / (1 - ab_t)) if self.variance == "posterior" else float(beta)
                x = x + math.sqrt(var) * torch.randn(x.shape, generator=generator).to(dev)
        return (x * self.scale + self.loc).reshape(n, *shape)

    def score_notes(self) -> dict[str, Any]:
        bound = float(self.x0_bound)
        clip = f"x_0 clipped to +-{bound:.3g}" if math.isfinite(bound) else "x_0 unclipped (fitted before clipping)"
        mix = "mixed score" if not bool((self.mix_logit == float("inf")).all()) else "plain eps"
        return {"prior_sampler": f"DDPM Alg. 2, {self.sample_steps} of {self.timesteps} steps, {mix}, {clip}",
                "prior_log_prob": "none (no tractable density): density metrics absent"}
