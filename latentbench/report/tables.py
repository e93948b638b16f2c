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
from latentbench.registry import METRICS, Metric

GAP_METRICS = ("fid_prior_post", "hole_fraction", "marginal_kl", "nll_iw")
DEFAULT_METRIC = "fid_prior"


# Cell fields that must agree for rows to be compared (everything but the remedy, its parameters,
# and the latent size and seed, which are compared as sets), and the scoring notes that must agree.
CELL_FIELDS_EXEMPT = ("remedy", "remedy_params", "latent", "seed")
NOTE_FIELDS = ("scorer_version", "feature_key", "n_prior", "n_post", "n_data", "iw_k")


def fingerprint(records: list[dict[str, Any]]) -> dict[str, str]:
    """What a group of records must share with another group to be ranked with it."""
    values: dict[str, set[str]] = {}
    for r in records:
        if r.get("status") != "ok":
            continue
        for k, v in r["cell"].items():
            if k not in CELL_FIELDS_EXEMPT:
                values.setdefault(k, set()).add(json.dumps(v, sort_keys=True))
        for k in NOTE_FIELDS:
            values.setdefault(k, set()).add(json.dumps(r.get("notes", {}).get(k), sort_keys=True))
        values.setdefault("latent sizes", set()).add(r["cell"]["latent"])
        values.setdefault("seeds", set()).add(str(r["cell"]["seed"]))
    return {k: ", ".join(sorted(v)) for k, v in values.items()}


def differences(ref: list[dict[str, Any]], other: list[dict[str, Any]]) -> list[str]:
    """One line per field on which two groups of records differ."""
    a, b = fingerprint(ref), fingerprint(other)
    return [f"{k}: {b.get(k, '(none)')} vs {a.get(k, '(none)')}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def merge_groups(groups: dict[str, list[dict[str, Any]]], allow_mismatch: bool = False) -> list[dict[str, Any]]:
    """Merge record groups (one per folder) under the fair-comparison guard; the first is the reference.

    A group that differs from the reference in anything but the remedy and its parameters is refused
    with one line per differing field, or, with ``allow_mismatch``, kept and marked as not comparable.
    """
    names = list(groups)
    ref = groups[names[0]]
    out, seen = [], set()
    for name in names:
        diffs = differences(ref, groups[name]) if name != names[0] else []
        if diffs and not allow_mismatch:
            raise UserError(f"cannot rank {name} beside {names[0]}: their cells differ in\n  " + "\n  ".join(diffs)
                            + "\n(rerun with the same settings, or pass --allow-mismatch to show them marked)")
        for r in groups[name]:
            if r.get("id") in seen:
                continue  # the same cell published twice
            seen.add(r.get("id"))
            r["_source"], r["_mismatch"] = name, "; ".join(diffs)
            out.append(r)
    return out


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per ok record: the cell's identity columns plus every metric.

    ``row`` is the table row label: the remedy name, qualified by its source folder when the same
    remedy comes from several folders, and marked with a dagger when its folder is not comparable.
    """
    sources_per_remedy: dict[str, set[str]] = {}
    for r in records:
        sources_per_remedy.setdefault(r["cell"]["remedy"], set()).add(r.get("_source", ""))
    rows = []
    for r in records:
        if r.get("status") != "ok":
            continue
        c = r["cell"]
        prov = r.get("provenance", {})
        label = c["remedy"]
        if len(sources_per_remedy[c["remedy"]]) > 1:
            label = f"{label} [{r.get('_source')}]"
        if r.get("_mismatch"):
            label += " †"
        rows.append({
            "row": label, "remedy": c["remedy"], "latent": c["latent"],
            "latent_dim": LatentShape.parse(c["latent"]).dim, "seed": c["seed"], "dataset": c["dataset"],
            "arch": c["arch"], "epochs": c["epochs"], "version": prov.get("latentbench"),
            "git": _short(prov.get("git_hash")), "scorer": r.get("notes", {}).get("scorer_version"),
            "command": prov.get("command", ""), "mismatch": r.get("_mismatch", ""),
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


def _fmt(m: float, s: float, n: float) -> str:
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return "–"
    digits = 3 if abs(m) < 10 else 1
    if n and n > 1 and not math.isnan(s):
        return f"{m:.{digits}f} ± {s:.{digits}f}"
    return f"{m:.{digits}f}"


def _rankable(df: pd.DataFrame) -> set[str]:
    """Rows that may be ranked: comparable (no †) and scored by the most common scorer version."""
    scorer = df["scorer"].mode().iloc[0] if df["scorer"].notna().any() else None
    ok = df[(df["mismatch"] == "") & ((df["scorer"] == scorer) | (scorer is None))]
    return set(ok["row"])


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
    return "\n".join(lines)


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)
