"""Cell leases: one lock file per cell, so that processes on one output folder (other hosts on a shared
file system, containers, PID namespaces included) never compute the same cell.

A lease does not trust PIDs or host names (a restarted container is PID 1 again; two namespaces share a
host name). The lock holds a random owner token; while the cell runs, a heartbeat thread refreshes the
file's modification time every ``lease_s / 4`` seconds. A lock whose heartbeat is older than
``lease_s`` belongs to a dead run and is taken over. Ages are measured on the file system's own clock
(the mtime of a file this process has just written there, against the lock's mtime), so hosts whose
clocks disagree still agree on a lease. Take-over and release check the token: nobody removes a lock
that is not theirs, and an owner whose lease was taken over (it stalled past ``lease_s``) learns so
from :meth:`CellLock.owned` and does not write its result.

``LATENTBENCH_LEASE_S`` sets the lease (default 120 s): a dead run's cell is free again within it.
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from latentbench.atomic import finish, write_error
from latentbench.errors import UserError

DEFAULT_LEASE_S = 120.0


def lease_seconds() -> float:
    """The lease bound: ``$LATENTBENCH_LEASE_S`` or 120 s."""
    text = os.environ.get("LATENTBENCH_LEASE_S")
    if not text:
        return DEFAULT_LEASE_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value > 0 and math.isfinite(value)):
        raise UserError(f"bad LATENTBENCH_LEASE_S={text!r}: give a finite number of seconds > 0, e.g. 120")
    return value


class LeaseLost(Exception):
    """This run's lease on a cell was taken over (it stalled past the lease): it must write nothing more
    for that cell, neither checkpoint nor record."""


class CellLock:
    """A lease on one cell: ``acquire()`` claims it (and starts the heartbeat), ``release()`` gives it up.

    The lock file appears with its content in one step (a temp file hard-linked into place), so a
    reader never sees it half-written; a failed creation (disk full) leaves no temp file behind.
    """

    def __init__(self, path: Path, lease_s: float | None = None, token: str | None = None) -> None:
        self.path = Path(path)
        self.lease_s = float(lease_s) if lease_s is not None else lease_seconds()
        self.token = token or uuid.uuid4().hex  # a given token lets the caller's parent recognise the lease
        self.held = False
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # -- reading -------------------------------------------------------------------------------
    def _read(self, path: Path | None = None) -> tuple[bytes, float] | None:
        """The lock's bytes and mtime, or None if it is not there."""
        path = path or self.path
        try:
            with open(path, "rb") as f:
                return f.read(), os.fstat(f.fileno()).st_mtime
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            raise UserError(f"{path} is a folder where a cell's lock file belongs; remove it and rerun") from None

    def _age(self, got: tuple[bytes, float], fs_now: float) -> float:
        """The lock's heartbeat age on the file system's clock. A heartbeat in the future (a clock set back,
        a host whose clock ran ahead) is capped at now, on disk too, so the lease expires within
        ``lease_s`` instead of after the skew."""
        age = fs_now - got[1]
        if age < -1.0:
            try:
                os.utime(self.path, (fs_now, fs_now))
            except OSError:
                pass
            return 0.0
        return max(age, 0.0)

    def _token_of(self, raw: bytes) -> str | None:
        try:
            info = json.loads(raw)
        except ValueError:
            return None
        return info.get("token") if isinstance(info, dict) else None

    def owned(self) -> bool:
        """Whether the lock file on disk is still this lease's (False once another run took it over)."""
        if not self.held:
            return False
        got = self._read()
        return got is not None and self._token_of(got[0]) == self.token

    def check(self) -> None:
        """Raise :class:`LeaseLost` unless the lease is still this run's (before every write of the cell)."""
        if not self.owned():
            raise LeaseLost(f"the lease on {self.path.stem} was taken over by another run")

    # -- claiming ------------------------------------------------------------------------------
    def _body(self) -> bytes:
        return json.dumps({"token": self.token, "host": socket.gethostname(), "pid": os.getpid(),
                           "created": time.time(), "lease_s": self.lease_s}).encode()

    def _try_create(self) -> tuple[bool, float]:
        """Link a fresh lock into place; returns (created, the file system's clock now)."""
        tmp = self.path.with_name(f".tmp-{self.path.name}.{self.token}")
        try:
            with open(tmp, "xb") as f:
                f.write(self._body())
                f.flush()
                os.fsync(f.fileno())
                fs_now = os.fstat(f.fileno()).st_mtime
            # held before the link: a signal that lands as the link returns still has release() remove
            # the lock (release() removes only a lock that carries this lease's token)
            self.held = True
            try:
                os.link(tmp, self.path)  # fails if the lock exists: create-with-content in one step
                return True, fs_now
            except FileExistsError:
                self.held = False
                return False, fs_now
            except FileNotFoundError:  # the lease's holder removed our temp file as a killed run's
                self.held = False
                return False, fs_now
        except OSError as exc:  # no space for the lock, a read-only folder, ...
            self.held = False
            raise write_error(self.path, exc) from None
        finally:
            finish(lambda: tmp.unlink(missing_ok=True), OSError)

    def _take_over(self, judged: tuple[bytes, float]) -> None:
        """Move the stale lock aside; if what moved is no longer what was judged (its owner refreshed
        it, or another run replaced it meanwhile), put it back."""
        aside = self.path.with_name(f".stale-{self.path.name}.{self.token}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # someone else removed it; try to create ours
        try:
            if self._read(aside) != judged:
                try:
                    os.link(aside, self.path)
                except (FileExistsError, FileNotFoundError):  # replaced meanwhile, or removed as a
                    pass  # killed judge's aside file by the lease's next holder
        finally:
            finish(lambda: aside.unlink(missing_ok=True), OSError)

    def acquire(self) -> bool:
        """Claim the cell: True if this lease now holds it, False if a live lease of another run does."""
        for _ in range(3):
            created, fs_now = self._try_create()
            if created:
                self._start_heartbeat()
                return True
            got = self._read()
            if got is None:
                continue  # released between our attempt and the read: try again
            if self._age(got, fs_now) <= self.lease_s:
                return False
            self._take_over(got)
        return False

    def stale(self) -> bool:
        """Whether the lock on disk (if any) has a heartbeat older than the lease."""
        got = self._read()
        if got is None:
            return True
        try:
            return self._age(got, self._fs_now()) > self.lease_s
        except OSError:
            return False

    def _fs_now(self) -> float:
        """The file system's clock: the mtime of a file created there just now."""
        probe = self.path.with_name(f".tmp-{self.path.name}.{self.token}")
        try:
            with open(probe, "xb") as f:
                return os.fstat(f.fileno()).st_mtime
        finally:
            finish(lambda: probe.unlink(missing_ok=True), OSError)

    # -- heartbeat -----------------------------------------------------------------------------
    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name=f"lease {self.path.name}", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            got = self._read()
            if got is None or self._token_of(got[0]) != self.token:
                continue  # moved aside by a judge for a moment, or taken over: owned() tells
            try:
                os.utime(self.path)
            except OSError:
                pass  # a transient failure: the next beat tries again

    def refresh(self) -> None:
        """Refresh the heartbeat now (the thread does this on its own)."""
        if self.owned():
            os.utime(self.path)

    # -- release -------------------------------------------------------------------------------
    def release(self) -> None:
        """Stop the heartbeat and remove the lock if (and only if) it is still this lease's.

        A stop signal (Ctrl-C, SIGTERM or SIGHUP, raised as ``KeyboardInterrupt``) that lands while the
        release runs, e.g. while it waits for the heartbeat thread, does not leave the lock behind: the
        release is finished first, then the signal raised again."""
        finish(self._release)

    def _release(self) -> None:
        """One release, safe to repeat after an interruption at any point of it."""
        if not self.held:
            return
        self._stop.set()
        if self._beat is not None:
            try:
                self._beat.join()
            except RuntimeError:  # a signal interrupted its start: it never ran
                pass
            self._beat = None
        aside = self.path.with_name(f".release-{self.path.name}.{self.token}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            if not aside.exists():  # (an interrupted earlier try may have moved it aside already)
                self.held = False
                return
        try:
            got = self._read(aside)
            if got is not None and self._token_of(got[0]) != self.token:
                try:  # another run's lease: put it back untouched
                    os.link(aside, self.path)
                except FileExistsError:
                    pass
        finally:
            aside.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> CellLock:
        if not self.acquire():
            raise RuntimeError(f"{self.path} is held by another run")
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def written_since(path: Path, since: float | None) -> bool:
    """Whether ``path`` was written after ``since`` (the file system's clock when this run started) and
    not in the future: a file whose mtime is ahead of the file system's clock now (a skewed host clock)
    was not written meanwhile, and is judged as old."""
    if since is None:
        return False
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return False
    return since <= mtime <= fs_clock(path.parent) + 1.0


def fs_clock(folder: Path) -> float:
    """The file system's clock now (the mtime of a file created in ``folder``), for comparing mtimes
    written by other hosts."""
    probe = Path(folder) / f".tmp-clock.{uuid.uuid4().hex}"
    try:
        with open(probe, "xb") as f:
            return os.fstat(f.fileno()).st_mtime
    except OSError as exc:
        raise write_error(probe.parent, exc) from None
    finally:
        finish(lambda: probe.unlink(missing_ok=True), OSError)
