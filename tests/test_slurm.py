"""``latentbench run --slurm``: the grid as a submitit job array; submitit's local executor is the tested path."""

import json
import sys

import pytest

from latentbench.cli import main
from latentbench.errors import UserError
from latentbench.runner.slurm import parse_slurm, task_argv

RUN = ["run", "--remedies", "vae", "--latents", "2,3", "--epochs", "2", "--n-samples", "150", "--iw-k", "4"]


def test_slurm_options_map_to_submitit_parameters():
    cluster, params = parse_slurm("partition=gpu,gpus=1,time=90,mem=32,cpus=8,account=lab,parallel=4,exclude=n1")
    assert cluster == "slurm"
    assert params == {"slurm_partition": "gpu", "gpus_per_node": 1, "timeout_min": 90, "mem_gb": 32.0,
                      "cpus_per_task": 8, "slurm_account": "lab", "slurm_array_parallelism": 4,
                      "slurm_exclude": "n1"}
    assert parse_slurm("local,time=5") == ("local", {"timeout_min": 5})
    for bad in ("partition", "gpus=one", "=3"):
        with pytest.raises(UserError, match="--slurm"):
            parse_slurm(bad)


def test_array_tasks_run_the_command_without_the_submission_flags(tmp_path):
    argv = ["run", "spec.toml", "--slurm", "partition=gpu", "--shards=4", "--wait", "--out", "runs/x", "--workers", "2"]
    assert task_argv(argv, tmp_path) == ["run", "spec.toml", "--workers", "2", "--out", str(tmp_path.resolve()),
                                         "--quiet"]


@pytest.mark.slow
def test_a_grid_submitted_to_the_local_executor_runs_one_shard_per_task(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*RUN, "--out", str(out), "--slurm", "local", "--shards", "2", "--wait"]) == 0
    printed = capsys.readouterr().out
    assert "submitted 2 cells as 2 local tasks" in printed and "| vae" in printed  # and then the board
    records = [json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))]
    assert len(records) == 2 and all(r["status"] == "ok" for r in records)
    shards = sorted(r["provenance"]["command"].split("--shard ")[1] for r in records)
    assert shards == ["0/2", "1/2"]
    assert len(list((out / "slurm").glob("*_log.out"))) == 2
    # the same command again resumes: nothing left to compute
    assert main([*RUN, "--out", str(out), "--slurm", "local", "--shards", "2", "--wait"]) == 0
    assert [json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))] == records


@pytest.mark.parametrize("argv, msg", [
    (["--shards", "4"], "--shards needs --slurm"),
    (["--slurm", "local", "--shard", "0/2"], "--slurm splits the grid itself"),
    (["--slurm", "partition=gpu,gpus=1"], "sbatch is not on PATH"),
    (["--slurm", "local", "--force"], "--force cannot go with --slurm"),
])
def test_cluster_mistakes_are_one_line(argv, msg, tmp_path, capsys):
    assert main([*RUN, "--out", str(tmp_path / "run"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0]
    assert not list((tmp_path / "run").rglob("*"))  # nothing written: no grid file, no log folder


def test_missing_submitit_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if it were not installed
    assert main([*RUN, "--out", str(tmp_path / "run"), "--slurm", "local"]) == 2
    assert 'pip install "latentbench[slurm]"' in capsys.readouterr().err
    assert not list((tmp_path / "run").rglob("*"))  # no grid file, no log folder


@pytest.mark.slow
def test_ctrl_c_with_slurm_local_wait_stops_the_tasks_without_a_traceback(tmp_path):
    pytest.importorskip("submitit")
    import glob
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-m", "latentbench", "run", "--remedies", "vae", "--latents", "2,4",
                             "--epochs", "400", "--n-samples", "100", "--iw-k", "2", "--quiet", "--out", str(out),
                             "--slurm", "local", "--wait"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    for _ in range(6000):  # both tasks hold their cells
        if len(glob.glob(str(out / "records" / "*.lock"))) == 2 or proc.poll() is not None:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole process group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err and "the local tasks were stopped" in err, err
