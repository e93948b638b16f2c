"""Ex-post Gaussian: one moment-matched Gaussian on the aggregate posterior, the K = 1 case of
ex-post density estimation (Ghosh et al. 2020, "From Variational to Deterministic Autoencoders",
Sec. 4), and the baseline any ex-post prior has to beat.

    p(z) = N(z; m, S),   m = E_q[z],   S = Cov_q[z],   q(z) = (1/N) sum_n q(z | x_n).

Fitted on the posteriors (``fit_posterior``, codes = "sample"), the moments are the aggregate
posterior's own: m = mean of mu_n, S = Cov(mu) + diag(mean of sigma_n^2), exactly what one draw
z ~ q(z|x_n) per image estimates, without that draw's noise. With codes = "mean" (or ``fit(codes)``)
they are the sample moments of the codes.

Covariance rule (D = latent dim, N = codes): full covariance while D <= ``max_dim`` and N >= 2 D.
Above, probabilistic PCA's structure (Tipping & Bishop 1999, Eq. 6 with the noise term isotropic):
full covariance in a k-dim principal subspace W (k x D, orthonormal rows) and an isotropic variance
rho on the D - k other directions,

    S = W^T C W + rho (I - W^T W),   C = W S_q W^T,   rho = (tr S_q - tr C) / (D - k),

so that every moment along W, and the total variance, match. W holds the principal directions of the
posterior means (the codes for ``fit``) whose eigenvalue exceeds the Marchenko-Pastur noise edge
(``latentbench.priors.pca``), at most ``max_dim``: at D / N = 16 a plain top-k PCA of z ~ q(z|x)
would pick noise directions and give them ~25 times their variance.
"""

from __future__ import annotations

from typing import Any

import torch

from latentbench.latent import LatentShape
from latentbench.priors.base import LOG_2PI, ExpostCodes, Prior, check_codes
from latentbench.priors.pca import column_mean, signal_subspace, sum_of_squares


class ExpostGaussianPrior(Prior):
    """N(m, S) moment-matched to the aggregate posterior; S full in a signal subspace, isotropic outside."""

    gaussian = True

    def __init__(self, latent: LatentShape, max_dim: int = 128, max_codes: int = 10000,
                 reg_covar: float = 1e-6) -> None:
        super().__init__(latent)
        self.max_dim, self.max_codes, self.reg_covar = int(max_dim), int(max_codes), float(reg_covar)
        # fitted state, sized at fit time: centre m (D,), W (k, D), chol(C) (k, k), rho, the noise edge
        for name in ("center", "components", "chol"):
            self.register_buffer(name, torch.zeros(0))
        self.register_buffer("rest_var", torch.ones(()))
        self.register_buffer("noise_edge", torch.tensor(-1.0))  # -1: full covariance, no edge (buffers stay finite)

    @property
    def fitted(self) -> bool:
        return self.center.numel() > 0

    @property
    def k(self) -> int:
        return int(self.components.shape[0])

    def fit(self, codes: torch.Tensor, generator: torch.Generator | None = None, quiet: bool = True) -> None:
        """Moment-match the codes (N, *latent); their principal directions give the subspace."""
        self._fit(self._subset(codes.flatten(1).float(), generator)[0], None, generator)

    def fit_posterior(self, mu: torch.Tensor, logvar: torch.Tensor | None, generator: torch.Generator | None = None,
                      quiet: bool = True, codes: ExpostCodes = "sample") -> None:
        """Moment-match the aggregate posterior of N(mu, diag exp(logvar)) (``codes = "sample"``) or the
        means alone (``"mean"``); the means' principal directions give the subspace."""
        codes = check_codes(codes)
        mu = mu.flatten(1).float()
        if codes == "mean" or logvar is None:
            self._fit(self._subset(mu, generator)[0], None, generator)
            return
        mu, keep = self._subset(mu, generator)
        logvar = logvar.flatten(1)
        var = column_mean(torch.exp(logvar if keep is None else logvar[keep.to(logvar.device)]))
        self._fit(mu, var.to(mu.device), generator)

    def _subset(self, x: torch.Tensor, g: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if len(x) <= self.max_codes:
            return x, None
        g = g or torch.Generator().manual_seed(0)
        keep = torch.randperm(len(x), generator=g)[: self.max_codes]
        return x[keep.to(x.device)], keep

    @torch.no_grad()
    def _fit(self, x: torch.Tensor, post_var: torch.Tensor | None, g: torch.Generator | None) -> None:
        """Moments of (1/N) sum_n N(x_n, diag post_var), or of the points x when post_var is None; the
        principal directions of x give the subspace."""
        n, d = x.shape
        if n < 2:
            raise ValueError(f"the ex-post Gaussian needs at least 2 codes, got {n}")
        center = column_mean(x)
        xc = x - center.float()
        m = n - 1
        extra = torch.zeros(d, dtype=torch.float64, device=x.device) if post_var is None else post_var.double()
        total = sum_of_squares(xc) / m + float(extra.sum())
        if d <= self.max_dim and n >= 2 * d:
            w = torch.eye(d, device=x.device)
            edge = -1.0
        else:
            sub = signal_subspace(xc, self.max_dim, g, centered=True)
            w, edge = sub.components.to(x.device), sub.edge
        y = (xc @ w.T).double()
        cov = y.T @ y / m + (w.double() * extra) @ w.double().T
        k = w.shape[0]
        rest = (total - float(torch.trace(cov))) / (d - k) if k < d else 1.0
        cov = cov + self.reg_covar * torch.eye(k, dtype=torch.float64, device=x.device)
        dev = self._device()
        self.center = center.float().to(dev)
        self.components = w.float().to(dev).contiguous()
        self.chol = torch.linalg.cholesky(cov.cpu()).float().to(dev)
        self.rest_var = torch.tensor(max(rest, 1e-8), device=dev)
        self.noise_edge = torch.tensor(edge, device=dev)

    def _parts(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Subspace coordinates y (B, k), squared residual norm (B,), and the residual's dimension."""
        x = z.flatten(1).float() - self.center
        y = x @ self.components.T
        r = self.dim - self.k
        resid_sq = (x - y @ self.components).pow(2).sum(1) if r > 0 else torch.zeros(len(x), device=x.device)
        return y, resid_sq, r

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        if not self.fitted:
            raise RuntimeError("ExpostGaussianPrior.log_prob before fit()")
        y, resid_sq, r = self._parts(z)
        sol = torch.linalg.solve_triangular(self.chol, y.T, upper=False)  # (k, B)
        logdet = torch.log(torch.diagonal(self.chol)).sum()
        lp = -0.5 * sol.pow(2).sum(0) - logdet - 0.5 * self.k * LOG_2PI
        if r > 0:
            lp = lp - 0.5 * (resid_sq / self.rest_var + r * (torch.log(self.rest_var) + LOG_2PI))
        return lp

    def covariance_along(self, v: torch.Tensor) -> torch.Tensor:
        """v S v^T for directions ``v`` (m, D): the prior's exact covariance along them (m, m)."""
        if not self.fitted:
            raise RuntimeError("ExpostGaussianPrior.covariance_along before fit()")
        v = v.flatten(1).float().to(self.center.device)
        a = v @ self.components.T  # (m, k)
        inside = (a @ self.chol) @ (a @ self.chol).T
        if self.k == self.dim:
            return inside
        return inside + self.rest_var * (v @ v.T - a @ a.T)

    def analytic_kl(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(N(mu, diag e^logvar) || N(m, S)) = 1/2 [tr(S^-1 V) + (m - mu)^T S^-1 (m - mu) - D + log|S| - log|V|],
        with S^-1 = W^T C^-1 W + (I - W^T W) / rho."""
        if not self.fitted:
            raise RuntimeError("ExpostGaussianPrior.analytic_kl before fit()")
        var = torch.exp(logvar.flatten(1).float())
        w, r = self.components, self.dim - self.k
        inv_c_diag = torch.linalg.solve_triangular(self.chol, w, upper=False).pow(2).sum(0)  # diag(W^T C^-1 W)
        prec_diag = inv_c_diag + (1 - w.pow(2).sum(0)) / self.rest_var if r > 0 else inv_c_diag
        neg_maha = self.log_prob(mu) + 0.5 * self.dim * LOG_2PI  # -1/2 maha - 1/2 log|S|
        return 0.5 * ((var * prec_diag).sum(1) - self.dim - logvar.flatten(1).float().sum(1)) - neg_maha

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.fitted:
            raise RuntimeError("ExpostGaussianPrior.sample before fit()")
        dev = self.center.device
        eps = torch.randn(n, self.k, generator=generator).to(dev)
        x = (eps @ self.chol.T) @ self.components
        if self.k < self.dim:
            noise = torch.randn(n, self.dim, generator=generator).to(dev) * self.rest_var.sqrt()
            x = x + noise - (noise @ self.components.T) @ self.components  # the isotropic rest only
        return (x + self.center).reshape(n, *self.latent.shape)

    def score_notes(self) -> dict[str, Any]:
        if not self.fitted:
            return {}
        edge = float(self.noise_edge)
        basis = ("full covariance" if edge < 0
                 else f"{self.k} principal directions above the noise edge {edge:.4g}, isotropic rest")
        return {"expost_basis": basis, "expost_dims": self.k, "expost_rest_var": round(float(self.rest_var), 6)}
