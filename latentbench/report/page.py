"""One self-contained static HTML leaderboard page: sortable tables (click a header), plots embedded
as data URIs, the commands that made it. No external scripts, styles or fonts."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from latentbench.report.tables import (
    SECTIONS,
    floor_caveat,
    footnotes,
    header,
    shown,
    summary,
    table,
    table_notes,
    title,
)

_SCRIPT = """
document.querySelectorAll('table.lb').forEach(function (t) {
  t.querySelectorAll('th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var body = t.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var asc = th.getAttribute('data-dir') !== 'asc';
      t.querySelectorAll('th').forEach(function (h) { h.removeAttribute('data-dir'); });
      th.setAttribute('data-dir', asc ? 'asc' : 'desc');
      function key(r) { var s = r.cells[col].getAttribute('data-v'); var f = parseFloat(s);
        return isNaN(f) ? s : f; }
      rows.sort(function (a, b) { var x = key(a), y = key(b);
        if (x === y) return 0; var c = (x > y) ? 1 : -1; return asc ? c : -c; });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""

_STYLE = """body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}th{cursor:pointer;background:#f3f3f3}
th[data-dir=asc]::after{content:' \\25B2'}th[data-dir=desc]::after{content:' \\25BC'}td.best{font-weight:bold}
code{background:#f6f6f6}img{max-width:100%}"""


def _table_html(df: pd.DataFrame, metric: str, table_id: str, holes: dict | None = None) -> str:
    mean, _, _ = summary(df, metric)
    shown = table(df, metric, mark_best=True, holes=holes)
    mean = mean.reindex(shown.index)
    head = "<th>remedy</th>" + "".join(f"<th>{html.escape(c)}</th>" for c in shown.columns)
    rows = []
    for rem in shown.index:
        cells = [f'<td data-v="{html.escape(rem)}" style="text-align:left">{html.escape(rem)}</td>']
        for col, lat in zip(shown.columns, mean.columns):
            text = str(shown.at[rem, col])
            best = text.startswith("**")
            v = mean.at[rem, lat]
            cells.append(f'<td data-v="{"" if pd.isna(v) else float(v)}"{" class=best" if best else ""}>'
                         f'{html.escape(text.strip("*"))}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table class="lb" id="{table_id}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _inline(text: str) -> str:
    """Escaped text with markdown's `code` spans as <code>."""
    import re

    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text).replace("**", ""))


def render_html(df: pd.DataFrame, metric: str, plots: list[Path] | None = None, title_text: str = "latentbench leaderboard",
                holes: dict | None = None) -> str:
    """The page: header, the lead table with its notes and † footnotes, every other table by section
    (as in the markdown file) and the plots (embedded)."""
    head = _inline(header(df, metric)).replace("\n\n", "</p><p>")
    parts = [f"<h1>{html.escape(title_text)}</h1>", "<p>" + head + "</p>",
             _table_html(df, metric, "main", holes)]
    parts += [f'<p class="note">{_inline(note)}</p>' for note in table_notes(df, metric) + footnotes(df) + floor_caveat(df)]
    for name, names in SECTIONS:
        ms = [m for m in shown(df, names) if m != metric]
        if ms:
            parts.append(f"<h2>{html.escape(name)}</h2>")
        for m in ms:
            parts += [f"<h3>{html.escape(m)}</h3>", f"<p>{_inline(title(m))}</p>", _table_html(df, m, f"gap-{m}", holes)]
            parts += [f'<p class="note">{_inline(note)}</p>' for note in table_notes(df, m)]
    for p in plots or []:
        data = base64.b64encode(Path(p).read_bytes()).decode()
        parts.append(f'<h3>{html.escape(Path(p).stem)}</h3><img alt="{html.escape(Path(p).stem)}" src="data:image/png;base64,{data}">')
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title_text)}</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(parts)}<script>{_SCRIPT}</script></body></html>\n")
