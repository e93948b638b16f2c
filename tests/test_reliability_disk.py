"""Promises about files: written with the user's umask; on a full disk a write fails with one line and
leaves nothing half-written (no temp file, no 0-byte image or lock); a grid whose record cannot be
written goes on. Disk-full cases use a real, small tmpfs."""

import os
import stat
import subprocess
from pathlib import Path

import pytest

from latentbench.atomic import WriteError, atomic_savefig, atomic_write_text
from latentbench.runner.locks import CellLock


@pytest.fixture
def small_disk(tmp_path):
    """A 512 KiB tmpfs (skipped where mounting is not allowed)."""
    where = tmp_path / "disk"
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(where)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=True)


def _fill(disk: Path) -> Path:
    """Fill the disk to the last byte."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (65536, 4096, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                continue
    finally:
        os.close(fd)
    return filler


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith(".tmp-") or
                  (p.is_file() and p.stat().st_size == 0))


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o027, 0o640)])
def test_written_files_get_the_users_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        atomic_write_text(tmp_path / "r.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == mode


def test_a_write_to_a_full_disk_is_one_line_and_leaves_no_temp_file(small_disk):
    _fill(small_disk)
    with pytest.raises(WriteError) as err:
        atomic_write_text(small_disk / "records" / "r.json", "x" * 100_000)
    assert str(err.value).count("\n") == 0 and "No space left on device" in str(err.value)
    assert "free space" in str(err.value)
    assert _leftovers(small_disk) == [] and not (small_disk / "records" / "r.json").exists()


def test_a_plot_on_a_full_disk_leaves_no_empty_png(small_disk):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _fill(small_disk)
    fig, ax = plt.subplots()
    ax.plot(range(100))
    with pytest.raises(WriteError, match="No space left"):
        atomic_savefig(fig, small_disk / "plot.png", dpi=110)
    plt.close(fig)
    assert not (small_disk / "plot.png").exists() and _leftovers(small_disk) == []


def test_a_lock_on_a_full_disk_is_one_line_and_leaves_no_temp_lock(small_disk):
    _fill(small_disk)
    with pytest.raises(WriteError, match="No space left"):
        CellLock(small_disk / "cell.lock").acquire()
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


def test_a_record_that_cannot_be_written_fails_that_cell_and_the_grid_goes_on(small_disk, cpu, monkeypatch):
    import latentbench.score.scorer as scorer
    import latentbench.training.loop as loop
    from latentbench.runner.grid import run_grid
    from latentbench.spec import Grid

    real_score, real_train = scorer.score_model, loop.train_cell
    scored = []

    def score_then_fill_the_disk_once(*a, **k):
        out = real_score(*a, **k)
        scored.append(1)
        if len(scored) == 1:
            _fill(small_disk)  # the first cell's record finds the disk full
        return out

    def free_the_disk_then_train(*a, **k):
        (small_disk / "filler").unlink(missing_ok=True)
        return real_train(*a, **k)

    monkeypatch.setattr(scorer, "score_model", score_then_fill_the_disk_once)
    monkeypatch.setattr(loop, "train_cell", free_the_disk_then_train)
    g = Grid(name="d", remedies=["vae"], latents=["2", "3"], seeds=[0],
             base={"epochs": 1, "n_samples": 150, "iw_k": 4, "net": {"hidden": [16]}})
    s = run_grid(g, small_disk / "run", cpu, quiet=True)
    assert s["done"] == 1 and len(s["failed"]) == 1, [r["error"] for r in s["failed"]]
    err = s["failed"][0]["error"]
    assert err.startswith("record not saved: cannot write") and "No space left on device" in err
    assert "\n" not in err
    records = small_disk / "run" / "records"
    assert len(list(records.glob("*.json"))) == 1
    assert not [p for p in records.iterdir() if p.name.startswith(".tmp-") or p.suffix == ".lock"]
    # freed space: the rerun records the first cell from its finished checkpoint
    s = run_grid(g, small_disk / "run", cpu, quiet=True)
    assert s["done"] == 1 and s["skipped"] == 1 and len(list(records.glob("*.json"))) == 2
