"""The leaderboard in one of its formats: markdown (with the gap tables and footnotes), csv, json or
a self-contained html page. Built from :mod:`latentbench.report.tables` and
:mod:`latentbench.report.page`; reads records only.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from latentbench.errors import UserError
from latentbench.report.page import render_html
from latentbench.report.tables import (
    DEFAULT_METRIC,
    GAP_METRICS,
    _num,
    footnotes,
    header,
    metric_info,
    summary,
    table,
)

FORMATS = ("markdown", "csv", "json", "html")


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
        return render_html(df, metric, plots=plots, holes=holes)
    if fmt != "markdown":
        raise UserError(f"unknown format {fmt!r}: use {', '.join(FORMATS)}")
    parts = [header(df, metric), "", table(df, metric, holes=holes, provenance=True).to_markdown()]
    for note in footnotes(df):
        parts += ["", note]
    if gaps:
        parts += ["", "### The prior-hole gap at each latent size", ""]
        for m in GAP_METRICS:
            if m in df.columns and m != metric:
                info = metric_info(m)
                parts += [f"**{m}**: {info.description} ({info.direction})",
                          "", table(df, m, holes=holes).to_markdown(), ""]
    return "\n".join(parts).rstrip() + "\n"


def render_board(records: list[dict[str, Any]], df: pd.DataFrame, metric: str = DEFAULT_METRIC,
                 fmt: str = "markdown", plots_dir: Path | None = None, holes: dict | None = None) -> tuple[str, list[Path]]:
    """The leaderboard text and the plots drawn for it: into ``plots_dir`` when given; an html page
    without one draws them into a temporary folder and embeds them (the page is self-contained)."""
    from latentbench.report.plots import make_plots

    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}: use {', '.join(FORMATS)}")
    summary(df, metric)  # an unknown metric fails before any plot is drawn
    if plots_dir is not None:
        paths = make_plots(records, df, Path(plots_dir))
        return render(df, metric, fmt, holes=holes, plots=paths), paths
    if fmt == "html":
        with tempfile.TemporaryDirectory(prefix="latentbench-plots-") as tmp:
            return render(df, metric, fmt, holes=holes, plots=make_plots(records, df, Path(tmp))), []
    return render(df, metric, fmt, holes=holes), []


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output_file(path: str | Path, flag: str = "--out", example: str = "leaderboard.md") -> Path:
    """A file path that can be written (atomically: its folder must be writable), checked before any
    work; a folder, a missing or read-only parent is one line naming the fix."""
    from latentbench.atomic import writes_through

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file path, e.g. {path / example}")
    if writes_through(path):  # a device or FIFO (/dev/null, >(cmd)): written through, no temp file
        return path
    target = Path(os.path.realpath(path)) if path.is_symlink() else path  # a link's target is written
    base = _nearest_existing(target.parent)
    if not base.is_dir():
        raise UserError(f"{flag} {path}: {base} is a file, not a folder; choose another path")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: the folder {base} is not writable; choose a writable path")
    return path


def check_output_folder(path: str | Path, flag: str = "--plots") -> Path:
    """A folder that can be created or written into, checked before any work."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file; give a folder path (the plots are several PNG files)")
    base = _nearest_existing(path)
    if not base.is_dir():
        raise UserError(f"{flag} {path}: {base} is a file, not a folder; choose another path")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: {base} is not writable; choose a writable folder")
    return path
