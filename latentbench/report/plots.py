"""PNG plots: metrics against latent size, sample grids and the norm "soap bubble" histograms.

Metric plots read records only; sample grids and histograms read the small ``<cell>.samples.npz``
files the runner writes beside each record.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from latentbench.atomic import atomic_write_bytes  # noqa: E402
from latentbench.registry import METRICS  # noqa: E402
from latentbench.results import RecordLike, as_records  # noqa: E402

PLOT_METRICS = ("fid_prior", "fid_post", "fid_prior_post", "fid_mu_unit", "hole_fraction", "spec_wide",
                "spec_narrow", "mean_offset", "sub_spread", "nll_iw", "kl", "active_units", "mmd_latent")


def metric_vs_latent(df: pd.DataFrame, metric: str, path: Path) -> Path:
    """One line per row against latent size (mean ± std over seeds); the metric's goal in the title, its
    target and its noise floor (where the records carry one) as grey lines, collapsed cells hollow."""
    from latentbench.report.tables import direction, floor_summary

    info = METRICS.get(metric) if metric in METRICS else None
    fig, ax = plt.subplots(figsize=(6, 4))
    collapsed = df["collapsed"].astype(bool) if "collapsed" in df else pd.Series(False, index=df.index)
    for remedy, sub in df.groupby("row"):
        g = sub.groupby("latent_dim")[metric]
        mean, std = g.mean(), g.std(ddof=1).fillna(0.0)
        line = ax.errorbar(mean.index, mean.values, yerr=std.values, marker="o", capsize=3, label=remedy)
        hollow = sorted(set(sub.loc[collapsed.loc[sub.index], "latent_dim"]))
        if hollow:
            ax.plot(hollow, mean.reindex(hollow).values, "o", mfc="white", color=line[0].get_color(), zorder=3)
    if info is not None and info.goal == "target":
        ax.axhline(float(info.target), color="grey", lw=0.8, ls=":", label=f"target {float(info.target):g}")
    floor = floor_summary(df, metric)
    if floor.notna().any().any():
        dims = {lat: d for lat, d in zip(df["latent"], df["latent_dim"])}
        per = floor.mean(axis=0).dropna()
        ax.plot([dims[lat] for lat in per.index], per.values, color="grey", lw=1.0, ls="--", label="noise floor")
    if collapsed.any():
        ax.plot([], [], "o", mfc="white", color="grey", label="collapsed latent")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("latent dimension D")
    ax.set_ylabel(metric + (f" ({info.bound} bound)" if info is not None and info.bound else ""))
    ax.set_title(f"{metric} ({direction(info)})" if info is not None else metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return _save(fig, path)


def _grid_image(images: np.ndarray, ncol: int = 8, fill: float = 1.0) -> np.ndarray:
    n, c, h, w = images.shape
    rows = int(np.ceil(n / ncol))
    canvas = np.full((rows * (h + 1), ncol * (w + 1), c), fill, dtype=np.float32)
    for i, img in enumerate(images):
        r, q = divmod(i, ncol)
        canvas[r * (h + 1) : r * (h + 1) + h, q * (w + 1) : q * (w + 1) + w] = img.transpose(1, 2, 0)
    return canvas.squeeze(-1) if c == 1 else canvas


def _load_snapshots(records: Iterable[RecordLike]) -> dict[tuple[str, str], dict]:
    out = {}
    records = as_records(records)
    first_seed = min((r.cell["seed"] for r in records if r.ok), default=0)
    for r in records:
        if not r.ok or r.cell["seed"] != first_seed:
            continue
        p = Path(r.path or "").with_suffix(".samples.npz")
        if p.is_file():
            try:
                with np.load(p) as z:
                    snap = {k: z[k] for k in z.files}
                if any(np.asarray(snap[f"{kind}_images"]).ndim != 4 for kind in ("prior", "post")):
                    raise ValueError("its images are not (n, channels, height, width) arrays")
            except Exception as exc:  # noqa: BLE001 - truncated, not an npz, or other arrays: a plot less, not a crash
                why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                print(f"latentbench: warning: skipped the samples in {p} (corrupt: {why}); rerun its cell to "
                      "redraw them", file=sys.stderr)
                continue
            out[(r.marks.get("row", r.remedy), r.latent)] = snap
    return out


def _latents_shown(lats: list[str], most: int = 6) -> list[str]:
    """Every latent size when there are few; else the smallest, the middle ones evenly and the largest."""
    if len(lats) <= most:
        return lats
    idx = np.linspace(0, len(lats) - 1, most).round().astype(int)
    return [lats[i] for i in sorted(set(idx))]


def sample_grids(records: Iterable[RecordLike], path: Path) -> Path | None:
    """Prior and posterior-mixture samples per remedy (rows) at each latent size (column pairs), as
    square 4 x 4 tiles packed edge to edge."""
    snaps = _load_snapshots(records)
    if not snaps:
        return None
    latents = _latents_shown(_order({k[1] for k in snaps}))
    remedies = sorted({k[0] for k in snaps})
    cols = [(lat, kind) for lat in latents for kind in ("prior", "post")]
    tile, left, top = 1.25, 0.6, 0.4
    width, height = tile * len(cols) + left, tile * len(remedies) + top
    fig, axes = plt.subplots(len(remedies), len(cols), squeeze=False, figsize=(width, height))
    for i, rem in enumerate(remedies):
        for j, (lat, kind) in enumerate(cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            snap = snaps.get((rem, lat))
            if snap is not None:
                ax.imshow(_grid_image(snap[f"{kind}_images"][:16], ncol=4, fill=0.5), cmap="gray", vmin=0, vmax=1)
            else:
                ax.set_facecolor("#eee")
            if i == 0:
                ax.set_title(f"z={lat}\n{'p(z)' if kind == 'prior' else 'q(z|x)'}", fontsize=7)
            if j == 0:
                ax.set_ylabel(rem, fontsize=8)
    fig.subplots_adjust(left=left / width, right=0.995, bottom=0.01, top=1 - top / height, wspace=0.04, hspace=0.04)
    return _save(fig, path)


def _order(latents) -> list[str]:
    from latentbench.latent import LatentShape

    return sorted(latents, key=lambda s: LatentShape.parse(s).sort_key())


def norm_histograms(records: Iterable[RecordLike], path: Path) -> Path | None:
    """||z|| / sqrt(D) of prior vs aggregate-posterior samples (the soap bubble): one row per remedy,
    one column per latent size."""
    snaps = _load_snapshots(records)
    if not snaps:
        return None
    remedies = sorted({k[0] for k in snaps})
    lats = _latents_shown(_order({k[1] for k in snaps}))
    fig, axes = plt.subplots(len(remedies), len(lats), figsize=(2.1 * len(lats) + 0.6, 1.5 * len(remedies) + 0.8),
                             squeeze=False)
    for i, rem in enumerate(remedies):
        for j, lat in enumerate(lats):
            ax = axes[i][j]
            ax.set_yticks([])
            s = snaps.get((rem, lat))
            if s is None:
                ax.set_xticks([])
                ax.set_facecolor("#eee")
            else:
                lo = min(s["norm_prior"].min(), s["norm_post"].min())
                hi = max(s["norm_prior"].max(), s["norm_post"].max())
                bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 40)
                ax.hist(s["norm_prior"], bins=bins, alpha=0.6, density=True, label="prior p(z)")
                ax.hist(s["norm_post"], bins=bins, alpha=0.6, density=True, label="aggregate q(z)")
                ax.tick_params(labelsize=6)
            if i == 0:
                ax.set_title(f"z={lat}", fontsize=8)
            if j == 0:
                ax.set_ylabel(rem, fontsize=8)
            if i == len(remedies) - 1:
                ax.set_xlabel("||z|| / sqrt(D)", fontsize=7)
    handles, labels = next(((a.get_legend_handles_labels()) for a in axes.flat if a.get_legend_handles_labels()[0]),
                           ([], []))
    if handles:
        fig.legend(handles, labels, loc="upper right", fontsize=7, ncol=2)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (1.5 * len(remedies) + 0.8)))
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    """Write the figure atomically: a full disk leaves no truncated PNG behind."""
    buf = io.BytesIO()
    fig.savefig(buf, dpi=110, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def make_plots(records: Iterable[RecordLike], df: pd.DataFrame, folder: Path, metrics=PLOT_METRICS) -> list[Path]:
    records = as_records(records)
    folder.mkdir(parents=True, exist_ok=True)
    out = [metric_vs_latent(df, m, folder / f"{m}.png") for m in metrics if m in df.columns]
    for p in (sample_grids(records, folder / "samples.png"), norm_histograms(records, folder / "norms.png")):
        if p is not None:
            out.append(p)
    return out
