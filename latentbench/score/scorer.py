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

from latentbench.registry import METRICS
from latentbench.score.geometry import latent_metrics, sample_cap
from latentbench.score.likelihood import iwae_bound
from latentbench.score.sampling import decode_batched, draw_latents

SCORER_VERSION = 2

_PAIRS = {"prior": ("prior", "data"), "post": ("post", "data"), "prior_post": ("prior", "post")}


class ScoreContext:
    """What the metrics of one cell read: the model, its data, the cell, and the shared stages."""

    def __init__(self, model, data, cell, device: torch.device, *, quiet: bool = True,
                 on_stage: Callable[[str], None] | None = None) -> None:
        self.model, self.data, self.cell, self.device, self.quiet = model, data, cell, device, quiet
        self.on_stage = on_stage  # told each stage's name as it starts (the grid's progress bar)
        self.timing: dict[str, float] = {}
        self._cache: dict[Any, Any] = {}
        self.generator = torch.Generator().manual_seed(cell.seed + 1234)
        d = model.latent.dim
        n = min(cell.n_samples, sample_cap(d))
        self.notes: dict[str, Any] = {"n_prior": n, "n_post": n, "n_data": min(n, len(data.test)),
                                      "iw_k": cell.iw_k, "scorer_version": SCORER_VERSION,
                                      "features": cell.features}
        if n < cell.n_samples:
            self.notes["n_samples_capped"] = f"{cell.n_samples} -> {n} by the latent memory bound at D={d}"
        if self.notes["n_data"] < n:
            self.notes["n_data_capped"] = f"held-out data has {len(data.test)} images"

    def _stage(self, key: Any, timing_key: str, compute) -> Any:
        if key not in self._cache:
            if self.on_stage is not None:
                self.on_stage(timing_key.removesuffix("_s"))
            t = time.perf_counter()
            self._cache[key] = compute()
            self.timing[timing_key] = self.timing.get(timing_key, 0.0) + time.perf_counter() - t
        return self._cache[key]

    def samples(self) -> dict[str, Any]:
        """Latents (prior, posterior mixture, held-out posteriors) and the three image sets."""
        def compute():
            lat = draw_latents(self.model, self.data.test, self.notes["n_prior"], self.generator)
            self.notes["n_geometry_posteriors"] = len(lat["mu"])
            images = {"prior": decode_batched(self.model, lat["z_prior"]),
                      "post": decode_batched(self.model, lat["z_post"]),
                      "data": self.data.test[: self.notes["n_data"]]}
            return {"latents": lat, "images": images}

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

    def fidelity(self, pair: str) -> dict[str, float]:
        """FID, KID, precision and recall of one pair of sample sets (``prior``, ``post``, ``prior_post``)."""
        images = self.samples()["images"]
        weights = self.features()["weights"]

        def compute():
            from latentbench.score.fidelity import compare

            a, b = _PAIRS[pair]
            return compare(images[a], images[b], features=self.cell.features, weights=weights,
                           device=self.device, seed=self.cell.seed)

        return self._stage(("fidelity", pair), "fidelity_s", compute)

    def geometry(self) -> dict[str, float]:
        """Latent geometry over the held-out posteriors (see ``latentbench.score.geometry``)."""
        lat = self.samples()["latents"]

        def compute():
            # Priors whose log_prob is itself a Monte Carlo estimate (two_stage) draw from the global
            # RNG: seed it per cell so that scores do not depend on what ran before in the process.
            torch.manual_seed(self.cell.seed + 4321)
            prior = self.model.generative_prior
            akl = prior.analytic_kl(lat["mu"], lat["logvar"])
            return latent_metrics(prior, lat["mu"], lat["logvar"], lat["z_prior"], lat["z_post"],
                                  lat["post_index"], analytic_kl=akl)

        return self._stage("geometry", "geometry_s", compute)

    def likelihood(self) -> dict[str, float]:
        """The IWAE bound (``nll_iw``, ``elbo_iw``) and the reconstruction term ``rec``."""
        self.samples()  # the generator is consumed in a fixed order: samples first

        def compute():
            iw = iwae_bound(self.model, self.data.test, k=self.cell.iw_k, generator=self.generator)
            return {**iw, "rec": _rec(self.model, self.data.test, self.generator)}

        return self._stage("likelihood", "likelihood_s", compute)


def score_model(model, data, cell, device: torch.device, *, quiet: bool = True,
                on_stage: Callable[[str], None] | None = None) -> tuple[dict, dict, dict]:
    """Every registered metric for one trained model. Returns (metrics, notes, timing in seconds).

    A metric that returns None does not apply to this cell and is left out of the record.
    ``on_stage(name)`` is called as each expensive stage starts (``sample``, ``fidelity``, ...).
    """
    ctx = ScoreContext(model, data, cell, device, quiet=quiet, on_stage=on_stage)
    metrics: dict[str, float] = {}
    for name in METRICS.names():
        value = METRICS.get(name)(ctx)
        if value is not None:
            metrics[name] = value
    return metrics, ctx.notes, ctx.timing


@torch.no_grad()
def _rec(model, x: torch.Tensor, g: torch.Generator, batch: int = 1000) -> float:
    """-E_q[log p(x|z)], one z per held-out image."""
    dev = model.device
    total = 0.0
    for i in range(0, len(x), batch):
        xb = x[i : i + batch].to(dev)
        mu, logvar = model.encode(xb)
        z = model.reparameterize(mu, logvar, g)
        total += -model.likelihood.log_prob(xb, model.decode(z).float()).double().sum().item()
    return total / len(x)
