"""PNG plots: metrics against latent size, sample grids and the norm "soap bubble" histograms.

Metric plots read records only; sample grids and histograms read the small ``<cell>.samples.npz``
files the runner writes beside each record.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from latentbench.registry import METRICS  # noqa: E402

PLOT_METRICS = ("fid_prior", "fid_post", "fid_prior_post", "hole_fraction", "marginal_kl", "nll_iw", "kl",
                "mmd_latent")


def metric_vs_latent(df: pd.DataFrame, metric: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    for remedy, sub in df.groupby("row"):
        g = sub.groupby("latent_dim")[metric]
        mean, std = g.mean(), g.std(ddof=1).fillna(0.0)
        ax.errorbar(mean.index, mean.values, yerr=std.values, marker="o", capsize=3, label=remedy)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("latent dimension D")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} ({METRICS.get(metric).direction})" if metric in METRICS else metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _grid_image(images: np.ndarray, ncol: int = 8) -> np.ndarray:
    n, c, h, w = images.shape
    rows = int(np.ceil(n / ncol))
    canvas = np.ones((rows * (h + 1), ncol * (w + 1), c), dtype=np.float32)
    for i, img in enumerate(images):
        r, q = divmod(i, ncol)
        canvas[r * (h + 1) : r * (h + 1) + h, q * (w + 1) : q * (w + 1) + w] = img.transpose(1, 2, 0)
    return canvas.squeeze(-1) if c == 1 else canvas


def _load_snapshots(records: list[dict]) -> dict[tuple[str, str], dict]:
    out = {}
    first_seed = min((r["cell"]["seed"] for r in records), default=0)
    for r in records:
        if r.get("status") != "ok" or r["cell"]["seed"] != first_seed:
            continue
        p = Path(r["_path"]).with_suffix(".samples.npz")
        if p.is_file():
            with np.load(p) as z:
                out[(r["cell"]["remedy"], r["cell"]["latent"])] = {k: z[k] for k in z.files}
    return out


def sample_grids(records: list[dict], df: pd.DataFrame, path: Path) -> Path | None:
    """Prior and posterior-mixture samples per remedy at the smallest and largest latent size."""
    snaps = _load_snapshots(records)
    if not snaps:
        return None
    dims = df.drop_duplicates("latent").set_index("latent")["latent_dim"].sort_values()
    latents = [dims.index[0], dims.index[-1]] if len(dims) > 1 else [dims.index[0]]
    remedies = sorted(df["remedy"].unique())
    cols = [(lat, kind) for lat in latents for kind in ("prior", "post")]
    fig, axes = plt.subplots(len(remedies), len(cols), figsize=(2.2 * len(cols), 1.5 * len(remedies) + 0.6),
                             squeeze=False)
    for i, rem in enumerate(remedies):
        for j, (lat, kind) in enumerate(cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            snap = snaps.get((rem, lat))
            if snap is not None:
                ax.imshow(_grid_image(snap[f"{kind}_images"][:16]), cmap="gray", vmin=0, vmax=1)
            if i == 0:
                ax.set_title(f"z={lat}\n{'z ~ p(z)' if kind == 'prior' else 'z ~ q(z|x)'}", fontsize=8)
            if j == 0:
                ax.set_ylabel(rem, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def norm_histograms(records: list[dict], df: pd.DataFrame, path: Path, remedy: str = "vae") -> Path | None:
    """||z|| / sqrt(D) of prior vs aggregate-posterior samples at each latent size (the soap bubble)."""
    snaps = _load_snapshots(records)
    remedy = remedy if any(k[0] == remedy for k in snaps) else (sorted(k[0] for k in snaps) or [None])[0]
    lats = sorted({k[1] for k in snaps if k[0] == remedy}, key=lambda s: int(np.prod([int(x) for x in s.split("x")])))
    if not lats:
        return None
    fig, axes = plt.subplots(1, len(lats), figsize=(2.6 * len(lats), 2.6), squeeze=False)
    for ax, lat in zip(axes[0], lats):
        s = snaps[(remedy, lat)]
        lo = min(s["norm_prior"].min(), s["norm_post"].min())
        hi = max(s["norm_prior"].max(), s["norm_post"].max())
        bins = np.linspace(lo, hi, 40)
        ax.hist(s["norm_prior"], bins=bins, alpha=0.6, density=True, label="prior p(z)")
        ax.hist(s["norm_post"], bins=bins, alpha=0.6, density=True, label="aggregate q(z)")
        ax.set_title(f"{remedy}, z={lat}", fontsize=9)
        ax.set_xlabel("||z|| / sqrt(D)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def make_plots(records: list[dict], df: pd.DataFrame, folder: Path, metrics=PLOT_METRICS) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = [metric_vs_latent(df, m, folder / f"{m}.png") for m in metrics if m in df.columns]
    for p in (sample_grids(records, df, folder / "samples.png"), norm_histograms(records, df, folder / "norms.png")):
        if p is not None:
            out.append(p)
    return out
