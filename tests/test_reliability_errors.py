"""Promises about fixable errors: the whole grid is checked before its first cell, and every problem a
user can fix is one line on stderr, exit code 2, nothing written."""

import shutil
import subprocess
from pathlib import Path

import pytest

from latentbench.cli import main
from latentbench.errors import UserError

RUN = ["run", "--remedies", "vae", "--latents", "2", "--epochs", "2", "--n-samples", "150", "--quiet"]


def _one_line_error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("latentbench: error: "), err
    return err[0]


@pytest.mark.parametrize("extra,msg", [
    (["--dataset", "nosuch"], "unknown dataset 'nosuch'"),
    (["--arch", "nosuch"], "unknown net 'nosuch'"),
    (["--likelihood", "nosuch"], "unknown likelihood 'nosuch'"),
    (["--remedies", "vea"], "did you mean 'vae'"),
    (["--dataset", "mnist", "--data-root", "/nonexistent/lb"], "--download"),
    (["--device", "meta"], "--device meta: latentbench trains and scores on cpu, cuda or mps"),
    (["--device", "xla"], "--device xla"),
    (["--n-samples", "3"], "n_samples 3 is too small to score: precision/recall need at least 4"),
    (["--lr", "inf"], "lr must be a finite number"),
    (["--sigma", "inf"], "sigma must be a finite number"),
    (["--features", "inception"], "Inception weights not found"),
])
def test_a_bad_name_device_or_setting_fails_before_the_first_cell(extra, msg, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LATENTBENCH_INCEPTION_WEIGHTS", str(tmp_path / "no-such-weights.pth"))
    line = _one_line_error([*RUN, "--out", "run", *extra], capsys)
    assert msg in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("table,msg", [
    ('[net]\nhidden = "abc"\n', "cannot be built with [net] {'hidden': 'abc'}"),
    ('[remedy.beta_vae]\nbeta = "abc"\n', "remedy 'beta_vae' parameter 'beta' must be a number, got 'abc'"),
    ('[remedy.vae]\nbetta = 2.0\n', "has no parameter 'betta'"),
    ('[data]\nmax_train = "abc"\n', "max_train"),
    ('[data]\nmax_trian = 500\n', "unknown [data] key 'max_trian'; did you mean 'max_train'?"),
    ('[remedy.beta_vae]\nbeta = nan\n', "[remedy.beta_vae] beta must be a finite number, got nan"),
])
def test_bad_spec_parameters_fail_before_the_first_cell(table, msg, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("spec.toml").write_text('name = "x"\n' + table)
    line = _one_line_error([*RUN, "spec.toml", "--remedies", "vae,beta_vae", "--out", "run"], capsys)
    assert msg in line
    assert not (tmp_path / "run").exists()


def test_the_smallest_n_samples_the_preflight_allows_scores_every_metric(tiny_cell, cpu):
    from dataclasses import replace

    from latentbench.runner.preflight import min_n_samples
    from latentbench.score.scorer import score_model
    from latentbench.training.loop import train_cell

    cell = tiny_cell(epochs=1, net={"hidden": [32]})
    model, data, _ = train_cell(cell, cpu, quiet=True)
    n = min_n_samples()
    metrics, _, _ = score_model(model, data, replace(cell, n_samples=n), cpu, quiet=True)
    assert metrics["precision_prior"] is not None
    with pytest.raises(UserError, match="too small to score"):  # a cell refuses one fewer wherever it is built
        replace(cell, n_samples=n - 1)
    fewer = replace(cell, n_samples=n)
    fewer.n_samples = n - 1  # past the check: the minimum is real, torch-fidelity fails below it
    with pytest.raises(RuntimeError, match="k out of range"):
        score_model(model, data, fewer, cpu, quiet=True)


def test_spec_files_that_are_binary_or_a_folder_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("bin.toml").write_bytes(b"\x00\xff\xfe\x00binary")
    assert "is not a UTF-8 text file" in _one_line_error([*RUN, "bin.toml"], capsys)
    Path("specs").mkdir()
    assert "spec specs is a folder" in _one_line_error([*RUN, "specs"], capsys)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("where,msg", [("a-file", "is a file"), ("/dev/null", "not a folder")])
def test_an_output_folder_that_is_a_file_or_device_is_one_line(where, msg, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("a-file").write_text("mine")
    assert msg in _one_line_error([*RUN, "--out", where], capsys)
    assert Path("a-file").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_a_read_only_output_folder_is_one_line_and_nothing_is_created(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(ro)], capture_output=True).returncode:
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    try:
        line = _one_line_error([*RUN, "--out", str(ro / "a" / "b")], capsys)
        assert "Read-only file system" in line and "write elsewhere" in line
        assert list(ro.iterdir()) == []
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def test_an_immutable_output_folder_is_one_line(tmp_path, capsys):
    out = tmp_path / "frozen"
    out.mkdir()
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(out)], capture_output=True).returncode:
        pytest.skip("chattr +i is not supported on this file system (or not root)")
    try:
        assert "immutable" in _one_line_error([*RUN, "--out", str(out)], capsys)
    finally:
        subprocess.run(["chattr", "-i", str(out)], check=True)


def test_a_plugin_that_exits_at_import_is_reported_and_named_when_asked_for(tmp_path, monkeypatch, capsys):
    from latentbench.registry import Registry

    dist = tmp_path / "exits-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: exits\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[latentbench.exits]\nbroken_prior = exits_at_import:Prior\n")
    (tmp_path / "exits_at_import.py").write_text("import sys\nsys.exit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    r = Registry("remedy", "latentbench.exits")
    r.register("mog_prior", object())
    assert r.names() == ["mog_prior"]  # the rest still loads; the process is not ended
    assert "broken_prior" in capsys.readouterr().err
    with pytest.raises(UserError, match="'broken_prior' is a plugin that failed to load"):
        r.get("broken_prior")


def test_unknown_metric_suggests_the_closest():
    from latentbench.registry import METRICS

    with pytest.raises(UserError, match="unknown metric 'fid_prio'; did you mean 'fid_prior'"):
        METRICS.get("fid_prio")


@pytest.mark.parametrize("value", ["abc", "0", "nan", "inf", "-5"])
def test_a_bad_lease_setting_is_one_line_and_writes_nothing(value, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LATENTBENCH_LEASE_S", value)
    assert "bad LATENTBENCH_LEASE_S" in _one_line_error([*RUN, "--out", "run"], capsys)
    assert not (tmp_path / "run").exists()


def test_a_feature_cache_that_is_a_file_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cache").write_text("x")
    monkeypatch.setenv("LATENTBENCH_CACHE", str(tmp_path / "cache"))
    assert "LATENTBENCH_CACHE" in _one_line_error([*RUN, "--out", "run"], capsys)
    assert "is not a folder" in _one_line_error(["tune", "--remedy", "vae", "--latent", "2", "--trials", "1",
                                                 "--storage", "j.log"], capsys)
    assert not (tmp_path / "run").exists() and not (tmp_path / "j.log").exists()


def test_a_flag_prefix_is_never_taken_for_a_flag(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main([*RUN, "--out", "run", "--slu", "local"])  # argparse would have read --slurm local
    assert exc.value.code == 2 and "unrecognized arguments: --slu" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_bad_slurm_option_leaves_no_empty_output_folder(tmp_path, capsys, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.chdir(tmp_path)
    assert "--shards" in _one_line_error([*RUN, "--out", "run", "--slurm", "local", "--shards", "0"], capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("content", [b"hi\n", bytes(range(256)), b'{"op_code": 0, "worker_id": "x", "study_'])
def test_a_corrupt_optuna_journal_is_one_line(content, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "j.log").write_bytes(content)
    line = _one_line_error(["tune", "--remedy", "vae", "--latent", "2", "--trials", "1", "--epochs", "1",
                            "--n-samples", "50", "--storage", "j.log", "--quiet"], capsys)
    assert "Optuna journal" in line and (tmp_path / "j.log").read_bytes() == content
    assert not list(tmp_path.glob("best-*.toml"))


def test_a_unicode_run_or_study_name_writes_a_spec_that_reads_back(tmp_path):
    from latentbench.spec import Grid, grid_to_toml, load_grid

    path = tmp_path / "g.toml"
    path.write_text(grid_to_toml(Grid(name="\U0001f600 é\tx", remedies=["vae"], latents=["2"], seeds=[0])),
                    encoding="utf-8")
    assert load_grid(path).name == "\U0001f600 é\tx"
