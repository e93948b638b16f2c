"""Scoring one trained cell: every registered metric, over one shared :class:`ScoreContext`.

The context computes each expensive stage once (posteriors, samples, feature extractor, features of
each image set, torch-fidelity per pair, calibrated latent metrics, the IWAE bound) the first time a
metric asks for it, and times it. Random draws come from named streams of the cell's seed, so the
numbers do not depend on which metric asks first or on what ran earlier in the process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from latentbench.device import memory_bytes, stable_memory_bytes
from latentbench.registry import METRICS
from latentbench.score.geometry import mmd_cap, posterior_cap, prior_has_density, sample_cap
from latentbench.score.latents import score_latents, split_index
from latentbench.score.likelihood import iwae_bound, reconstruction
from latentbench.score.sampling import decode_rows, draw_block
from latentbench.score.streams import stream, stream_seed
from latentbench.score.subspace import principal_subspace, random_subspace, swap

SCORER_VERSION = 5

# image sets compared (samples, reference): the three of the seed question (prior, post, data), the
# noise floor (two posterior-mixture draws from disjoint halves of the held-out images, post_a and post2),
# the seed's N(mu(x), I) set, and the swap interventions, each against post2 so that no set shares a
# sample with its reference.
_PAIRS = {"prior": ("prior", "data"), "post": ("post", "data"), "prior_post": ("prior", "post"),
          "floor": ("post_a", "post2"), "mu_unit": ("mu_unit", "data"),
          "swap_sub": ("swap_sub", "post2"), "swap_rest": ("swap_rest", "post2"),
          "swap_sub_rand": ("swap_sub_rand", "post2"), "swap_rest_rand": ("swap_rest_rand", "post2")}
_FID_ONLY = ("mu_unit", "swap_sub", "swap_rest", "swap_sub_rand", "swap_rest_rand")


class ScoreContext:
    """What the metrics of one cell read: the model, its data, the cell, and the shared stages.

    ``mem_bytes`` bounds batches (the device's free memory by default; it never changes a number);
    ``geometry_bytes`` caps the latents of the geometry metrics (the device's total memory by default,
    so it is the same on every run on one machine; the caps are recorded in ``notes``). Every random
    draw comes from a named stream of the cell's seed (``latentbench.score.streams``), so no number
    depends on which metric asks first or on what ran before in the process.
    """

    def __init__(self, model, data, cell, device: torch.device, *, quiet: bool = True,
                 on_stage: Callable[..., None] | None = None, mem_bytes: int | None = None,
                 geometry_bytes: int | None = None) -> None:
        self.model, self.data, self.cell, self.device, self.quiet = model, data, cell, device, quiet
        self.on_stage = on_stage  # told each stage's name as it starts and its progress (the grid's bar)
        self.mem_bytes = mem_bytes or memory_bytes(model.device)
        self.geometry_bytes = geometry_bytes or stable_memory_bytes(model.device)
        self.timing: dict[str, float] = {}
        self._cache: dict[Any, Any] = {}
        self._current = ""
        d = model.latent.dim
        n = cell.n_samples
        n_test = len(data.test)
        self.n_geometry = min(n, sample_cap(d, self.geometry_bytes))
        self.n_geometry_posteriors = min(n_test, posterior_cap(d, self.geometry_bytes))
        self.n_mmd = min(self.n_geometry, mmd_cap(d, self.geometry_bytes))  # samples per set of mmd_latent
        self.notes: dict[str, Any] = {"n_prior": n, "n_post": n, "n_data": min(n, n_test),
                                      "iw_k": cell.iw_k, "iw_images": iw_image_count(cell, n_test),
                                      "scorer_version": SCORER_VERSION,
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
        self.deterministic = bool(getattr(model, "deterministic", False))
        if self.deterministic:
            self.notes["likelihood"] = ("nll_iw and elbo_iw absent: a deterministic encoder has no posterior "
                                        "density, so no importance-weighted bound; rec is at z = mu(x)")

    def _stage(self, key: Any, timing_key: str, compute) -> Any:
        if key not in self._cache:
            self._current = timing_key.removesuffix("_s")
            if self.on_stage is not None:
                self.on_stage(self._current)
            t = time.perf_counter()
            self._cache[key] = compute()
            self.timing[timing_key] = self.timing.get(timing_key, 0.0) + time.perf_counter() - t
        return self._cache[key]

    def progress(self, fraction: float) -> None:
        """The running stage is ``fraction`` done (the grid's bar shows it inside the stage)."""
        if self.on_stage is not None:
            self.on_stage(self._current, fraction)

    def stream(self, name: str) -> torch.Generator:
        """The generator of one named stage of this cell."""
        return stream(self.cell.seed, name)

    def posteriors(self) -> dict[str, Any]:
        """The held-out posteriors (mu, logvar), their split into the mixture and reference halves, and
        the principal subspace of the mixture half's means (``latentbench.score.latents``)."""
        @torch.no_grad()
        def compute():
            model, test = self.model, self.data.test
            mu, logvar = model.posterior_params(test[: self.n_geometry_posteriors],
                                                decode_rows(model, test[0].numel(), self.mem_bytes))
            split = split_index(len(mu), self.cell.seed)
            # directions from the mixture half, their variances (and so k and collapse) from the reference half
            sub = principal_subspace(mu[split[0].to(mu.device)], mu_eval=mu[split[1].to(mu.device)])
            self.notes["sub_coverage"] = round(sub["coverage"], 4)
            return {"mu": mu, "logvar": logvar, "split": split, "subspace": sub}

        return self._stage("posteriors", "sample_s", compute)

    def samples(self) -> dict[str, Any]:
        """The image sets, each of the cell's ``n_samples``: prior, post (the posterior mixture), post_a and
        post2 (posterior-mixture draws from disjoint halves of the held-out images: the noise floor
        compares them, and post2 is the swaps' reference), mu_unit
        (z ~ N(mu(x), I), the seed question's third set), data, and the swap sets, plus the prior's
        latents for the geometry."""
        post = self.posteriors()

        @torch.no_grad()
        def compute():
            model, test, n = self.model, self.data.test, self.cell.n_samples
            sub = post["subspace"]
            d = model.latent.dim
            swaps = 0 < sub["k"] < d
            rand = random_subspace(d, sub["k"], self.stream("swap/random_basis")) if swaps else None
            rows = decode_rows(model, test[0].numel(), self.mem_bytes)
            posts = ("post", "post_a", "post2", "mu_unit")
            names = ["prior", *posts] + (
                ["swap_sub", "swap_rest", "swap_sub_rand", "swap_rest_rand"] if swaps else [])
            images: dict[str, list[torch.Tensor]] = {k: [] for k in names}
            keep_prior, kept = [], 0
            gens = {k: self.stream(f"samples/{k}") for k in ("prior", *posts)}
            # post and mu_unit: x uniform over the held-out images; the floor's two draws: x from the
            # mixture half (post_a) and from the reference half (post2), so they share no image
            source = {"post": None, "mu_unit": None, "post_a": post["split"][0], "post2": post["split"][1]}
            idx = {}
            for k, pool in source.items():
                pick = torch.randint(len(test) if pool is None else len(pool), (n,), generator=gens[k])
                idx[k] = pick if pool is None else pool.cpu()[pick]
            step = draw_block(d)
            for i in range(0, n, step):
                b = min(step, n - i)
                z_p = model.generative_prior.sample(b, gens["prior"]).float()
                sets = {"prior": z_p}
                for k in posts:
                    mu, logvar = model.posterior_params(test[idx[k][i : i + b]], min(b, 1000))
                    eps = torch.randn((b, *mu.shape[1:]), generator=gens[k]).to(mu.device)
                    if k == "mu_unit":
                        sets[k] = mu + eps
                    else:  # a point-mass posterior (deterministic encoder) is its code
                        sets[k] = mu if self.deterministic else mu + torch.exp(0.5 * logvar) * eps
                if kept < self.n_geometry:
                    take = min(b, self.n_geometry - kept)
                    keep_prior.append(z_p[:take])
                    kept += take
                if swaps:  # the posterior part from the mixture half's draws: no image shared with post2
                    z_q = sets["post_a"].to(z_p.device)
                    sets["swap_sub"] = swap(z_q, z_p, sub)  # the posterior's subspace part, the prior's rest
                    sets["swap_rest"] = swap(z_p, z_q, sub)  # the prior's subspace part, the posterior's rest
                    sets["swap_sub_rand"] = swap(z_q, z_p, rand)
                    sets["swap_rest_rand"] = swap(z_p, z_q, rand)
                for name, z in sets.items():
                    images[name] += [model.decode_mean(z[j : j + rows].to(model.device)).float().cpu()
                                     for j in range(0, len(z), rows)]
                self.progress((i + b) / n)
            out = {k: torch.cat(v) for k, v in images.items() if v}
            out["data"] = test[: self.notes["n_data"]]
            return {"z_prior": torch.cat(keep_prior), "images": out}

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

    def image_features(self) -> dict[str, Any]:
        """Every image set through the feature extractor once (``latentbench.score.fidelity.FeatureSpace``)."""
        images = self.samples()["images"]
        weights = self.features()["weights"]

        def compute():
            from latentbench.score.fidelity import FeatureSpace

            space = FeatureSpace(features=self.cell.features, weights=weights, device=self.device)
            sets = {}
            for j, (k, v) in enumerate(images.items()):
                sets[k] = space.features(v)
                self.progress((j + 1) / len(images))
            return {"space": space, "sets": sets}

        return self._stage("image_features", "fidelity_s", compute)

    def fidelity(self, pair: str) -> dict[str, float] | None:
        """FID, KID, precision and recall of one pair of sample sets (see ``_PAIRS``), FID alone for the
        seed's N(mu(x), I) set and the swaps (None where the set does not exist: no swaps when the
        informative subspace is empty or the whole latent)."""
        feats = self.image_features()
        a, b = _PAIRS[pair]
        if a not in feats["sets"]:
            return None

        def compute():
            return feats["space"].compare_features(feats["sets"][a], feats["sets"][b], seed=self.cell.seed,
                                                   fid_only=pair in _FID_ONLY)

        return self._stage(("fidelity", pair), "fidelity_s", compute)

    def latents(self) -> dict[str, Any]:
        """Every latent metric, calibrated (``latentbench.score.latents.score_latents``)."""
        post = self.posteriors()
        z_prior = self.samples()["z_prior"]

        def compute():
            prior = self.model.generative_prior
            mu, logvar = post["mu"], post["logvar"]
            akl = prior.analytic_kl(mu, logvar) if prior_has_density(prior) else None
            if self.deterministic:
                akl = None
            metrics, notes = score_latents(prior, mu, logvar, z_prior.to(mu.device), seed=self.cell.seed,
                                           analytic_kl=akl, mmd_n=self.n_mmd, mem_bytes=self.mem_bytes,
                                           split=post["split"], sub=post["subspace"],
                                           deterministic=self.deterministic)
            floors = notes.pop("floors")
            fl = self.fidelity("floor")
            if fl is not None:
                # FID's floor is the distance between the two independent draws; KID's, whose value there
                # sits near 0 either side, adds 3 of its subset standard deviations (a tie tolerance)
                kid_floor = max(fl["kid"], 0.0) + 3.0 * fl["kid_std"]
                for p in ("prior", "post", "prior_post"):
                    floors.update({f"fid_{p}": fl["fid"], f"kid_{p}": kid_floor})
            self.notes["floors"] = {k: round(v, 6) for k, v in floors.items()}
            self.notes.update(notes)
            return metrics

        return self._stage("latents", "geometry_s", compute)

    def sample_sets(self):
        """The decoded image sets and the prior's latents as a typed ``SampleSets`` (no recomputation)."""
        from latentbench.score.containers import sample_sets

        return sample_sets(self)

    def latent_set(self):
        """The held-out posteriors, their split and the informative subspace as a typed ``LatentSet``."""
        from latentbench.score.containers import latent_set

        return latent_set(self)

    def geometry(self) -> dict[str, float | None]:
        """The latent metrics (kept under the name the metric registry reads)."""
        return self.latents()

    def subspace(self) -> dict[str, Any]:
        return self.latents()

    def likelihood(self) -> dict[str, float | None]:
        """The IWAE bound (``nll_iw``, ``elbo_iw``; None for a prior without a density) and ``rec``."""
        def compute():
            if self.deterministic:
                return {"nll_iw": None, "elbo_iw": None, "rec": _reconstruction_at_code(self.model, self.data.test)}
            if prior_has_density(self.model.generative_prior):
                # the bound over the first iw_images held-out images (all by default): per-image draws, so a
                # subset's images get the draws they get in the whole set
                x = self.data.test[: self.notes["iw_images"]]
                with torch.random.fork_rng(devices=[]):  # a Monte Carlo log p is seeded; the caller's RNG untouched
                    torch.manual_seed(stream_seed(self.cell.seed, "likelihood/prior_log_prob"))
                    iw = iwae_bound(self.model, x, k=self.cell.iw_k, generator=self.stream("likelihood/iwae"),
                                    mem_bytes=self.mem_bytes, on_batch=lambda f: self.progress(0.95 * f))
            else:
                iw = {"nll_iw": None, "elbo_iw": None}
            rec = reconstruction(self.model, self.data.test, self.stream("likelihood/rec"), mem_bytes=self.mem_bytes)
            return {**iw, "rec": rec}

        return self._stage("likelihood", "likelihood_s", compute)


@torch.no_grad()
def _reconstruction_at_code(model, x: torch.Tensor, batch: int = 500) -> float:
    """``rec`` = -log p(x | z = mu(x)) averaged over the held-out images, for a deterministic encoder."""
    model.eval()
    total = 0.0
    for i in range(0, len(x), batch):
        xb = x[i : i + batch].to(model.device)
        mu, _ = model.encode(xb)
        total += -model.likelihood.log_prob(xb, model.decode(mu).float()).double().sum().item()
    return total / len(x)


def iw_image_count(cell, n_test: int) -> int:
    """How many held-out images ``nll_iw`` averages over: the cell's ``iw_images`` (0 = all of them)."""
    n = int(getattr(cell, "iw_images", 0) or 0)
    return min(n, n_test) if n > 0 else n_test


def score_model(model, data, cell, device: torch.device, *, quiet: bool = True,
                on_stage: Callable[..., None] | None = None,
                mem_bytes: int | None = None) -> tuple[dict, dict, dict]:
    """Every registered metric for one trained model. Returns (metrics, notes, timing in seconds).

    A metric that returns None does not apply to this cell (or, for the density metrics, to its prior)
    and is left out of the record. ``on_stage(name)`` is called as each expensive stage starts
    (``sample``, ``fidelity``, ...), and ``on_stage(name, fraction)`` as long ones progress. ``mem_bytes`` overrides the batch memory bound (no number changes).
    """
    ctx = ScoreContext(model, data, cell, device, quiet=quiet, on_stage=on_stage, mem_bytes=mem_bytes)
    metrics: dict[str, float] = {}
    for name in METRICS.names():
        value = METRICS.get(name)(ctx)
        if value is not None:
            metrics[name] = value
    return metrics, ctx.notes, ctx.timing

