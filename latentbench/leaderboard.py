"""Records -> tables. Rows are remedies, columns latent sizes, cells mean +- std over seeds.

Reads records only (never models). Each metric knows whether lower or higher is better; the best
entry per column is marked. A second set of tables lists the seed question's gap metrics.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from latentbench.errors import UserError
from latentbench.latent import LatentShape
from latentbench.metrics_info import METRIC_INFO

GAP_METRICS = ("fid_prior_post", "hole_fraction", "marginal_kl", "nll_iw")
DEFAULT_METRIC = "fid_prior"


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per ok record: the cell's identity columns plus every metric."""
    rows = []
    for r in records:
        if r.get("status") != "ok":
            continue
        c = r["cell"]
        rows.append({
            "remedy": c["remedy"], "latent": c["latent"], "latent_dim": LatentShape.parse(c["latent"]).dim,
            "seed": c["seed"], "dataset": c["dataset"], "arch": c["arch"], "epochs": c["epochs"],
            "version": r.get("provenance", {}).get("latentbench"),
            "git": (r.get("provenance", {}).get("git_hash") or "")[:8],
            "scorer": r.get("notes", {}).get("scorer_version"),
            "command": r.get("provenance", {}).get("command", ""),
            **r.get("metrics", {}),
        })
    return pd.DataFrame(rows)


def _latent_order(df: pd.DataFrame) -> list[str]:
    return sorted(df["latent"].unique(), key=lambda s: LatentShape.parse(s).sort_key())


def summary(df: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(mean, std, count) tables, remedies x latent sizes."""
    if metric not in df.columns:
        known = ", ".join(sorted(c for c in df.columns if c in METRIC_INFO))
        raise UserError(f"metric {metric!r} is not in these records; known: {known}")
    g = df.groupby(["remedy", "latent"])[metric]
    order = _latent_order(df)
    mean = g.mean().unstack("latent").reindex(columns=order)
    std = g.std(ddof=1).unstack("latent").reindex(columns=order)
    count = g.count().unstack("latent").reindex(columns=order)
    return mean, std, count


def _fmt(m: float, s: float, n: float) -> str:
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return "–"
    digits = 3 if abs(m) < 10 else 1
    if n and n > 1 and not math.isnan(s):
        return f"{m:.{digits}f} ± {s:.{digits}f}"
    return f"{m:.{digits}f}"


def table(df: pd.DataFrame, metric: str, mark_best: bool = True) -> pd.DataFrame:
    """Display table with 'mean ± std' cells; the best mean per column is marked in bold."""
    mean, std, count = summary(df, metric)
    lower = METRIC_INFO.get(metric, METRIC_INFO[DEFAULT_METRIC]).lower_is_better
    out = pd.DataFrame(index=mean.index, columns=mean.columns, dtype=object)
    for col in mean.columns:
        colvals = mean[col].dropna()
        best = (colvals.idxmin() if lower else colvals.idxmax()) if len(colvals) else None
        for rem in mean.index:
            text = _fmt(mean.at[rem, col], std.at[rem, col], count.at[rem, col])
            out.at[rem, col] = f"**{text}**" if mark_best and rem == best and len(colvals) > 1 else text
    out.index.name = "remedy"
    out.columns = [f"z={c}" for c in out.columns]
    return out


def header(df: pd.DataFrame, metric: str) -> str:
    info = METRIC_INFO.get(metric)
    direction = "lower is better" if (info is None or info.lower_is_better) else "higher is better"
    seeds = sorted(df["seed"].unique().tolist())
    commands = sorted(set(df["command"]) - {""})
    lines = [
        f"**{metric}**: {info.description if info else metric} ({direction}; best per column in bold)",
        "",
        f"dataset `{', '.join(sorted(df['dataset'].unique()))}` · arch `{', '.join(sorted(df['arch'].unique()))}` · "
        f"epochs {', '.join(str(e) for e in sorted(df['epochs'].unique()))} · seeds {seeds} · "
        f"latentbench {', '.join(sorted(str(v) for v in df['version'].unique()))}",
    ]
    if commands:
        lines += ["", "made by: " + "; ".join(f"`{c}`" for c in commands)]
    return "\n".join(lines)


def render(df: pd.DataFrame, metric: str = DEFAULT_METRIC, fmt: str = "markdown", gaps: bool = True) -> str:
    """The leaderboard as markdown, csv, json or html (html: see ``latentbench.html``)."""
    if df.empty:
        raise UserError("no successful records to tabulate")
    if fmt == "csv":
        mean, std, count = summary(df, metric)
        long = pd.concat({"mean": mean.stack(), "std": std.stack(), "n": count.stack()}, axis=1).reset_index()
        long.insert(0, "metric", metric)
        return long.to_csv(index=False)
    if fmt == "json":
        mean, std, count = summary(df, metric)
        out = {"metric": metric, "lower_is_better": METRIC_INFO.get(metric, METRIC_INFO[DEFAULT_METRIC]).lower_is_better,
               "rows": {rem: {lat: {"mean": _num(mean.at[rem, lat]), "std": _num(std.at[rem, lat]),
                                     "n": int(count.at[rem, lat]) if not math.isnan(count.at[rem, lat]) else 0}
                              for lat in mean.columns} for rem in mean.index}}
        return json.dumps(out, indent=1)
    if fmt == "html":
        from latentbench.html import render_html

        return render_html(df, metric)
    if fmt != "markdown":
        raise UserError(f"unknown format {fmt!r}: use markdown, csv, json or html")
    parts = [header(df, metric), "", table(df, metric).to_markdown()]
    if gaps:
        parts += ["", "### The prior-hole gap at each latent size", ""]
        for m in GAP_METRICS:
            if m in df.columns and m != metric:
                info = METRIC_INFO[m]
                parts += [f"**{m}**: {info.description} ({'lower' if info.lower_is_better else 'higher'} is better)",
                          "", table(df, m).to_markdown(), ""]
    return "\n".join(parts).rstrip() + "\n"


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)
