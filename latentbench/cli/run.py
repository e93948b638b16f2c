"""``latentbench run``, ``score``, ``leaderboard``, ``publish`` and ``diagnose``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from latentbench.errors import UserError

# The default grid is baselines/digits.toml (shipped inside the package), run under the name "default"
# (or, given --out, the output folder's name).
DEFAULT_SPEC = Path(__file__).resolve().parents[1] / "baselines" / "digits.toml"


def _csv(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def check_spec_path(spec: str) -> str:
    """A spec path must be a readable text file: a folder or binary bytes are one line."""
    path = Path(spec)
    if path.is_dir():
        raise UserError(f"spec {spec} is a folder; give a TOML file such as baselines/digits.toml")
    if path.is_file():
        try:
            path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(f"spec {spec} is not a UTF-8 text file (byte {exc.start} is binary); give a TOML "
                            "spec such as baselines/digits.toml") from None
        except OSError as exc:
            raise UserError(f"spec {spec} cannot be read: {exc.strerror}; check its permissions") from None
    return spec


def build_grid(args: argparse.Namespace):
    from latentbench.cli.common import cell_overrides
    from latentbench.latent import LatentShape
    from latentbench.registry import REMEDIES
    from latentbench.spec import load_grid

    if args.spec:
        grid = load_grid(check_spec_path(args.spec))
    else:
        grid = load_grid(DEFAULT_SPEC)
        grid.name = "default"
    over = cell_overrides(args)
    if "data" in over:
        over["data"] = {**grid.base.get("data", {}), **over["data"]}
    grid.base.update(over)
    if args.remedies or args.latents:  # the grid given on the command line: the spec's subgrids go
        grid.subgrids = []
    if args.remedies:
        grid.remedies = _csv(args.remedies)
    if args.latents:
        grid.latents = [str(LatentShape.parse(v)) for v in _csv(args.latents)]
    if args.seeds:
        try:
            grid.seeds = [int(s) for s in _csv(args.seeds)]
        except ValueError:
            raise UserError(f"bad --seeds {args.seeds!r}: write comma-separated integers >= 0, e.g. 0,1,2") from None
    if any(s < 0 for s in grid.seeds):
        raise UserError(f"bad --seeds {args.seeds!r}: seeds must be >= 0")
    if args.name:
        grid.name = args.name
    elif not args.spec and getattr(args, "out", None):
        # a grid from flags alone takes its output folder's name (the progress bar, MLflow's experiment)
        grid.name = Path(args.out).resolve().name or grid.name
    for r in [*grid.all_remedies(), *grid.remedy_params]:
        REMEDIES.get(r)  # unknown names (also in [remedy.NAME] tables) fail before any work starts
    if not grid.remedies or not grid.latents or not grid.seeds:
        raise UserError("the grid is empty: give at least one remedy, latent size and seed")
    grid.cells()  # validates every cell (ranges, parameters) up front
    return grid


def cmd_run(args: argparse.Namespace) -> int:
    from latentbench.runner.grid import parse_shard, run_grid

    shard = parse_shard(args.shard)
    grid = build_grid(args)
    if args.workers < 1:
        raise UserError(f"bad --workers {args.workers}: give the number of cells to run at once, >= 1")
    if args.shards is not None and not args.slurm:
        raise UserError("--shards needs --slurm (to split the grid by hand, run each part with --shard i/n)")
    folder = Path(args.out or f"runs/{grid.name}")
    from latentbench.runner.preflight import preflight

    # names, parameters, datasets, scoring, device and the output folder, before anything is written
    # (with --slurm the device is checked on the nodes that run the cells)
    existed = folder.exists()
    device = preflight(grid, folder, "cpu" if args.slurm else args.device)
    if args.slurm:  # the device is checked on the nodes that run the cells
        from latentbench.cli.cluster import submit

        try:
            return submit(args, grid, folder, report=report_run)
        except UserError:
            if not existed:  # a bad --slurm option: the folder made for it goes again if nothing is in it
                remove_if_empty(folder)
            raise
    tracker = None
    if args.track:  # a missing package is one line before anything is written
        from latentbench.runner.track import make_tracker

        tracker = make_tracker(args.track, folder, uri=args.track_uri, experiment=grid.name)
    from latentbench.runner.grid import save_grid

    save_grid(grid, folder)
    execute = None
    if args.workers > 1:
        from functools import partial

        from latentbench.runner.workers import run_workers

        execute = partial(run_workers, workers=args.workers)
    try:
        summary = run_grid(grid, folder, device, shard=shard, force=args.force, quiet=args.quiet,
                           command=args.command_line, compile=args.compile, tracker=tracker, execute=execute,
                           shared=args.shared_stage)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (cli.Terminated, exit code 143)
        print(f"\nlatentbench: interrupted; finished cells are saved in {folder}/records. "
              f"Run the same command again to resume.", file=sys.stderr)
        return getattr(exc, "exit_code", 130)
    print(f"{folder}: {summary['done']} cells run, {summary['skipped']} already done, "
          f"{summary['busy']} finished by another run meanwhile, {len(summary['failed'])} failed "
          f"({summary['seconds']:.0f}s)")
    report_run(folder)
    if tracker is not None:
        from latentbench.runner.track import guarded

        guarded(tracker.finish_grid, folder)
    if summary["failed"]:
        print(f"latentbench: {len(summary['failed'])} cell(s) failed:", file=sys.stderr)
        for rec in summary["failed"]:
            print(f"  {rec['id']}: {rec['error']}", file=sys.stderr)
        return 1
    return 0


def remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` and its subfolders if no file is anywhere under it."""
    folder = Path(folder)
    if not folder.is_dir() or any(files for _, _, files in os.walk(folder)):
        return
    for root, _, _ in sorted(os.walk(folder), key=lambda w: -len(w[0])):
        try:
            os.rmdir(root)
        except OSError:
            return


def report_run(folder: Path) -> None:
    """Write ``folder/leaderboard.md`` (every table) and ``folder/plots`` from the records so far, and
    print the short board (the gap and the reconstruction side)."""
    from latentbench.api import report_run as write_report

    try:
        brief = write_report(folder)
    except UserError as exc:
        print(f"latentbench: no leaderboard yet: {exc}", file=sys.stderr)
        return
    if brief is not None:
        print(brief)
        print(f"every table (latent geometry, likelihood, bounds): {folder / 'leaderboard.md'}; "
              f"plots: {folder / 'plots'}")


def cmd_score(args: argparse.Namespace) -> int:
    """Re-score a checkpoint into a record of its own (:func:`latentbench.api.score_checkpoint`)."""
    import pandas as pd

    from latentbench.api import score_checkpoint

    res = score_checkpoint(args.checkpoint, n_samples=args.n, features=args.features, iw_k=args.iw_k,
                           out=args.out, allow_incomplete=args.allow_incomplete, device=args.device,
                           quiet=args.quiet, command=args.command_line)
    print(pd.Series(res.metrics, name="value").to_frame().to_markdown(floatfmt=".4g"))
    print(f"record: {res.path}")
    return 0


def separate_duplicates(groups: dict[str, list[dict]]) -> str | None:
    """Cells found in several folders: the same numbers (one record published twice) are shown once; a
    cell whose numbers differ keeps each folder's record, as its own row (``remedy [folder]``), never
    hidden behind the first folder's. Returns the note to print, or None."""
    import json

    first: dict[str, tuple[str, dict]] = {}
    differ: dict[str, list[str]] = {}
    for folder, records in groups.items():
        for r in records:
            if r.get("id") not in first:
                first[r["id"]] = (folder, r)
                continue
            src, ref = first[r["id"]]
            if src == folder or json.dumps(r.get("metrics"), sort_keys=True) == json.dumps(ref.get("metrics"), sort_keys=True):
                continue  # the same numbers: shown once
            differ.setdefault(r["id"], [src]).append(folder)
            r["id"] = f"{r['id']}@{folder}"  # kept apart from the first folder's record
    if not differ:
        return None
    cid, folders = next(iter(differ.items()))
    threads = {f: first[cid][1].get("provenance", {}).get("threads") for f in folders[:1]}
    threads.update({f: r.get("provenance", {}).get("threads") for f in folders[1:] for r in groups[f]
                    if r["id"] == f"{cid}@{f}"})
    why = ""
    if len(set(threads.values())) > 1:
        why = " (torch threads " + " vs ".join("?" if t is None else str(t) for t in threads.values()) + ")"
    return (f"{len(differ)} cell(s) are in several folders with different numbers, e.g. {cid} in "
            f"{' and '.join(folders)}{why}; each folder's are shown as its own row, marked [folder]. A record "
            "reproduces only with the same latentbench, torch, device and torch thread count (its provenance)")


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from latentbench.report.compare import merge_groups
    from latentbench.report.external import external_markdown, split_external
    from latentbench.report.leaderboard import check_output_file, check_output_folder, render_board
    from latentbench.report.tables import records_frame
    from latentbench.runner.records import read_records

    out = check_output_file(args.out) if args.out else None  # before any work: nothing written on error
    plots = check_output_folder(args.plots) if args.plots else None
    dirs, external = split_external(args.dirs)
    if not dirs:
        raise UserError("give at least one run or board folder for the external samples records to stand beside")
    groups = {d: read_records([d], skip_bad=args.skip_bad) for d in dirs}
    note = separate_duplicates(groups)
    if note:
        print(f"latentbench: note: {note}", file=sys.stderr)
    records = merge_groups(groups, allow_mismatch=args.allow_mismatch)
    df = records_frame(records)
    if df.empty:
        raise UserError("these folders hold no successful records")
    brief = args.format == "markdown" and not out and not args.full  # the terminal gets the short board
    try:
        text, paths = render_board(records, df, args.metric, args.format, plots_dir=plots, brief=brief)
        if external:
            extra, skipped = external_markdown(records, external)
            for line in skipped:
                print(f"latentbench: note: {line}", file=sys.stderr)
            if extra and args.format != "markdown":
                print("latentbench: note: external samples rows are shown in the markdown board only",
                      file=sys.stderr)
            elif extra:
                text = text.rstrip("\n") + extra
        if out:
            from latentbench.atomic import atomic_write_text

            atomic_write_text(out, text)
    except OSError as exc:
        raise UserError(f"cannot write {exc.filename or out or plots}: {exc.strerror or exc}; "
                        "choose a writable --out / --plots path") from None
    if paths:
        print(f"wrote {len(paths)} plots to {plots}", file=sys.stderr)
    if out:
        print(f"wrote {out}", file=sys.stderr)
    else:
        print(text, end="")
        if brief:
            print("\n(the short board; --full or --out FILE for every table: latent geometry, likelihood, bounds)")
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    if args.model:
        if args.target:
            raise UserError(f"give a checkpoint or run folder ({args.target}) or --model, not both")
        from latentbench.cli.byo import cmd_diagnose_model

        return cmd_diagnose_model(args)
    if not args.target:
        raise UserError("diagnose what? give a checkpoint (.pt), a run folder, or --model MODULE:FACTORY / "
                        "pythae:DIR with --dataset")
    from latentbench.device import pick_device
    from latentbench.report.diagnose import diagnose
    from latentbench.report.leaderboard import check_output_folder

    target = Path(args.target)
    if target.is_file() and target.suffix == ".json":  # a record passed by mistake, not a broken checkpoint
        ckpt = target.with_suffix(".pt")
        raise UserError(f"{target} is a record, not a checkpoint: diagnose "
                        + (f"its checkpoint {ckpt}" if ckpt.is_file() else "its cell's .pt checkpoint")
                        + f" or the run folder {target.parent.parent if target.parent.name == 'records' else target.parent}")
    out = Path(args.out) if args.out else (target.with_suffix(".diagnose") if target.is_file() else target / "diagnose")
    check_output_folder(out, "--out" if args.out else "the report folder")  # a file there, or read-only: one line
    reports = diagnose(target, pick_device(args.device), Path(args.out) if args.out else None)
    for r in reports:
        print(r)
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from latentbench.report.publish import publish

    out = publish(Path(args.run_dir), args.name, Path(args.dest), partial=args.partial, metric=args.metric,
                  command=args.command_line)
    print(f"published {out}")
    return 0


def add_commands(sub) -> None:
    from latentbench.cli.common import add_cell_args, add_common

    p = sub.add_parser("run", help="run a grid: remedies x latent sizes x seeds (default: the digits grid)")
    p.add_argument("spec", nargs="?", help="TOML grid spec (e.g. baselines/digits.toml); flags override it")
    p.add_argument("--remedies", help="comma-separated remedy names")
    p.add_argument("--latents", help="comma-separated latent sizes, e.g. 2,32,8x8x16")
    p.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument("--name", help="run name (default: the spec's name, or 'default')")
    p.add_argument("--out", help="output folder (default runs/<name>)")
    p.add_argument("--shard", help="i/n: run every n-th cell starting at i (0-based)")
    p.add_argument("--force", action="store_true",
                   help="recompute finished cells; a shared first stage (OUT/first_stages/<id>/) is reused: delete "
                        "that folder to retrain it")
    p.add_argument("--no-shared-stage", dest="shared_stage", action="store_false",
                   help="train every cell alone, instead of training each first stage (the plain VAE that the vae "
                        "cell and the ex-post remedies share) once and building those cells on it")
    p.add_argument("--workers", type=int, default=1,
                   help="cells computed at once, each in its own process (default 1)")
    p.add_argument("--track", choices=["mlflow"], help="mirror each cell into an experiment tracker")
    p.add_argument("--track-uri", dest="track_uri",
                   help="tracking URI (default $MLFLOW_TRACKING_URI, else OUT/mlruns)")
    p.add_argument("--slurm", metavar="KEY=VALUE,...",
                   help="submit the grid as a job array through submitit, e.g. partition=gpu,gpus=1,time=60; "
                        "'local' runs the array as local processes")
    p.add_argument("--shards", type=int, help="array tasks for --slurm (default: one per cell)")
    p.add_argument("--wait", action="store_true", help="with --slurm: wait for the array, then print the board")
    add_cell_args(p, single=False, score=True)
    add_common(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("score", help="score a trained checkpoint and write its record")
    p.add_argument("checkpoint")
    p.add_argument("--n", type=int, help="samples per set (default: the cell's, 10000)")
    p.add_argument("--iw-k", type=int, dest="iw_k", help="importance samples per image for nll_iw")
    p.add_argument("--features", choices=["domain", "inception"])
    p.add_argument("--out", help="record path (default: RUN/rescored/<cell-id>.json; never the run's own record)")
    p.add_argument("--allow-incomplete", action="store_true", dest="allow_incomplete",
                   help="score a checkpoint whose training has not finished (the record says so)")
    add_common(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("leaderboard", help="tables (and plots) from the records of one or more runs")
    p.add_argument("dirs", nargs="+", help="run or leaderboard folders")
    p.add_argument("--format", default="markdown", choices=["markdown", "csv", "json", "html"])
    p.add_argument("--metric", help="the metric the board leads with (default: fid_prior_post, the gap)")
    p.add_argument("--out", help="write every table to this file instead of the short board to stdout")
    p.add_argument("--full", action="store_true", help="print every table, not the short board")
    p.add_argument("--plots", help="also write PNG plots to this folder")
    p.add_argument("--skip-bad", action="store_true", dest="skip_bad", help="skip corrupt record files")
    p.add_argument("--allow-mismatch", action="store_true", dest="allow_mismatch",
                   help="show rows from runs with other settings, marked and unranked, instead of refusing")
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser("publish", help="write leaderboards/NAME/ (records, tables, plots, CSV) from a finished run")
    p.add_argument("run_dir")
    p.add_argument("--name", required=True, help="leaderboard name (folder under --dest)")
    p.add_argument("--dest", default="leaderboards", help="where leaderboards live (default leaderboards)")
    p.add_argument("--metric", help="the metric the board leads with (default: fid_prior_post, the gap)")
    p.add_argument("--partial", action="store_true", help="publish an incomplete run, marking its holes")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("diagnose", help="report on prior holes for one checkpoint or every checkpoint of a run")
    p.add_argument("target", nargs="?", help="a checkpoint (.pt) or a run folder (or --model)")
    p.add_argument("--out", help="report folder (default: beside the checkpoint, or RUN/diagnose; "
                                 "with --model: diagnose)")
    from latentbench.cli.byo import add_commands as add_byo_commands
    from latentbench.cli.byo import add_model_args

    add_model_args(p, required=False)
    add_common(p)
    p.set_defaults(func=cmd_diagnose)
    add_byo_commands(sub)
