"""Records -> tables. Rows are remedies, columns latent sizes, cells mean +- std over seeds.

Reads records only (never models). Each metric is read by its registered goal
(``latentbench.registry.Metric``): minimised, maximised, aimed at a target (ranked by the distance to
it, e.g. ``hole_fraction`` at 0.01) or descriptive. Descriptive metrics and bounds are shown, never
ranked: a bound is printed as one (``≥ 5.71`` for a lower bound, ``≤ 16.4`` for an upper bound).

**Noise floors.** A record of scorer v4 carries the floor of each calibrated figure (``notes["floors"]``;
every FID and KID has ``fid_floor`` / ``kid_floor``, the distance between two independent
posterior-mixture draws): the value the figure can read when the prior is right. A table then bolds the
best entry *and every entry within the noise of it*: the larger of the two cells' floors and, with
several seeds, of their std over seeds. Ties are shown as ties, and the table's note gives the floor.
Older records carry no floor: the single best entry is bold, as before.

Cells that are never ranked best: a collapsed latent (``sub_dims`` 0, or ``notes["collapsed"]``;
flagged ∅), rows that are not comparable (†), and ``nll_iw`` where the record says it is not a bound
(``notes["nll_iw_bound"]`` False; flagged ≈).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pandas as pd

from latentbench.errors import UserError
from latentbench.latent import LatentShape
from latentbench.registry import METRICS, Metric
from latentbench.report.compare import merge_groups
from latentbench.results import RecordLike, as_records

# The order of the tables in the files (leaderboard.md, a board's README, the html page). Metrics the
# records do not hold are left out, so scorer v3 boards show the tables they always had and more.
SECTIONS = (
    ("The gap and the reconstruction side", ("fid_prior_post", "fid_prior", "fid_post", "fid_mu_unit", "kl",
                                             "active_units")),
    ("Latent geometry", ("hole_fraction", "sub_hole_fraction", "spec_wide", "spec_narrow", "mean_offset",
                         "sub_spread", "sub_dims", "mmd_latent", "sub_mmd", "gauss_kl", "norm_prior", "norm_post")),
    ("Likelihood", ("nll_iw",)),
    ("Bounds and interventions (never ranked)", ("mutual_info", "marginal_kl", "sub_marginal_kl", "fid_swap_sub",
                                                 "fid_swap_rest", "fid_swap_sub_rand", "fid_swap_rest_rand",
                                                 "fid_floor", "kid_floor")),
)
GAP_METRICS = tuple(m for _, names in SECTIONS for m in names)
# The printed board: the gap first (with its floor), then the reconstruction side in one table.
LEAD_METRICS = ("fid_prior_post", "fid_prior")
RECONSTRUCTION = ("fid_post", "kl", "active_units")
DEFAULT_METRIC = "fid_prior"

COLLAPSED = "∅"
NOT_BOUND = "≈"
BOUND_MARK = {"lower": "≥ ", "upper": "≤ "}
_FLOOR_SOURCES = {"fid": "fid_floor, FID between posterior-mixture draws from disjoint halves of the held-out images",
                  "kid": "kid_floor, KID between the same two draws"}


def record_floors(metrics: dict[str, Any], notes: dict[str, Any]) -> dict[str, float]:
    """{metric: floor} of one record: ``notes["floors"]``, and ``fid_floor`` / ``kid_floor`` for every
    FID / KID it does not name. Empty for a record without floors (scorer v3 and older)."""
    floors = {k: float(v) for k, v in (notes.get("floors") or {}).items() if isinstance(v, (int, float))}
    for kind in ("fid", "kid"):
        base = metrics.get(f"{kind}_floor")
        if isinstance(base, (int, float)) and not math.isnan(base):
            for name in metrics:
                if name.startswith(f"{kind}_") and name != f"{kind}_floor":
                    floors.setdefault(name, float(base))
    return floors


def is_collapsed(metrics: dict[str, Any], notes: dict[str, Any]) -> bool:
    """A latent with no informative direction: ``notes["collapsed"]``, or ``sub_dims`` 0."""
    return bool(notes.get("collapsed")) or metrics.get("sub_dims") == 0


def records_frame(records: Iterable[RecordLike]) -> pd.DataFrame:
    """One row per ok record: the cell's identity columns plus every metric.

    Records that have not been through :func:`~latentbench.report.compare.merge_groups` (one run's
    folder) are split by their settings first, so two settings never share a row. ``row`` is the table
    row label: the remedy name, with its parameters when the remedy appears with several, its source
    folder when it comes from several, the settings that set it apart inside its folder, and a dagger
    when it is not comparable. ``collapsed``, ``nll_iw_bound`` and ``floors`` (JSON, {metric: floor})
    come from the record's notes. Each record is marked with its ``row``.
    """
    records = as_records(records)
    if not any("source" in r.marks for r in records):
        records = merge_groups({"": records}, allow_mismatch=True)
    params: dict[str, set[str]] = {}
    sources: dict[str, set[str]] = {}
    for r in records:
        if r.ok:
            rem = r.remedy
            params.setdefault(rem, set()).add(json.dumps(r.cell.get("remedy_params", {}), sort_keys=True))
            sources.setdefault(rem, set()).add(r.marks.get("source", ""))
    rows = []
    for r in records:
        if not r.ok:
            continue
        c = r.cell
        prov = r.provenance
        notes, metrics = r.notes or {}, r.metrics or {}
        label = c["remedy"]
        if len(params[c["remedy"]]) > 1:
            label += " (" + (", ".join(f"{k}={v}" for k, v in sorted(c.get("remedy_params", {}).items())) or "defaults") + ")"
        if len(sources[c["remedy"]]) > 1:
            label += f" [{r.marks.get('source')}]"
        if r.marks.get("variant"):
            label += f" ({r.marks['variant']})"
        if r.marks.get("mismatch"):
            label += " †"
        r.marks["row"] = label
        floors = record_floors(metrics, notes)
        rows.append({
            "row": label, "remedy": c["remedy"], "latent": c["latent"],
            "latent_dim": LatentShape.parse(c["latent"]).dim, "seed": c["seed"], "dataset": c["dataset"],
            "arch": c["arch"], "epochs": c["epochs"], "version": prov.get("latentbench"),
            "git": _short(prov.get("git_hash")), "scorer": notes.get("scorer_version"),
            "command": prov.get("command", ""), "mismatch": r.marks.get("mismatch", ""), "scope": r.marks.get("scope", ""),
            "collapsed": is_collapsed(metrics, notes), "nll_iw_bound": notes.get("nll_iw_bound") is not False,
            "floors": json.dumps(floors, sort_keys=True) if floors else "",
            **metrics,
        })
    return pd.DataFrame(rows)


def _short(h: str | None) -> str:
    return "" if not h else h[:8] + ("-dirty" if h.endswith("-dirty") else "")


def _latent_order(df: pd.DataFrame) -> list[str]:
    return sorted(df["latent"].unique(), key=lambda s: LatentShape.parse(s).sort_key())


def metric_info(metric: str) -> Metric:
    """The registered metric (goal, description); an unknown name is one line naming the known."""
    if metric not in METRICS:
        raise UserError(f"unknown metric {metric!r}; known: {', '.join(METRICS.names())} "
                        "(`latentbench list metrics` shows each with its goal)")
    return METRICS.get(metric)


def direction(info: Metric) -> str:
    """How a metric is read, e.g. "lower is better", "best at 0.01", "upper bound, not ranked" (the text
    of ``Metric.direction``, built only from the metric's own goal)."""
    text = {"min": "lower is better", "max": "higher is better", "describe": "descriptive, not ranked"}.get(info.goal)
    if info.goal == "target":
        text = f"best at {float(info.target):g}"  # type: ignore[arg-type]
    if info.bound is not None:
        text = f"{info.bound} bound, not ranked" + ("" if info.goal == "describe" else f"; {text}")
    return str(text)


def shown(df: pd.DataFrame, names: Any) -> list[str]:
    """The registered metrics of ``names`` that these records hold (a metric of a newer scorer or of a
    plugin that is not installed here is left out)."""
    return [m for m in names if m in df.columns and df[m].notna().any() and m in METRICS]


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


def _cell_table(df: pd.DataFrame, values: pd.Series, how: str) -> pd.DataFrame:
    """Per (row, latent): ``values`` (aligned with df) aggregated by ``how`` ("mean" or "any")."""
    g = df.assign(_v=values).groupby(["row", "latent"])["_v"]
    out = g.mean() if how == "mean" else g.agg(lambda s: bool(s.fillna(False).astype(bool).any()))
    return out.unstack("latent").reindex(columns=_latent_order(df))


def has_floors(df: pd.DataFrame) -> bool:
    """Whether these records carry noise floors (scorer v4 and later)."""
    return "floors" in df.columns and bool((df["floors"] != "").any())


def floor_summary(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The mean noise floor of ``metric`` per (row, latent); NaN where the records hold none."""
    if "floors" not in df.columns:
        return pd.DataFrame(index=sorted(df["row"].unique()), columns=_latent_order(df), dtype=float)
    vals = df["floors"].map(lambda s: json.loads(s).get(metric) if s else None).astype(float)
    return _cell_table(df, vals, "mean")


def tolerance(info: Metric, floor: float) -> float:
    """How far a value may lie from another and still be a tie, from the metric's floor. A floor is
    the value the figure can read when the prior is right; for a target metric the tolerance is its
    distance from the target (a floor at or below the target is taken as that distance itself)."""
    if floor is None or math.isnan(floor):
        return 0.0
    if info.goal == "target":
        t = float(info.target)  # type: ignore[arg-type]
        return floor - t if floor > t else abs(floor)
    return abs(floor)


def fmt_number(x: float, decimals: int) -> str:
    """``x`` with ``decimals`` decimals, rounded half up on its decimal value: 0.6775 -> 0.678 and
    0.6765 -> 0.677 whatever binary float holds them (a mean over seeds that is 0.6775 on paper may be
    0.67749999999999999 in binary; it is read to 12 significant digits first). A value that rounds to
    zero is written without a sign (never -0.000). Every table uses it."""
    d = Decimal(f"{float(x):.12g}").quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)
    return f"{d.copy_abs() if d == 0 else d:.{decimals}f}"


def _digits(m: float) -> int:
    return 3 if abs(Decimal(fmt_number(m, 3))) < 10 else 1


def _fmt(m: float, s: float, n: float) -> str:
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return "–"
    digits = _digits(m)
    if n and n > 1 and not math.isnan(s):
        return f"{fmt_number(m, digits)} ± {fmt_number(s, digits)}"
    return fmt_number(m, digits)


def _true(x: Any) -> bool:
    """A flag cell that is set (NaN and None are not)."""
    return x is not None and not (isinstance(x, float) and math.isnan(x)) and bool(x)


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


def _flags(df: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(collapsed, not a bound) per (row, latent)."""
    collapsed = _cell_table(df, df["collapsed"] if "collapsed" in df else pd.Series(False, index=df.index), "any")
    bound = df["nll_iw_bound"] if "nll_iw_bound" in df else pd.Series(True, index=df.index)
    not_bound = _cell_table(df, ~bound.astype(bool) if metric == "nll_iw" else pd.Series(False, index=df.index), "any")
    return collapsed, not_bound


def best_cells(df: pd.DataFrame, metric: str) -> dict[str, set[str]]:
    """{latent: rows marked best}: the best mean among the rankable cells and, where the records carry
    noise floors, every cell whose distance from it is within the noise (the larger of the two cells'
    floors and std over seeds). Empty for a metric that is not ranked, or a column with one rankable cell."""
    info = metric_info(metric)
    if not info.ranked:
        return {}
    mean, std, _ = summary(df, metric)
    floor = floor_summary(df, metric).reindex(index=mean.index, columns=mean.columns)
    collapsed, not_bound = (t.reindex(index=mean.index, columns=mean.columns) for t in _flags(df, metric))
    rankable, ties = _rankable(df), has_floors(df)
    out: dict[str, set[str]] = {}
    for col in mean.columns:
        bad = {r: info.badness(float(mean.at[r, col])) for r in mean.index
               if r in rankable and not pd.isna(mean.at[r, col])
               and not _true(collapsed.at[r, col]) and not _true(not_bound.at[r, col])}
        if len(bad) < 2:
            continue
        best = min(bad, key=bad.get)
        if not ties:
            out[col] = {best}
            continue

        noise = {r: max((float(v) for v in (tolerance(info, floor.at[r, col]), std.at[r, col]) if not pd.isna(v)),
                        default=0.0) for r in bad}
        out[col] = {r for r, b in bad.items() if b - bad[best] <= max(noise[best], noise[r]) + 1e-12}
    return out


def table(df: pd.DataFrame, metric: str, mark_best: bool = True, holes: dict | None = None,
          provenance: bool = False) -> pd.DataFrame:
    """Display table with 'mean ± std' cells; the best cells per column (:func:`best_cells`) in bold.
    A bound is written as one (≥ / ≤), a collapsed cell is flagged ∅, an ``nll_iw`` that is not a bound
    ≈. ``holes`` maps (row, latent) to 'failed' / 'missing'."""
    mean, std, count = summary(df, metric)
    rows = list(mean.index)
    for (row, _lat) in (holes or {}):
        if row not in rows:
            rows.append(row)
    mean, std, count = (t.reindex(rows) for t in (mean, std, count))
    info = metric_info(metric)
    best = best_cells(df, metric) if mark_best else {}
    collapsed, not_bound = (t.reindex(index=mean.index, columns=mean.columns) for t in _flags(df, metric))
    mark = BOUND_MARK.get(info.bound or "", "")
    out = pd.DataFrame(index=mean.index, columns=mean.columns, dtype=object)
    for col in mean.columns:
        for rem in mean.index:
            text = _fmt(mean.at[rem, col], std.at[rem, col], count.at[rem, col])
            if holes and (rem, col) in holes and text == "–":
                text = holes[(rem, col)]
            elif text != "–":
                text = (NOT_BOUND if _true(not_bound.at[rem, col]) else mark) + text
                text += f" {COLLAPSED}" if _true(collapsed.at[rem, col]) else ""
            out.at[rem, col] = f"**{text}**" if rem in best.get(col, ()) else text
    out.index.name = "remedy"
    out.columns = [f"z={c}" for c in out.columns]
    if provenance:
        out["latentbench"] = provenance_column(df).reindex(out.index).fillna("")
    return out


def _span(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    a, b = fmt_number(lo, _digits(lo)), fmt_number(hi, _digits(hi))
    return a if a == b else f"{a}–{b}"


def table_notes(df: pd.DataFrame, metric: str) -> list[str]:
    """The lines under a table: how ties are read and the noise floor per latent size; what ≥ / ≤, ∅
    and ≈ mean where the table shows them."""
    info = metric_info(metric)
    notes = []
    floor = floor_summary(df, metric)
    if info.ranked and has_floors(df) and floor.notna().any().any():
        per = {col: _span([float(v) for v in floor[col].dropna()]) for col in floor.columns if floor[col].notna().any()}
        same = len(set(per.values())) == 1 and len(per) == len(floor.columns)
        where = (f"{next(iter(per.values()))} at every latent size" if same
                 else ", ".join(f"z={col} {span}" for col, span in per.items()))
        source = _FLOOR_SOURCES.get(metric.split("_")[0], "the value it reads when the prior is right")
        notes.append(f"Bold: the best, and every row within the noise of it (ties are ties). Noise floor of "
                     f"{metric} ({source}): {where}; with several seeds, the std over seeds where larger.")
    if info.bound:
        notes.append(f"Every value is {'a lower' if info.bound == 'lower' else 'an upper'} bound "
                     f"({BOUND_MARK[info.bound].strip()}): shown, never ranked.")
    collapsed, not_bound = _flags(df, metric)
    if any(_true(v) for v in collapsed.to_numpy().ravel()):
        notes.append(f"{COLLAPSED} a collapsed latent (sub_dims 0: no informative direction, the decoder ignores "
                     "z): never ranked best.")
    if any(_true(v) for v in not_bound.to_numpy().ravel()):
        notes.append(f"{NOT_BOUND} not a bound: the prior's log p(z) is estimated (nll_iw_bound False), so this "
                     "nll_iw is never ranked beside bounds.")
    return notes


def floor_caveat(df: pd.DataFrame) -> list[str]:
    """One line for records without noise floors (scorer v3 and older), said once per board."""
    if has_floors(df):
        return []
    return ["These records carry no noise floor (scorer v3 or older): a bold difference may be within "
            "sampling noise."]


def compact_table(df: pd.DataFrame, metrics: tuple[str, ...]) -> pd.DataFrame:
    """One table of several metrics: per (row, latent) their means as 'a / b / c' (descriptive context,
    no bold), a collapsed cell flagged ∅."""
    metrics = tuple(shown(df, metrics))
    means = [summary(df, m)[0] for m in metrics]
    rows = sorted(set().union(*(set(m.index) for m in means)))
    cols = _latent_order(df)
    collapsed = _flags(df, metrics[0])[0].reindex(index=rows, columns=cols)
    out = pd.DataFrame(index=rows, columns=cols, dtype=object)
    for col in cols:
        for rem in rows:
            vals = [m.reindex(index=rows, columns=cols).at[rem, col] for m in means]
            if all(pd.isna(v) for v in vals):
                out.at[rem, col] = "–"
                continue
            out.at[rem, col] = " / ".join("–" if pd.isna(v) else _compact(float(v)) for v in vals) + \
                (f" {COLLAPSED}" if _true(collapsed.at[rem, col]) else "")
    out.index.name = "remedy"
    out.columns = [f"z={c}" for c in out.columns]
    return out


def _compact(x: float) -> str:
    if float(x).is_integer():
        return str(int(x))
    return fmt_number(x, 2 if abs(x) < 10 else 1 if abs(x) < 100 else 0)


def header(df: pd.DataFrame, metric: str) -> str:
    info = metric_info(metric)
    reading = direction(info)
    if info.ranked:
        reading += "; bold: the best per column" + (", and every row within the noise floor of it"
                                                      if has_floors(df) else "")
    seeds = sorted(df["seed"].unique().tolist())
    commands = sorted(set(df["command"]) - {""})
    lines = [
        f"**{metric}**: {info.description} ({reading})",
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


def title(metric: str) -> str:
    """'**metric**: description (goal)': the line above a table."""
    info = metric_info(metric)
    return f"**{metric}**: {info.description} ({direction(info)})"


def footnotes(df: pd.DataFrame) -> list[str]:
    """One line per row that is shown but not ranked, with why."""
    marked = df[df["mismatch"] != ""].drop_duplicates("row")
    return [f"† `{r['row']}` is not comparable and not ranked: {r['mismatch']}" for _, r in marked.iterrows()]


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)
