"""Ex-post Gaussian mixture density on aggregate-posterior codes (Ghosh et al. 2020, "From Variational
to Deterministic Autoencoders", Sec. 4: fit a GMM to the codes after training and sample from it).

The fit uses scikit-learn's ``GaussianMixture``; K is chosen by BIC over ``ks``.

Covariance rule (D = latent dim, N = codes used):
- D <= ``max_full_dim`` (64): a full-covariance GMM on the codes themselves.
- D >  ``max_full_dim``: PCA (scikit-learn, randomized) to d = min(max_full_dim, N - 1) dims, a
  full-covariance GMM there, and an isotropic Gaussian N(0, s^2 I) on the D - d residual dims,
  s^2 = mean residual variance. This is probabilistic-PCA style, so ``log_prob`` is a proper density on
  all D dims and samples cover them. At most ``max_codes`` codes are used (a seeded subset), so at
  D = 65536 the fit holds a few hundred MB of codes and takes seconds to minutes on a CPU.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from latentbench.latent import LatentShape
from latentbench.priors.base import LOG_2PI, Prior


class ExpostGMMPrior(Prior):
    expost = True

    def __init__(self, latent: LatentShape, ks: tuple[int, ...] = (1, 2, 3, 5, 10, 20), max_full_dim: int = 64,
                 max_codes: int = 10000, reg_covar: float = 1e-6) -> None:
        super().__init__(latent)
        self.ks, self.max_full_dim, self.max_codes, self.reg_covar = tuple(ks), max_full_dim, max_codes, reg_covar
        # Fitted state (buffers, resized on fit / load): mixture in the reduced space + the projection.
        for name in ("log_weights", "means", "chol", "center", "components", "resid_var"):
            self.register_buffer(name, torch.zeros(0))

    @property
    def fitted(self) -> bool:
        return self.means.numel() > 0

    def fit(self, codes: torch.Tensor, generator: torch.Generator | None = None, quiet: bool = True) -> None:
        from sklearn.decomposition import PCA
        from sklearn.mixture import GaussianMixture

        g = generator or torch.Generator().manual_seed(0)
        x = codes.flatten(1).float()
        if len(x) > self.max_codes:
            x = x[torch.randperm(len(x), generator=g)[: self.max_codes].to(x.device)]
        x = x.cpu().numpy()
        n, d = x.shape
        seed = int(torch.randint(2**31 - 1, (1,), generator=g))
        center = x.mean(0)
        if d <= self.max_full_dim:
            y, comps, resid = x - center, None, 0.0
        else:
            k = min(self.max_full_dim, n - 1)
            pca = PCA(n_components=k, svd_solver="randomized", random_state=seed)
            y = pca.fit_transform(x - center)
            comps = pca.components_.astype(np.float32)
            total = float(((x - center) ** 2).sum(1).mean())
            resid = max((total - float((y**2).sum(1).mean())) / (d - k), 1e-8)
        best, best_bic = None, math.inf
        for k in self.ks:
            if k > n:
                continue
            gm = GaussianMixture(k, covariance_type="full", reg_covar=self.reg_covar, random_state=seed,
                                 n_init=1, max_iter=200).fit(y)
            bic = gm.bic(y)
            if bic < best_bic:
                best, best_bic = gm, bic
        dev = self._device()
        self.log_weights = torch.tensor(np.log(best.weights_), dtype=torch.float32, device=dev)
        self.means = torch.tensor(best.means_, dtype=torch.float32, device=dev)
        self.chol = torch.linalg.cholesky(torch.tensor(best.covariances_, dtype=torch.float64)).float().to(dev)
        self.center = torch.tensor(center, device=dev)
        self.components = torch.tensor(comps, device=dev) if comps is not None else torch.zeros(0, device=dev)
        self.resid_var = torch.tensor(float(resid), device=dev)
        self.bic, self.n_components = best_bic, best.n_components

    def _reduce(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = z.flatten(1).float() - self.center
        if self.components.numel() == 0:
            return x, None
        y = x @ self.components.T
        resid_sq = (x.pow(2).sum(1) - y.pow(2).sum(1)).clamp_min(0)
        return y, resid_sq

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        if not self.fitted:
            raise RuntimeError("ExpostGMMPrior.log_prob before fit()")
        y, resid_sq = self._reduce(z)
        d = y.shape[1]
        diff = (y[:, None, :] - self.means[None]).unsqueeze(-1)  # (B, K, d, 1)
        sol = torch.linalg.solve_triangular(self.chol[None], diff, upper=False).squeeze(-1)
        logdet = torch.log(torch.diagonal(self.chol, dim1=-2, dim2=-1)).sum(-1)  # (K,)
        comp = -0.5 * sol.pow(2).sum(-1) - logdet[None] - 0.5 * d * LOG_2PI
        lp = torch.logsumexp(comp + self.log_weights[None], dim=1)
        if resid_sq is not None:
            r = self.dim - d
            lp = lp - 0.5 * (resid_sq / self.resid_var + r * (torch.log(self.resid_var) + LOG_2PI))
        return lp

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.fitted:
            raise RuntimeError("ExpostGMMPrior.sample before fit()")
        dev = self.means.device
        idx = torch.multinomial(self.log_weights.exp().cpu(), n, replacement=True, generator=generator).to(dev)
        eps = torch.randn(n, self.means.shape[1], 1, generator=generator).to(dev)
        y = self.means[idx] + (self.chol[idx] @ eps).squeeze(-1)
        if self.components.numel() == 0:
            x = y
        else:
            noise = torch.randn(n, self.dim, generator=generator).to(dev) * self.resid_var.sqrt()
            noise = noise - (noise @ self.components.T) @ self.components  # keep only the residual part
            x = y @ self.components + noise
        return (x + self.center).reshape(n, *self.latent.shape)
