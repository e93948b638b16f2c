"""Promises of the cell leases, with real processes and PID namespaces: a cell is computed once, a dead
run's cell is taken over within the lease, nobody removes a lease that is not theirs."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from latentbench.runner.locks import CellLock
from tests.tiny import wait_for

RUN = ["run", "--remedies", "vae", "--latents", "2,3", "--epochs", "1", "--n-samples", "150", "--iw-k", "4", "--quiet"]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", **extra}


def _records(out: Path) -> list[Path]:
    return sorted((out / "records").glob("*.json"))


def _unshare() -> list[str]:
    """``unshare --pid --fork --mount-proc``, or skip where this machine cannot make PID namespaces."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", "echo $$"],
                           capture_output=True, text=True)
    if probe.returncode != 0 or probe.stdout.strip() != "1":
        pytest.skip(f"cannot create PID namespaces here (needs root or user namespaces): {probe.stderr.strip()}")
    return ["unshare", "--pid", "--fork", "--mount-proc"]


def _age(path: Path, seconds: float) -> None:
    """Set a lock's heartbeat ``seconds`` into the past, as if its owner stopped beating that long ago."""
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_a_live_lease_is_refreshed_by_its_heartbeat_and_never_taken_over(tmp_path):
    path = tmp_path / "cell.lock"
    owner = CellLock(path, lease_s=1.0)
    assert owner.acquire()
    _age(path, 10)  # ten leases without a beat, as far as the file says: only the heartbeat can renew it
    wait_for(lambda: path.stat().st_mtime > time.time() - 1, None, "a heartbeat renewing the lease")
    assert not CellLock(path, lease_s=1.0).acquire()
    assert owner.owned()
    owner.release()
    assert not path.exists()


def test_a_lease_whose_heartbeat_stopped_is_taken_over_and_its_owner_learns_it(tmp_path):
    path = tmp_path / "cell.lock"
    owner = CellLock(path, lease_s=60)
    assert owner.acquire()
    owner._stop.set()  # the owner stalls (a suspended job): its heartbeat stops
    owner._beat.join()
    _age(path, 120)
    other = CellLock(path, lease_s=60)
    assert other.acquire()
    assert not owner.owned() and other.owned()
    owner.release()  # release checks the token: the other run's lease stays
    assert path.exists() and other.owned()
    other.release()
    assert not path.exists() and not list(tmp_path.iterdir())


def test_an_unreadable_lock_is_judged_by_its_age_only(tmp_path):
    path = tmp_path / "cell.lock"
    path.write_bytes(b"")  # not a lease of ours, and too fresh to judge
    assert not CellLock(path, lease_s=60).acquire()
    _age(path, 120)
    lock = CellLock(path, lease_s=60)
    assert lock.acquire() and json.loads(path.read_bytes())["token"] == lock.token
    lock.release()


def test_resuming_a_cell_removes_its_partial_writes_and_a_killed_claims_lock_temp_file(tmp_path, tiny_cell,
                                                                                       monkeypatch):
    """A run killed while linking its lock into place leaves .tmp-<id>.lock.<token>: the next holder
    removes it with the cell's other temp files. An aside file (a judge's or a releaser's) goes only
    once its last change is older than the lease."""
    import latentbench.runner.grid as grid

    cell, records = tiny_cell(), tmp_path / "records"
    records.mkdir()
    partial = [records / f".tmp-{cell.id}.{s}.k1ll3d" for s in ("json", "pt", "samples.npz", "lock")]
    aside = [records / f".stale-{cell.id}.lock.{'a' * 32}", records / f".release-{cell.id}.lock.{'b' * 32}"]
    other = records / ".tmp-another-cell.json.x"
    for p in [*partial, *aside, other]:
        p.write_bytes(b"x")
    old = time.time() - 10_000  # a judged lock keeps its old mtime when moved aside: the ctime counts
    os.utime(aside[0], (old, old))
    grid.remove_partial_writes(tmp_path, cell)
    assert not any(p.exists() for p in partial) and all(p.exists() for p in aside) and other.exists()
    real = grid.fs_clock
    monkeypatch.setattr(grid, "fs_clock", lambda folder: real(folder) + 10_000)  # a lease later
    grid.remove_partial_writes(tmp_path, cell)
    assert not any(p.exists() for p in aside) and other.exists()


def test_a_finished_cell_whose_claim_was_killed_before_its_lock_existed_is_tidied(tmp_path, tiny_cell):
    from latentbench.runner.grid import tidy_finished

    cell, records = tiny_cell(), tmp_path / "records"
    records.mkdir()
    left = records / f".tmp-{cell.id}.lock.{'c' * 32}"
    left.write_bytes(b"x")
    tidy_finished(tmp_path, [cell])
    assert not left.exists() and not (records / f"{cell.id}.lock").exists()


def test_a_claim_whose_temp_file_the_holder_removed_is_refused_not_an_error(tmp_path, monkeypatch):
    import latentbench.runner.locks as locks

    holder = CellLock(tmp_path / "c.lock")
    assert holder.acquire()
    try:
        def link_after_removal(src, dst):  # the holder removed the claimant's temp file just before
            os.unlink(src)
            raise FileNotFoundError(src)

        monkeypatch.setattr(locks.os, "link", link_after_removal)
        assert not CellLock(tmp_path / "c.lock").acquire()
        assert holder.owned() and not list(tmp_path.glob(".tmp-*"))
    finally:
        monkeypatch.undo()
        holder.release()


def test_a_run_whose_lease_was_taken_over_writes_neither_record_nor_samples(tmp_path, tiny_cell, cpu, monkeypatch):
    import numpy as np

    import latentbench.score.sampling as sampling
    import latentbench.score.scorer as scorer
    import latentbench.training.loop as loop
    from latentbench.runner.grid import run_cell

    info = {"train_s": 0.0, "expost_s": 0.0, "epochs_run": 1, "stopped_early": False, "history": []}
    monkeypatch.setattr(loop, "train_cell", lambda cell, device, data, **k: (None, data, info))
    monkeypatch.setattr(scorer, "score_model", lambda *a, **k: ({}, {}, {}))
    monkeypatch.setattr(sampling, "sample_snapshot", lambda *a, **k: {"prior_images": np.zeros((1, 1, 8, 8))})

    class Lost:  # stalled past the lease: another run owns the cell now
        def owned(self):
            return False

    cell, records = tiny_cell(), tmp_path / "records"
    records.mkdir()
    rec = run_cell(cell, tmp_path, cpu, command="", quiet=True, compile=False, data_cache={}, lock=Lost())
    assert rec["status"] == "lost" and not list(records.iterdir())
    rec = run_cell(cell, tmp_path, cpu, command="", quiet=True, compile=False, data_cache={})
    assert rec["status"] == "ok" and (records / f"{cell.id}.samples.npz").is_file()


def test_a_cell_waited_for_and_finished_by_another_run_is_counted_as_such(tmp_path, cpu, monkeypatch):
    import latentbench.runner.grid as grid_mod
    from latentbench.spec import Grid

    outcomes = iter(["busy", "busy", "skipped"])  # held by another run twice, then finished there
    monkeypatch.setattr(grid_mod, "attempt_cell", lambda *a, **k: (next(outcomes), None))
    monkeypatch.setenv("LATENTBENCH_LEASE_S", "0.8")
    g = Grid(name="w", remedies=["vae"], latents=["2"], seeds=[0], base={"epochs": 1, "n_samples": 100})
    s = grid_mod.run_grid(g, tmp_path, cpu, quiet=True)
    assert (s["busy"], s["skipped"], s["done"]) == (1, 0, 0)


def test_a_bad_lease_setting_is_one_line(monkeypatch):
    from latentbench.errors import UserError
    from latentbench.runner.locks import lease_seconds

    monkeypatch.setenv("LATENTBENCH_LEASE_S", "soon")
    with pytest.raises(UserError, match="LATENTBENCH_LEASE_S"):
        lease_seconds()


@pytest.mark.slow
def test_a_run_killed_as_pid_1_is_resumed_by_its_successor_also_pid_1(tmp_path):
    """The container case: the killed run and its restart are both PID 1 of their namespace."""
    ns = _unshare()
    out = tmp_path / "run"
    env = _env(LATENTBENCH_LEASE_S="4")
    proc = subprocess.Popen([*ns, sys.executable, "-m", "latentbench", *RUN, "--out", str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    for _ in range(6000):  # a hang guard: until a cell is claimed
        if list((out / "records").glob("*.lock")) or proc.poll() is not None:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(_records(out)) < 2  # killed mid-grid
    rerun = subprocess.run([*ns, sys.executable, "-m", "latentbench", *RUN, "--out", str(out)], env=env,
                           capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr
    recs = [json.loads(p.read_text()) for p in _records(out)]
    assert len(recs) == 2 and all(r["status"] == "ok" for r in recs)
    assert not list((out / "records").glob("*.lock")) and not list((out / "records").glob(".tmp-*"))


@pytest.mark.slow
def test_two_runs_in_separate_pid_namespaces_compute_each_cell_once(tmp_path):
    """Both runs are PID 1 on one host name: nothing PID-based could tell them apart."""
    ns = _unshare()
    out = tmp_path / "run"
    procs = [subprocess.Popen([*ns, sys.executable, "-m", "latentbench", *RUN, "--out", str(out)], env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    done = [int(re.search(r"(\d+) cells run", o[0]).group(1)) for o in outs]
    assert sum(done) == 2 and len(_records(out)) == 2


_FAILING_GRID = """
import os, sys
from pathlib import Path
import torch
import latentbench.training.loop as loop
from latentbench.runner.grid import run_grid
from latentbench.spec import Grid

log = sys.argv[2]
def fail(cell, *a, **k):
    with open(log, "a") as f:  # one line per computation, appended atomically
        f.write(cell.id + "\\n")
    raise RuntimeError("this cell always fails")
loop.train_cell = fail
g = Grid(name="f", remedies=["vae"], latents=["2", "3", "4", "5", "6", "7", "8", "9"], seeds=[0],
         base={"epochs": 1, "n_samples": 150})
s = run_grid(g, Path(sys.argv[1]), torch.device("cpu"), quiet=True)
print(len(s["failed"]))
"""


@pytest.mark.slow
def test_concurrent_runs_whose_cells_fail_compute_each_cell_once(tmp_path):
    script = tmp_path / "failing.py"
    script.write_text(_FAILING_GRID)
    log = tmp_path / "computed.log"
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "run"), str(log)], env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    computed = log.read_text().split()
    assert len(computed) == 8 and len(set(computed)) == 8  # every failing cell computed exactly once
    assert all(o[0].strip() == "8" for o in outs)  # both runs report all 8 failures
    # a later run recomputes failures from before it started
    rerun = subprocess.run([sys.executable, str(script), str(tmp_path / "run"), str(log)], env=_env(),
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0 and len(log.read_text().split()) == 16


def test_a_signal_as_the_lock_is_linked_into_place_still_has_release_remove_it(tmp_path, monkeypatch):
    """Ctrl-C or SIGHUP landing as os.link returns: the lock is on disk, and release() removes it."""
    import latentbench.runner.locks as locks

    real = os.link

    def link_then_interrupted(src, dst):
        real(src, dst)
        raise KeyboardInterrupt

    lock = CellLock(tmp_path / "c.lock")
    monkeypatch.setattr(locks.os, "link", link_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        lock.acquire()
    monkeypatch.undo()
    assert lock.path.exists()
    lock.release()
    assert not lock.path.exists() and not list(tmp_path.iterdir())


def test_a_signal_during_the_heartbeats_start_leaves_release_working(tmp_path, monkeypatch):
    import threading

    def start_interrupted(self):
        raise KeyboardInterrupt  # before the thread ran: join() would raise RuntimeError

    lock = CellLock(tmp_path / "c.lock")
    monkeypatch.setattr(threading.Thread, "start", start_interrupted)
    with pytest.raises(KeyboardInterrupt):
        lock.acquire()
    monkeypatch.undo()
    lock.release()
    assert not lock.path.exists()


@pytest.mark.parametrize("where", ["join", "rename", "read", "unlink"])
def test_a_signal_that_lands_inside_release_still_removes_the_lock(tmp_path, monkeypatch, where):
    """Ctrl-C, SIGTERM or SIGHUP landing while release() runs (a run stopped just as a cell's record was
    written): the release is finished, then the signal raised, and no lock or aside file stays."""
    import latentbench.runner.locks as locks

    lock = CellLock(tmp_path / "c.lock")
    assert lock.acquire()
    fired = []

    def once() -> None:
        if not fired:
            fired.append(True)
            raise KeyboardInterrupt

    if where == "join":
        beat = lock._beat
        real_join = beat.join

        def join(*a, **k):
            once()
            return real_join(*a, **k)

        monkeypatch.setattr(beat, "join", join)
    elif where == "rename":
        real_rename = os.rename

        def rename(src, dst):
            real_rename(src, dst)
            once()  # as the rename returns: the lock is already aside

        monkeypatch.setattr(locks.os, "rename", rename)
    elif where == "read":
        real_read = CellLock._read

        def read(self, path=None):
            once()
            return real_read(self, path)

        monkeypatch.setattr(CellLock, "_read", read)
    else:
        real_unlink = Path.unlink

        def unlink(self, missing_ok=False):
            real_unlink(self, missing_ok=missing_ok)
            if self.name.startswith(".release-"):
                once()

        monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(KeyboardInterrupt):
        lock.release()
    monkeypatch.undo()
    assert fired and not lock.held
    assert not list(tmp_path.iterdir())
    assert CellLock(tmp_path / "c.lock").acquire()  # free for the next run

