"""Ex-post Gaussian mixture density on aggregate-posterior codes (Ghosh et al. 2020, "From Variational
to Deterministic Autoencoders", Sec. 4: fit a GMM to the codes after training and sample from it).

The fit uses scikit-learn's ``GaussianMixture``; K is chosen by BIC over ``ks`` (Schwarz 1978). A K
whose fit fails (a component collapsing onto too few codes raises ``ValueError`` at large D, or K
exceeds the codes) is skipped; the record's notes hold the chosen K (``gmm_k``), the BIC of every K
fitted (``gmm_bic``) and the skipped ones with their reason (``gmm_skipped``). Should every K fail,
the prior is the single moment-matched Gaussian (K = 1, ``gmm_fallback``).

Covariance rule (D = latent dim, N = codes used):
- D <= ``max_full_dim`` (64): a full-covariance GMM on the codes themselves.
- D >  ``max_full_dim``: the GMM is fitted in a k-dim principal subspace, k <= ``max_full_dim``, with an
  isotropic Gaussian N(0, s^2 I) on the D - k other directions, s^2 = the codes' mean variance there
  (probabilistic PCA's structure, Tipping & Bishop 1999), so ``log_prob`` is a proper density on all D
  dims and samples cover them. The subspace holds the principal directions of the posterior means (of
  the codes for ``fit``) whose eigenvalue clears the Marchenko-Pastur noise edge
  (``latentbench.priors.pca``): a fixed top-64 PCA of z ~ q(z|x) at D / N = 16 took 57 of its 64
  directions from the noise bulk and sampled them at variance 22.5 where the aggregate posterior has 1.
  At most ``max_codes`` codes are used (a seeded subset).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import torch

from latentbench.latent import LatentShape
from latentbench.priors.base import LOG_2PI, ExpostCodes, Prior, check_codes
from latentbench.priors.pca import column_mean, signal_subspace, sum_of_squares
from latentbench.streams import stream, stream_seed


class ExpostGMMPrior(Prior):
    def __init__(self, latent: LatentShape, ks: tuple[int, ...] = (1, 2, 3, 5, 10, 20), max_full_dim: int = 64,
                 max_codes: int = 10000, reg_covar: float = 1e-6) -> None:
        super().__init__(latent)
        self.ks, self.max_full_dim, self.max_codes, self.reg_covar = tuple(ks), max_full_dim, max_codes, reg_covar
        # Fitted state (buffers, resized on fit / load): mixture in the reduced space + the projection,
        # and the fit's notes (K, BIC curve, skipped K) as UTF-8 JSON so that a rescore from disk has them.
        for name in ("log_weights", "means", "chol", "center", "components", "resid_var"):
            self.register_buffer(name, torch.zeros(0))
        self.register_buffer("fit_log", torch.zeros(0, dtype=torch.uint8))

    @property
    def fitted(self) -> bool:
        return self.log_weights.numel() > 0

    @property
    def n_components(self) -> int:
        return int(self.log_weights.numel())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        # checkpoints written before the fit's notes were kept load without them
        state_dict.setdefault(prefix + "fit_log", torch.zeros(0, dtype=torch.uint8))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def fit(self, codes: torch.Tensor, generator: torch.Generator | None = None, quiet: bool = True) -> None:
        """Fit on the codes (N, *latent); their own principal directions give the subspace at large D."""
        self._fit(codes, None, generator)

    def fit_posterior(self, mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None,
                      quiet: bool = True, codes: ExpostCodes = "sample") -> None:
        """Fit on posterior means or one z ~ q(z|x) per image (as the base class draws them); the subspace
        at large D comes from the means, which posterior noise cannot fill."""
        codes = check_codes(codes)
        z = mu
        if codes == "sample":  # in place: one code-sized temporary at D = 65536, not three
            z = torch.randn(mu.shape, generator=stream(generator, "gmm/codes"), dtype=mu.dtype).to(mu.device)
            z.mul_(logvar.mul(0.5).exp_()).add_(mu)
        self._fit(z, mu, generator)

    def _fit(self, codes: torch.Tensor, basis_src: torch.Tensor | None, generator: torch.Generator | None) -> None:
        from sklearn.mixture import GaussianMixture

        x = codes.flatten(1).float()
        src = None if basis_src is None else basis_src.flatten(1).float()
        if len(x) > self.max_codes:
            keep = torch.randperm(len(x), generator=stream(generator, "gmm/subset"))[: self.max_codes].to(x.device)
            x, src = x[keep], None if src is None else src[keep]
        n, d = x.shape
        seed = stream_seed(generator, "gmm/sklearn") % 2**32
        g = stream(generator, "gmm/basis")
        center = column_mean(x).float()
        notes: dict[str, Any] = {}
        if d <= self.max_full_dim:
            y, comps, resid = x - center, None, 0.0
        else:
            if src is not None:  # the means' subspace, before the codes' centred copy exists
                sub = signal_subspace(src, self.max_full_dim, g)
            xc = x - center
            if src is None:
                sub = signal_subspace(xc, self.max_full_dim, g, centered=True)
            comps = sub.components.to(x.device)
            y = xc @ comps.T
            resid = max((sum_of_squares(xc) - float(y.double().pow(2).sum())) / n / (d - sub.k), 1e-8)
            del xc
            notes["expost_basis"] = (f"{sub.k} principal directions of the {'codes' if src is None else 'means'} "
                                     f"above the noise edge {sub.edge:.4g}, isotropic rest")
        y = y.double().cpu().numpy()
        k_dims = y.shape[1]
        notes["expost_dims"] = k_dims
        best, best_bic, bics, skipped = None, math.inf, {}, {}
        for k in self.ks if k_dims > 0 else ():
            if k > n:
                skipped[str(k)] = f"K > the {n} codes"
                continue
            try:
                gm = GaussianMixture(k, covariance_type="full", reg_covar=self.reg_covar, random_state=seed,
                                     n_init=1, max_iter=200).fit(y)
                bic = float(gm.bic(y))
            except (ValueError, np.linalg.LinAlgError, FloatingPointError) as exc:
                skipped[str(k)] = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"
                continue
            if not math.isfinite(bic):
                skipped[str(k)] = f"BIC {bic}"
                continue
            bics[str(k)] = round(bic, 3)
            if bic < best_bic:
                best, best_bic = gm, bic
        if best is None:  # every K failed (or no direction to model): the moment-matched Gaussian
            yc = y - y.mean(0)
            weights, means = np.ones(1), y.mean(0, keepdims=True)
            cov = (yc.T @ yc / n + self.reg_covar * np.eye(k_dims))[None]
            if k_dims > 0:
                notes["gmm_fallback"] = "every K failed: one moment-matched Gaussian"
        else:
            weights, means, cov = best.weights_, best.means_, best.covariances_
        notes.update({"gmm_k": int(len(weights)), "gmm_bic": bics})
        if skipped:
            notes["gmm_skipped"] = skipped
        dev = self._device()
        self.log_weights = torch.tensor(np.log(weights), dtype=torch.float32, device=dev)
        self.means = torch.tensor(means, dtype=torch.float32, device=dev)
        self.chol = torch.linalg.cholesky(torch.tensor(cov, dtype=torch.float64)).float().to(dev)
        self.center = center.to(dev)
        self.components = comps.contiguous().to(dev) if comps is not None else torch.zeros(0, device=dev)
        self.resid_var = torch.tensor(float(resid), device=dev)
        self.fit_log = torch.tensor(list(json.dumps(notes).encode()), dtype=torch.uint8, device=dev)
        self.bic = best_bic

    def score_notes(self) -> dict[str, Any]:
        """The fit's notes: chosen K, the BIC of each K fitted, skipped K and why, the subspace."""
        if self.fit_log.numel() == 0:
            return {}
        return json.loads(bytes(self.fit_log.cpu().tolist()).decode())

    def _reduce(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = z.flatten(1).float() - self.center
        if self.components.dim() < 2:  # full covariance on the codes themselves
            return x, None
        y = x @ self.components.T
        resid_sq = (x - y @ self.components).pow(2).sum(1)
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
        if self.components.dim() < 2:
            x = y
        else:
            noise = torch.randn(n, self.dim, generator=generator).to(dev) * self.resid_var.sqrt()
            noise = noise - (noise @ self.components.T) @ self.components  # keep only the residual part
            x = y @ self.components + noise
        return (x + self.center).reshape(n, *self.latent.shape)
