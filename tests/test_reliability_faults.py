"""Fault scenarios: broken inputs to score / diagnose / leaderboard, skewed clocks, leftovers of kills,
concurrent --force runs. Each is one line or a recomputation, never a traceback or a stuck cell."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from latentbench.cli import main
from latentbench.runner.locks import CellLock
from tests.tiny import TINY


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    """A copy of the finished run to break: (folder, record, checkpoint)."""
    out, rec, ckpt = tiny_run
    shutil.copytree(out, tmp_path / "run")
    r = tmp_path / "run" / "records" / rec.name
    return tmp_path / "run", r, r.with_suffix(".pt")


def _one_line(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("latentbench: error: ") and "Traceback" not in err[0], err
    return err[0]


def _rerun(out: Path, capsys) -> tuple[int, int]:
    capsys.readouterr()
    assert main([*TINY, "--out", str(out)]) == 0
    m = re.search(r"(\d+) cells run, (\d+) already done", capsys.readouterr().out)
    return int(m.group(1)), int(m.group(2))


# ---- broken checkpoints -----------------------------------------------------------------------------
def _broken(ckpt: Path, tmp_path: Path, how: str) -> Path:
    payload = torch.load(ckpt, weights_only=False)
    if how == "schema":
        payload["schema"] = "x"
    elif how == "cell":
        payload["cell"]["latent"] = "nope"
    elif how == "shape":
        key = next(k for k, v in payload["model"].items() if v.ndim == 2)
        payload["model"][key] = torch.zeros(3, 3)
    elif how == "nan":
        key = next(k for k, v in payload["model"].items() if v.is_floating_point())
        payload["model"][key] = torch.full_like(payload["model"][key], float("nan"))
    path = tmp_path / f"{how}.pt"
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("how", ["schema", "cell", "shape", "nan"])
def test_a_broken_checkpoint_given_to_score_or_diagnose_is_one_line(tiny_run, tmp_path, capsys, how):
    bad = _broken(tiny_run[2], tmp_path, how)
    for cmd in (["score", str(bad), "--quiet"], ["diagnose", str(bad), "--quiet"]):
        assert str(bad) in _one_line(cmd, capsys)


def test_a_truncated_checkpoint_is_retrained_not_failed_for_good(run_copy, capsys):
    out, rec, ckpt = run_copy
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # a kill or a full disk mid-write, before the record
    rec.unlink()
    assert _rerun(out, capsys) == (1, 0)
    assert json.loads(rec.read_text())["status"] == "ok" and torch.load(ckpt, weights_only=False)["complete"]


# ---- diagnose ---------------------------------------------------------------------------------------
def test_diagnose_given_a_record_names_its_checkpoint(tiny_run, capsys):
    _, rec, ckpt = tiny_run
    line = _one_line(["diagnose", str(rec), "--quiet"], capsys)
    assert "is a record, not a checkpoint" in line and str(ckpt) in line and "delete" not in line


def test_diagnose_out_that_is_a_file_or_read_only_is_one_line(tiny_run, tmp_path, capsys):
    ckpt = tiny_run[2]
    (tmp_path / "file").write_text("x")
    assert "is a file" in _one_line(["diagnose", str(ckpt), "--out", str(tmp_path / "file")], capsys)
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        assert "not writable" in _one_line(["diagnose", str(ckpt), "--out", str(ro / "d")], capsys)


# ---- corrupt sample snapshots -----------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"not a zip", None])
@pytest.mark.slow
def test_a_corrupt_samples_file_costs_a_plot_not_the_board(run_copy, tmp_path, capsys, content):
    out, rec, _ = run_copy
    npz = rec.with_suffix(".samples.npz")
    if content is None:
        np.savez(npz, prior_images=np.zeros(3), post_images=np.zeros(3))  # arrays of the wrong shape
    else:
        npz.write_bytes(content)
    assert main(["leaderboard", str(out), "--plots", str(tmp_path / "plots")]) == 0
    assert "skipped the samples in" in capsys.readouterr().err
    assert main(["publish", str(out), "--name", "b", "--dest", str(tmp_path / "boards")]) == 0
    assert (tmp_path / "boards" / "b" / "README.md").is_file()


# ---- locks ------------------------------------------------------------------------------------------
def test_a_folder_where_a_lock_belongs_is_one_line(run_copy, capsys):
    out, rec, _ = run_copy
    rec.unlink()
    rec.with_suffix(".lock").mkdir()
    assert "is a folder where a cell's lock file belongs" in _one_line([*TINY, "--out", str(out)], capsys)


def test_a_dead_runs_lock_dated_in_the_future_expires_within_the_lease(tmp_path):
    path = tmp_path / "c.lock"
    dead = CellLock(path, lease_s=1.0)
    assert dead.acquire()
    dead._stop.set()  # the run died: no more heartbeats
    future = time.time() + 3600
    os.utime(path, (future, future))
    other = CellLock(path, lease_s=1.0)
    assert not other.acquire()  # capped at now: a fresh heartbeat, not one an hour ahead
    assert path.stat().st_mtime <= time.time() + 1
    old = path.stat().st_mtime - 1.5  # one lease and a half pass with no heartbeat
    os.utime(path, (old, old))
    assert other.acquire()
    assert other.held and other.owned() and not dead.owned()
    other.release()


@pytest.mark.slow
def test_a_failed_record_dated_in_the_future_is_recomputed(run_copy, capsys):
    out, rec, _ = run_copy
    failed = json.loads(rec.read_text())
    failed.update(status="failed", error="boom", metrics={})
    rec.write_text(json.dumps(failed))
    rec.with_suffix(".pt").unlink()
    future = time.time() + 3600
    os.utime(rec, (future, future))
    assert _rerun(out, capsys) == (1, 0)
    assert json.loads(rec.read_text())["status"] == "ok"


@pytest.mark.slow
def test_a_finished_cells_stale_lock_and_temp_files_are_removed(run_copy, capsys, monkeypatch):
    out, rec, ckpt = run_copy
    lock = CellLock(rec.with_suffix(".lock"), lease_s=1.0)
    assert lock.acquire()
    lock._stop.set()  # SIGKILL between the record and the release
    tmp = ckpt.with_name(f".tmp-{ckpt.name}.k1ll3d")
    tmp.write_bytes(b"")
    old = time.time() - 10
    os.utime(lock.path, (old, old))
    monkeypatch.setenv("LATENTBENCH_LEASE_S", "2")
    assert _rerun(out, capsys) == (0, 1)
    assert not lock.path.exists() and not tmp.exists()


# ---- --force ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_force_killed_mid_cell_never_leaves_a_record_without_its_checkpoint(run_copy, capsys, monkeypatch):
    out, rec, ckpt = run_copy
    proc = subprocess.Popen([sys.executable, "-m", "latentbench", *TINY, "--out", str(out), "--force"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(6000):  # killed as soon as it holds the cell
        if rec.with_suffix(".lock").exists() or proc.poll() is not None:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not rec.exists() or ckpt.exists()  # a record never outlives the checkpoint it was computed with
    old = time.time() - 3600  # the killed run's lease has long expired
    for lock in (out / "records").glob("*.lock"):
        os.utime(lock, (old, old))
    capsys.readouterr()
    assert main([*TINY, "--out", str(out)]) == 0
    assert rec.exists() and ckpt.exists()
    assert not [p.name for p in rec.parent.iterdir() if p.suffix == ".lock" or p.name.startswith(".tmp-")]


@pytest.mark.slow
def test_two_force_runs_at_once_compute_each_cell_once(tmp_path):
    out = tmp_path / "run"
    grid = [*TINY[:4], "2,3,4", *TINY[5:]]
    assert main([*grid, "--out", str(out)]) == 0
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "latentbench", *grid, "--out", str(out), "--force"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    ran = [int(re.search(r"(\d+) cells run", o).group(1)) for o, _ in outs]
    assert sum(ran) == 3, outs  # each cell recomputed once between the two
