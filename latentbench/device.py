"""The one place that picks the compute device (``auto`` = cuda > mps > cpu)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from latentbench.errors import UserError


def pick_device(name: str | None = "auto") -> torch.device:
    """Resolve ``auto``/``cpu``/``cuda``/``cuda:1``/``mps``; a device that is not here is a user error."""
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {name}: MPS is not available on this machine; use --device cpu or auto")
    return dev


def device_name(dev: torch.device) -> str:
    """A human-readable device name for provenance."""
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    if dev.type == "cpu":
        import platform

        return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return str(dev)


@contextlib.contextmanager
def precision(dev: torch.device, name: str = "fp32") -> Iterator[None]:
    """Run the block at training precision ``name``.

    ``fp32``: float32 everywhere (PyTorch's defaults); measured fastest for the built-in nets on an
    H200 (the seed's conv VAE, batch 128: 1.92 s/epoch fp32 vs 2.27 s with bf16 autocast; small convs
    are launch-bound, so casts cost more than they save). ``tf32``: float32 storage with TF32 tensor-core
    matmuls and convolutions (CUDA). ``bf16``: bf16 autocast (CUDA and CPU).
    """
    if name == "bf16":
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16):
            yield
        return
    if name == "tf32" and dev.type == "cuda":
        old = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(old[0])
            torch.backends.cudnn.allow_tf32 = old[1]
        return
    yield


# ---- memory bounds -----------------------------------------------------------------------------
# Scoring, decoding and ex-post fitting batch to a byte bound taken from the device (or ``--memory-gb``).
# The bound only sets batch sizes, never a number in a record (results do not depend on it beyond float
# noise), except the latent-geometry sample counts, which follow the stable bound (see
# ``stable_memory_bytes``; ``--memory-gb`` does not move it) and are recorded in the notes.
MEMORY_ENV = "LATENTBENCH_MEMORY_GB"
CUDA_FREE_FRACTION = 0.5  # of free CUDA memory: room for the model, the allocator and torch-fidelity
CPU_AVAILABLE_FRACTION = 0.25  # of available RAM: other processes, copies made by numpy/torch-fidelity
CPU_FALLBACK_BYTES = 4 << 30


def set_memory_gb(gb: float | None) -> None:
    """Override the memory bound for this process and its workers (``--memory-gb``); None clears it."""
    import os

    if gb is None:
        os.environ.pop(MEMORY_ENV, None)
        return
    if not gb > 0:
        raise UserError(f"--memory-gb must be > 0, got {gb}")
    os.environ[MEMORY_ENV] = repr(float(gb))


def _override_bytes() -> int | None:
    import os

    text = os.environ.get(MEMORY_ENV)
    if not text:
        return None
    try:
        gb = float(text)
    except ValueError:
        raise UserError(f"{MEMORY_ENV}={text!r} is not a number of GB; set it to e.g. 8 or unset it") from None
    if not gb > 0:
        raise UserError(f"{MEMORY_ENV} must be > 0, got {text}; set it to e.g. 8 or unset it")
    return int(gb * (1 << 30))


def _meminfo(key: str) -> int | None:
    """A /proc/meminfo field in bytes (Linux), or None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cpu_bytes(available: bool) -> int:
    import os

    found = _meminfo("MemAvailable" if available else "MemTotal")
    if found is None:
        try:
            pages = os.sysconf("SC_AVPHYS_PAGES" if available else "SC_PHYS_PAGES")
            found = pages * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            found = None
    return int(found) if found and found > 0 else CPU_FALLBACK_BYTES


def memory_bytes(dev: torch.device) -> int:
    """Bytes that one scoring or fitting step may hold at once on ``dev``: the user's ``--memory-gb``
    if given, else a safe fraction of free CUDA memory on a GPU, or of available RAM elsewhere.
    Used for batch sizes only."""
    override = _override_bytes()
    if override is not None:
        return override
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return max(1 << 28, int(CUDA_FREE_FRACTION * free))
    return max(1 << 28, int(CPU_AVAILABLE_FRACTION * _cpu_bytes(available=True)))


def stable_memory_bytes(dev: torch.device) -> int:
    """Like :func:`memory_bytes`, but from the device's total memory, so that it is the same on every
    run on one machine: it sets how many latents the geometry metrics use, which changes numbers.
    ``--memory-gb`` (``LATENTBENCH_MEMORY_GB``) does not move it: the override sets batch sizes only."""
    if dev.type == "cuda":
        _, total = torch.cuda.mem_get_info(dev)
        return max(1 << 28, int(CUDA_FREE_FRACTION * total) // 2)
    return max(1 << 28, int(CPU_AVAILABLE_FRACTION * _cpu_bytes(available=False)) // 2)
