"""Promises about output paths: ``--out`` never replaces what is not a file (a device, a FIFO, a symlink)
and a re-score never lands among a run's own records."""

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from latentbench.atomic import WriteError, atomic_write_text
from latentbench.cli import main


def _read_fifo(path: Path) -> tuple[threading.Thread, list[bytes]]:
    got: list[bytes] = []

    def read() -> None:
        with open(path, "rb") as f:
            got.append(f.read())

    t = threading.Thread(target=read, daemon=True)
    t.start()
    return t, got


# ---- --out that is not a plain file -----------------------------------------------------------------
def test_a_write_to_a_fifo_goes_through_and_the_fifo_stays(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader, got = _read_fifo(fifo)
    atomic_write_text(fifo, "hello\n")
    reader.join(timeout=30)
    assert got == [b"hello\n"] and stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_write_to_a_symlink_replaces_its_target_and_keeps_the_link(tmp_path):
    target, link = tmp_path / "real.md", tmp_path / "link.md"
    target.write_text("old")
    link.symlink_to(target)
    atomic_write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
    dangling = tmp_path / "dangling.md"
    dangling.symlink_to(tmp_path / "made-by-the-write.md")
    atomic_write_text(dangling, "created")
    assert dangling.is_symlink() and (tmp_path / "made-by-the-write.md").read_text() == "created"


def test_a_socket_is_refused_with_one_line(tmp_path):
    import socket

    path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        with pytest.raises(WriteError, match="is a socket, not a file"):
            atomic_write_text(path, "x")
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


def test_leaderboard_out_to_a_device_fifo_or_symlink_writes_through(tiny_run, tmp_path, capsys):
    out, _, _ = tiny_run
    if os.geteuid() == 0:  # the reproduction: a copy of /dev/null made with mknod
        null = tmp_path / "null"
        os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        assert main(["leaderboard", str(out), "--out", str(null)]) == 0
        assert stat.S_ISCHR(os.lstat(null).st_mode)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader, got = _read_fifo(fifo)
    assert main(["leaderboard", str(out), "--out", str(fifo), "--format", "csv"]) == 0
    reader.join(timeout=30)
    assert got and got[0].startswith(b"metric,") and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    target, link = tmp_path / "board.md", tmp_path / "link.md"
    link.symlink_to(target)
    assert main(["leaderboard", str(out), "--out", str(link)]) == 0
    assert link.is_symlink() and "fid_prior" in target.read_text()
    assert not list(tmp_path.glob(".tmp-*"))


# ---- re-scores stay out of records/ -----------------------------------------------------------------
def test_score_out_never_writes_into_a_runs_records(tiny_run, tmp_path, capsys):
    out, rec, ckpt = tiny_run
    before = sorted(p.name for p in (out / "records").iterdir())
    for where in (out / "records" / "vae-2-s0-other.json", out / "records" / "rescore.json"):
        assert main(["score", str(ckpt), "--quiet", "--out", str(where)]) == 2
        err = capsys.readouterr().err
        assert "inside a run's records/" in err and len(err.strip().splitlines()) == 1
    link = tmp_path / "into-records"
    link.symlink_to(out / "records")
    assert main(["score", str(ckpt), "--quiet", "--out", str(link / "x.json")]) == 2
    assert sorted(p.name for p in (out / "records").iterdir()) == before


def test_publish_never_ships_a_rescore_as_a_finished_cell(tiny_run, tmp_path, capsys):
    import shutil

    out, rec, _ = tiny_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    mine = run / "records" / rec.name
    rescore = json.loads(mine.read_text())
    rescore["origin"] = "score"  # what an older latentbench let `score --allow-incomplete --out` write there
    mine.write_text(json.dumps(rescore))
    assert main(["publish", str(run), "--name", "b", "--dest", str(tmp_path / "boards")]) == 2
    assert "0 failed and 1 missing cells" in capsys.readouterr().err
    assert not (tmp_path / "boards" / "b").exists()
