"""The grid bar (cell epoch, scoring stage, grid ETA; silent with --quiet) and SIGTERM stopping like Ctrl-C."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from latentbench.cli import main
from latentbench.runner.progress import GridProgress

RUN = ["run", "--remedies", "vae", "--latents", "2,3,4", "--epochs", "3", "--n-samples", "150",
       "--iw-k", "4"]


def test_the_bar_shows_the_cell_epoch_and_scoring_stage_and_a_grid_eta_and_quiet_silences_it(tmp_path, capsys):
    argv = [*RUN[:4], "2", *RUN[5:], "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "grid run 0/1 cells" in err and "grid run 1/1 cells" in err  # named after --out
    for epoch in (1, 2, 3):
        assert f"vae z=2 s0 ep {epoch}/3" in err
    assert "vae z=2 s0 scoring sample" in err and "scoring fidelity" in err
    assert "<?" not in err.split("ep 1/3")[1].split("\r")[0]  # the ETA is known after the first epoch
    assert main([*argv, "--quiet"]) == 0  # (without --quiet even this run, all cells done, draws "0/0 cells")
    assert "grid run" not in capsys.readouterr().err


def test_progress_counts_work_inside_cells_and_drops_cells_held_elsewhere():
    p = GridProgress("g", 4, quiet=False, file=open(os.devnull, "w"))
    p.start("a", "vae z=2 s0")
    p.epoch("a", 3, 6)
    assert p.bar.n == pytest.approx(0.375)  # half of the training share of one cell
    p.stage("a", "fidelity")
    assert 0.75 < p.bar.n < 1
    p.end("a", "done")
    p.end("b", "busy")  # held by another run: not work this run does
    assert (p.finished, p.total, p.bar.n) == (1, 3, 1)
    p.close()


def _records(out: Path) -> list[Path]:
    return sorted((out / "records").glob("*.json"))


@pytest.mark.slow
def test_sigterm_stops_like_ctrl_c_with_the_resume_hint_and_exit_143(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "latentbench", *RUN, "--out", str(out), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for _ in range(6000):  # a hang guard, not a speed check
        if _records(out) or proc.poll() is not None:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143  # 128 + SIGTERM: a scheduler can tell it from Ctrl-C's 130
    assert "interrupted" in err and "Run the same command again to resume" in err
    assert "Traceback" not in err
    left = [p.name for p in (out / "records").iterdir() if p.name.startswith(".") or p.suffix == ".lock"]
    assert not left  # no temp file, no lock
    assert 1 <= len(_records(out)) < 3
    for rec in _records(out):
        assert json.loads(rec.read_text())["status"] == "ok"
