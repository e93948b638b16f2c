"""``latentbench diagnose``: the seed question answered for one trained model, as markdown + PNGs.

It scores with the cell's own settings and seed (``ScoreContext``), so every number it shows is the
record's; a number the record already holds is read from it, and diagnose adds what the record lacks:

- a verdict naming which picture holds (``latentbench.report.verdict``: collapsed / matched pictures /
  different norm shells / holes in the full space / a low-rank mismatch the full space cannot see / a
  mismatch none of these describes), decided from calibrated figures read against their noise floors;
- the variance spectrum: along the informative directions, and at both ends of Cov_q (the directions
  where the prior is too narrow and where it is too wide) against the floor;
- the per-dimension picture (Var_x of posterior means, mean posterior variance, prior-sample variance);
- the norm shell of prior vs aggregate posterior (||z|| / sqrt(D) histograms);
- grids decoded from z ~ p(z), z ~ q(z|x), z ~ N(mu(x), I) and the two subspace swaps;
- the prior's density over the aggregate-posterior samples: contours for 2-D latents, and on the
  plane of the posterior means' first two principal components (a slice through the aggregate
  posterior's mean) for larger ones.

For a run folder it diagnoses every checkpoint and writes ``summary.md``: one table of the verdicts of
every record (a folder of records without checkpoints, e.g. a published board, gets the table alone).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from latentbench.atomic import atomic_savefig, atomic_write_text  # noqa: E402
from latentbench.report.plots import _grid_image  # noqa: E402
from latentbench.report.verdict import _f, floor_of, summary_markdown, verdict  # noqa: E402, F401
from latentbench.score.geometry import prior_has_density  # noqa: E402
from latentbench.score.sampling import sample_snapshot  # noqa: E402

# the metrics a diagnosis shows (read from the record where it has them, else computed as the scorer would)
SHOWN = ("fid_prior_post", "fid_floor", "fid_prior", "fid_post", "fid_mu_unit", "hole_fraction",
         "sub_hole_fraction", "spec_wide", "spec_narrow", "mean_offset", "sub_spread", "sub_dims", "active_units",
         "kl", "mutual_info", "marginal_kl", "sub_marginal_kl", "mmd_latent", "sub_mmd", "norm_prior",
         "norm_prior_std", "norm_post", "norm_post_std", "fid_swap_sub", "fid_swap_rest", "fid_swap_sub_rand",
         "fid_swap_rest_rand")


def _spectrum(notes: dict[str, Any], prior_name: str, path: Path) -> bool:
    """Left: variance of aggregate posterior and prior along the informative directions. Right: the
    ratio Var_q / Var_p along the top and bottom eigen-directions of Cov_q (both ends of the spectrum),
    with the floor either way. False (nothing drawn) when the notes hold neither."""
    sub_q, sub_p = notes.get("sub_var_post") or [], notes.get("sub_var_prior") or []
    spec_q, spec_p = notes.get("spec_var_post") or [], notes.get("spec_var_prior") or []
    panels = [p for p in (("sub", sub_q, sub_p), ("spec", spec_q, spec_p)) if p[1] and len(p[1]) == len(p[2])]
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.4), squeeze=False)
    for ax, (kind, vq, vp) in zip(axes[0], panels):
        x = np.arange(1, len(vq) + 1)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        if kind == "sub":
            ax.plot(x, vq, "o-", ms=3, label="aggregate posterior q(z)")
            ax.plot(x, vp, "s-", ms=3, label=f"prior ({prior_name})")
            vals = np.asarray(vq + vp, dtype=float)
            if vals.size and vals.min() > 0 and vals.max() / vals.min() > 30:
                ax.set_yscale("log")
            else:
                ax.set_ylim(bottom=0)
            ax.set_xlabel("informative direction (principal direction of the posterior means)")
            ax.set_ylabel("variance along it")
            ax.set_title("along the informative directions", fontsize=9)
        else:
            ratio = np.asarray(vq, dtype=float) / np.maximum(np.asarray(vp, dtype=float), 1e-12)
            half = len(ratio) // 2
            ax.plot(x[:half], ratio[:half], "o", ms=4, label="top of Cov_q (where the prior may be too narrow)")
            ax.plot(x[half:], ratio[half:], "s", ms=4, label="bottom of Cov_q (where the prior may be too wide)")
            ax.axhline(1.0, color="k", lw=0.6)
            floor = (notes.get("floors") or {}).get("spec_wide")
            if floor:
                ax.axhspan(1 / float(floor), float(floor), color="grey", alpha=0.2, label="noise floor")
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax.set_xlabel("probed eigen-direction of Cov_q")
            ax.set_ylabel("Var_q / Var_p along it")
            ax.set_title("both ends of the spectrum (1 = matched)", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)
    return True


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
    ax.set_ylabel("variance")
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
    if d == 2:
        ax.set_xlabel("z_1 (centred on the aggregate posterior's mean)")
        ax.set_ylabel("z_2 (centred)")
    else:
        ax.set_xlabel("direction 1 (principal component of the posterior means)")
        ax.set_ylabel("direction 2")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)
    return how


def _record_metrics(checkpoint: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The metrics and notes of the record written beside the checkpoint by this scorer version, if any."""
    from latentbench.errors import UserError
    from latentbench.results import read_record
    from latentbench.score.scorer import SCORER_VERSION

    path = Path(checkpoint).with_suffix(".json")
    if not path.is_file():
        return {}, {}
    try:
        rec = read_record(path)
    except UserError:
        return {}, {}
    if not rec.ok or rec.notes.get("scorer_version") != SCORER_VERSION:
        return {}, {}
    return dict(rec.metrics), dict(rec.notes)


def _fmt(v: Any, spec: str = ".3f") -> str:
    """A shown number: an int as it is, a float never as '-0.000', 'absent' for a missing one."""
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else _f(v, spec)


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


def _rows(m: dict[str, Any], notes: dict[str, Any], picture: str, d: int) -> list[tuple[str, str]]:
    """The report's table: each figure with its floor where it has one; bounds written as bounds."""
    def fl(name: str, spec: str = ".3f") -> str:
        floor = floor_of(name, m, notes)
        return f"{_fmt(m.get(name), spec)}" + (f" (floor {_fmt(floor, spec)})" if floor is not None else "")

    n_a = notes.get("n_mixture")
    log_n = f"at most log N_A = {math.log(n_a):.2f}" if n_a else "at most log N"
    return [
        ("picture", f"**{picture}**"),
        ("fid_prior_post: decoded prior vs posterior-mixture samples (floor: two posterior-mixture draws)",
         fl("fid_prior_post", ".2f")),
        ("fid_prior / fid_post / fid_mu_unit: z ~ p(z), z ~ q(z\\|x), z ~ N(mu(x), I) vs held-out data",
         f"{_fmt(m.get('fid_prior'), '.2f')} / {_fmt(m.get('fid_post'), '.2f')} / {_fmt(m.get('fid_mu_unit'), '.2f')}"),
        ("hole_fraction: prior samples in the low-density 1% of q(z) (0.01 when the prior is right)", fl("hole_fraction")),
        ("sub_hole_fraction: the same on the informative subspace", fl("sub_hole_fraction")),
        ("spec_wide: largest Var_q / Var_p along the probed directions (1 = matched)", fl("spec_wide", ".2f")),
        ("spec_narrow: largest Var_p / Var_q (1 = matched)", fl("spec_narrow", ".2f")),
        ("sub_spread: largest variance ratio either way along the informative directions", fl("sub_spread", ".2f")),
        ("mean_offset: \\|\\|E_q z - E_p z\\|\\|", fl("mean_offset")),
        ("sub_dims (directions holding 99% of Var_x mu(x)) / active_units / D",
         f"{_fmt(m.get('sub_dims'), '.0f')} / {_fmt(m.get('active_units'), '.0f')} / {d}"),
        ("norm_prior / norm_post (mean \\|\\|z\\|\\|/sqrt(D) ± std)",
         f"{_fmt(m.get('norm_prior'))} ± {_fmt(m.get('norm_prior_std'))} / "
         f"{_fmt(m.get('norm_post'))} ± {_fmt(m.get('norm_post_std'))}"),
        ("mmd_latent / sub_mmd", f"{_fmt(m.get('mmd_latent'), '.4f')} / {_fmt(m.get('sub_mmd'), '.4f')}"),
        ("kl: E_x KL(q(z\\|x) \\|\\| p(z)) (nats; descriptive)", _fmt(m.get("kl"), ".2f")),
        (f"mutual_info I(x; z): a lower bound, {log_n}{' (saturated)' if notes.get('mi_saturated') else ''}; "
         "not used by the verdict", f"≥ {_fmt(m.get('mutual_info'), '.2f')}"),
        ("marginal_kl / sub_marginal_kl: upper bounds on KL(q(z) \\|\\| p(z)) (nats); not used by the verdict",
         f"≤ {_fmt(m.get('marginal_kl'), '.2f')} / ≤ {_fmt(m.get('sub_marginal_kl'), '.2f')}"),
        ("swaps (interventions vs an independent posterior draw): fid_swap_sub / fid_swap_rest; in a random "
         "subspace of the same k: fid_swap_sub_rand / fid_swap_rest_rand",
         f"{_fmt(m.get('fid_swap_sub'), '.2f')} / {_fmt(m.get('fid_swap_rest'), '.2f')}; "
         f"{_fmt(m.get('fid_swap_sub_rand'), '.2f')} / {_fmt(m.get('fid_swap_rest_rand'), '.2f')}"),
    ]


def diagnose_checkpoint(checkpoint: Path, out: Path, device: torch.device) -> Path:
    """Diagnose one checkpoint with its cell's scoring settings and seed; writes ``out/report.md``."""
    return _diagnose(checkpoint, out, device)[0]


def _diagnose(checkpoint: Path, out: Path, device: torch.device) -> tuple[Path, dict, dict, dict]:
    """(report path, cell, metrics, notes) of one checkpoint's diagnosis."""
    from latentbench.data import load_data
    from latentbench.spec import Cell
    from latentbench.training.checkpoint import load_checkpoint

    model, _, payload = load_checkpoint(checkpoint, device)
    cell = Cell.from_dict(payload["cell"])
    data = load_data(cell.dataset, seed=cell.seed, **cell.data)
    return diagnose_model(model, data, cell, out, device, source=f"Checkpoint `{checkpoint}`",
                          recorded=_record_metrics(checkpoint))


def diagnose_model(model, data, cell, out: Path, device: torch.device, *, source: str,
                   recorded: tuple[dict[str, Any], dict[str, Any]] = ({}, {}),
                   prior_name: str | None = None) -> tuple[Path, dict, dict, dict]:
    """Diagnose a model (a checkpoint's, or one brought from outside) on ``data`` with ``cell``'s
    scoring settings and seed; writes ``out/report.md`` and its figures. ``recorded`` holds the metrics
    and notes of a record already scored with these settings (read, not recomputed); ``source`` opens
    the report (where the model comes from). Returns (report path, cell, metrics, notes)."""
    from latentbench.registry import METRICS
    from latentbench.score.latents import draw_posterior
    from latentbench.score.scorer import ScoreContext

    out.mkdir(parents=True, exist_ok=True)
    ctx = ScoreContext(model, data, cell, device)
    recorded, recorded_notes = recorded
    m = {k: recorded[k] if k in recorded else (METRICS.get(k)(ctx) if k in METRICS else None) for k in SHOWN}
    post, s = ctx.posteriors(), ctx.samples()
    z_prior = s["z_prior"]
    z_post, _ = draw_posterior(post["mu"], post["logvar"], len(z_prior), ctx.stream("diagnose/posterior"))
    z_post = z_post.reshape(len(z_post), *model.latent.shape)
    prior = model.generative_prior
    prior_name = prior_name or f"{cell.remedy}: {type(prior).__name__}"
    # numbers read from the record come with the record's sample counts and floors
    notes = {**ctx.notes, **recorded_notes} if recorded else ctx.notes
    d = model.latent.dim
    picture, reading = verdict(m, d, notes)
    has_spectrum = _spectrum(notes, prior_name, out / "spectrum.png")
    _per_dimension(post["mu"], post["logvar"], z_prior, prior_name, out / "dimensions.png", ctx.mem_bytes)
    snap = sample_snapshot(model, data.test, cell.seed)
    _grids(snap, s["images"], out / "grids.png")
    _norms(snap, prior_name, out / "norms.png")
    if prior_has_density(prior):
        how = _contours(prior, z_prior, z_post, out / "contours.png", post["subspace"], ctx.mem_bytes)
        contours = f"Shown on {how}.\n\n![contours](contours.png)"
    else:
        contours = f"{type(prior).__name__} has no tractable density: no contours."
    numbers = "from the record beside the checkpoint" if recorded else "computed now with the cell's scoring settings"
    table = "\n".join(f"| {a} | {b} |" for a, b in _rows(m, notes, picture, d))
    spectrum = ("![spectrum](spectrum.png)" if has_spectrum else "No informative direction (collapsed latent).")
    text = f"""# Diagnosis: {cell.remedy}, latent {cell.latent}, {cell.dataset}, seed {cell.seed}

{source}; numbers {numbers} ({notes['n_prior']} prior and {notes['n_post']}
posterior-mixture samples; geometry on {notes['n_geometry']} samples per set over
{notes.get('n_geometry_posteriors', len(post['mu']))} held-out posteriors; scorer v{notes['scorer_version']}).
The prior is {prior_name}.

| quantity | value |
|---|---|
{table}

**Reading.** {reading}

The verdict reads calibrated figures against their noise floors (the rules: `latentbench/report/verdict.py`);
bounds (mutual_info, marginal_kl) and the swap interventions are shown but never decide it.

## The spectrum
Variance of the aggregate posterior and of the prior along the {_fmt(m.get('sub_dims'), '.0f')} informative
directions ({100 * notes.get('sub_coverage', 0):.1f}% of Var_x mu(x)), and their ratio at both ends of Cov_q.

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
    return out / "report.md", cell.to_dict(), m, notes


def diagnose(target: Path, device: torch.device, out: Path | None = None) -> list[Path]:
    """Diagnose one checkpoint, or every checkpoint of a run folder; for a folder, also write
    ``summary.md`` (the verdicts of every record, from the diagnosis where there was one). A folder of
    records without checkpoints (a published board) gets the summary alone."""
    from latentbench.errors import UserError
    from latentbench.results import read_records

    target = Path(target)
    if target.is_file():
        return [diagnose_checkpoint(target, out or target.with_suffix(".diagnose"), device)]
    if not target.is_dir():
        raise UserError(f"no such checkpoint or run folder: {target}")
    folder = target / "records" if (target / "records").is_dir() else target
    ckpts = sorted(folder.glob("*.pt"))
    records = [r for r in read_records([target], skip_bad=True) if r.ok] \
        if list(folder.glob("*.json")) else []
    if not ckpts and not records:
        raise UserError(f"{target}: no checkpoints or records found (expected {target}/records/*.pt or *.json)")
    base = out or target / "diagnose"
    reports, done = [], {}
    for c in ckpts:
        path, cell, m, notes = _diagnose(c, base / c.stem, device)
        reports.append(path)
        done[c.stem] = (cell, m, notes)
    rows = [done.pop(Path(r.path or "").stem, None) or (r.cell, r.metrics or {}, r.notes or {}) for r in records]
    rows += list(done.values())  # checkpoints without a record
    base.mkdir(parents=True, exist_ok=True)
    atomic_write_text(base / "summary.md", summary_markdown(rows))
    return reports + [base / "summary.md"]
