import json
import os
from pathlib import Path

import pytest

import latentbench
from latentbench.cli import main
from latentbench.report.leaderboard import render
from latentbench.report.tables import records_frame, summary, table
from latentbench.runner.records import make_record, write_record
from latentbench.spec import Cell


def handmade(tmp_path, values):
    """values: {(remedy, latent, seed): fid_prior}"""
    folder = tmp_path / "records"
    for (remedy, latent, seed), v in values.items():
        cell = Cell(remedy=remedy, latent=latent, seed=seed)
        rec = make_record(cell, status="ok", metrics={"fid_prior": v, "recall_prior": v / 100, "hole_fraction": 0.5},
                          notes={"scorer_version": 1}, prov={"latentbench": "0.1.0", "command": "latentbench run x"})
        write_record(folder / f"{cell.id}.json", rec)
    return tmp_path


VALUES = {("vae", "2", 0): 10.0, ("vae", "2", 1): 14.0, ("vamp", "2", 0): 5.0, ("vamp", "2", 1): 7.0,
          ("vae", "16", 0): 30.0, ("vamp", "16", 0): 31.0}


def test_mean_std_over_seeds_and_best_marking(tmp_path):
    from latentbench.runner.records import read_records

    df = records_frame(read_records([handmade(tmp_path, VALUES)]))
    mean, std, n = summary(df, "fid_prior")
    assert mean.loc["vae", "2"] == 12.0 and std.loc["vae", "2"] == pytest.approx(2.828, abs=1e-3)
    assert list(mean.columns) == ["2", "16"]  # latent sizes in numeric order
    t = table(df, "fid_prior")
    assert t.loc["vamp", "z=2"] == "**6.000 ± 1.414**" and t.loc["vae", "z=16"] == "**30.0**"
    # higher-is-better metrics mark the maximum
    t = table(df, "recall_prior")
    assert t.loc["vae", "z=2"].startswith("**")


def test_markdown_csv_json_outputs(tmp_path):
    from latentbench.runner.records import read_records

    df = records_frame(read_records([handmade(tmp_path, VALUES)]))
    md = render(df, "fid_prior", "markdown")
    assert "lower is better" in md and "`latentbench run x`" in md and "| vamp" in md and "hole_fraction" in md
    csv = render(df, "fid_prior", "csv").splitlines()
    assert csv[0] == "metric,remedy,latent,mean,std,n" and len(csv) == 1 + 4
    js = json.loads(render(df, "fid_prior", "json"))
    assert js["rows"]["vae"]["2"] == {"mean": 12.0, "std": pytest.approx(2.828, abs=1e-3), "n": 2}
    html = render(df, "fid_prior", "html")
    assert html.startswith("<!doctype html>") and "<script>" in html and "src=\"http" not in html


def test_leaderboard_cli_errors(tmp_path, capsys):
    assert main(["leaderboard", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["leaderboard", str(tmp_path / "empty")]) == 2
    assert "no records found" in capsys.readouterr().err
    folder = handmade(tmp_path / "run", VALUES)
    bad = folder / "records" / "broken.json"
    bad.write_text("{not json")
    assert main(["leaderboard", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.json" in err[0] and "--skip-bad" in err[0]
    assert main(["leaderboard", str(folder), "--skip-bad", "--metric", "fid_prior"]) == 0
    assert "| vamp" in capsys.readouterr().out
    assert main(["leaderboard", str(folder), "--skip-bad", "--metric", "nope"]) == 2


def test_newer_record_schema_is_refused_with_its_version(tmp_path, capsys):
    folder = handmade(tmp_path, {("vae", "2", 0): 1.0})
    f = next((folder / "records").glob("*.json"))
    rec = json.loads(f.read_text())
    rec["schema"] = 99
    f.write_text(json.dumps(rec))
    assert main(["leaderboard", str(folder)]) == 2
    assert "record schema 99 is newer" in capsys.readouterr().err


def test_rows_from_another_scorer_version_are_never_ranked_with_the_rest(tmp_path):
    from latentbench.runner.records import read_records

    folder = tmp_path / "records"
    for remedy, value, scorer in (("vae", 10.0, 2), ("vamp", 12.0, 2), ("flow_prior", 1.0, 1)):
        cell = Cell(remedy=remedy, latent="2")
        rec = make_record(cell, status="ok", metrics={"fid_prior": value}, notes={"scorer_version": scorer},
                          prov={"latentbench": "0.1.0", "git_hash": "abcdef1234567890"})
        write_record(folder / f"{cell.id}.json", rec)
    df = records_frame(read_records([tmp_path]))
    t = table(df, "fid_prior", provenance=True)
    assert t.loc["vae", "z=2"] == "**10.0**"  # flow_prior's 1.0 is lower but from scorer v1
    old = "flow_prior (scorer_version 1) †"
    assert t.loc[old, "z=2"] == "1.000" and t.loc[old, "latentbench"] == "0.1.0@abcdef12 (scorer v1)"


def test_the_reference_rows_are_ranked_when_mismatched_rows_outnumber_them(tmp_path):
    from latentbench.report.compare import merge_groups
    from latentbench.runner.records import read_records

    ref = folder_of(tmp_path / "ref", {("vae", "2", 0): 10.0, ("vamp", "2", 0): 12.0})
    other = folder_of(tmp_path / "other", {(r, "2", 0): 1.0 for r in ("flow_prior", "two_stage", "expost_gmm")},
                      notes={"scorer_version": 3})  # more rows, of another scorer version
    records = merge_groups({"ref": read_records([ref]), "other": read_records([other])}, allow_mismatch=True)
    t = table(records_frame(records), "fid_prior")
    assert t.loc["vae", "z=2"] == "**10.0**"  # the best comparable row, whatever the most common scorer
    assert not any("**" in v for v in t.loc[[r for r in t.index if "†" in r], "z=2"])


BOARD_CMD = "latentbench run baselines/digits-3seeds.toml --out runs/digits-3seeds --quiet"


def folder_of(path, values, notes=None, command=BOARD_CMD, params=None, **cell_kw):
    """Records under ``path``: values {(remedy, latent, seed): fid_prior}; the feature key follows the
    seed (as the data split does) unless ``notes`` say otherwise."""
    for (remedy, latent, seed), v in values.items():
        cell = Cell(remedy=remedy, latent=latent, seed=seed, remedy_params=dict(params or {}), **cell_kw)
        n = {"scorer_version": 2, "feature_key": f"digits-split{seed}", "n_prior": cell.n_samples, **(notes or {})}
        rec = make_record(cell, status="ok", metrics={"fid_prior": v, "hole_fraction": v / 100}, notes=n,
                          prov={"latentbench": "0.1.0", "command": command, "started_at": "2026-01-01T00:00:00Z"})
        write_record(path / "records" / f"{cell.id}.json", rec)
    return path


BOARD = {(r, lat, s): 10.0 * (i + 1) + s for i, r in enumerate(("vae", "vamp")) for lat in ("2", "8", "32", "128")
         for s in (0, 1, 2)}


def test_one_formatting_rounds_half_up_in_every_table(tmp_path):
    from latentbench.report.tables import fmt_number
    from latentbench.runner.records import read_records

    assert [fmt_number(x, 3) for x in (0.6775, 0.6765, (0.6 + 0.755) / 2, (0.1 + 0.2 + 1.7325) / 3)] == \
        ["0.678", "0.677", "0.678", "0.678"]
    assert fmt_number(-0.0001, 3) == "0.000" and fmt_number(12.25, 1) == "12.3"
    folder_of(tmp_path, {("vae", "2", 0): 0.6775, ("vamp", "2", 0): 67.75})
    df = records_frame(read_records([tmp_path]))
    md = render(df, "fid_prior", "markdown")
    assert "| 0.678 " in md and "| **0.678** " in md and "0.677" not in md  # main and gap (hole_fraction) tables
    assert "67.8" in md and ">0.678<" in render(df, "fid_prior", "html")


def test_a_folder_with_two_settings_is_never_averaged(tmp_path, capsys):
    from latentbench.runner.records import read_records

    folder_of(tmp_path, {("vae", "2", 0): 150.0, ("vae", "2", 1): 160.0}, epochs=5)
    folder_of(tmp_path, {("vae", "2", 0): 158.0}, epochs=3, n_samples=300)
    assert main(["leaderboard", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 record(s) made with other settings" in err[0] and "epochs 3, n_samples 300" in err[0]
    assert main(["leaderboard", str(tmp_path), "--allow-mismatch"]) == 0
    out = capsys.readouterr().out
    assert "| 155.0 ± 7.1 |" in out and "| vae (epochs 3, n_samples 300) † | 158.0 " in out
    assert "not comparable and not ranked: epochs: 3 vs 5; n_samples: 300 vs 10000" in out
    t = table(records_frame(read_records([tmp_path])), "fid_prior")  # what `run` prints after a grid
    assert list(t.index) == ["vae", "vae (epochs 3, n_samples 300) †"]


def test_a_remedy_with_two_parameter_sets_gets_two_rows(tmp_path):
    from latentbench.runner.records import read_records

    folder_of(tmp_path, {("beta_vae", "2", 0): 1.0}, params={"beta": 4.0})
    folder_of(tmp_path, {("beta_vae", "2", 0): 2.0}, params={"beta": 8.0})
    t = table(records_frame(read_records([tmp_path])), "fid_prior")
    assert t.loc["beta_vae (beta=4.0)", "z=2"] == "**1.000**" and t.loc["beta_vae (beta=8.0)", "z=2"] == "2.000"


def test_a_run_on_a_subset_of_the_board_is_ranked_on_the_common_cells(tmp_path, capsys):
    board = folder_of(tmp_path / "board", BOARD, epochs=60)
    mine = folder_of(tmp_path / "mine", {("laplace", "8", 0): 5.0, ("laplace", "2", 0): 50.0}, epochs=60)
    assert main(["leaderboard", str(board), str(mine)]) == 0
    out = capsys.readouterr().out
    assert f"**compared on z=2,8 seed 0 only, the cells common to all folders ({board} has z=2,8,32,128 seeds 0,1,2)**" in out
    head, row_vae = out.splitlines()[8], next(line for line in out.splitlines() if line.startswith("| vae "))
    assert "| z=2 " in head and "z=32" not in out.split("###")[0]
    assert row_vae.split("|")[2].strip() == "**10.0**"  # seed 0 only, no ± over seeds the run lacks
    row = next(line for line in out.splitlines() if line.startswith("| laplace "))
    assert [c.strip() for c in row.split("|")[2:4]] == ["50.0", "**5.000**"] and "†" not in out


def test_a_refusal_names_real_causes_in_numeric_order_and_ends_with_the_command(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the board's spec path is resolved to the shipped baseline
    board = folder_of(tmp_path / "board", BOARD, epochs=60)
    mine = folder_of(tmp_path / "mine", {("laplace", "8", 0): 5.0, ("laplace", "2", 0): 50.0}, epochs=10,
                     command="latentbench run --remedies laplace --latents 2,8 --epochs 10")
    assert main(["leaderboard", str(board), str(mine)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[1:] == ["  epochs: 10 vs 60", "pass --allow-mismatch to show them marked and unranked, or make them "
                       "comparable with:", f"  latentbench run {Path(latentbench.__file__).parent}/baselines/"
                       f"digits-3seeds.toml --quiet --remedies laplace --latents 2,8 --seeds 0 --out {mine}-board"]
    other = folder_of(tmp_path / "other", {("laplace", "64", 0): 5.0}, epochs=60)
    assert main(["leaderboard", str(board), str(other)]) == 2
    err = capsys.readouterr().err
    assert "latent sizes: 64 vs 2, 8, 32, 128 (none in common)" in err and "feature_key" not in err


def test_a_feature_key_that_differs_on_a_common_cell_is_a_cause(tmp_path, capsys):
    board = folder_of(tmp_path / "board", BOARD, epochs=60)
    mine = folder_of(tmp_path / "mine", {("laplace", "2", 0): 5.0}, epochs=60, notes={"feature_key": "digits-other"})
    assert main(["leaderboard", str(board), str(mine)]) == 2
    assert "feature_key: digits-other vs digits-split0 at z=2 seed 0" in capsys.readouterr().err


def test_html_without_plots_folder_embeds_plots_and_keeps_footnotes(tmp_path, capsys):
    board = folder_of(tmp_path / "board", BOARD, epochs=60)
    mine = folder_of(tmp_path / "mine", {("laplace", "2", 0): 5.0}, epochs=10)
    assert main(["leaderboard", str(board), str(mine), "--allow-mismatch", "--format", "html"]) == 0
    page = capsys.readouterr().out
    assert page.count('src="data:image/png;base64,') >= 2 and "<h3>fid_prior</h3>" in page
    assert "is not comparable and not ranked: epochs: 10 vs 60" in page and "laplace †" in page


def test_leaderboard_output_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    board = folder_of(tmp_path / "board", {("vae", "2", 0): 1.0})
    before = sorted(p.name for p in tmp_path.rglob("*"))
    (tmp_path / "plotsfile").write_text("x")
    for args, words in ((["--out", str(tmp_path)], "is a folder"),
                        (["--plots", str(tmp_path / "plotsfile")], "is a file"),
                        (["--out", str(tmp_path / "plotsfile" / "lb.md")], "is a file, not a folder"),
                        (["--out", "/proc/latentbench-lb.md"], "/proc")):
        assert main(["leaderboard", str(board), *args]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted([*before, "plotsfile"])


def test_a_read_only_output_folder_is_one_line_and_writes_nothing(tmp_path, capsys):
    board = folder_of(tmp_path / "board", {("vae", "2", 0): 1.0})
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as root, which writes into read-only folders (the /proc case covers the write error)")
        assert main(["leaderboard", str(board), "--out", str(ro / "lb.md"), "--plots", str(ro / "plots")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "not writable" in err[0] and not list(ro.iterdir())
    finally:
        ro.chmod(0o755)


def test_a_record_from_before_a_cell_field_existed_compares_with_its_default(tmp_path, capsys):
    board = folder_of(tmp_path / "board", {("vae", "2", 0): 1.0})
    f = next((board / "records").glob("*.json"))
    rec = json.loads(f.read_text())
    del rec["cell"]["val_fraction"]  # as if written before the field was added
    f.write_text(json.dumps(rec))
    mine = folder_of(tmp_path / "mine", {("vamp", "2", 0): 2.0})
    assert main(["leaderboard", str(board), str(mine)]) == 0
    assert "| vamp " in capsys.readouterr().out
    other = folder_of(tmp_path / "other", {("vamp", "2", 0): 2.0}, val_fraction=0.2)
    assert main(["leaderboard", str(board), str(other)]) == 2
    assert "val_fraction: 0.2 vs 0.1" in capsys.readouterr().err
