"""Atomic file writes: write a temp file in the same folder, fsync, then rename over the target.

A reader never sees a half-written file; a write that fails (disk full, read-only folder) removes its
temp file and raises :class:`WriteError`, one line naming the file, the cause and the fix; a killed
writer leaves at most a ``.tmp-<name>.*`` file, which the runner removes when it resumes that cell.
Files get the mode any file the user writes gets (``0666`` less the umask), not ``mkstemp``'s 0600.

The rename never replaces what is not a file: a symlink's target is written (atomically, the link
stays), a character device or FIFO (``/dev/null``, ``/dev/stdout``, a shell's ``>(cmd)``) is written
through as the shell's ``>`` would, and a block device or socket is refused with one line.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from latentbench.errors import UserError

_FIXES = {
    errno.ENOSPC: "free space on that disk or write elsewhere",
    errno.EDQUOT: "free space within your quota or write elsewhere",
    errno.EROFS: "the file system is read-only; write elsewhere",
    errno.EACCES: "the folder is not writable; fix its permissions or write elsewhere",
    errno.EPERM: "the folder or file is not writable (immutable?); write elsewhere",
    errno.ENOTDIR: "a file stands where a folder is expected; remove it or write elsewhere",
    errno.EISDIR: "a folder stands where a file is expected; remove it or write elsewhere",
}


class WriteError(UserError):
    """A file could not be written; the message names the file, the cause and the fix."""


def write_error(path: str | os.PathLike, exc: OSError) -> WriteError:
    """The one-line :class:`WriteError` for ``exc`` raised while writing ``path``."""
    fix = _FIXES.get(exc.errno or 0, "check the folder and rerun")
    return WriteError(f"cannot write {path}: {exc.strerror or exc}; {fix}")


def file_mode() -> int:
    """``0o666`` less the process umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def writes_through(path: str | os.PathLike) -> bool:
    """Whether ``path`` (links followed) is a character device or FIFO, which is written through rather
    than replaced; a block device or socket raises :class:`WriteError`."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False  # not there (or a dangling link): created as a file
    if stat.S_ISBLK(mode) or stat.S_ISSOCK(mode):
        kind = "block device" if stat.S_ISBLK(mode) else "socket"
        raise WriteError(f"cannot write {path}: it is a {kind}, not a file; give a file path")
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def _write_through(path: Path, data: bytes) -> None:
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as exc:
        raise write_error(path, exc) from None


def finish(step: Callable[[], object], *quiet: type[BaseException]) -> None:
    """Run ``step`` (a clean-up that is safe to repeat) to its end even if a stop signal lands in it: a
    ``KeyboardInterrupt`` (Ctrl-C, or SIGTERM and SIGHUP as the CLI raises them) makes it run again, and
    is raised once the step has finished. Exceptions of the types in ``quiet`` are ignored."""
    interrupted: KeyboardInterrupt | None = None
    for _ in range(10):  # the CLI ignores repeated stop signals; the bound is only a guard
        try:
            step()
            break
        except KeyboardInterrupt as exc:
            interrupted = interrupted or exc
        except quiet:
            break
    if interrupted is not None:
        raise interrupted


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with the user's file mode; :class:`WriteError` on failure.

    A symlink's target is replaced (the link stays); a device or FIFO is written through."""
    path = Path(path)
    if writes_through(path):
        return _write_through(path, data)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}.")
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), file_mode())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise write_error(path, exc) from None
    finally:
        if tmp is not None:
            finish(lambda: os.unlink(tmp), OSError)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def atomic_savefig(fig: Any, path: str | os.PathLike, **kwargs: Any) -> None:
    """``fig.savefig`` through a buffer, so a failed write never leaves a 0-byte image behind."""
    buf = io.BytesIO()
    fmt = kwargs.pop("format", None) or Path(path).suffix.lstrip(".") or "png"
    fig.savefig(buf, format=fmt, **kwargs)
    atomic_write_bytes(path, buf.getvalue())
