"""MNIST, Fashion-MNIST and CIFAR-10 through torchvision's own loaders, kept in memory.

Files are looked for under ``data_root`` (default ``./data``) in torchvision's layout; ``download=True``
fetches them. Offline with missing files, the error says where they were looked for.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from latentbench.data import Data
from latentbench.errors import UserError

_LAYOUT = {
    "mnist": ("MNIST", "MNIST/raw/train-images-idx3-ubyte"),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw/train-images-idx3-ubyte"),
    "cifar10": ("CIFAR10", "cifar-10-batches-py/data_batch_1"),
}


def _default_root() -> str:
    return os.environ.get("LATENTBENCH_DATA", "data")


def _load(name: str, data_root: str | None, download: bool) -> Data:
    import torchvision.datasets as tvd

    cls_name, marker = _LAYOUT[name]
    root = Path(data_root or _default_root())
    cls = getattr(tvd, cls_name)
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except Exception as exc:  # noqa: BLE001 - torchvision raises RuntimeError/URLError/OSError
        how = (
            "the download failed (offline?); copy the files there by hand"
            if download
            else "pass --download to fetch them, or --data-root DIR where they already are"
        )
        raise UserError(
            f"dataset {name!r}: files not found under {root.resolve()} (expected e.g. {root / marker}); "
            f"{how} [{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}]"
        ) from None

    def images(ds) -> torch.Tensor:
        arr = ds.data if isinstance(ds.data, np.ndarray) else ds.data.numpy()
        t = torch.from_numpy(np.ascontiguousarray(arr)).float().div_(255.0)
        return t.permute(0, 3, 1, 2).contiguous() if t.ndim == 4 else t[:, None]

    def labels(ds) -> torch.Tensor:
        return torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)

    return Data(
        name, images(train), images(test), labels(train), labels(test),
        info={"split": "official train/test", "root": str(root)},
    )


def mnist(seed: int = 0, data_root: str | None = None, download: bool = False, **_: object) -> Data:
    """MNIST (28x28 grey), official split."""
    return _load("mnist", data_root, download)


def fashion_mnist(
    seed: int = 0, data_root: str | None = None, download: bool = False, **_: object
) -> Data:
    """Fashion-MNIST (28x28 grey), official split."""
    return _load("fashion_mnist", data_root, download)


def cifar10(seed: int = 0, data_root: str | None = None, download: bool = False, **_: object) -> Data:
    """CIFAR-10 (32x32 colour), official split."""
    return _load("cifar10", data_root, download)
