"""``latentbench publish``: a finished run becomes ``leaderboards/<name>/``.

The folder holds ``records/*.json`` (and the small sample files the plots are drawn from, but no
checkpoints), ``README.md`` (tables, plots and the exact commands), ``results.csv`` (every metric of
every record) and the PNGs; ``leaderboards/README.md`` indexes all of them. Publishing refuses a run
with failed or missing cells unless ``partial``, in which case the tables mark the holes.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from latentbench.atomic import atomic_write_text, write_error
from latentbench.errors import UserError
from latentbench.report.compare import split_settings
from latentbench.results import Record, read_records, record_files
from latentbench.runner.grid import expected_cells


def publish(run_dir: Path, name: str, dest: Path = Path("leaderboards"), *, partial: bool = False,
            metric: str = "fid_prior", command: str = "") -> Path:
    from latentbench.registry import validate_name
    from latentbench.report.tables import records_frame

    try:
        validate_name(name.replace("-", "_"))
    except ValueError:
        raise UserError(f"bad --name {name!r}: use lowercase letters, digits, '_' and '-'") from None
    # only the grid's own records are its cells: a re-score left in records/ is never published as one
    records = [r for r in read_records([run_dir]) if r.written_by == "run"]
    groups = split_settings(records)
    if len(groups) > 1:
        from latentbench.report.compare import setting_differences

        diff = ", ".join(f"{k} {b} vs {a}" for k, b, a in setting_differences(groups[0], groups[1]))
        raise UserError(f"{run_dir} holds records made with {len(groups)} different settings ({diff}); a board "
                        "has one: publish a folder that holds one run's grid")
    expected = expected_cells(run_dir)
    by_id = {r.id: r for r in records}
    failed = [r for r in records if not r.ok]
    missing = [c for cid, c in expected.items() if cid not in by_id]
    if (failed or missing) and not partial:
        raise UserError(f"{run_dir}: {len(failed)} failed and {len(missing)} missing cells of {len(expected) or len(records)}; "
                        "finish the run (rerun its command) or pass --partial to publish with holes marked")
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise UserError(f"--dest {dest} is not a folder; give the folder that holds the leaderboards")
    out = dest / name
    if out.exists():
        raise UserError(f"{out} already exists; choose another --name or remove it first")
    ok = [r for r in records if r.ok]
    df = records_frame(ok)
    if df.empty:  # before anything is created
        raise UserError(f"{run_dir}: no successful records to publish")
    holes = {}
    for r in failed:
        holes[(r.remedy, r.latent)] = "failed"
    for c in missing:
        holes.setdefault((c.remedy, c.latent), "missing")
    # built in a temp folder beside the destination and renamed into place: never half a board
    tmp = dest / f".tmp-{name}.{uuid.uuid4().hex[:12]}"
    made = [p for p in [dest, *dest.parents] if not p.exists()]
    try:
        dest.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        _build(tmp, out, run_dir, name, ok, df, holes, failed, missing, metric, command)
        try:
            os.rename(tmp, out)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):  # published by someone else meanwhile
                raise UserError(f"{out} already exists; choose another --name or remove it first") from None
            raise
    except OSError as exc:  # a read-only or full disk: one line
        raise write_error(exc.filename or out, exc) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not out.exists():  # nothing published: the folders made for it go again
            for p in made:
                try:
                    p.rmdir()
                except OSError:
                    break
    write_index(dest)
    return out


def _build(tmp: Path, out: Path, run_dir: Path, name: str, ok: list[Record], df: Any, holes: dict,
           failed: list[Record], missing: list, metric: str, command: str) -> None:
    """Write the board's files into ``tmp`` (to become ``out``)."""
    from latentbench.report.leaderboard import render
    from latentbench.report.plots import make_plots

    (tmp / "records").mkdir()
    cells = {Path(r.path or "").name for r in ok + failed}
    for f in record_files(Path(run_dir)):
        if f.name not in cells:  # a re-score, not one of the grid's cells
            continue
        shutil.copy2(f, tmp / "records" / f.name)
        npz = f.with_suffix(".samples.npz")
        if npz.is_file():
            shutil.copy2(npz, tmp / "records" / npz.name)
    grids = sorted((Path(run_dir) / "grids").glob("*.toml"))
    for g in grids:  # the board's own spec: `latentbench leaderboard` suggests it to make runs comparable
        (tmp / "grids").mkdir(exist_ok=True)
        shutil.copy2(g, tmp / "grids" / g.name)
    for r in ok:  # the plots read each record's samples beside it
        r.path = tmp / "records" / Path(r.path or "").name
    plots = make_plots(ok, df, tmp)
    metric_cols = [c for c in df.columns if c not in ("row", "mismatch", "command")]
    df[metric_cols].sort_values(["remedy", "latent_dim", "seed"]).to_csv(tmp / "results.csv", index=False)
    tables = render(df, metric, "markdown", holes=holes)
    run_cmds = sorted({r.provenance.get("command", "") for r in ok} - {""})
    lines = [f"# latentbench leaderboard: {name}", "",
             "Regenerate the records (same machine, same numbers):", "", "```bash",
             *run_cmds, "```", "",
             f"then `{command or f'latentbench publish {run_dir} --name {name}'}`; or redraw these tables "
             f"from the records alone: `latentbench leaderboard {out} --plots {out}`.", ""]
    if holes:
        lines += [f"**Partial**: {len(failed)} failed and {len(missing)} missing cells are marked in the tables.", ""]
    lines += [tables, "", "## Plots", ""]
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    if grids:
        lines += ["", "## Grid", "", "```toml", grids[0].read_text().strip(), "```"]
    atomic_write_text(tmp / "README.md", "\n".join(lines) + "\n")


def write_index(dest: Path) -> Path:
    """``leaderboards/README.md``: one line per published leaderboard."""
    rows = ["# Published leaderboards", "",
            "Each folder holds the records it was built from, its tables (README.md), results.csv and plots.", "",
            "| leaderboard | dataset | remedies | latent sizes | seeds | records |", "|---|---|---|---|---|---|"]
    for sub in sorted(p for p in dest.iterdir() if (p / "records").is_dir() and not p.name.startswith(".")):
        recs = [r for r in read_records([sub], skip_bad=True) if r.ok]
        if not recs:
            continue
        cells = [r.cell for r in recs]
        from latentbench.latent import LatentShape

        lat = sorted({c["latent"] for c in cells}, key=lambda s: LatentShape.parse(s).sort_key())
        rows.append(f"| [{sub.name}]({sub.name}/README.md) | {', '.join(sorted({c['dataset'] for c in cells}))} | "
                    f"{len({c['remedy'] for c in cells})} | {', '.join(lat)} | "
                    f"{len({c['seed'] for c in cells})} | {len(recs)} |")
    path = dest / "README.md"
    atomic_write_text(path, "\n".join(rows) + "\n")
    return path
