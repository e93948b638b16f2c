"""CIFAR-10 through torchvision's own loader, kept in memory.

Files are looked for under ``data_root`` (default ``$LATENTBENCH_DATA``, else ``./data``) in
torchvision's layout (``cifar-10-batches-py/``); ``download=True`` fetches them. Offline with missing
files, the error says where they were looked for. MNIST and Fashion-MNIST are read from their idx
files by ``latentbench.data.idx``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from latentbench.data import Data
from latentbench.errors import UserError


def cifar10(seed: int = 0, data_root: str | None = None, download: bool = False) -> Data:
    """CIFAR-10 (32x32 colour), official split."""
    import torchvision.datasets as tvd

    root = Path(data_root or os.environ.get("LATENTBENCH_DATA") or "data").expanduser()
    try:
        train = tvd.CIFAR10(str(root), train=True, download=download)
        test = tvd.CIFAR10(str(root), train=False, download=download)
    except Exception as exc:  # noqa: BLE001 - torchvision raises RuntimeError/URLError/OSError
        how = (
            "the download failed (offline?); copy the files there by hand"
            if download
            else "pass --download to fetch them, or --data-root DIR where they already are"
        )
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise UserError(
            f"dataset 'cifar10': files not found under {root.resolve()} (expected e.g. "
            f"{root / 'cifar-10-batches-py' / 'data_batch_1'}); {how} [{type(exc).__name__}: {first}]"
        ) from None

    def images(ds) -> torch.Tensor:
        arr = np.ascontiguousarray(ds.data)  # (N, 32, 32, 3) uint8
        return torch.from_numpy(arr).float().div_(255.0).permute(0, 3, 1, 2).contiguous()

    def labels(ds) -> torch.Tensor:
        return torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)

    return Data(
        "cifar10", images(train), images(test), labels(train), labels(test),
        info={"split": "official train/test", "root": str(root)},
    )
