"""Noise-contrastive prior (Aneja et al. 2021, "A Contrastive Learning Approach for Training
Variational Autoencoder Priors", NeurIPS).

After the VAE is trained, a binary classifier D(z) learns to tell aggregate-posterior codes
z ~ q(z) = E_x q(z|x) (label 1) from base-prior samples z ~ N(0, I) (label 0). At the optimum
D(z) = q(z) / (q(z) + N(z)), so r(z) = D / (1 - D) = exp(logit(z)) is the density ratio and the
prior is the reweighted base (their Eq. 4):

    p(z) = N(z; 0, I) r(z) / Z,      Z = E_{z ~ N(0, I)}[r(z)].

Sampling is sampling-importance-resampling (their Sec. 3.2, SIR): ``n_sir`` base draws per sample,
one picked with probability proportional to r. How well that works is the weights' effective sample
size (Kong 1992), ESS = (sum_i r_i)^2 / sum_i r_i^2 out of ``n_sir``: the record's ``sir_ess`` is its
mean over 256 SIR draws (near 1 means each sample is nearly a plain base draw picked as the one
heaviest weight, far from p). ``log_prob`` uses Z estimated by Monte Carlo with ``n_normaliser`` base
draws at fit time, so it is a density up to that estimate's error: the record states log Z
(``log_z``) and its standard error (``log_z_se``, the delta method: std(r) / (sqrt(n) mean(r))), and
``nll_iw_bound = False`` since an importance-weighted bound through an estimated log p(z) is no
guaranteed bound.

Large latents. At D in the thousands a classifier on the raw codes separates the two sets from a few
thousand codes trivially (it memorises them), and r stops being a density ratio. The information, and
the prior's miss, lives in the few principal directions of the posterior means (see DESIGN.md,
"informative subspace"), so the classifier sees y = W z, the projection onto the top ``max_dim``
principal directions of mu(x) (orthonormal rows W). Under the base, y ~ N(0, I_k) and the
orthogonal complement stays N(0, I): p(z) = N(z; 0, I) r(W z) / Z is still a density on all D
dimensions, Z = E_{y ~ N(0, I_k)}[r(y)], and SIR needs proposals in k dimensions only. When
D <= ``max_dim`` W is a rotation of the full space.

Codes: each epoch draws fresh z ~ q(z|x) for the training images (``codes = "sample"``, the default
and the paper's q(z)); ``codes = "mean"`` classifies the posterior means instead.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from latentbench.fitting import fit_module
from latentbench.latent import LatentShape
from latentbench.nets.mlp import mlp
from latentbench.priors.base import LOG_2PI, ExpostCodes, Prior, check_codes
from latentbench.streams import stream, stream_seed

# Largest number of (proposal x width) elements evaluated at once by SIR and the normaliser.
_CHUNK = 1 << 23


class NCPPrior(Prior):
    """N(0, I) reweighted by a classifier's density ratio in the means' principal subspace."""

    def __init__(self, latent: LatentShape, hidden: int = 128, depth: int = 2, max_dim: int = 32,
                 epochs: int = 300, lr: float = 1e-3, batch_size: int = 256, patience: int = 20,
                 n_sir: int = 256, n_normaliser: int = 1 << 16, max_codes: int = 10000) -> None:
        super().__init__(latent)
        self.k = min(int(max_dim), latent.dim)
        self.hidden, self.epochs, self.lr, self.batch_size = hidden, epochs, lr, batch_size
        self.patience, self.n_sir, self.n_normaliser, self.max_codes = patience, n_sir, n_normaliser, max_codes
        self.classifier = mlp([self.k] + [hidden] * depth + [1], nn.SiLU)
        self.register_buffer("components", torch.eye(self.k, latent.dim))  # W: (k, D), orthonormal rows
        self.register_buffer("log_z", torch.zeros(()))
        self.register_buffer("log_z_se", torch.tensor(-1.0))  # -1: not estimated (buffers stay finite)
        self.register_buffer("sir_ess", torch.tensor(-1.0))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        # checkpoints written before the error and the ESS were kept: score_notes estimates them again
        state_dict.setdefault(prefix + "log_z_se", torch.tensor(-1.0))
        state_dict.setdefault(prefix + "sir_ess", torch.tensor(-1.0))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def logit(self, y: torch.Tensor) -> torch.Tensor:
        """log r(y) = the classifier's logit at subspace coordinates y (B, k) -> (B,)."""
        return self.classifier(y).squeeze(-1)

    def project(self, z: torch.Tensor) -> torch.Tensor:
        return z.flatten(1).float() @ self.components.T

    def fit(self, codes: torch.Tensor, generator: torch.Generator | None = None, quiet: bool = True) -> None:
        """Fit on fixed codes (no posterior noise)."""
        self.fit_posterior(codes, None, generator, quiet, codes="mean")

    def fit_posterior(self, mu: torch.Tensor, logvar: torch.Tensor | None, generator: torch.Generator | None = None,
                      quiet: bool = True, codes: ExpostCodes = "sample") -> None:
        codes = check_codes(codes)
        dev = self._device()
        mu = mu.flatten(1).float()
        std = None if logvar is None or codes == "mean" else torch.exp(0.5 * logvar.flatten(1).float())
        if len(mu) > self.max_codes:
            keep = torch.randperm(len(mu), generator=stream(generator, "ncp/subset"))[: self.max_codes].to(mu.device)
            mu, std = mu[keep], None if std is None else std[keep]
        self.components.copy_(_principal_directions(mu, self.k, stream(generator, "ncp/basis")).to(dev))
        rows = (mu,) if std is None else (mu, std)

        def draw(block: tuple[torch.Tensor, ...], g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            """Positives: fresh z ~ q(z|x) projected to the subspace; negatives: y ~ N(0, I_k)."""
            z = block[0]
            if len(block) > 1:
                z = z + block[1] * torch.randn(z.shape, generator=g).to(z.device)
            return self.project(z.to(dev)), torch.randn(len(z), self.k, generator=g).to(dev)

        def loss(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
            t = torch.cat([torch.ones(len(pos), device=dev), torch.zeros(len(neg), device=dev)])
            return F.binary_cross_entropy_with_logits(self.logit(torch.cat([pos, neg])), t)

        fitted = fit_module(self.classifier, loss, rows, seed=stream_seed(generator, "ncp/classifier"), lr=self.lr,
                            batch_size=self.batch_size, epochs=self.epochs, patience=self.patience, draw=draw,
                            desc="fit noise-contrastive prior", quiet=quiet)
        self.eval()
        self.val_bce = fitted.best
        log_z, se = self._log_normaliser(stream(generator, "ncp/normaliser"))
        self.log_z.fill_(log_z)
        self.log_z_se.fill_(se)
        self.sir_ess.fill_(self._sir_ess(stream(generator, "ncp/sir_ess")))
        self.fitted.fill_(True)

    @torch.no_grad()
    def _log_normaliser(self, g: torch.Generator) -> tuple[float, float]:
        """log Z = log E_{y ~ N(0, I_k)} exp(logit(y)) by Monte Carlo with ``n_normaliser`` draws, and its
        standard error std(r) / (sqrt(n) mean(r)) (the delta method; heavy-tailed r makes it optimistic)."""
        rows = max(1, _CHUNK // max(self.k, self.hidden))
        logits = []
        for i in range(0, self.n_normaliser, rows):
            m = min(rows, self.n_normaliser - i)
            logits.append(self.logit(torch.randn(m, self.k, generator=g).to(self._device())).double())
        lr = torch.cat(logits)
        n = len(lr)
        w = torch.exp(lr - lr.max())  # r / max r
        se = float(w.std() / (math.sqrt(n) * w.mean())) if n > 1 else 1e30  # one draw: no error estimate
        return float(torch.logsumexp(lr, 0) - math.log(n)), se

    @torch.no_grad()
    def _sir_ess(self, g: torch.Generator, draws: int = 256) -> float:
        """Mean effective sample size (sum r)^2 / sum r^2 of the ``n_sir`` weights of ``draws`` SIR draws."""
        m = self.n_sir
        rows = max(1, _CHUNK // (m * max(self.k, self.hidden)))
        ess = []
        for i in range(0, draws, rows):
            b = min(rows, draws - i)
            prop = torch.randn(b, m, self.k, generator=g).to(self._device())
            lw = torch.log_softmax(self.logit(prop.reshape(-1, self.k)).reshape(b, m).double(), dim=1)
            ess.append(torch.exp(-torch.logsumexp(2 * lw, dim=1)))  # 1 / sum of squared normalised weights
        return float(torch.cat(ess).mean())

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        if not bool(self.fitted):
            raise RuntimeError("NCPPrior.log_prob before fit()")
        base = -0.5 * (z.flatten(1).float().pow(2) + LOG_2PI).sum(1)
        return base + self.logit(self.project(z)) - self.log_z

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if not bool(self.fitted):
            raise RuntimeError("NCPPrior.sample before fit()")
        dev, m = self._device(), self.n_sir
        rows = max(1, _CHUNK // (m * max(self.k, self.hidden)))
        ys = []
        for i in range(0, n, rows):
            b = min(rows, n - i)
            prop = torch.randn(b, m, self.k, generator=generator).to(dev)
            w = torch.softmax(self.logit(prop.reshape(-1, self.k)).reshape(b, m).double(), dim=1)
            pick = torch.multinomial(w.cpu(), 1, generator=generator).squeeze(1).to(dev)
            ys.append(prop[torch.arange(b, device=dev), pick])
        y = torch.cat(ys)
        z = y @ self.components
        if self.k < self.dim:  # the base prior's orthogonal complement, untouched by r
            eps = torch.randn(n, self.dim, generator=generator).to(dev)
            z = z + eps - (eps @ self.components.T) @ self.components
        return z.reshape(n, *self.latent.shape)

    def score_notes(self) -> dict[str, Any]:
        notes: dict[str, Any] = {"log_normaliser": f"Monte Carlo, {self.n_normaliser} base draws",
                                 "prior_sampler": f"SIR, {self.n_sir} base draws per sample",
                                 "ncp_subspace_dim": self.k, "nll_iw_bound": False}
        if not bool(self.fitted):
            return notes
        se, ess = float(self.log_z_se), float(self.sir_ess)
        if se < 0 or ess < 0:  # fitted before they were kept: a fresh estimate of each
            se = self._log_normaliser(stream(0, "ncp/normaliser"))[1]
            ess = self._sir_ess(stream(0, "ncp/sir_ess"))
            notes["log_normaliser"] += " (log_z_se and sir_ess from a fresh estimate of the same size)"
        notes.update({"log_z": round(float(self.log_z), 6), "log_z_se": round(se, 6),
                      "sir_ess": round(ess, 3)})
        return notes


def _principal_directions(x: torch.Tensor, k: int, g: torch.Generator) -> torch.Tensor:
    """(k, D) orthonormal rows: the top principal directions of ``x`` (N, D), completed with seeded
    random orthonormal directions when x spans fewer than k."""
    xc = (x - x.mean(0)).double().cpu()
    n, d = xc.shape
    if k >= d:
        vecs = torch.linalg.svd(xc, full_matrices=False).Vh if n >= 1 else torch.zeros(0, d)
    elif min(n, d) <= 2048:
        vecs = torch.linalg.svd(xc, full_matrices=False).Vh[:k]
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stream_seed(g, "svd_lowrank"))
            vecs = torch.svd_lowrank(xc, q=min(k + 10, n, d), niter=4)[2].T[:k]
    if vecs.shape[0] < k:
        extra = torch.randn(d, k - vecs.shape[0], generator=stream(g, "complete"), dtype=torch.float64)
        q = torch.linalg.qr(torch.cat([vecs.T, extra], dim=1)).Q
        vecs = q.T
    return vecs[:k].float()
