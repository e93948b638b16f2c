"""``latentbench diagnose``: the seed question answered for one trained model, as markdown + PNGs.

- the norm shell of prior vs aggregate posterior (||z|| / sqrt(D) histograms);
- the per-dimension spectrum: which dimensions carry information (KL to N(0, 1) per dimension,
  variance of the posterior means, mean posterior variance);
- hole fraction and marginal KL;
- grids decoded from z ~ p(z), z ~ q(z|x) and z ~ N(mu(x), I), side by side;
- the prior's density over the aggregate-posterior samples: contours for 2-D latents, and on the
  plane of the first two principal components (a slice through the posterior mean) for larger ones.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from latentbench.atomic import atomic_savefig, atomic_write_text  # noqa: E402
from latentbench.report.plots import _grid_image  # noqa: E402
from latentbench.score.geometry import latent_metrics  # noqa: E402
from latentbench.score.sampling import draw_latents, sample_snapshot  # noqa: E402


def _spectrum(mu: torch.Tensor, logvar: torch.Tensor, path: Path) -> dict[str, float]:
    m, lv = mu.flatten(1).double(), logvar.flatten(1).double()
    kl = (0.5 * (m.pow(2) + lv.exp() - 1 - lv)).mean(0)
    order = torch.argsort(kl, descending=True)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    x = np.arange(1, len(order) + 1)
    ax.plot(x, kl[order].numpy(), label="KL(q(z_j|x) || N(0,1)), mean over x")
    ax.plot(x, m.var(0)[order].numpy(), label="Var_x of posterior mean")
    ax.plot(x, lv.exp().mean(0)[order].numpy(), label="mean posterior variance")
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1e-2)
    ax.axhline(0.01, color="grey", lw=0.5, ls="--")
    ax.set_xlabel("latent dimension (sorted by KL)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)
    return {"top_dim_kl": float(kl[order[0]]), "dims_over_0.1_nats": int((kl > 0.1).sum())}


def _contours(prior, z_prior: torch.Tensor, z_post: torch.Tensor, path: Path) -> str:
    post = z_post.flatten(1).double().cpu()
    center = post.mean(0)
    if post.shape[1] == 2:
        basis, how = torch.eye(2, dtype=torch.float64), "the 2-D latent"
    else:
        _, _, v = torch.linalg.svd(post - center, full_matrices=False)
        basis, how = v[:2], "the plane of the aggregate posterior's first two principal components (a slice)"
    yq = ((post - center) @ basis.T).numpy()
    yp = ((z_prior.flatten(1).double().cpu() - center) @ basis.T).numpy()
    lo, hi = np.percentile(np.concatenate([yq, yp]), [0.5, 99.5], axis=0)
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 120), np.linspace(lo[1], hi[1], 120))
    grid = torch.tensor(np.stack([gx.ravel(), gy.ravel()], 1)) @ basis + center
    dev = next(iter(prior.buffers())).device
    with torch.no_grad():
        lp = torch.cat([prior.log_prob(grid[i : i + 2048].float().reshape(-1, *prior.latent.shape).to(dev)).cpu()
                        for i in range(0, len(grid), 2048)]).reshape(gx.shape).numpy()
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


def diagnose_checkpoint(checkpoint: Path, out: Path, device: torch.device, n: int = 2000) -> Path:
    from latentbench.data import load_data
    from latentbench.spec import Cell
    from latentbench.training.checkpoint import load_checkpoint

    model, _, payload = load_checkpoint(checkpoint, device)
    cell = Cell.from_dict(payload["cell"])
    data = load_data(cell.dataset, seed=cell.seed, **cell.data)
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(cell.seed + 7)
    lat = draw_latents(model, data.test, n, g)
    prior = model.generative_prior
    geo = latent_metrics(prior, lat["mu"], lat["logvar"], lat["z_prior"], lat["z_post"], lat["post_index"],
                         analytic_kl=prior.analytic_kl(lat["mu"], lat["logvar"]))
    spec = _spectrum(lat["mu"], lat["logvar"], out / "spectrum.png")
    snap = sample_snapshot(model, data.test, cell.seed)
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.4))
    titles = ("held-out x", "z ~ p(z)", "z ~ q(z|x)", "z ~ N(mu(x), I)")
    for ax, key, title in zip(axes, ("data_images", "prior_images", "post_images", "unit_images"), titles):
        ax.imshow(_grid_image(snap[key][:16], ncol=4), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    atomic_savefig(fig, out / "grids.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    bins = np.linspace(min(snap["norm_prior"].min(), snap["norm_post"].min()),
                       max(snap["norm_prior"].max(), snap["norm_post"].max()), 50)
    ax.hist(snap["norm_prior"], bins=bins, alpha=0.6, density=True, label="z ~ p(z)")
    ax.hist(snap["norm_post"], bins=bins, alpha=0.6, density=True, label="z ~ q(z) (aggregate posterior)")
    ax.set_xlabel("||z|| / sqrt(D)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_savefig(fig, out / "norms.png", dpi=110)
    plt.close(fig)
    how = _contours(prior, lat["z_prior"], lat["z_post"], out / "contours.png")
    n_post = len(lat["mu"])
    text = f"""# Diagnosis: {cell.remedy}, latent {cell.latent}, {cell.dataset}, seed {cell.seed}

Checkpoint `{checkpoint}`; {n} prior and {n} aggregate-posterior samples over {n_post} held-out posteriors.

| quantity | value |
|---|---|
| hole_fraction (prior samples in the low-density 1% of q(z)) | {geo['hole_fraction']:.3f} |
| marginal_kl KL(q(z) \\|\\| p(z)) | {geo['marginal_kl']:.2f} nats |
| mutual_info I(x; z) (at most log N = {np.log(n_post):.2f}) | {geo['mutual_info']:.2f} nats |
| kl E_x KL(q(z\\|x) \\|\\| p(z)) | {geo['kl']:.2f} nats |
| mmd_latent | {geo['mmd_latent']:.4f} |
| active_units | {geo['active_units']} of {model.latent.dim} |
| norm_prior / norm_post (mean \\|\\|z\\|\\|/sqrt(D)) | {geo['norm_prior']:.3f} ± {geo['norm_prior_std']:.3f} / {geo['norm_post']:.3f} ± {geo['norm_post_std']:.3f} |
| dimensions with KL > 0.1 nats | {spec['dims_over_0.1_nats']} |

**Reading.** {_reading(geo, n_post)}

## The norm shell
![norms](norms.png)

## Which dimensions carry information
![spectrum](spectrum.png)

## Decoded samples
![grids](grids.png)

## Prior density over the aggregate posterior
Shown on {how}.

![contours](contours.png)
"""
    atomic_write_text(out / "report.md", text)
    return out / "report.md"


def _reading(geo: dict, n_post: int) -> str:
    parts = []
    hf = geo["hole_fraction"]
    parts.append(f"{100 * hf:.0f}% of prior samples land where the aggregate posterior has almost no mass"
                 + (" (1% would mean none beyond chance)." if hf > 0.02 else ", i.e. no prior holes beyond chance."))
    if geo["mutual_info"] > 0.9 * np.log(n_post):
        parts.append("I(x; z) is near log N: the posteriors are disjoint bubbles, as in the seed question.")
    gap = geo["norm_post"] - geo["norm_prior"]
    if abs(gap) > 2 * max(geo["norm_prior_std"], 1e-3):
        parts.append(f"The two norm shells are apart (Δ = {gap:+.3f}): prior and posterior samples live on different spheres.")
    return " ".join(parts)


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
