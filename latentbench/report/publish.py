"""``latentbench publish``: a finished run becomes ``leaderboards/<name>/``.

The folder holds ``records/*.json`` (and the small sample files the plots are drawn from, but no
checkpoints), ``README.md`` (tables, plots and the exact commands), ``results.csv`` (every metric of
every record) and the PNGs; ``leaderboards/README.md`` indexes all of them. Publishing refuses a run
with failed or missing cells unless ``partial``, in which case the tables mark the holes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from latentbench.atomic import atomic_write_text
from latentbench.errors import UserError
from latentbench.report.compare import split_settings
from latentbench.runner.grid import expected_cells
from latentbench.runner.records import read_records, record_files


def publish(run_dir: Path, name: str, dest: Path = Path("leaderboards"), *, partial: bool = False,
            metric: str = "fid_prior", command: str = "") -> Path:
    from latentbench.registry import validate_name
    from latentbench.report.leaderboard import render
    from latentbench.report.plots import make_plots
    from latentbench.report.tables import records_frame

    try:
        validate_name(name.replace("-", "_"))
    except ValueError:
        raise UserError(f"bad --name {name!r}: use lowercase letters, digits, '_' and '-'") from None
    records = read_records([run_dir])
    groups = split_settings(records)
    if len(groups) > 1:
        from latentbench.report.compare import setting_differences

        diff = ", ".join(f"{k} {b} vs {a}" for k, b, a in setting_differences(groups[0], groups[1]))
        raise UserError(f"{run_dir} holds records made with {len(groups)} different settings ({diff}); a board "
                        "has one: publish a folder that holds one run's grid")
    expected = expected_cells(run_dir)
    by_id = {r["id"]: r for r in records}
    failed = [r for r in records if r.get("status") != "ok"]
    missing = [c for cid, c in expected.items() if cid not in by_id]
    if (failed or missing) and not partial:
        raise UserError(f"{run_dir}: {len(failed)} failed and {len(missing)} missing cells of {len(expected) or len(records)}; "
                        "finish the run (rerun its command) or pass --partial to publish with holes marked")
    out = Path(dest) / name
    if out.exists():
        raise UserError(f"{out} already exists; choose another --name or remove it first")
    (out / "records").mkdir(parents=True)
    for f in record_files(Path(run_dir)):
        shutil.copy2(f, out / "records" / f.name)
        npz = f.with_suffix(".samples.npz")
        if npz.is_file():
            shutil.copy2(npz, out / "records" / npz.name)
    grids = sorted((Path(run_dir) / "grids").glob("*.toml"))
    for g in grids:  # the board's own spec: `latentbench leaderboard` suggests it to make runs comparable
        (out / "grids").mkdir(exist_ok=True)
        shutil.copy2(g, out / "grids" / g.name)
    ok = [r for r in records if r.get("status") == "ok"]
    for r in ok:
        r["_path"] = str(out / "records" / Path(r["_path"]).name)
    df = records_frame(ok)
    if df.empty:
        raise UserError(f"{run_dir}: no successful records to publish")
    holes = {}
    for r in failed:
        holes[(r["cell"]["remedy"], r["cell"]["latent"])] = "failed"
    for c in missing:
        holes.setdefault((c.remedy, c.latent), "missing")
    plots = make_plots(ok, df, out)
    metric_cols = [c for c in df.columns if c not in ("row", "mismatch", "command")]
    df[metric_cols].sort_values(["remedy", "latent_dim", "seed"]).to_csv(out / "results.csv", index=False)
    tables = render(df, metric, "markdown", holes=holes)
    run_cmds = sorted({r.get("provenance", {}).get("command", "") for r in ok} - {""})
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
    atomic_write_text(out / "README.md", "\n".join(lines) + "\n")
    write_index(Path(dest))
    return out


def write_index(dest: Path) -> Path:
    """``leaderboards/README.md``: one line per published leaderboard."""
    rows = ["# Published leaderboards", "",
            "Each folder holds the records it was built from, its tables (README.md), results.csv and plots.", "",
            "| leaderboard | dataset | remedies | latent sizes | seeds | records |", "|---|---|---|---|---|---|"]
    for sub in sorted(p for p in dest.iterdir() if (p / "records").is_dir()):
        recs = [r for r in read_records([sub], skip_bad=True) if r.get("status") == "ok"]
        if not recs:
            continue
        cells = [r["cell"] for r in recs]
        from latentbench.latent import LatentShape

        lat = sorted({c["latent"] for c in cells}, key=lambda s: LatentShape.parse(s).sort_key())
        rows.append(f"| [{sub.name}]({sub.name}/README.md) | {', '.join(sorted({c['dataset'] for c in cells}))} | "
                    f"{len({c['remedy'] for c in cells})} | {', '.join(lat)} | "
                    f"{len({c['seed'] for c in cells})} | {len(recs)} |")
    path = dest / "README.md"
    atomic_write_text(path, "\n".join(rows) + "\n")
    return path
