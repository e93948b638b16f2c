"""Cell locks: one lock file per cell, so that several processes (or hosts) on one output folder never
compute the same cell."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

STALE_LOCK_S = 24 * 3600


class CellLock:
    """An atomic lock file per cell.

    The lock appears with its content in one step (a temp file hard-linked into place), so a reader
    never sees it half-written. A stale lock (its process gone on this host, or older than a day, or
    unreadable for over a minute) is taken over by renaming it aside, and only if the renamed file is
    still the one judged stale; otherwise it is put back and the cell is left to its owner.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.held = False

    def _read(self) -> tuple[bytes, dict | None]:
        try:
            raw = self.path.read_bytes()
        except OSError:
            return b"", None
        try:
            return raw, json.loads(raw)
        except ValueError:
            return raw, None

    def _stale(self, info: dict | None) -> bool:
        if info is None:  # unreadable: only a crashed writer or a foreign file leaves that
            try:
                return time.time() - self.path.stat().st_mtime > 60
            except OSError:
                return False
        if time.time() - float(info.get("time", 0)) > STALE_LOCK_S:
            return True
        if info.get("host") == socket.gethostname():
            try:
                os.kill(int(info["pid"]), 0)
            except ProcessLookupError:
                return True
            except (PermissionError, KeyError, ValueError):
                return False
        return False

    def _create(self) -> bool:
        body = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}).encode()
        tmp = self.path.with_name(f".tmp-{self.path.name}.{os.getpid()}")
        tmp.write_bytes(body)
        try:
            os.link(tmp, self.path)  # fails if the lock exists: create-with-content in one step
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def _take_over(self, judged: bytes) -> None:
        aside = self.path.with_name(f".stale-{self.path.name}.{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # someone else removed it; try to create ours
        if aside.read_bytes() == judged:
            aside.unlink(missing_ok=True)
        else:  # we moved a fresh lock of another process: give it back
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            aside.unlink(missing_ok=True)

    def acquire(self) -> bool:
        for _ in range(2):
            if self._create():
                self.held = True
                return True
            raw, info = self._read()
            if not self._stale(info):
                return False
            self._take_over(raw)
        return False

    def release(self) -> None:
        if self.held:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            self.held = False
