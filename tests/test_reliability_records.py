"""Promises about records read back: a cell found in two folders is never hidden behind the first, and a
corrupt record (a null cell.data, a metric stored as a string) is skipped or recomputed like any other."""

import json
import re
import shutil
from pathlib import Path

import pytest

from latentbench.cli import main

# one finished run, then corrupt records that each rerun recomputes: end to end, slow
pytestmark = pytest.mark.slow

TINY = ["run", "--remedies", "vae", "--latents", "2", "--epochs", "2", "--n-samples", "150", "--iw-k", "4", "--quiet"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One finished one-cell run: (folder, record path)."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    assert main([*TINY, "--out", str(out)]) == 0
    return out, next((out / "records").glob("*.json"))


def _copy(run: Path, to: Path, **metrics) -> Path:
    shutil.copytree(run, to)
    rec = next((to / "records").glob("*.json"))
    data = json.loads(rec.read_text())
    data["metrics"].update(metrics)
    data["provenance"]["threads"] = 97  # another machine's thread count
    rec.write_text(json.dumps(data))
    return rec


def test_provenance_records_the_torch_thread_count(tiny_run):
    import torch

    _, rec = tiny_run
    assert json.loads(rec.read_text())["provenance"]["threads"] == torch.get_num_threads()


def test_a_cell_in_two_folders_with_other_numbers_is_shown_from_both(tiny_run, tmp_path, capsys):
    run, rec = tiny_run
    other = tmp_path / "other"
    _copy(run, other, fid_prior=123.0)
    capsys.readouterr()
    for first, second in ((run, other), (other, run)):
        assert main(["leaderboard", str(first), str(second), "--format", "csv", "--metric", "fid_prior"]) == 0
        out, err = capsys.readouterr()
        rows = [line for line in out.splitlines() if line.startswith("fid_prior,")]
        assert len(rows) == 2 and any(",123.0," in r for r in rows), out  # both, each marked [folder]
        assert "1 cell(s) are in several folders with different numbers" in err and "torch threads" in err
    same = tmp_path / "same"
    shutil.copytree(run, same)  # the same record published twice: shown once, no note
    assert main(["leaderboard", str(run), str(same), "--format", "csv", "--metric", "fid_prior"]) == 0
    out, err = capsys.readouterr()
    assert len([line for line in out.splitlines() if line.startswith("fid_prior,")]) == 1 and "note" not in err


# ---- corrupt records --------------------------------------------------------------------------------
@pytest.mark.parametrize("data", [None, []])
def test_a_record_whose_cell_data_is_not_a_table_is_corrupt(tiny_run, tmp_path, capsys, data):
    run, _ = tiny_run
    out = tmp_path / "run"
    rec = _copy(run, out)
    bad = json.loads(rec.read_text())
    bad["cell"]["data"] = data
    rec.write_text(json.dumps(bad))
    assert main(["leaderboard", str(out), "--skip-bad"]) == 2
    err = capsys.readouterr().err
    assert "corrupt record" in err and "Traceback" not in err and "AttributeError" not in err
    assert main([*TINY, "--out", str(out)]) == 0  # recomputed, not a crash
    assert re.search(r"1 cells run", capsys.readouterr().out)
    assert json.loads(rec.read_text())["cell"]["data"] == {}


def test_a_metric_stored_as_a_string_is_corrupt(tiny_run, tmp_path, capsys):
    run, _ = tiny_run
    out = tmp_path / "run"
    rec = _copy(run, out, fid_prior="12.5")
    assert main(["leaderboard", str(out)]) == 2
    err = capsys.readouterr().err
    assert "corrupt record" in err and "fid_prior" in err and "Traceback" not in err
    assert main(["publish", str(out), "--name", "b", "--dest", str(tmp_path / "boards")]) == 2
    assert "corrupt record" in capsys.readouterr().err
    assert main([*TINY, "--out", str(out)]) == 0  # recomputed, and the grid's exit code is 0
    assert isinstance(json.loads(rec.read_text())["metrics"]["fid_prior"], float)
