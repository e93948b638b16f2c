"""The leaderboard in one of its formats: markdown (every table, with the notes under each), csv,
json or a self-contained html page, and the short board printed to a terminal. Built from
:mod:`latentbench.report.tables` and :mod:`latentbench.report.page`; reads records only.

The printed board leads with the gap (``fid_prior_post`` with its noise floor, then ``fid_prior``) and
the reconstruction side (``fid_post``, ``kl`` and ``active_units`` in one table), so that the seed
question's two halves ("reconstructs well", "prior samples do not") sit on one screen; every other
table stays in the files (``leaderboard.md``, a board's README, ``--out``).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from latentbench.errors import UserError
from latentbench.report.page import render_html
from latentbench.report.tables import (
    LEAD_METRICS,
    RECONSTRUCTION,
    SECTIONS,
    _num,
    best_cells,
    compact_table,
    direction,
    floor_caveat,
    floor_summary,
    footnotes,
    header,
    metric_info,
    shown,
    summary,
    table,
    table_notes,
    title,
)
from latentbench.results import RecordLike

FORMATS = ("markdown", "csv", "json", "html")


def lead_metric(df: pd.DataFrame, metric: str | None = None) -> str:
    """The metric a board leads with: ``metric`` when given, else the gap (``fid_prior_post``, or
    ``fid_prior`` where the records lack it)."""
    if metric:
        return metric
    return next(iter(shown(df, LEAD_METRICS)), LEAD_METRICS[-1])


def _block(df: pd.DataFrame, metric: str, holes: dict | None, provenance: bool = False) -> list[str]:
    parts = [table(df, metric, holes=holes, provenance=provenance).to_markdown()]
    for note in table_notes(df, metric):
        parts += ["", note]
    return parts


def render(df: pd.DataFrame, metric: str | None = None, fmt: str = "markdown", gaps: bool = True,
           holes: dict | None = None, plots: list | None = None, brief: bool = False) -> str:
    """The leaderboard as markdown, csv, json or html (html: see ``latentbench.report.page``).

    Markdown holds every table (by :data:`~latentbench.report.tables.SECTIONS`) unless ``brief``: the
    printed board (see the module docstring). ``metric`` leads (default: the gap)."""
    if df.empty:
        raise UserError("no successful records to tabulate")
    metric = lead_metric(df, metric)
    if fmt == "csv":
        mean, std, count = summary(df, metric)
        long = pd.concat({"mean": mean.stack(), "std": std.stack(), "n": count.stack()}, axis=1).reset_index()
        long = long.rename(columns={"row": "remedy"})
        long.insert(0, "metric", metric)
        return long.to_csv(index=False)
    if fmt == "json":
        return _json(df, metric)
    if fmt == "html":
        return render_html(df, metric, plots=plots, holes=holes)
    if fmt != "markdown":
        raise UserError(f"unknown format {fmt!r}: use {', '.join(FORMATS)}")
    parts = [header(df, metric), "", *_block(df, metric, holes, provenance=not brief)]
    for note in footnotes(df) + floor_caveat(df):
        parts += ["", note]
    if brief:
        for m in shown(df, LEAD_METRICS):
            if m != metric:
                parts += ["", title(m), "", *_block(df, m, holes)]
        recon = shown(df, RECONSTRUCTION)
        if recon:
            parts += ["", f"**the reconstruction side**: {' / '.join(recon)} (means over seeds; "
                      + "; ".join(f"{m}: {direction(metric_info(m))}" for m in recon) + ")", "",
                      compact_table(df, tuple(recon)).to_markdown()]
    elif gaps:
        for name, names in SECTIONS:
            ms = [m for m in shown(df, names) if m != metric]
            if not ms:
                continue
            parts += ["", f"### {name}"]
            for m in ms:
                parts += ["", title(m), "", *_block(df, m, holes)]
    return "\n".join(parts).rstrip() + "\n"


def _json(df: pd.DataFrame, metric: str) -> str:
    """The lead metric per (row, latent): mean, std, n, and where the records have them the noise floor,
    a collapsed flag and whether the cell is marked best."""
    info = metric_info(metric)
    mean, std, count = summary(df, metric)
    floor = floor_summary(df, metric).reindex(index=mean.index, columns=mean.columns)
    best = best_cells(df, metric)
    collapsed = df.groupby(["row", "latent"])["collapsed"].any().to_dict() if "collapsed" in df else {}

    def cell(rem: str, lat: str) -> dict[str, Any]:
        out = {"mean": _num(mean.at[rem, lat]), "std": _num(std.at[rem, lat]),
               "n": int(count.at[rem, lat]) if not math.isnan(count.at[rem, lat]) else 0}
        if _num(floor.at[rem, lat]) is not None:
            out["floor"] = _num(floor.at[rem, lat])
        if collapsed.get((rem, lat)):
            out["collapsed"] = True
        if rem in best.get(lat, ()):
            out["best"] = True
        return out

    out = {"metric": metric, "goal": info.goal, "target": info.target, "bound": info.bound, "ranked": info.ranked,
           "lower_is_better": info.lower_is_better,
           "rows": {rem: {lat: cell(rem, lat) for lat in mean.columns} for rem in mean.index}}
    return json.dumps(out, indent=1)


def render_board(records: Iterable[RecordLike], df: pd.DataFrame, metric: str | None = None,
                 fmt: str = "markdown", plots_dir: Path | None = None, holes: dict | None = None,
                 brief: bool = False) -> tuple[str, list[Path]]:
    """The leaderboard text and the plots drawn for it: into ``plots_dir`` when given; an html page
    without one draws them into a temporary folder and embeds them (the page is self-contained)."""
    from latentbench.report.plots import make_plots

    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}: use {', '.join(FORMATS)}")
    summary(df, lead_metric(df, metric))  # an unknown metric fails before any plot is drawn
    if plots_dir is not None:
        paths = make_plots(records, df, Path(plots_dir))
        return render(df, metric, fmt, holes=holes, plots=paths, brief=brief), paths
    if fmt == "html":
        with tempfile.TemporaryDirectory(prefix="latentbench-plots-") as tmp:
            return render(df, metric, fmt, holes=holes, plots=make_plots(records, df, Path(tmp))), []
    return render(df, metric, fmt, holes=holes, brief=brief), []


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
