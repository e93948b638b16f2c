"""Scoring one trained cell: every registered metric, over one shared :class:`ScoreContext`.

The context computes each expensive stage once (samples, feature extractor, torch-fidelity per pair,
latent geometry, the IWAE bound) the first time a metric asks for it, and times it. Random draws come
from generators seeded by the cell's seed in a fixed order, so the numbers do not depend on which
metric asks first or on what ran earlier in the process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from latentbench.device import memory_bytes, stable_memory_bytes
from latentbench.registry import METRICS
from latentbench.score.geometry import latent_metrics, mmd_cap, posterior_cap, prior_has_density, sample_cap
from latentbench.score.likelihood import iwae_bound, reconstruction
from latentbench.score.sampling import decode_rows, draw_blocks
from latentbench.score.subspace import principal_subspace, subspace_metrics, swap

SCORER_VERSION = 3

# image sets compared by torch-fidelity: (samples, reference). The swap sets take their subspace
# component from one sample set and the rest from the other (``latentbench.score.subspace``).
_PAIRS = {"prior": ("prior", "data"), "post": ("post", "data"), "prior_post": ("prior", "post"),
          "swap_sub": ("swap_sub", "post"), "swap_rest": ("swap_rest", "post")}
_FID_ONLY = ("swap_sub", "swap_rest")


class ScoreContext:
    """What the metrics of one cell read: the model, its data, the cell, and the shared stages.

    ``mem_bytes`` bounds batches (the device's free memory by default; it never changes a number);
    ``geometry_bytes`` caps the latents of the geometry metrics (the device's total memory by default,
    so it is the same on every run on one machine; the caps are recorded in ``notes``).
    """

    def __init__(self, model, data, cell, device: torch.device, *, quiet: bool = True,
                 on_stage: Callable[[str], None] | None = None, mem_bytes: int | None = None,
                 geometry_bytes: int | None = None) -> None:
        self.model, self.data, self.cell, self.device, self.quiet = model, data, cell, device, quiet
        self.on_stage = on_stage  # told each stage's name as it starts (the grid's progress bar)
        self.mem_bytes = mem_bytes or memory_bytes(model.device)
        self.geometry_bytes = geometry_bytes or stable_memory_bytes(model.device)
        self.timing: dict[str, float] = {}
        self._cache: dict[Any, Any] = {}
        self.generator = torch.Generator().manual_seed(cell.seed + 1234)
        d = model.latent.dim
        n = cell.n_samples
        n_test = len(data.test)
        self.n_geometry = min(n, sample_cap(d, self.geometry_bytes))
        self.n_geometry_posteriors = min(n_test, posterior_cap(d, self.geometry_bytes))
        self.n_mmd = min(self.n_geometry, mmd_cap(d, self.geometry_bytes))  # samples per set of mmd_latent
        self.notes: dict[str, Any] = {"n_prior": n, "n_post": n, "n_data": min(n, n_test),
                                      "iw_k": cell.iw_k, "scorer_version": SCORER_VERSION,
                                      "features": cell.features, "n_geometry": self.n_geometry,
                                      "n_geometry_posteriors": self.n_geometry_posteriors}
        if self.n_geometry < n or self.n_geometry_posteriors < n_test:
            self.notes["geometry_capped"] = (f"latent geometry on {self.n_geometry} samples per set over "
                                             f"{self.n_geometry_posteriors} held-out posteriors at D={d} "
                                             f"({self.geometry_bytes / 2**30:.1f} GiB bound)")
        if self.n_mmd < min(self.n_geometry, mmd_cap(d, 1 << 62)):
            self.notes["n_mmd"] = self.n_mmd  # mmd_latent on fewer than its usual 2000 samples per set
        if self.notes["n_data"] < n:
            self.notes["n_data_capped"] = f"held-out data has {n_test} images"
        prior = model.generative_prior
        if hasattr(prior, "score_notes"):
            self.notes.update(prior.score_notes() or {})
        if not prior_has_density(prior):
            self.notes["density_metrics"] = f"absent: {type(prior).__name__} has no tractable log-density"

    def _stage(self, key: Any, timing_key: str, compute) -> Any:
        if key not in self._cache:
            if self.on_stage is not None:
                self.on_stage(timing_key.removesuffix("_s"))
            t = time.perf_counter()
            self._cache[key] = compute()
            self.timing[timing_key] = self.timing.get(timing_key, 0.0) + time.perf_counter() - t
        return self._cache[key]

    def samples(self) -> dict[str, Any]:
        """The held-out posteriors and their principal subspace, the geometry latents, and the image
        sets: prior, post, data and the two swap sets, each of the cell's ``n_samples``."""
        @torch.no_grad()
        def compute():
            model, test = self.model, self.data.test
            img_numel = test[0].numel()
            mu, logvar = model.posterior_params(test[: self.n_geometry_posteriors],
                                                decode_rows(model, img_numel, self.mem_bytes))
            sub = principal_subspace(mu)
            self.notes["sub_coverage"] = round(sub["coverage"], 4)
            rows = decode_rows(model, img_numel, self.mem_bytes)
            images: dict[str, list[torch.Tensor]] = {k: [] for k in ("prior", "post", "swap_sub", "swap_rest")}
            keep_prior, keep_post, keep_idx, kept = [], [], [], 0
            for z_p, z_q, idx in draw_blocks(model, test, self.cell.n_samples, self.generator):
                if kept < self.n_geometry:
                    take = min(len(z_p), self.n_geometry - kept)
                    keep_prior.append(z_p[:take])
                    keep_post.append(z_q[:take])
                    keep_idx.append(idx[:take])
                    kept += take
                sets = {"prior": z_p, "post": z_q}
                if sub["k"] > 0:
                    sets["swap_sub"] = swap(z_q.to(z_p.device), z_p, sub)  # the posterior's subspace part
                    sets["swap_rest"] = swap(z_p.to(z_q.device), z_q, sub)  # the prior's subspace part
                for name, z in sets.items():
                    images[name] += [model.decode_mean(z[i : i + rows].to(model.device)).float().cpu()
                                     for i in range(0, len(z), rows)]
            z_prior, z_post = torch.cat(keep_prior).to(mu.device), torch.cat(keep_post).to(mu.device)
            post_index = torch.cat(keep_idx).to(mu.device)
            if self.n_geometry_posteriors < len(test):  # q(z) over the capped posteriors: draw from them
                g = torch.Generator().manual_seed(self.cell.seed + 5678)
                post_index = torch.randint(len(mu), (len(z_post),), generator=g).to(mu.device)
                eps = torch.randn(z_post.shape, generator=g).to(mu.device)
                z_post = mu[post_index] + torch.exp(0.5 * logvar[post_index]) * eps
            sets = {k: torch.cat(v) for k, v in images.items() if v}
            sets["data"] = test[: self.notes["n_data"]]
            latents = {"mu": mu, "logvar": logvar, "z_prior": z_prior, "z_post": z_post, "post_index": post_index}
            return {"latents": latents, "images": sets, "subspace": sub}

        return self._stage("samples", "sample_s", compute)

    def features(self) -> dict[str, Any]:
        """The feature extractor: ``weights`` (a path, or None for Inception) and, for the domain
        classifier, its held-out ``accuracy``."""
        def compute():
            if self.cell.features != "domain":
                self.notes["feature_key"] = "inception-v3-compat"
                return {"weights": None}
            from latentbench.score.features import ensure_classifier

            weights, finfo = ensure_classifier(self.data, self.device, quiet=self.quiet)
            self.notes["feature_key"] = finfo["key"]
            return {"weights": weights, "accuracy": finfo["accuracy"]}

        return self._stage("features", "features_s", compute)

    def fidelity(self, pair: str) -> dict[str, float] | None:
        """FID, KID, precision and recall of one pair of sample sets (``prior``, ``post``, ``prior_post``),
        or FID alone for the swap sets (``swap_sub``, ``swap_rest``; None without a subspace)."""
        images = self.samples()["images"]
        a, b = _PAIRS[pair]
        if a not in images:
            return None
        weights = self.features()["weights"]

        def compute():
            from latentbench.score.fidelity import compare

            return compare(images[a], images[b], features=self.cell.features, weights=weights,
                           device=self.device, seed=self.cell.seed, fid_only=pair in _FID_ONLY)

        return self._stage(("fidelity", pair), "fidelity_s", compute)

    def geometry(self) -> dict[str, float | None]:
        """Latent geometry over the held-out posteriors (see ``latentbench.score.geometry``)."""
        lat = self.samples()["latents"]

        def compute():
            # Priors whose log_prob is itself a Monte Carlo estimate (two_stage) draw from the global
            # RNG: seed it per cell so that scores do not depend on what ran before in the process.
            torch.manual_seed(self.cell.seed + 4321)
            prior = self.model.generative_prior
            akl = prior.analytic_kl(lat["mu"], lat["logvar"]) if prior_has_density(prior) else None
            return latent_metrics(prior, lat["mu"], lat["logvar"], lat["z_prior"], lat["z_post"],
                                  lat["post_index"], analytic_kl=akl, mmd_n=self.n_mmd, mem_bytes=self.mem_bytes)

        return self._stage("geometry", "geometry_s", compute)

    def subspace(self) -> dict[str, Any]:
        """Geometry in the informative subspace (see ``latentbench.score.subspace``)."""
        s = self.samples()
        lat = s["latents"]

        def compute():
            torch.manual_seed(self.cell.seed + 4322)
            out = subspace_metrics(self.model.generative_prior, lat["mu"], lat["logvar"], lat["z_prior"],
                                   lat["z_post"], s["subspace"], mem_bytes=self.mem_bytes)
            self.notes["sub_var_post"] = [round(v, 4) for v in out["var_post"]]
            self.notes["sub_var_prior"] = [round(v, 4) for v in out["var_prior"]]
            return out

        return self._stage("subspace", "subspace_s", compute)

    def likelihood(self) -> dict[str, float | None]:
        """The IWAE bound (``nll_iw``, ``elbo_iw``; None for a prior without a density) and ``rec``."""
        self.samples()  # the generator is consumed in a fixed order: samples first

        def compute():
            if prior_has_density(self.model.generative_prior):
                iw = iwae_bound(self.model, self.data.test, k=self.cell.iw_k, generator=self.generator,
                                mem_bytes=self.mem_bytes)
            else:
                torch.randint(2**62, (1,), generator=self.generator)  # keep the generator's order
                iw = {"nll_iw": None, "elbo_iw": None}
            rec = reconstruction(self.model, self.data.test, self.generator, mem_bytes=self.mem_bytes)
            return {**iw, "rec": rec}

        return self._stage("likelihood", "likelihood_s", compute)


def score_model(model, data, cell, device: torch.device, *, quiet: bool = True,
                on_stage: Callable[[str], None] | None = None,
                mem_bytes: int | None = None) -> tuple[dict, dict, dict]:
    """Every registered metric for one trained model. Returns (metrics, notes, timing in seconds).

    A metric that returns None does not apply to this cell (or, for the density metrics, to its prior)
    and is left out of the record. ``on_stage(name)`` is called as each expensive stage starts
    (``sample``, ``fidelity``, ...). ``mem_bytes`` overrides the batch memory bound (no number changes).
    """
    ctx = ScoreContext(model, data, cell, device, quiet=quiet, on_stage=on_stage, mem_bytes=mem_bytes)
    metrics: dict[str, float] = {}
    for name in METRICS.names():
        value = METRICS.get(name)(ctx)
        if value is not None:
            metrics[name] = value
    return metrics, ctx.notes, ctx.timing

