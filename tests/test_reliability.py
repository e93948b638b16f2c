"""Faults with real subprocesses and real signals: nothing finished is lost, nothing half-written stays."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from latentbench.cli import main
from latentbench.errors import UserError
from latentbench.runner.grid import CellLock

RUN = ["run", "--remedies", "vae", "--latents", "2,3,4,5,6", "--epochs", "3", "--n-samples", "150", "--quiet"]


def _start(out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "latentbench", *RUN, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _records(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "records").glob("*.json"))}


def _wait_for_records(out: Path, n: int, proc: subprocess.Popen, polls: int = 6000) -> None:
    """Poll until the run has written ``n`` records (a hang guard, not a speed check)."""
    for _ in range(polls):
        if len(_records(out)) >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended before writing {n} records: {proc.communicate()}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"no {n} records after {polls} polls")


def test_sigkill_mid_grid_then_rerun_keeps_finished_records_byte_identical(tmp_path):
    out = tmp_path / "run"
    proc = _start(out)
    _wait_for_records(out, 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _records(out)
    assert 2 <= len(before) < 5
    assert main([*RUN, "--out", str(out)]) == 0
    after = _records(out)
    assert len(after) == 5
    for name, data in before.items():
        assert after[name] == data
    assert not list((out / "records").glob(".tmp-*")) and not list((out / "records").glob("*.lock"))


def test_sigint_stops_cleanly_and_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    proc = _start(out)
    _wait_for_records(out, 1, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "interrupted" in err and "Run the same command again to resume" in err
    assert "Traceback" not in err
    assert not list((out / "records").glob(".tmp-*")) and not list((out / "records").glob("*.lock"))
    for data in _records(out).values():
        assert json.loads(data)["status"] == "ok"


def test_two_runs_on_one_folder_never_compute_the_same_cell(tmp_path):
    out = tmp_path / "run"
    procs = [_start(out) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    done = [int(re.search(r"(\d+) cells run", o[0]).group(1)) for o in outs]
    assert sum(done) == 5  # every cell computed exactly once between the two
    assert len(_records(out)) == 5


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    lock = tmp_path / "cell.lock"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "time": time.time()}))
    assert CellLock(lock).acquire()
    live = tmp_path / "live.lock"
    live.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}))
    assert not CellLock(live).acquire()


def test_out_of_memory_is_recorded_as_failed(tmp_path, cpu, monkeypatch):
    import latentbench.training.loop as train_mod
    from latentbench.runner.grid import run_grid
    from latentbench.spec import Grid

    def oom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(train_mod, "fit", oom)
    g = Grid(name="o", remedies=["vae"], latents=["2"], seeds=[0], base={"epochs": 1, "n_samples": 100})
    s = run_grid(g, tmp_path, cpu, quiet=True)
    assert s["failed"][0]["status"] == "failed" and s["failed"][0]["error"].startswith("out of memory")


def test_failed_cells_make_the_exit_code_nonzero_with_a_summary(tmp_path, capsys):
    from tests.test_bench import _register_nan_remedy

    _register_nan_remedy()
    code = main(["run", "--remedies", "test_nan,vae", "--latents", "2", "--epochs", "2", "--n-samples", "100",
                 "--out", str(tmp_path), "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert "1 cell(s) failed" in err and "non-finite loss at epoch 1" in err


@pytest.mark.parametrize("argv,msg", [
    (["train", "--dataset", "mnistt"], "unknown dataset 'mnistt'; did you mean 'mnist'?"),
    (["train", "--arch", "convv"], "unknown net 'convv'; did you mean 'conv'?"),
    (["leaderboard", ".", "--metric", "fid_prior"], "no records found"),
    (["train", "--dataset", "mnist", "--data-root", "/nonexistent/lb"], "--download"),
])
def test_more_input_errors_are_one_line(argv, msg, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv + ["--quiet"] if argv[0] != "leaderboard" else argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0]
    assert not (tmp_path / "runs").exists()


def test_unknown_metric_suggests_the_closest(tmp_path):
    from latentbench.registry import METRICS

    with pytest.raises(UserError, match="unknown metric 'fid_prio'; did you mean 'fid_prior'"):
        METRICS.get("fid_prio")


def test_a_plugin_that_fails_at_registration_is_reported_once_and_left_out(tmp_path, monkeypatch, capsys):
    from latentbench.registry import Registry

    dist = tmp_path / "clash-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: clash\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[latentbench.clash]\nvae = json:dumps\nBad-Name = json:loads\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    r = Registry("remedy", "latentbench.clash")
    builtin = object()
    r.register("vae", builtin)
    assert r.names() == ["vae"] and r.get("vae") is builtin
    err = capsys.readouterr().err
    assert "'vae'" in err and "already registered" in err and "Bad-Name" in err


def test_newer_checkpoint_schema_is_refused_and_a_corrupt_one_named(tiny_cell, cpu, tmp_path):
    from latentbench.training.checkpoint import load_checkpoint
    from latentbench.training.loop import train_cell

    ckpt = tmp_path / "c.pt"
    train_cell(tiny_cell(epochs=1), cpu, checkpoint=ckpt, quiet=True)
    payload = torch.load(ckpt, weights_only=False)
    payload["schema"] = 42
    torch.save(payload, ckpt)
    with pytest.raises(UserError, match="checkpoint schema 42 is newer"):
        load_checkpoint(ckpt)
    ckpt.write_bytes(b"garbage")
    with pytest.raises(UserError, match="c.pt: not a readable latentbench checkpoint"):
        load_checkpoint(ckpt)


def test_a_lock_being_written_is_not_mistaken_for_a_stale_one(tmp_path):
    lock = tmp_path / "cell.lock"
    lock.write_bytes(b"")  # another process's lock, caught between create and write
    assert not CellLock(lock).acquire()
    old = time.time() - 120
    os.utime(lock, (old, old))  # unreadable for two minutes: its writer died
    assert CellLock(lock).acquire()
