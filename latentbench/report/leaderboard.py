"""The leaderboard in one of its formats: markdown (with the gap tables and footnotes), csv, json or
a self-contained html page. Built from :mod:`latentbench.report.tables` and
:mod:`latentbench.report.page`; reads records only.
"""

from __future__ import annotations

import json
import math

import pandas as pd

from latentbench.errors import UserError
from latentbench.report.page import render_html
from latentbench.report.tables import (
    DEFAULT_METRIC,
    GAP_METRICS,
    _num,
    header,
    metric_info,
    summary,
    table,
)


def render(df: pd.DataFrame, metric: str = DEFAULT_METRIC, fmt: str = "markdown", gaps: bool = True,
           holes: dict | None = None, plots: list | None = None) -> str:
    """The leaderboard as markdown, csv, json or html (html: see ``latentbench.report.page``)."""
    if df.empty:
        raise UserError("no successful records to tabulate")
    if fmt == "csv":
        mean, std, count = summary(df, metric)
        long = pd.concat({"mean": mean.stack(), "std": std.stack(), "n": count.stack()}, axis=1).reset_index()
        long = long.rename(columns={"row": "remedy"})
        long.insert(0, "metric", metric)
        return long.to_csv(index=False)
    if fmt == "json":
        mean, std, count = summary(df, metric)
        out = {"metric": metric, "lower_is_better": metric_info(metric).lower_is_better,
               "rows": {rem: {lat: {"mean": _num(mean.at[rem, lat]), "std": _num(std.at[rem, lat]),
                                     "n": int(count.at[rem, lat]) if not math.isnan(count.at[rem, lat]) else 0}
                              for lat in mean.columns} for rem in mean.index}}
        return json.dumps(out, indent=1)
    if fmt == "html":
        return render_html(df, metric, plots=plots)
    if fmt != "markdown":
        raise UserError(f"unknown format {fmt!r}: use markdown, csv, json or html")
    parts = [header(df, metric), "", table(df, metric, holes=holes, provenance=True).to_markdown()]
    marked = df[df["mismatch"] != ""].drop_duplicates("row")
    for _, r in marked.iterrows():
        parts += ["", f"† `{r['row']}` is not comparable and not ranked: {r['mismatch']}"]
    if gaps:
        parts += ["", "### The prior-hole gap at each latent size", ""]
        for m in GAP_METRICS:
            if m in df.columns and m != metric:
                info = metric_info(m)
                parts += [f"**{m}**: {info.description} ({info.direction})",
                          "", table(df, m, holes=holes).to_markdown(), ""]
    return "\n".join(parts).rstrip() + "\n"


