"""The reliability promises, one test each: nothing finished is lost, nothing is counted twice, nothing
half-written stays, and only the grid's own run can finish its cell. Leases and PID namespaces are in
test_reliability_locks.py, one-line errors in test_reliability_errors.py, files and full disks in
test_reliability_disk.py."""

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
from tests.tiny import TINY

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


def _rerun_counts(out: Path, capsys) -> tuple[int, int]:
    capsys.readouterr()
    assert main([*TINY, "--out", str(out)]) == 0
    line = capsys.readouterr().out
    m = re.search(r"(\d+) cells run, (\d+) already done", line)
    return int(m.group(1)), int(m.group(2))


# ---- kills and signals ------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigkill_mid_grid_then_rerun_keeps_finished_records_byte_identical(tmp_path, monkeypatch):
    out = tmp_path / "run"
    proc = _start(out)
    _wait_for_records(out, 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _records(out)
    assert 2 <= len(before) < 5
    monkeypatch.setenv("LATENTBENCH_LEASE_S", "2")  # the killed run's lease expires soon
    assert main([*RUN, "--out", str(out)]) == 0
    after = _records(out)
    assert len(after) == 5
    for name, data in before.items():
        assert after[name] == data
    assert not list((out / "records").glob(".tmp-*")) and not list((out / "records").glob("*.lock"))


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGHUP, 129)])
@pytest.mark.slow
def test_sigint_or_sighup_stops_cleanly_and_says_how_to_resume(tmp_path, sig, code):
    out = tmp_path / "run"
    proc = _start(out)
    _wait_for_records(out, 1, proc)
    proc.send_signal(sig)  # SIGHUP: the terminal or ssh session closed
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "interrupted" in err and "Run the same command again to resume" in err
    assert "Traceback" not in err
    assert not list((out / "records").glob(".tmp-*")) and not list((out / "records").glob("*.lock"))
    for data in _records(out).values():
        assert json.loads(data)["status"] == "ok"


@pytest.mark.slow
def test_two_runs_on_one_folder_never_compute_the_same_cell(tmp_path):
    out = tmp_path / "run"
    procs = [_start(out) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    done = [int(re.search(r"(\d+) cells run", o[0]).group(1)) for o in outs]
    assert sum(done) == 5  # every cell computed exactly once between the two
    assert len(_records(out)) == 5


@pytest.mark.slow
def test_a_temp_file_left_by_a_kill_is_removed_when_the_cell_resumes(tiny_run, capsys):
    out, rec, ckpt = tiny_run
    leftover = ckpt.with_name(f".tmp-{ckpt.name}.k1ll3d")
    leftover.write_bytes(b"\0" * 1000)
    rec.unlink()  # the kill came before the record
    assert _rerun_counts(out, capsys) == (1, 0)
    assert not leftover.exists() and rec.is_file()


# ---- records: only the grid's own run finishes its cell ---------------------------------------------
@pytest.mark.slow
def test_a_record_without_a_cell_is_corrupt_never_finished(tiny_run, capsys):
    out, rec, _ = tiny_run
    good = rec.read_bytes()
    rec.write_text(json.dumps({"schema": 1, "status": "ok"}))
    try:
        assert main(["leaderboard", str(out), "--skip-bad"]) == 2  # skipped, so no record left to show
        err = capsys.readouterr().err
        assert "corrupt record (no cell)" in err and "KeyError" not in err
        assert _rerun_counts(out, capsys) == (1, 0)  # recomputed, not taken as finished
        assert json.loads(rec.read_text())["cell"]["latent"] == "2"
    finally:
        rec.write_bytes(good)


def test_a_record_of_a_newer_schema_is_refused_by_run_and_never_overwritten(tiny_run, capsys):
    out, rec, _ = tiny_run
    good = rec.read_bytes()
    newer = {**json.loads(good), "schema": 99}
    rec.write_text(json.dumps(newer))
    try:
        assert main([*TINY, "--out", str(out)]) == 2
        assert "record schema 99 is newer" in capsys.readouterr().err
        assert json.loads(rec.read_text())["schema"] == 99
    finally:
        rec.write_bytes(good)


@pytest.mark.slow
def test_a_record_written_by_score_never_counts_as_the_cell(tiny_run, capsys):
    out, rec, _ = tiny_run
    good = rec.read_bytes()
    rescored = json.loads(good)
    rescored["origin"] = "score"
    rec.write_text(json.dumps(rescored))
    try:
        assert _rerun_counts(out, capsys) == (1, 0)
        assert json.loads(rec.read_text())["origin"] == "run"
    finally:
        rec.write_bytes(good)


@pytest.mark.slow
def test_a_record_of_another_cell_never_counts_as_this_one(tiny_run, capsys):
    out, rec, _ = tiny_run
    good = rec.read_bytes()
    other = json.loads(good)
    other["cell"]["epochs"] = 30
    other.pop("id")
    rec.write_text(json.dumps(other))
    try:
        assert _rerun_counts(out, capsys) == (1, 0)
    finally:
        rec.write_bytes(good)


# ---- re-scoring -------------------------------------------------------------------------------------
def test_score_writes_beside_the_run_and_never_replaces_its_record(tiny_run, capsys):
    out, rec, ckpt = tiny_run
    good = rec.read_bytes()
    assert main(["score", str(ckpt), "--n", "50", "--iw-k", "2", "--quiet"]) == 0
    written = Path(re.search(r"record: (\S+)", capsys.readouterr().out).group(1))
    assert written.parent == out / "rescored" and json.loads(written.read_text())["origin"] == "score"
    assert rec.read_bytes() == good
    assert main(["score", str(ckpt), "--quiet", "--out", str(rec)]) == 2
    line = capsys.readouterr().err
    assert "inside a run's records/" in line and rec.read_bytes() == good
    assert _rerun_counts(out, capsys) == (0, 1)


def test_score_refuses_an_unfinished_checkpoint_unless_asked(tiny_run, tmp_path, capsys):
    _, _, ckpt = tiny_run
    payload = torch.load(ckpt, weights_only=False)
    payload.update(complete=False, epoch=1)
    partial = tmp_path / "records" / "partial.pt"
    partial.parent.mkdir()
    torch.save(payload, partial)
    assert main(["score", str(partial), "--quiet"]) == 2
    assert "training stopped at epoch 1 of 2" in capsys.readouterr().err
    assert not (tmp_path / "rescored").exists()
    assert main(["score", str(partial), "--quiet", "--n", "50", "--iw-k", "2", "--allow-incomplete"]) == 0
    (written,) = (tmp_path / "rescored").glob("*.json")
    rec = json.loads(written.read_text())
    assert ".epoch1." in written.name and rec["extras"]["checkpoint"] == {
        "path": str(partial), "epoch": 1, "complete": False}


# ---- broken files -----------------------------------------------------------------------------------
def test_a_corrupt_checkpoint_names_the_file_and_the_fix(tiny_cell, cpu, tmp_path):
    from latentbench.training.checkpoint import load_checkpoint
    from latentbench.training.loop import train_cell

    ckpt = tmp_path / "c.pt"
    train_cell(tiny_cell(epochs=1, net={"hidden": [16]}), cpu, checkpoint=ckpt, quiet=True)
    payload = torch.load(ckpt, weights_only=False)
    payload["schema"] = 42
    torch.save(payload, ckpt)
    with pytest.raises(UserError, match="checkpoint schema 42 is newer"):
        load_checkpoint(ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:100])  # truncated
    with pytest.raises(UserError, match=r"c\.pt: not a readable latentbench checkpoint.*delete it to retrain"):
        load_checkpoint(ckpt)


def test_a_truncated_feature_cache_file_is_named_and_retrained(cpu, capsys):
    from latentbench.data import load_data
    from latentbench.score.features import ensure_classifier

    data = load_data("digits", seed=0)
    path, _ = ensure_classifier(data, cpu)
    path.write_bytes(path.read_bytes()[:64])
    again, meta = ensure_classifier(data, cpu)
    assert again == path and not meta["cached"]
    err = capsys.readouterr().err
    assert str(path) in err and "retraining it" in err
    torch.load(path, weights_only=False)  # whole again


# ---- failures are recorded ----------------------------------------------------------------------------
@pytest.mark.parametrize("exc", [
    torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you "
                 "tried to allocate 204800000000 bytes. Error code 12 (Cannot allocate memory)"),
])
def test_out_of_memory_is_recorded_as_out_of_memory(exc, tmp_path, cpu, monkeypatch):
    import latentbench.training.loop as train_mod
    from latentbench.runner.grid import run_grid
    from latentbench.spec import Grid

    def oom(*a, **k):
        raise exc

    monkeypatch.setattr(train_mod, "fit", oom)
    g = Grid(name="o", remedies=["vae"], latents=["2"], seeds=[0], base={"epochs": 1, "n_samples": 100})
    s = run_grid(g, tmp_path, cpu, quiet=True)
    assert s["failed"][0]["status"] == "failed" and s["failed"][0]["error"].startswith("out of memory: ")


def test_failed_cells_make_the_exit_code_nonzero_with_a_summary(tmp_path, capsys):
    from tests.test_bench import _register_nan_remedy

    _register_nan_remedy()
    code = main(["run", "--remedies", "test_nan,vae", "--latents", "2", "--epochs", "2", "--n-samples", "100",
                 "--out", str(tmp_path), "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert "1 cell(s) failed" in err and "non-finite loss at epoch 1" in err
