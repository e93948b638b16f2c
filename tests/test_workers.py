"""``latentbench run --workers N``: cells in worker processes that claim them through the leases."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from latentbench.cli import main
from tests.tiny import wait_for

RUN = ["run", "--remedies", "vae", "--latents", "2,3,4", "--epochs", "2", "--n-samples", "150", "--iw-k", "4",
       "--quiet"]


def _start(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "latentbench", *RUN, "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _wait_for(cond, proc: subprocess.Popen, what: str, polls: int = 6000):
    return wait_for(cond, proc, what, polls, pause=0.05)


def _lock_pid(out: Path) -> int | None:
    """The pid of a process holding a cell's lease (the lease names it, for people)."""
    for lock in (out / "records").glob("*.lock"):
        try:
            return int(json.loads(lock.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            continue
    return None


@pytest.mark.slow
def test_two_workers_and_a_second_run_compute_every_cell_exactly_once(tmp_path):
    out = tmp_path / "run"
    workers = _start(out, "--workers", "2")
    _wait_for(lambda: _lock_pid(out), workers, "a cell claimed by a worker")  # the workers are under way
    single = _start(out)  # then a plain run on the same folder at the same time
    outputs = [p.communicate(timeout=900) for p in (workers, single)]
    assert workers.returncode == 0 and single.returncode == 0, outputs
    ran = [int(re.search(r"(\d+) cells run", o).group(1)) for o, _ in outputs]
    assert sum(ran) == 3 and ran[0] >= 1  # each cell once, and the workers computed some of them
    records = sorted((out / "records").glob("*.json"))
    assert len(records) == 3 and all(json.loads(r.read_text())["status"] == "ok" for r in records)
    assert not list((out / "records").glob("*.lock"))


@pytest.mark.slow
def test_a_killed_worker_fails_its_cell_the_grid_goes_on_and_sigterm_stops_all_workers(tmp_path):
    out = tmp_path / "run"
    proc = _start(out, "--workers", "2")
    victim = _wait_for(lambda: _lock_pid(out), proc, "a claimed cell")
    assert victim != proc.pid  # cells are computed in the workers, not in the parent
    os.kill(victim, signal.SIGKILL)

    def failed_record():
        for r in (out / "records").glob("*.json"):
            rec = json.loads(r.read_text())
            if rec["status"] == "failed":
                return rec
        return None

    rec = _wait_for(failed_record, proc, "the dead worker's failed record")
    assert "worker process computing this cell died (killed by signal SIGKILL)" in rec["error"]
    others = _wait_for(lambda: [p for p in (_lock_pid(out),) if p and p != victim], proc, "a cell after the death")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143
    assert "Run the same command again to resume" in err and "Traceback" not in err
    assert not list((out / "records").glob("*.lock")) and not list((out / "records").glob(".tmp-*"))
    for pid in others:  # every worker has exited
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def _lock_pids(out: Path) -> set[int]:
    pids = set()
    for lock in (out / "records").glob("*.lock"):
        try:
            pids.add(int(json.loads(lock.read_text())["pid"]))
        except (OSError, ValueError, KeyError):
            continue
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _until(cond, what: str, polls: int = 1200):
    for _ in range(polls):
        if got := cond():
            return got
        time.sleep(0.05)
    pytest.fail(f"no {what} after {polls} polls")


@pytest.mark.slow
def test_killing_the_parent_stops_its_workers_and_records_no_failure(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "latentbench", *RUN, "--epochs", "400", "--out", str(out),
                             "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pids = _wait_for(lambda: (p := _lock_pids(out)) and len(p) == 2 and p, proc, "two cells claimed by workers")
    proc.kill()
    proc.wait()
    _until(lambda: not any(_alive(p) for p in pids), "exit of the orphaned workers")
    left = sorted(p.name for p in (out / "records").iterdir() if p.suffix in (".json", ".lock") or p.name[:5] == ".tmp-")
    assert left == []  # no "failed" record for the parent's death, no lease or temp file left


@pytest.mark.slow  # worker processes: the full suite
def test_ctrl_c_stops_the_workers_without_a_traceback(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "latentbench", *RUN, "--epochs", "400", "--out", str(out),
                             "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    _wait_for(lambda: len(_lock_pids(out)) == 2, proc, "two cells claimed by workers")
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "race condition" not in err and "Run the same command again" in err
    assert not list((out / "records").glob("*.lock")) and not list((out / "records").glob("*.json"))


def test_workers_below_one_is_one_line(tmp_path, capsys):
    assert main([*RUN, "--out", str(tmp_path / "run"), "--workers", "0"]) == 2
    assert "bad --workers 0" in capsys.readouterr().err


def _dead_slot(cell, token, *, force=False):
    from types import SimpleNamespace

    return SimpleNamespace(cell=cell, token=token, force=force, proc=SimpleNamespace(exitcode=-signal.SIGKILL),
                           handed_at=time.time() - 1, started=time.time() - 1)


def _write_lock(path: Path, token: str) -> None:
    path.write_text(json.dumps({"token": token, "host": "h", "pid": 1}))


def test_a_worker_that_died_after_writing_its_record_keeps_it_and_counts_the_cell(tmp_path, tiny_cell, cpu):
    from latentbench.runner import workers as w
    from latentbench.runner.progress import GridProgress
    from latentbench.runner.records import make_record, provenance, read_record, write_record

    cell, records = tiny_cell(), tmp_path / "records"
    records.mkdir()
    write_record(records / f"{cell.id}.json", make_record(cell, status="ok", metrics={"fid_prior": 1.0},
                                                          prov=provenance(cpu, "", time.time())))
    _write_lock(records / f"{cell.id}.lock", "t1")
    counts, queue = {"done": 0, "skipped": 0, "busy": 0, "failed": []}, w._Queue([], False)
    assert w._record_dead(_dead_slot(cell, "t1"), queue, tmp_path, cpu, "", GridProgress("g", 1, quiet=True), counts)
    assert counts["done"] == 1 and not counts["failed"] and not queue
    assert read_record(records / f"{cell.id}.json")["status"] == "ok"
    assert not (records / f"{cell.id}.lock").exists()  # its own lease is freed


def test_a_dead_worker_fails_its_cell_only_while_its_lease_is_on_disk(tmp_path, tiny_cell, cpu):
    from latentbench.runner import workers as w
    from latentbench.runner.progress import GridProgress
    from latentbench.runner.records import read_record

    cell, records = tiny_cell(), tmp_path / "records"
    records.mkdir()
    lock, progress = records / f"{cell.id}.lock", GridProgress("g", 1, quiet=True)
    counts, queue = {"done": 0, "skipped": 0, "busy": 0, "failed": []}, w._Queue([], False)
    _write_lock(lock, "other-run")  # the lease was taken over by another run: not this worker's to fail
    assert not w._record_dead(_dead_slot(cell, "t1"), queue, tmp_path, cpu, "", progress, counts)
    assert not (records / f"{cell.id}.json").exists() and json.loads(lock.read_text())["token"] == "other-run"
    assert queue.next() == (cell, False) and not counts["failed"]
    _write_lock(lock, "t1")  # still its lease: the cell is recorded as failed and the lease freed
    assert w._record_dead(_dead_slot(cell, "t1"), queue, tmp_path, cpu, "", progress, counts)
    rec = read_record(records / f"{cell.id}.json")
    assert rec["status"] == "failed" and "killed by signal SIGKILL" in rec["error"] and not lock.exists()
    assert [f["id"] for f in counts["failed"]] == [cell.id]


def test_any_error_in_the_parent_stops_the_workers(tmp_path, tiny_cell, cpu, monkeypatch):
    from latentbench.runner import workers as w

    stopped = []
    real_stop = w._stop_all
    monkeypatch.setattr(w, "_stop_all", lambda slots, folder: (stopped.extend(slots), real_stop(slots, folder)))

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(w, "wait", boom)
    with pytest.raises(RuntimeError, match="boom"):
        w.run_workers([tiny_cell()], tmp_path, cpu, workers=1, quiet=True)
    assert stopped and not any(s.proc.is_alive() for s in stopped)



def test_a_stop_signal_as_a_worker_starts_still_reaches_that_worker(tmp_path, cpu, monkeypatch, capfd):
    """A Ctrl-C, SIGTERM or SIGHUP landing just as a worker process starts: the worker is registered
    before the signal is raised, so the stop reaches it (no orphan that finds its parent gone as it
    starts and prints a traceback), and the parent's handlers are its own again."""
    import multiprocessing as mp

    from latentbench.runner import workers as w

    real_start = mp.context.SpawnProcess.start

    def start_then_signal(self):
        real_start(self)
        os.kill(os.getpid(), signal.SIGINT)  # as the process starts, before the slot is registered

    monkeypatch.setattr(mp.context.SpawnProcess, "start", start_then_signal)
    before = {sig: signal.getsignal(sig) for sig in w._STOPS}
    slots: list = []
    args = (str(tmp_path), "cpu", {"command": "", "compile": False, "since": None, "shared": True}, None, 1)
    with pytest.raises(KeyboardInterrupt):
        w._spawn(mp.get_context("spawn"), 0, args, slots)
    monkeypatch.undo()
    assert len(slots) == 1 and {sig: signal.getsignal(sig) for sig in w._STOPS} == before
    w._stop_all(slots, tmp_path)
    assert not slots[0].proc.is_alive() and slots[0].proc.exitcode in (130, -signal.SIGTERM)
    assert "Traceback" not in capfd.readouterr().err


def test_a_stop_signal_as_a_dead_workers_failure_is_recorded_still_frees_its_lease(tmp_path, tiny_cell, cpu,
                                                                                   monkeypatch):
    from latentbench.runner import workers as w
    from latentbench.runner.progress import GridProgress
    from latentbench.runner.records import read_record

    cell, records = tiny_cell(), tmp_path / "records"
    records.mkdir()
    lock = records / f"{cell.id}.lock"
    _write_lock(lock, "t1")
    real = w.write_record

    def written_then_interrupted(path, rec):
        real(path, rec)
        raise KeyboardInterrupt  # the stop lands as the failed record is written

    monkeypatch.setattr(w, "write_record", written_then_interrupted)
    counts, queue = {"done": 0, "skipped": 0, "busy": 0, "failed": []}, w._Queue([], False)
    with pytest.raises(KeyboardInterrupt):
        w._record_dead(_dead_slot(cell, "t1"), queue, tmp_path, cpu, "", GridProgress("g", 1, quiet=True), counts)
    assert read_record(records / f"{cell.id}.json")["status"] == "failed" and not lock.exists()
