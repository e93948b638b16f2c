import json

import pytest

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
    assert not t.loc["flow_prior", "z=2"].startswith("**")
    assert t.loc["flow_prior", "latentbench"] == "0.1.0@abcdef12 (scorer v1)"
