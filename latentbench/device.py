"""The one place that picks the compute device (``auto`` = cuda > mps > cpu)."""

from __future__ import annotations

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


def autocast(dev: torch.device):
    """bf16 autocast on CUDA, a no-op elsewhere."""
    return torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
