"""``latentbench run --workers N``: N cells at once, each in its own process, so that a grid of small
models fills a GPU (or the cores of a large CPU).

The parent hands the cells out one at a time, in grid order, to N worker processes (started with
``spawn``: CUDA cannot be forked). Each worker claims its cell through the cell's lease exactly as a
single run does (:func:`latentbench.runner.grid.attempt_cell`), so workers, other runs and other hosts
share one output folder safely. Workers report their epochs and scoring stages through one pipe each;
the parent draws the one grid bar. A worker that dies (killed, out of host memory, a crash) has its cell
recorded as failed and its lease released, and a fresh worker takes its place. The parent makes each
cell's lease token and sends it with the cell, so it tells from the lock file alone whether the dead worker
still held the cell (PIDs are never consulted); a cell whose record the worker had already written counts
as computed and nothing is written over it. Ctrl-C, SIGTERM, SIGHUP or any error in the
parent stops every worker (each unwinds like a single run: lease released, nothing half-written) before
the parent re-raises, so the command prints the resume hint. A worker dies with its parent (a killed
parent leaves no orphan): the kernel sends it SIGTERM (Linux), or its next message finds the pipe broken;
it unwinds without recording anything, for its cell is not at fault.

On the CPU each worker gets ``cores // N`` torch threads, so N workers do not oversubscribe the cores.
"""

from __future__ import annotations

import calendar
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import uuid
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, NamedTuple

import torch

from latentbench.errors import UserError
from latentbench.runner.locks import CellLock, lease_seconds
from latentbench.runner.progress import GridProgress
from latentbench.runner.records import make_record, provenance, read_record, record_origin, write_record
from latentbench.spec import Cell

STOP_WAIT_S = 60.0  # how long stopping workers may take to unwind before they are killed


# -- the messages on a worker's pipe (named tuples: picklable, and read by field, never by position) --
class CellJob(NamedTuple):
    """Parent to worker: compute ``cell`` (a :meth:`Cell.to_dict`) under the lease token ``token``."""

    cell: dict[str, Any]
    force: bool
    token: str


class Stop(NamedTuple):
    """Parent to worker: no cell is left, exit."""


class Started(NamedTuple):
    """Worker to parent: the worker claimed the cell and computes it (``token``: the lease it holds)."""

    cell_id: str
    label: str
    token: str | None


class Epoch(NamedTuple):
    """Worker to parent: the cell finished training epoch ``epoch`` of ``epochs``."""

    cell_id: str
    epoch: int
    epochs: int


class Stage(NamedTuple):
    """Worker to parent: the cell is in scoring stage ``stage``, ``fraction`` of it done."""

    cell_id: str
    stage: str
    fraction: float


class Write(NamedTuple):
    """Worker to parent: a line for the terminal, printed above the grid bar."""

    message: str


class Ended(NamedTuple):
    """Worker to parent: the attempt at the cell ended (``outcome`` as
    :func:`~latentbench.runner.grid.attempt_cell` returns it; ``error`` the failed record's line)."""

    cell_id: str
    outcome: str
    error: str | None


ToWorker = CellJob | Stop
FromWorker = Started | Epoch | Stage | Write | Ended


class ParentGone(SystemExit):
    """The parent process is gone: the worker unwinds (lease released, nothing recorded), for the cell is
    not at fault; a later run computes it. The stop signals are ignored from here on: the SIGTERM the
    kernel sends for the parent's death must not interrupt the unwinding (a lease left behind)."""

    def __init__(self) -> None:
        if threading.current_thread() is threading.main_thread():  # handlers are the main thread's
            for sig in _STOPS:
                if signal.getsignal(sig) is _stop_once:
                    signal.signal(sig, ignore_signal)
        super().__init__(1)


class _PipeProgress:
    """The worker's side of the grid bar: every event goes to the parent (a broken pipe means the parent
    died: :class:`ParentGone`, never a failure of the cell)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def _send(self, msg: FromWorker) -> None:
        try:
            self.conn.send(msg)
        except (BrokenPipeError, EOFError, ConnectionError, OSError):
            raise ParentGone() from None

    def start(self, cell_id: str, label: str, token: str | None = None) -> None:
        self._send(Started(cell_id, label, token))

    def epoch(self, cell_id: str, epoch: int, epochs: int) -> None:
        self._send(Epoch(cell_id, epoch, epochs))

    def stage(self, cell_id: str, stage: str, fraction: float = 0.0) -> None:
        self._send(Stage(cell_id, stage, fraction))

    def write(self, message: str) -> None:
        self._send(Write(message))


def ignore_signal(signum: int, frame: object) -> None:
    """A handler that ignores its signal. Unlike ``SIG_IGN`` it is safe to install from inside a handler:
    a signal already on its way then never prints "Signal 15 ignored due to race condition"."""


_STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _stop_once(signum: int, frame: object) -> None:
    """The first SIGINT, SIGTERM or SIGHUP unwinds the worker; later ones must not interrupt the unwinding."""
    for sig in _STOPS:
        if signal.getsignal(sig) is _stop_once:
            signal.signal(sig, ignore_signal)
    raise KeyboardInterrupt


def die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the parent dies (Linux), so that a killed parent leaves no orphaned
    worker computing a cell nobody waits for; if the parent died before this, stop now."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the broken pipe tells the worker at its next message
        pass
    parent = mp.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        raise ParentGone()


def _worker(conn: Connection, folder: str, device: str, opts: dict[str, Any], tracker: Any,
            threads: int | None) -> None:
    """A worker process: compute the cells the parent sends until it says stop."""
    from latentbench.runner.grid import attempt_cell

    progress, data_cache = _PipeProgress(conn), {}
    try:
        for sig in _STOPS:
            if signal.getsignal(sig) is not signal.SIG_IGN:  # nohup's ignored SIGHUP stays ignored
                signal.signal(sig, _stop_once)
        die_with_parent()
        if threads:
            torch.set_num_threads(threads)
        while True:
            job: ToWorker = conn.recv()
            if isinstance(job, Stop):
                return
            cell = Cell.from_dict(job.cell)
            outcome, rec = attempt_cell(cell, Path(folder), torch.device(device), progress, force=job.force,
                                        data_cache=data_cache, tracker=tracker, token=job.token, **opts)
            progress._send(Ended(cell.id, outcome, rec.get("error") if rec else None))
    except KeyboardInterrupt:
        sys.exit(130)
    except (EOFError, BrokenPipeError, ConnectionError):  # the parent is gone: nothing left to report to
        sys.exit(1)
    except UserError as exc:  # e.g. the output folder became unwritable: one line, like a single run
        try:
            conn.send(Write(f"latentbench: error: {exc}"))
        finally:
            sys.exit(2)


class _Slot:
    """One worker process as the parent sees it: its pipe and the cell it holds."""

    def __init__(self, ctx: Any, index: int, args: tuple) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, *args), name=f"latentbench-worker-{index}")
        self.proc.start()
        child.close()
        self.cell: Cell | None = None
        self.token: str | None = None  # the lease token the cell was handed out with
        self.force = False
        self.handed_at = time.time()
        self.started = time.time()
        self.ran_cell = False
        self.idle = True  # waiting for a cell from the parent


def _spawn(ctx: Any, index: int, args: tuple, slots: list[_Slot]) -> None:
    """Start worker ``index`` and register it in ``slots``, with the stop signals held back meanwhile: a
    Ctrl-C, SIGTERM or SIGHUP that arrives as the process starts is raised once the slot is registered,
    so that the stop reaches that worker too (never an orphan that finds its parent gone as it starts).

    The signals are held back by handlers that note them (blocking them with ``pthread_sigmask`` would
    not do: the kernel hands a process's signal to any thread that does not block it, torch's among
    them, and Python then runs the handler in the main thread all the same)."""
    if threading.current_thread() is not threading.main_thread():  # handlers belong to the main thread
        slots.append(_Slot(ctx, index, args))
        return
    noted: list[int] = []
    old = {sig: signal.getsignal(sig) for sig in _STOPS}
    for sig, handler in old.items():
        if handler not in (signal.SIG_IGN, None):  # an ignored signal stays ignored
            signal.signal(sig, lambda signum, frame: noted.append(signum))
    try:
        slots.append(_Slot(ctx, index, args))
    finally:
        for sig, handler in old.items():
            if handler is not None:
                signal.signal(sig, handler)
        if noted:  # raised now, by the handler it was meant for
            signal.raise_signal(noted[0])


class _Queue:
    """The cells still to hand out: fresh ones in grid order, then those another run held (``busy``),
    each retried after a pause until it is finished there or its lease expires, as a single run does."""

    def __init__(self, cells: list[Cell], force: bool) -> None:
        self.fresh = list(cells)
        self.held: list[tuple[float, Cell]] = []
        self.waited: set[str] = set()  # ids of the cells held by another run at some point
        self.force = force

    def __bool__(self) -> bool:
        return bool(self.fresh or self.held)

    def put_back(self, cell: Cell) -> None:
        self.fresh.insert(0, cell)

    def hold(self, cell: Cell) -> None:
        self.waited.add(cell.id)
        self.held.append((time.time() + min(5.0, lease_seconds() / 8), cell))

    def next(self) -> tuple[Cell, bool] | None:
        """The next cell and whether to force it, or None if none is ready now."""
        if self.fresh:
            return self.fresh.pop(0), self.force
        if self.held and self.held[0][0] <= time.time():
            return self.held.pop(0)[1], False
        return None


def run_workers(cells: list[Cell], folder: Path, device: torch.device, *, workers: int, name: str = "grid",
                force: bool = False, quiet: bool = False, command: str = "", compile: bool | str = False,
                tracker: Any = None, since: float | None = None, shared: bool = True) -> dict[str, Any]:
    """Compute ``cells`` in ``workers`` processes; returns the counts of :func:`run_grid`.

    ``since`` and ``shared`` are passed on to :func:`~latentbench.runner.grid.attempt_cell`: a cell whose
    first stage another worker trains comes back ``busy`` and is handed out again after a pause, while
    the worker takes the next cell."""
    ctx = mp.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // workers) if device.type == "cpu" else None
    args = (str(folder), str(device), {"command": command, "compile": compile, "since": since, "shared": shared}, tracker, threads)
    queue = _Queue(cells, force)
    counts: dict[str, Any] = {"done": 0, "skipped": 0, "busy": 0, "failed": []}
    progress = GridProgress(name, len(cells), quiet=quiet)
    slots: list[_Slot] = []
    waiting_said = False
    try:
        for i in range(min(workers, len(cells))):
            _spawn(ctx, i, args, slots)
        while slots:
            for slot in slots:  # idle workers get the next cell, or stop when none is left
                if slot.idle:
                    _hand_out(slot, queue)
            wait([s.conn for s in slots] + [s.proc.sentinel for s in slots], timeout=1.0)
            for slot in list(slots):
                _drain(slot, queue, progress, counts, quiet)
                if slot.proc.is_alive():
                    continue
                _drain(slot, queue, progress, counts, quiet)  # what it sent before it exited
                slot.proc.join()
                slot.conn.close()
                slots.remove(slot)
                claimed = slot.cell is not None and _record_dead(slot, queue, folder, device, command, progress,
                                                                 counts)
                if queue and (slot.ran_cell or claimed):  # the grid goes on with a fresh worker in its place
                    _spawn(ctx, len(slots), args, slots)
            if queue.held and not queue.fresh and not waiting_said:
                waiting_said = True
                progress.write(f"latentbench: waiting for {len(queue.held)} cell(s) held by other runs, or built "
                               f"on a first stage another worker or run trains (a dead run's lease expires "
                               f"within {lease_seconds():.0f}s)")
        if queue:
            raise UserError(f"the worker processes exited before the grid was done ({len(queue.fresh)} cells "
                            "left); run without --workers to see why")
    except BaseException:  # Ctrl-C, SIGTERM, a UserError or any bug: no worker outlives the parent
        _stop_all(slots, folder)
        raise
    finally:
        progress.close()
    return counts


def _hand_out(slot: _Slot, queue: _Queue) -> None:
    """Send the next ready cell to an idle worker, or tell it to stop when no cell is left."""
    nxt = queue.next()
    if nxt is None and queue:
        return  # only held cells, none due yet: stay idle
    job: ToWorker
    if nxt is None:
        slot.cell, slot.token, slot.force, job = None, None, False, Stop()
    else:
        token = uuid.uuid4().hex
        slot.cell, slot.token, slot.force = nxt[0], token, bool(nxt[1])
        job = CellJob(nxt[0].to_dict(), bool(nxt[1]), token)
    slot.idle, slot.handed_at, slot.started = False, time.time(), time.time()
    try:
        slot.conn.send(job)
    except (BrokenPipeError, OSError):  # the worker is gone (the loop sees its exit): keep its cell
        if slot.cell is not None:
            queue.put_back(slot.cell)
        slot.cell, slot.token = None, None


def _drain(slot: _Slot, queue: _Queue, progress: GridProgress, counts: dict, quiet: bool) -> None:
    """Handle every message waiting on one worker's pipe."""
    while True:
        try:
            if not slot.conn.poll():
                return
            msg = slot.conn.recv()
        except (EOFError, OSError):
            return
        if isinstance(msg, Started):  # msg.token: the token the parent handed out with the cell
            slot.ran_cell, slot.started = True, time.time()
            progress.start(msg.cell_id, msg.label)
        elif isinstance(msg, Epoch):
            progress.epoch(msg.cell_id, msg.epoch, msg.epochs)
        elif isinstance(msg, Stage):
            progress.stage(msg.cell_id, msg.stage, msg.fraction)
        elif isinstance(msg, Write):
            progress.write(msg.message)
        elif isinstance(msg, Ended):
            cell_id, outcome, error = msg.cell_id, msg.outcome, msg.error
            cell, slot.cell, slot.token, slot.idle = slot.cell, None, None, True
            if outcome == "busy" and cell is not None:  # held by another run: try again later
                queue.hold(cell)
                continue
            progress.end(cell_id, outcome)
            if outcome == "failed":
                counts["failed"].append({"id": cell_id, "error": error})
                if not quiet:
                    progress.write(f"latentbench: cell {cell_id} failed: {error}")
            elif outcome == "skipped" and cell_id in queue.waited:  # the other run finished it
                counts["busy"] += 1
            else:
                counts[outcome] += 1
        else:  # a message this parent does not know (a worker of another version): said, not fatal
            progress.write(f"latentbench: unexpected message from a worker: {msg!r}")


def _release(folder: Path, cell: Cell, token: str) -> None:
    """Release a dead worker's lease on ``cell`` (only its own token can)."""
    lock = CellLock(Path(folder) / "records" / f"{cell.id}.lock", token=token)
    lock.held = True
    lock.release()


def _lease_is(folder: Path, cell: Cell, token: str) -> bool:
    """Whether the lock file of ``cell`` on disk carries ``token``."""
    lock = CellLock(Path(folder) / "records" / f"{cell.id}.lock", token=token)
    lock.held = True
    return lock.owned()


def _record_since(path: Path, cell: Cell, since: float) -> dict | None:
    """The run record of ``cell`` at ``path`` if that computation started at or after ``since`` (this
    host's clock, to the second, as in the record's provenance): the record the dead worker wrote."""
    try:
        rec = read_record(path)
        started = calendar.timegm(time.strptime(rec["provenance"]["started_at"], "%Y-%m-%dT%H:%M:%SZ"))
        same = record_origin(rec) == "run" and Cell.from_dict(rec["cell"]).id == cell.id
    except (UserError, OSError, KeyError, TypeError, ValueError):
        return None
    return rec if same and started >= int(since) else None


def _record_dead(slot: _Slot, queue: _Queue, folder: Path, device: torch.device, command: str,
                 progress: GridProgress, counts: dict) -> bool:
    """A worker died with a cell handed to it. Returns whether it had claimed the cell.

    If it died after writing the cell's record (before reporting it), the record stands and counts.
    Otherwise, if the lease on disk still carries the token the cell was handed out with, the cell is
    recorded as failed and its lease freed. Otherwise (it died before claiming, after releasing, or its
    lease was taken over by another run) nothing is written and the cell is handed out again."""
    from latentbench.runner.grid import is_finished

    cell, code, token = slot.cell, slot.proc.exitcode, slot.token
    assert cell is not None and token is not None
    rec_path = Path(folder) / "records" / f"{cell.id}.json"
    ours = _lease_is(folder, cell, token)
    rec = _record_since(rec_path, cell, slot.handed_at)
    try:
        if rec is None and not slot.force and is_finished(rec_path, cell):
            rec = read_record(rec_path)  # finished before the hand-out (by another run): nothing to do
    except UserError:  # a newer schema or a corrupt record: the worker's attempt_cell says so
        pass
    if rec is not None:
        if ours:
            _release(folder, cell, token)
        outcome = "done" if rec["status"] == "ok" else "failed"
        progress.end(cell.id, outcome)
        if outcome == "failed":
            counts["failed"].append({"id": cell.id, "error": rec.get("error")})
            progress.write(f"latentbench: cell {cell.id} failed: {rec.get('error')}")
        else:
            counts["done"] += 1
        return True
    if not ours:
        queue.put_back(cell)
        return False
    how = f"killed by signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
    error = f"the worker process computing this cell died ({how})"
    rec = make_record(cell, status="failed", error=error, prov=provenance(device, command, slot.started))
    try:
        write_record(rec_path, rec)
    finally:  # a stop signal right after the record still frees the dead worker's lease
        _release(folder, cell, token)
    progress.end(cell.id, "failed")
    progress.write(f"latentbench: cell {cell.id} failed: {error}")
    counts["failed"].append({"id": cell.id, "error": error})
    return True


def _stop_all(slots: list[_Slot], folder: Path) -> None:
    """Stop every worker (SIGTERM: each unwinds and releases its lease); kill any that hang, and free
    their leases, so that the same command resumes at once."""
    old = signal.signal(signal.SIGINT, ignore_signal)  # a second Ctrl-C must not cut the cleanup short
    try:
        for slot in slots:
            if slot.proc.is_alive():
                slot.proc.terminate()
        deadline = time.time() + STOP_WAIT_S
        for slot in slots:
            slot.proc.join(max(0.0, deadline - time.time()))
            if slot.proc.is_alive():
                slot.proc.kill()
                slot.proc.join()
                if slot.cell is not None and slot.token is not None:
                    _release(folder, slot.cell, slot.token)
    finally:
        signal.signal(signal.SIGINT, old)
