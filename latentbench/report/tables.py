"""Records -> tables. Rows are remedies, columns latent sizes, cells mean +- std over seeds.

Reads records only (never models). Each metric knows whether lower or higher is better; the best
entry per column is marked. A second set of tables lists the seed question's gap metrics.
"""

from __future__ import annotations

import json
import math
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pandas as pd

from latentbench.errors import UserError
from latentbench.latent import LatentShape
from latentbench.registry import METRICS, Metric
from latentbench.report.compare import merge_groups

GAP_METRICS = ("fid_prior_post", "hole_fraction", "marginal_kl", "nll_iw", "sub_dims", "sub_spread", "sub_marginal_kl", "sub_hole_fraction", "fid_swap_sub", "fid_swap_rest")
DEFAULT_METRIC = "fid_prior"


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per ok record: the cell's identity columns plus every metric.

    Records that have not been through :func:`~latentbench.report.compare.merge_groups` (one run's
    folder) are split by their settings first, so two settings never share a row. ``row`` is the table
    row label: the remedy name, with its parameters when the remedy appears with several, its source
    folder when it comes from several, the settings that set it apart inside its folder, and a dagger
    when it is not comparable.
    """
    if not any("_source" in r for r in records):
        records = merge_groups({"": records}, allow_mismatch=True)
    params: dict[str, set[str]] = {}
    sources: dict[str, set[str]] = {}
    for r in records:
        if r.get("status") == "ok":
            rem = r["cell"]["remedy"]
            params.setdefault(rem, set()).add(json.dumps(r["cell"].get("remedy_params", {}), sort_keys=True))
            sources.setdefault(rem, set()).add(r.get("_source", ""))
    rows = []
    for r in records:
        if r.get("status") != "ok":
            continue
        c = r["cell"]
        prov = r.get("provenance", {})
        label = c["remedy"]
        if len(params[c["remedy"]]) > 1:
            label += " (" + (", ".join(f"{k}={v}" for k, v in sorted(c.get("remedy_params", {}).items())) or "defaults") + ")"
        if len(sources[c["remedy"]]) > 1:
            label += f" [{r.get('_source')}]"
        if r.get("_variant"):
            label += f" ({r['_variant']})"
        if r.get("_mismatch"):
            label += " †"
        r["_row"] = label
        rows.append({
            "row": label, "remedy": c["remedy"], "latent": c["latent"],
            "latent_dim": LatentShape.parse(c["latent"]).dim, "seed": c["seed"], "dataset": c["dataset"],
            "arch": c["arch"], "epochs": c["epochs"], "version": prov.get("latentbench"),
            "git": _short(prov.get("git_hash")), "scorer": r.get("notes", {}).get("scorer_version"),
            "command": prov.get("command", ""), "mismatch": r.get("_mismatch", ""), "scope": r.get("_scope", ""),
            **r.get("metrics", {}),
        })
    return pd.DataFrame(rows)


def _short(h: str | None) -> str:
    return "" if not h else h[:8] + ("-dirty" if h.endswith("-dirty") else "")


def _latent_order(df: pd.DataFrame) -> list[str]:
    return sorted(df["latent"].unique(), key=lambda s: LatentShape.parse(s).sort_key())


def metric_info(metric: str) -> Metric:
    """The registered metric (direction, description); an unknown name is one line naming the known."""
    if metric not in METRICS:
        raise UserError(f"unknown metric {metric!r}; known: {', '.join(METRICS.names())} "
                        "(`latentbench list metrics` shows each with its direction)")
    return METRICS.get(metric)


def summary(df: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(mean, std, count) tables, remedies x latent sizes."""
    metric_info(metric)
    if metric not in df.columns:
        known = ", ".join(sorted(c for c in df.columns if c in METRICS))
        raise UserError(f"metric {metric!r} is not in these records; known: {known}")
    g = df.groupby(["row", "latent"])[metric]
    order = _latent_order(df)
    mean = g.mean().unstack("latent").reindex(columns=order)
    std = g.std(ddof=1).unstack("latent").reindex(columns=order)
    count = g.count().unstack("latent").reindex(columns=order)
    return mean, std, count


def fmt_number(x: float, decimals: int) -> str:
    """``x`` with ``decimals`` decimals, rounded half up on its decimal value: 0.6775 -> 0.678 and
    0.6765 -> 0.677 whatever binary float holds them (a mean over seeds that is 0.6775 on paper may be
    0.67749999999999999 in binary; it is read to 12 significant digits first). Every table uses it."""
    d = Decimal(f"{float(x):.12g}").quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)
    return f"{d.copy_abs() if d == 0 else d:.{decimals}f}"


def _fmt(m: float, s: float, n: float) -> str:
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return "–"
    digits = 3 if abs(Decimal(fmt_number(m, 3))) < 10 else 1
    if n and n > 1 and not math.isnan(s):
        return f"{fmt_number(m, digits)} ± {fmt_number(s, digits)}"
    return fmt_number(m, digits)


def _rankable(df: pd.DataFrame) -> set[str]:
    """Rows that may be ranked: exactly the comparable ones (no †). The scorer version is a setting of
    the fair-comparison guard, so rows of another scorer version than the reference are marked † there."""
    return set(df.loc[df["mismatch"] == "", "row"])


def provenance_column(df: pd.DataFrame) -> pd.Series:
    """Per row: the latentbench version(s) and git hash(es) of its records, and its scorer version."""
    def one(sub: pd.DataFrame) -> str:
        vs = sorted({f"{v}@{g}" if g else str(v) for v, g in zip(sub["version"], sub["git"])})
        return ", ".join(vs) + f" (scorer v{sub['scorer'].iloc[0]})"

    return df.groupby("row")[["version", "git", "scorer"]].apply(one)


def table(df: pd.DataFrame, metric: str, mark_best: bool = True, holes: dict | None = None,
          provenance: bool = False) -> pd.DataFrame:
    """Display table with 'mean ± std' cells; the best mean per column (among comparable rows scored by
    the same scorer version) is marked in bold. ``holes`` maps (row, latent) to 'failed' / 'missing'."""
    mean, std, count = summary(df, metric)
    rows = list(mean.index)
    for (row, _lat) in (holes or {}):
        if row not in rows:
            rows.append(row)
    mean, std, count = (t.reindex(rows) for t in (mean, std, count))
    info = metric_info(metric)
    lower = info.lower_is_better
    mark_best = mark_best and info.ranked
    rankable = _rankable(df)
    out = pd.DataFrame(index=mean.index, columns=mean.columns, dtype=object)
    for col in mean.columns:
        colvals = mean[col].dropna()
        colvals = colvals[[r in rankable for r in colvals.index]]
        best = (colvals.idxmin() if lower else colvals.idxmax()) if len(colvals) else None
        for rem in mean.index:
            text = _fmt(mean.at[rem, col], std.at[rem, col], count.at[rem, col])
            if holes and (rem, col) in holes and text == "–":
                text = holes[(rem, col)]
            out.at[rem, col] = f"**{text}**" if mark_best and rem == best and len(colvals) > 1 else text
    out.index.name = "remedy"
    out.columns = [f"z={c}" for c in out.columns]
    if provenance:
        out["latentbench"] = provenance_column(df).reindex(out.index).fillna("")
    return out


def header(df: pd.DataFrame, metric: str) -> str:
    info = metric_info(metric)
    direction = info.direction
    seeds = sorted(df["seed"].unique().tolist())
    commands = sorted(set(df["command"]) - {""})
    lines = [
        f"**{metric}**: {info.description} ({direction}" + ("; best per column in bold)" if info.ranked else ")"),
        "",
        f"dataset `{', '.join(sorted(df['dataset'].unique()))}` · arch `{', '.join(sorted(df['arch'].unique()))}` · "
        f"epochs {', '.join(str(e) for e in sorted(df['epochs'].unique()))} · seeds {seeds} · "
        f"latentbench {', '.join(sorted(str(v) for v in df['version'].unique()))}",
    ]
    if commands:
        lines += ["", "made by: " + "; ".join(f"`{c}`" for c in commands)]
    scopes = sorted(set(df["scope"]) - {""}) if "scope" in df else []
    if scopes:
        lines += ["", f"**{scopes[0]}**"]
    return "\n".join(lines)


def footnotes(df: pd.DataFrame) -> list[str]:
    """One line per row that is shown but not ranked, with why."""
    marked = df[df["mismatch"] != ""].drop_duplicates("row")
    return [f"† `{r['row']}` is not comparable and not ranked: {r['mismatch']}" for _, r in marked.iterrows()]


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)
