"""``latentbench diagnose``: the seed question answered for one trained model, as markdown + PNGs.

It scores with the cell's own settings and seed (``ScoreContext``), so every number it shows is the
record's; a number the record already holds is read from it, and diagnose adds what the record lacks:

- a verdict naming which picture holds, decided from the full-space and informative-subspace metrics
  (``latentbench.score.subspace``): different norm shells / holes between posterior bubbles / a
  low-rank mismatch hidden in unused dimensions / a collapsed latent / no substantial gap;
- the variance spectrum along the informative directions (aggregate posterior vs the prior);
- the per-dimension picture (Var_x of posterior means, mean posterior variance, prior-sample variance);
- the norm shell of prior vs aggregate posterior (||z|| / sqrt(D) histograms);
- grids decoded from z ~ p(z), z ~ q(z|x), z ~ N(mu(x), I) and the two subspace swaps;
- the prior's density over the aggregate-posterior samples: contours for 2-D latents, and on the
  plane of the posterior means' first two principal components (a slice through the aggregate
  posterior's mean) for larger ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from latentbench.atomic import atomic_savefig, atomic_write_text  # noqa: E402
from latentbench.report.plots import _grid_image  # noqa: E402
from latentbench.score.geometry import prior_has_density  # noqa: E402
from latentbench.score.sampling import sample_snapshot  # noqa: E402

# the metrics a diagnosis shows (read from the record where it has them, else computed as the scorer would)
SHOWN = ("hole_fraction", "sub_hole_fraction", "marginal_kl", "sub_marginal_kl", "mutual_info", "kl",
         "mmd_latent", "sub_mmd", "active_units", "sub_dims", "sub_spread", "norm_prior", "norm_prior_std",
         "norm_post", "norm_post_std", "fid_prior_post", "fid_swap_sub", "fid_swap_rest")

# thresholds of the verdict
SPREAD_GAP = 2.0  # a variance ratio either way beyond this along an informative direction is a miss
HOLES = 0.05  # hole fractions beyond this (0.01 = chance) are holes
BLIND = 0.03  # a full-space hole fraction below this sees nothing


def verdict(m: dict[str, Any], d: int, n_post: int) -> tuple[str, str]:
    """(picture, sentence with the figures that decide it) from a cell's metrics at latent size ``d``
    over ``n_post`` held-out posteriors. Pictures: ``collapsed``, ``shells``, ``holes``, ``low_rank``,
    ``matched``."""
    g = lambda k: m.get(k)  # noqa: E731
    k = g("sub_dims")
    if k == 0 or (g("active_units") == 0 and (g("mutual_info") or 0) < 0.1):
        return "collapsed", (f"A collapsed latent: no direction of the posterior means varies (sub_dims {k}, "
                             f"active_units {g('active_units')} of {d}, I(x; z) {g('mutual_info'):.2f} nats); "
                             "the decoder ignores z, so there is no prior hole to speak of.")
    gap = g("norm_post") - g("norm_prior")
    spread = g("sub_spread") or 1.0
    swap = ""
    if g("fid_swap_sub") is not None and g("fid_prior_post") is not None:
        swap = (f" In image space fid_prior_post is {g('fid_prior_post'):.1f}; with the posterior's subspace "
                f"component it falls to {g('fid_swap_sub'):.1f} (fid_swap_sub), and the prior's subspace "
                f"component alone costs {g('fid_swap_rest'):.1f} (fid_swap_rest).")
    if abs(gap) > 2 * max(g("norm_prior_std"), g("norm_post_std"), 1e-3) and abs(gap) > 0.02:
        return "shells", (f"Different shells: prior samples have ||z||/sqrt(D) = {g('norm_prior'):.3f} ± "
                          f"{g('norm_prior_std'):.3f}, aggregate-posterior samples {g('norm_post'):.3f} ± "
                          f"{g('norm_post_std'):.3f} (Δ = {gap:+.3f}): they live on different spheres." + swap)
    sub_holes = g("sub_hole_fraction") or 0.0
    if g("hole_fraction") > HOLES or sub_holes > HOLES:
        bubbles = g("mutual_info") / max(np.log(n_post), 1e-9)
        return "holes", (f"Holes between posterior bubbles: {100 * g('hole_fraction'):.0f}% of prior samples "
                         f"(and {100 * sub_holes:.0f}% of their projections on the {k} informative directions) "
                         f"land where the aggregate posterior has almost no mass (1% is chance); I(x; z) = "
                         f"{g('mutual_info'):.2f} nats is {100 * bubbles:.0f}% of log N = {np.log(n_post):.2f}, "
                         f"so the posteriors are {'nearly disjoint' if bubbles > 0.9 else 'separate'} bubbles." + swap)
    if spread > SPREAD_GAP:
        return "low_rank", (f"A low-rank mismatch hidden in unused dimensions: {k} principal directions of the "
                            f"posterior means hold 99% of Var_x mu(x) (of D = {d}; axis-aligned active_units "
                            f"{g('active_units')}), and along them the aggregate posterior's variance differs "
                            f"from the prior's by up to {spread:.1f}x (sub_spread), while the full space sees "
                            f"almost nothing: hole_fraction {g('hole_fraction'):.3f}, norm shells "
                            f"{g('norm_prior'):.3f} / {g('norm_post'):.3f}." + swap)
    return "matched", (f"No substantial gap: hole_fraction {g('hole_fraction'):.3f} (0.01 is chance), sub_spread "
                       f"{spread:.2f} along {k} informative directions (1 is a match)." + swap)


def _spectrum(var_post: list[float], var_prior: list[float], prior_name: str, path: Path) -> None:
    """Variance of aggregate-posterior and prior samples along the informative directions."""
    k = len(var_post)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    x = np.arange(1, k + 1)
    ax.plot(x, var_post, "o-", ms=3, label="aggregate posterior q(z)")
    ax.plot(x, var_prior, "s-", ms=3, label=f"prior ({prior_name})")
    vals = np.asarray(var_post + var_prior, dtype=float)
    if k > 20:
        ax.set_xscale("log")
    else:
        ax.set_xticks(x if k <= 12 else x[::2])
    if vals.size and vals.min() > 0 and vals.max() / vals.min() > 30:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    ax.set_xlabel("principal direction of the posterior means")
    ax.set_ylabel("variance along it")
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


def _column_stats(x: torch.Tensor, rows: int, fn=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column mean and variance (float64, on the CPU) of ``fn(x)`` (N, ...) flattened to (N, D),
    from float32 chunks of ``rows`` rows: no float64 (N, D) copy."""
    x = x.flatten(1)
    n = len(x)
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    square = torch.zeros_like(total)
    shift = (fn(x[:1]) if fn else x[:1]).float()[0]  # shifted sums: no cancellation when |mean| >> std
    for i in range(0, n, rows):
        c = (fn(x[i : i + rows]) if fn else x[i : i + rows]).float() - shift
        total += c.sum(0).double()
        square += c.pow(2).sum(0).double()
    mean = total / n
    var = (square - n * mean.pow(2)) / max(n - 1, 1)
    return (mean + shift.double()).cpu(), var.clamp_min(0).cpu()


def _chunk_rows(d: int, mem_bytes: int) -> int:
    """Rows of a (rows, d) float32 chunk within an eighth of the bound, at most 2048."""
    return max(1, min(2048, mem_bytes // (8 * 4 * d)))


def _per_dimension(mu: torch.Tensor, logvar: torch.Tensor, z_prior: torch.Tensor, prior_name: str, path: Path,
                   mem_bytes: int = 1 << 30) -> None:
    """Per latent dimension, sorted by Var_x mu_j: which axes carry information."""
    rows = _chunk_rows(mu[0].numel(), mem_bytes)
    var_mu = _column_stats(mu, rows)[1]
    post_var = _column_stats(logvar, rows, torch.exp)[0]
    prior_var = _column_stats(z_prior, rows)[1]
    order = torch.argsort(var_mu, descending=True)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    x = np.arange(1, len(order) + 1)
    ax.plot(x, var_mu[order].numpy(), label="Var_x of posterior mean")
    ax.plot(x, post_var[order].numpy(), label="mean posterior variance")
    ax.plot(x, prior_var[order].numpy(), label=f"variance of prior samples ({prior_name})")
    if len(order) > 20:
        ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.axhline(0.01, color="grey", lw=0.5, ls="--")
    ax.set_xlabel("latent dimension (sorted by Var_x of the posterior mean)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


def _plane(sub: dict[str, Any], post_var: torch.Tensor) -> torch.Tensor:
    """(2, D) orthonormal float64 rows: the first two informative directions (principal directions of
    the posterior means), completed, where there are fewer, by the coordinate axes of largest
    aggregate-posterior variance."""
    dirs = [v.double().cpu() for v in sub["basis"].T[:2]] if sub.get("k", 0) else []
    for j in torch.argsort(post_var, descending=True).tolist():
        if len(dirs) == 2:
            break
        e = torch.zeros(len(post_var), dtype=torch.float64)
        e[j] = 1.0
        for v in dirs:
            e -= (e @ v) * v
        if e.norm() > 1e-6:
            dirs.append(e / e.norm())
    return torch.stack(dirs)


def _project(z: torch.Tensor, center: torch.Tensor, basis: torch.Tensor, rows: int) -> np.ndarray:
    """(z - center) @ basis.T in float32 chunks of rows (float64 result on the CPU)."""
    z = z.flatten(1)
    c, b = center.to(z.device).float(), basis.to(z.device).float()
    return torch.cat([((z[i : i + rows].float() - c) @ b.T).double().cpu() for i in range(0, len(z), rows)]).numpy()


def _contours(prior, z_prior: torch.Tensor, z_post: torch.Tensor, path: Path, sub: dict[str, Any] | None = None,
              mem_bytes: int = 1 << 30) -> str:
    d = z_post[0].numel()
    rows = _chunk_rows(d, mem_bytes)
    center, post_var = _column_stats(z_post, rows)
    if d == 2:
        basis, how = torch.eye(2, dtype=torch.float64), "the 2-D latent"
    else:
        basis = _plane(sub or {}, post_var)
        how = ("the plane of the posterior means' first two principal components (a slice through the "
               "aggregate posterior's mean)")
    yq, yp = _project(z_post, center, basis, rows), _project(z_prior, center, basis, rows)
    lo, hi = np.percentile(np.concatenate([yq, yp]), [0.5, 99.5], axis=0)
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 120), np.linspace(lo[1], hi[1], 120))
    plane = torch.tensor(np.stack([gx.ravel(), gy.ravel()], 1))
    dev = next(iter(prior.buffers())).device
    b, c = basis.float().to(dev), center.float().to(dev)
    with torch.no_grad():  # the (14400, D) grid is built a chunk at a time
        lp = torch.cat([prior.log_prob((plane[i : i + rows].float().to(dev) @ b + c).reshape(-1, *prior.latent.shape))
                        .cpu() for i in range(0, len(plane), rows)]).reshape(gx.shape).numpy()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.scatter(yq[:2000, 0], yq[:2000, 1], s=2, alpha=0.4, c="C1", label="z ~ q(z|x) (aggregate posterior)")
    ax.scatter(yp[:500, 0], yp[:500, 1], s=2, alpha=0.4, c="C0", label="z ~ p(z)")
    finite = np.isfinite(lp)
    if finite.any():
        levels = np.unique(np.percentile(lp[finite], [50, 75, 90, 97, 99.5]))
        if len(levels) > 1:
            ax.contour(gx, gy, lp, levels=levels, colors="k", linewidths=0.6)
    ax.set_title("prior density contours over posterior samples", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)
    return how


def _record_metrics(checkpoint: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The metrics and notes of the record written beside the checkpoint by this scorer version, if any."""
    from latentbench.errors import UserError
    from latentbench.runner.records import read_record
    from latentbench.score.scorer import SCORER_VERSION

    path = Path(checkpoint).with_suffix(".json")
    if not path.is_file():
        return {}, {}
    try:
        rec = read_record(path)
    except UserError:
        return {}, {}
    if rec.get("status") != "ok" or rec.get("notes", {}).get("scorer_version") != SCORER_VERSION:
        return {}, {}
    return dict(rec.get("metrics", {})), dict(rec.get("notes", {}))


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "absent" if v is None else (str(v) if isinstance(v, int) else format(v, spec))


def _grids(snap: dict[str, Any], images: dict[str, torch.Tensor], path: Path) -> None:
    panels = [("held-out x", snap["data_images"]), ("z ~ p(z)", snap["prior_images"]),
              ("z ~ q(z|x)", snap["post_images"]), ("z ~ N(mu(x), I)", snap["unit_images"])]
    if "swap_sub" in images:
        panels += [("p(z), subspace part from q(z)", images["swap_sub"][:16].numpy()),
                   ("q(z), subspace part from p(z)", images["swap_rest"][:16].numpy())]
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.4))
    for ax, (title, imgs) in zip(axes, panels):
        ax.imshow(_grid_image(imgs[:16], ncol=4).squeeze(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


def _norms(snap: dict[str, Any], prior_name: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.2))
    bins = np.linspace(min(snap["norm_prior"].min(), snap["norm_post"].min()),
                       max(snap["norm_prior"].max(), snap["norm_post"].max()), 50)
    ax.hist(snap["norm_prior"], bins=bins, alpha=0.6, density=True, label=f"z ~ p(z) ({prior_name})")
    ax.hist(snap["norm_post"], bins=bins, alpha=0.6, density=True, label="z ~ q(z) (aggregate posterior)")
    ax.set_xlabel("||z|| / sqrt(D)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


def diagnose_checkpoint(checkpoint: Path, out: Path, device: torch.device) -> Path:
    """Diagnose one checkpoint with its cell's scoring settings and seed; writes ``out/report.md``."""
    from latentbench.data import load_data
    from latentbench.registry import METRICS
    from latentbench.score.scorer import ScoreContext
    from latentbench.spec import Cell
    from latentbench.training.checkpoint import load_checkpoint

    model, _, payload = load_checkpoint(checkpoint, device)
    cell = Cell.from_dict(payload["cell"])
    data = load_data(cell.dataset, seed=cell.seed, **cell.data)
    out.mkdir(parents=True, exist_ok=True)
    ctx = ScoreContext(model, data, cell, device)
    recorded, recorded_notes = _record_metrics(checkpoint)
    m = {k: recorded[k] if k in recorded else METRICS.get(k)(ctx) for k in SHOWN}
    s = ctx.samples()
    lat, sub = s["latents"], ctx.subspace()
    prior = model.generative_prior
    prior_name = f"{cell.remedy}: {type(prior).__name__}"
    # numbers read from the record come with the record's sample counts (its machine's geometry caps)
    notes = {**ctx.notes, **recorded_notes} if recorded else ctx.notes
    d, n_post = model.latent.dim, int(notes.get("n_geometry_posteriors", len(lat["mu"])))
    picture, reading = verdict(m, d, n_post)
    has_spectrum = bool(sub["var_post"])
    if has_spectrum:
        _spectrum(sub["var_post"], sub["var_prior"], prior_name, out / "spectrum.png")
    _per_dimension(lat["mu"], lat["logvar"], lat["z_prior"], prior_name, out / "dimensions.png", ctx.mem_bytes)
    snap = sample_snapshot(model, data.test, cell.seed)
    _grids(snap, s["images"], out / "grids.png")
    _norms(snap, prior_name, out / "norms.png")
    if prior_has_density(prior):
        how = _contours(prior, lat["z_prior"], lat["z_post"], out / "contours.png", s["subspace"], ctx.mem_bytes)
        contours = f"Shown on {how}.\n\n![contours](contours.png)"
    else:
        contours = f"{type(prior).__name__} has no tractable density: no contours."
    source = "the record beside the checkpoint" if recorded else "computed now with the cell's scoring settings"
    rows = [
        ("picture", picture),
        ("hole_fraction (prior samples in the low-density 1% of q(z); 0.01 = chance)", _fmt(m["hole_fraction"])),
        ("sub_hole_fraction (the same on the informative subspace)", _fmt(m["sub_hole_fraction"])),
        ("sub_dims (directions holding 99% of Var_x mu(x)) / active_units / D",
         f"{_fmt(m['sub_dims'])} / {_fmt(m['active_units'])} / {d}"),
        ("sub_spread (largest variance ratio either way along them; 1 = matched)", _fmt(m["sub_spread"], ".2f")),
        ("marginal_kl / sub_marginal_kl (nats)", f"{_fmt(m['marginal_kl'], '.2f')} / {_fmt(m['sub_marginal_kl'], '.2f')}"),
        (f"mutual_info I(x; z) (at most log N = {np.log(n_post):.2f})", _fmt(m["mutual_info"], ".2f")),
        ("kl E_x KL(q(z\\|x) \\|\\| p(z)) (nats)", _fmt(m["kl"], ".2f")),
        ("mmd_latent / sub_mmd", f"{_fmt(m['mmd_latent'], '.4f')} / {_fmt(m['sub_mmd'], '.4f')}"),
        ("norm_prior / norm_post (mean \\|\\|z\\|\\|/sqrt(D))",
         f"{m['norm_prior']:.3f} ± {m['norm_prior_std']:.3f} / {m['norm_post']:.3f} ± {m['norm_post_std']:.3f}"),
        ("fid_prior_post / fid_swap_sub / fid_swap_rest",
         f"{_fmt(m['fid_prior_post'], '.2f')} / {_fmt(m['fid_swap_sub'], '.2f')} / {_fmt(m['fid_swap_rest'], '.2f')}"),
    ]
    table = "\n".join(f"| {a} | {b} |" for a, b in rows)
    spectrum = ("![spectrum](spectrum.png)" if has_spectrum else "No informative direction (collapsed latent).")
    text = f"""# Diagnosis: {cell.remedy}, latent {cell.latent}, {cell.dataset}, seed {cell.seed}

Checkpoint `{checkpoint}`; numbers from {source} ({notes['n_prior']} prior and {notes['n_post']}
posterior-mixture samples; geometry on {notes['n_geometry']} samples per set over {n_post} held-out
posteriors; scorer v{notes['scorer_version']}). The prior is {prior_name}.

| quantity | value |
|---|---|
{table}

**Reading.** {reading}

## Along the informative directions
Variance of aggregate-posterior and prior samples along the {_fmt(m['sub_dims'])} principal directions of
the posterior means ({100 * notes.get('sub_coverage', 0):.1f}% of Var_x mu(x)).

{spectrum}

## Decoded samples
The last two panels swap the informative-subspace component between prior and posterior-mixture samples.

![grids](grids.png)

## The norm shell
![norms](norms.png)

## Which latent dimensions carry information
![dimensions](dimensions.png)

## Prior density over the aggregate posterior
{contours}
"""
    atomic_write_text(out / "report.md", text)
    return out / "report.md"


def diagnose(target: Path, device: torch.device, out: Path | None = None) -> list[Path]:
    """Diagnose one checkpoint, or every checkpoint of a run folder."""
    from latentbench.errors import UserError

    target = Path(target)
    if target.is_file():
        return [diagnose_checkpoint(target, out or target.with_suffix(".diagnose"), device)]
    if not target.is_dir():
        raise UserError(f"no such checkpoint or run folder: {target}")
    ckpts = sorted((target / "records").glob("*.pt")) if (target / "records").is_dir() else sorted(target.glob("*.pt"))
    if not ckpts:
        raise UserError(f"{target}: no checkpoints found (expected {target}/records/*.pt)")
    base = out or target / "diagnose"
    return [diagnose_checkpoint(c, base / c.stem, device) for c in ckpts]
