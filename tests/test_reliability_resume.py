"""Promises about interrupted cells: a resumed cell's figures are those of an uninterrupted one (its
training time, its tracked curves), and a run that stalled past its lease writes nothing more."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from latentbench.cli import main
from latentbench.runner.locks import CellLock
from tests.tiny import wait_for

RUN = ["run", "--remedies", "vae", "--latents", "2", "--n-samples", "150", "--iw-k", "4", "--quiet"]


def _start(out: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "latentbench", *RUN, "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


_wait_for = wait_for


def test_a_resumed_cell_records_the_training_time_of_every_epoch(tiny_cell, cpu, tmp_path, monkeypatch):
    """train_s counts the epochs before the checkpoint too (a fake clock ticks once per epoch)."""
    import latentbench.training.loop as loop

    clock = [0.0]
    monkeypatch.setattr(loop.time, "perf_counter", lambda: clock[0])

    def tick() -> None:
        clock[0] += 1.0

    cell = tiny_cell(epochs=20)
    _, _, whole = loop.train_cell(cell, cpu, quiet=True, guard=tick)
    assert whole["train_s"] == 20.0

    def killed_at_13(epoch: int, stats: dict) -> None:
        if epoch == 13:
            raise KeyboardInterrupt

    ckpt = tmp_path / "cell.pt"
    with pytest.raises(KeyboardInterrupt):
        loop.train_cell(cell, cpu, checkpoint=ckpt, quiet=True, guard=tick, on_epoch=killed_at_13)
    clock[0] = 1000.0  # the resume runs later
    _, _, resumed = loop.train_cell(cell, cpu, checkpoint=ckpt, quiet=True, guard=tick)
    assert resumed["epochs_run"] == 20 and resumed["train_s"] == 20.0


@pytest.mark.slow
def test_a_run_that_stalled_past_its_lease_writes_no_checkpoint_after_the_take_over(tmp_path):
    out = tmp_path / "run"
    proc = _start(out, "--epochs", "400", env={"LATENTBENCH_LEASE_S": "2"})
    try:
        # the vae cell trains its shared first stage: the checkpoint lives in the stage's folder, the
        # cell's lease in records/
        ckpt = _wait_for(lambda: next((out / "first_stages").glob("*/checkpoint.pt"), None), proc,
                         "the first checkpoint")
        proc.send_signal(signal.SIGSTOP)  # stalled (a swapped-out node, a suspended job)
        lock = CellLock(next((out / "records").glob("*.lock")), lease_s=2)

        def expired_and_taken() -> bool:  # the stalled run's last heartbeat dated past its 2 s lease
            old = time.time() - 10
            os.utime(lock.path, (old, old))
            return lock.acquire()

        _wait_for(expired_and_taken, proc, "the take-over of the stalled run's lease")  # (SIGSTOP lands)
        assert lock.held
        try:
            taken = ckpt.read_bytes()
            proc.send_signal(signal.SIGCONT)
            # the stalled run learns it lost the lease and waits for the cell like any other busy cell
            lines = iter(proc.stderr.readline, "")
            assert any("waiting for 1 cell(s) held by other runs" in line for line in lines)
            assert ckpt.read_bytes() == taken and not lock.path.with_suffix(".json").exists()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            lock.release()
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_a_killed_and_resumed_cell_logs_one_mlflow_point_per_epoch(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out, uri = tmp_path / "run", (tmp_path / "mlruns").as_uri()
    track = ["--epochs", "40", "--track", "mlflow", "--track-uri", uri]
    proc = _start(out, *track)

    def logged() -> int:
        files = list((tmp_path / "mlruns").glob("*/*/metrics/loss"))
        return max((len(f.read_text().splitlines()) for f in files), default=0)

    _wait_for(lambda: logged() >= 13, proc, "13 epochs logged (a checkpoint at 10)", polls=30000)
    proc.kill()
    proc.wait()
    if next((out / "records").glob("*.json"), None) is not None:
        pytest.skip("the cell finished before the kill")
    monkeypatch.setenv("LATENTBENCH_LEASE_S", "1")  # the killed run's lease expires at once
    assert main([*RUN, "--out", str(out), *track]) == 0
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("run")  # named after --out
    (run,) = [r for r in client.search_runs([exp.experiment_id]) if "latentbench.cell_id" in r.data.tags]
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
    assert sorted(steps) == list(range(1, 41))
    rec = json.loads(next((out / "records").glob("*.json")).read_text())
    assert rec["status"] == "ok"
