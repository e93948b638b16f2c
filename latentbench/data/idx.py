"""MNIST and Fashion-MNIST from their idx files, read directly with numpy.

The idx format (LeCun et al. 1998, http://yann.lecun.com/exdb/mnist/) is a big-endian header - two
zero bytes, a type code (0x08 = unsigned byte), the number of dimensions - then one 4-byte size per
dimension, then the values. Files may be gzipped (``.gz``) or not, and may sit in any of the usual
layouts: flat (Debian's ``/usr/share/datasets/fashion-mnist/``, LeCun's site), torchvision's
``<Name>/raw/``, or a named subfolder (``fashion-mnist/``, ``fashion_mnist/``, ``mnist/``).

Without ``data_root`` the search goes: Debian's folder (``apt-get install dataset-fashion-mnist``)
for Fashion-MNIST, then ``$LATENTBENCH_DATA``, then ``./data``. Inside those shared roots only named
subfolders count (MNIST and Fashion-MNIST share their file names, so a flat folder there is
ambiguous); a folder given with ``data_root`` may be flat. ``download=True`` fetches missing files
through torchvision into ``<root>/<Name>/raw/``.
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from latentbench.data import Data
from latentbench.errors import UserError

DEBIAN_ROOT = Path("/usr/share/datasets")
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class IdxSet:
    """One dataset's look-up facts: torchvision's class/folder name and the named subfolders."""

    name: str
    torchvision: str
    folders: tuple[str, ...]
    debian: str | None = None  # folder under /usr/share/datasets shipped by a Debian package


SETS = {
    "mnist": IdxSet("mnist", "MNIST", ("MNIST/raw", "MNIST", "mnist/raw", "mnist")),
    "fashion_mnist": IdxSet(
        "fashion_mnist", "FashionMNIST",
        ("FashionMNIST/raw", "FashionMNIST", "fashion-mnist", "fashion_mnist", "fashion_mnist/raw"),
        debian="fashion-mnist",
    ),
}


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """Read one idx file of unsigned bytes with ``ndim`` dimensions (gzipped when it ends in .gz).

    The magic number, the number of dimensions and the byte count the header promises are checked;
    a file that is truncated, too long, or not an idx file is a one-line :class:`UserError` naming it.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"{path}: cannot read it ({type(exc).__name__}: {exc}); replace the file "
                        "(it is truncated or not gzip data)") from None
    if len(raw) < 4:
        raise UserError(f"{path}: not an idx file ({len(raw)} bytes); replace the file")
    magic = int.from_bytes(raw[:4], "big")
    want = 0x0800 | ndim
    if magic != want:
        raise UserError(f"{path}: not an idx{ndim} ubyte file (magic 0x{magic:08x}, expected 0x{want:08x}); "
                        "replace the file")
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise UserError(f"{path}: truncated header ({len(raw)} bytes); replace the file")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(dims))
    if len(raw) - head != size:
        what = "truncated" if len(raw) - head < size else "longer than its header says"
        raise UserError(f"{path}: {what}: header says {'x'.join(map(str, dims))} = {size} bytes of data, "
                        f"found {len(raw) - head}; replace the file")
    return np.frombuffer(raw, dtype=np.uint8, count=size, offset=head).reshape(dims)


def _find_in(folder: Path) -> dict[str, Path] | None:
    """The four files in ``folder`` (each plain or ``.gz``), or None when the train images are absent.
    Only some of them present is an error naming the missing ones."""
    found: dict[str, Path] = {}
    for key, stem in FILES.items():
        for cand in (folder / stem, folder / f"{stem}.gz"):
            if cand.is_file():
                found[key] = cand
                break
    if "train_images" not in found:
        return None
    missing = [FILES[k] for k in FILES if k not in found]
    if missing:
        raise UserError(f"{folder}: has {FILES['train_images']} but not {', '.join(missing)} (plain or .gz); "
                        "copy the missing files there")
    return found


def search_roots(ds: IdxSet, data_root: str | None) -> list[tuple[Path, bool]]:
    """(root, flat allowed) pairs in search order."""
    if data_root:
        return [(Path(data_root).expanduser(), True)]
    roots: list[tuple[Path, bool]] = []
    if ds.debian:
        roots.append((DEBIAN_ROOT / ds.debian, True))
    env = os.environ.get("LATENTBENCH_DATA")
    if env:
        roots.append((Path(env).expanduser(), False))
    roots.append((Path("data"), False))
    return roots


def locate(ds: IdxSet, data_root: str | None) -> dict[str, Path] | None:
    """The first complete file set along the search path, or None."""
    for root, flat in search_roots(ds, data_root):
        folders = [root / sub for sub in ds.folders] + ([root] if flat else [])
        for folder in folders:
            found = _find_in(folder)
            if found:
                return found
    return None


def _not_found(ds: IdxSet, data_root: str | None, download: bool) -> UserError:
    looked = []
    for root, flat in search_roots(ds, data_root):
        looked.append(f"{root} ({'flat or ' if flat else ''}under {', '.join(ds.folders)})")
    fixes = ["pass --data-root DIR where the files are", "--download to fetch them"]
    if ds.debian:
        fixes.insert(0, f"install them with `sudo apt-get install dataset-{ds.debian}`")
    if download:
        fixes = ["the download failed (offline?); copy the files there by hand"]
    return UserError(f"dataset {ds.name!r}: {FILES['train_images']}[.gz] not found; looked in "
                     f"{'; '.join(looked)}; {', or '.join(fixes)}")


def _download(ds: IdxSet, data_root: str | None) -> str:
    """Let torchvision fetch the files into ``<root>/<Name>/raw/``; returns its error, if any."""
    import torchvision.datasets as tvd

    root = Path(data_root or os.environ.get("LATENTBENCH_DATA") or "data").expanduser()
    try:
        for train in (True, False):
            getattr(tvd, ds.torchvision)(str(root), train=train, download=True)
    except Exception as exc:  # noqa: BLE001 - torchvision raises RuntimeError/URLError/OSError
        first = str(exc).splitlines()[0] if str(exc) else ""
        return f" [{type(exc).__name__}: {first}]"
    return ""


def load_idx(ds: IdxSet, data_root: str | None, download: bool) -> Data:
    """Find, check and load one idx dataset (official train/test split) as in-memory tensors."""
    found = locate(ds, data_root)
    why = ""
    if found is None and download:
        why = _download(ds, data_root)
        found = locate(ds, data_root or os.environ.get("LATENTBENCH_DATA") or "data")
    if found is None:
        raise UserError(str(_not_found(ds, data_root, download)) + why)
    arrays = {k: read_idx(p, 3 if k.endswith("images") else 1) for k, p in found.items()}
    for split in ("train", "test"):
        n_img, n_lab = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_img != n_lab:
            raise UserError(f"{found[f'{split}_labels']}: {n_lab} labels for {n_img} images in "
                            f"{found[f'{split}_images']}; the two files do not belong together")
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise UserError(f"{found['test_images']}: images of {arrays['test_images'].shape[1:]} but the train "
                        f"images are {arrays['train_images'].shape[1:]}; the files do not belong together")

    def images(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.float32)).div_(255.0).unsqueeze_(1)

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.int64))

    return Data(
        ds.name, images(arrays["train_images"]), images(arrays["test_images"]),
        labels(arrays["train_labels"]), labels(arrays["test_labels"]),
        info={"split": "official train/test", "root": str(found["train_images"].parent)},
    )


def mnist(seed: int = 0, data_root: str | None = None, download: bool = False) -> Data:
    """MNIST (28x28 grey, 60k/10k), official split, from its idx files."""
    return load_idx(SETS["mnist"], data_root, download)


def fashion_mnist(seed: int = 0, data_root: str | None = None, download: bool = False) -> Data:
    """Fashion-MNIST (28x28 grey, 60k/10k), official split, from its idx files (Debian's by default)."""
    return load_idx(SETS["fashion_mnist"], data_root, download)
