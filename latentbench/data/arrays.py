"""Your own images from a NumPy file: ``--dataset npz:path/file.npz`` or ``npz:path/file.npy``.

Images may be (N, H, W), (N, H, W, C) or (N, C, H, W) (the layout of a 4-d array is told by which
axis has 1, 3 or 4 entries; set ``layout = "nhwc"`` or ``"nchw"`` in ``[data]`` where that is
ambiguous), as uint8 (0..255), bool, or float in [0, 1] (float in [0, 255] is divided by 255).

Array names in a ``.npz`` (the first that is present wins):

- images: ``images``, ``x``, ``data`` (or the only array in the file); labels, optional:
  ``labels``, ``y``, ``targets``. A seeded train/test split (``test_fraction``, default 0.2,
  stratified by label where every class has two images or more) is drawn from them.
- already split: ``x_train`` + ``x_test`` (or ``train_images`` + ``test_images``), with optional
  ``y_train`` + ``y_test`` (or ``train_labels`` + ``test_labels``) - Keras' ``mnist.npz`` layout.
- ``images = "NAME"`` / ``labels = "NAME"`` in ``[data]`` pick other arrays.

A ``.npy`` file holds the images alone (unlabeled). Labels may be any values (ints, strings); they
are numbered 0..K-1 in sorted order, and the names are kept in ``Data.info["classes"]``.
Relative paths are read from the working directory, or from ``data_root`` when it is given.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentbench.data import Data
from latentbench.errors import UserError

IMAGE_KEYS = ("images", "x", "data")
LABEL_KEYS = ("labels", "y", "targets")
SPLIT_KEYS = (("x_train", "x_test", "y_train", "y_test"),
              ("train_images", "test_images", "train_labels", "test_labels"))
LAYOUTS = ("nhwc", "nchw")


def resolve(path: str, data_root: str | None) -> Path:
    """``path`` as given (``~`` expanded), relative to ``data_root`` when that is set."""
    p = Path(path).expanduser()
    return p if p.is_absolute() or not data_root else Path(data_root).expanduser() / p


def to_images(arr: np.ndarray, src: str, layout: str | None = None) -> torch.Tensor:
    """An image array in any of the accepted shapes and dtypes as float (N, C, H, W) in [0, 1]."""
    a = np.asarray(arr)
    if layout is not None and layout not in LAYOUTS:
        raise UserError(f"{src}: layout must be 'nhwc' or 'nchw', got {layout!r}")
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4:
        if layout is None:
            first, last = a.shape[1] in (1, 3, 4), a.shape[3] in (1, 3, 4)
            if first == last:
                raise UserError(f"{src}: cannot tell the channel axis of images shaped {a.shape}; "
                                "set layout = 'nhwc' or 'nchw' in the [data] table")
            layout = "nhwc" if last else "nchw"
        if layout == "nhwc":
            a = a.transpose(0, 3, 1, 2)
    else:
        raise UserError(f"{src}: images must be (N, H, W), (N, H, W, C) or (N, C, H, W), got shape {a.shape}")
    if min(a.shape) == 0:
        raise UserError(f"{src}: the image array is empty (shape {a.shape})")
    if a.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).div_(255.0)
    if a.dtype == np.bool_:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise UserError(f"{src}: images must be uint8, bool or float, got dtype {a.dtype}")
    x = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(x).all():
        raise UserError(f"{src}: the images contain NaN or inf values; clean the array")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 255:
        raise UserError(f"{src}: image values span [{lo:g}, {hi:g}]; rescale them to [0, 1] or 0..255")
    t = torch.from_numpy(x)
    return t.div_(255.0) if hi > 1 else t


def to_labels(arrays: list[np.ndarray], counts: list[int], src: str) -> tuple[list[torch.Tensor], list[str]]:
    """Labels of each part as int64 class indices numbered over all parts, and the class names."""
    flat = []
    for a, n in zip(arrays, counts):
        a = np.asarray(a)
        if a.ndim == 2 and a.shape[1] == 1:
            a = a[:, 0]
        if a.ndim != 1 or len(a) != n:
            raise UserError(f"{src}: labels shaped {a.shape} do not match {n} images; give one label per image")
        flat.append(a)
    classes, index = np.unique(np.concatenate(flat), return_inverse=True)
    parts = np.split(index.astype(np.int64), np.cumsum(counts)[:-1])
    return [torch.from_numpy(p) for p in parts], [str(c) for c in classes]


def split(name: str, x: torch.Tensor, y: torch.Tensor | None, seed: int, test_fraction: float,
          info: dict[str, Any]) -> Data:
    """A seeded train/test split, stratified by label where every class has two images or more."""
    from sklearn.model_selection import train_test_split

    if not 0 < test_fraction < 1:
        raise UserError(f"{name}: test_fraction must be in (0, 1), got {test_fraction}")
    n = len(x)
    n_test = int(round(n * test_fraction))
    if n_test < 1 or n - n_test < 1:
        raise UserError(f"{name}: {n} images cannot be split with test_fraction={test_fraction}; "
                        "give more images or another test_fraction")
    idx = np.arange(n)
    strat = None
    if y is not None:
        counts = np.bincount(y.numpy())
        k = int((counts > 0).sum())
        if counts[counts > 0].min() >= 2 and min(n_test, n - n_test) >= k:
            strat = y.numpy()
    tr, te = train_test_split(idx, test_size=n_test, stratify=strat, random_state=seed)
    tr, te = torch.from_numpy(np.sort(tr)), torch.from_numpy(np.sort(te))
    info["split"] = (f"{'stratified' if strat is not None else 'random'} test_fraction={test_fraction} "
                     f"seed={seed}")
    return Data(name, x[tr], x[te], None if y is None else y[tr], None if y is None else y[te], info=info)


def _pick(keys: list[str], wanted: tuple[str, ...]) -> str | None:
    return next((k for k in wanted if k in keys), None)


def load(path: str, seed: int = 0, test_fraction: float = 0.2, layout: str | None = None,
         images: str | None = None, labels: str | None = None, data_root: str | None = None) -> Data:
    """Load ``path`` (.npz or .npy) as a dataset; see the module docstring for the array names."""
    name = f"npz:{path}"
    p = resolve(path, data_root)
    if not p.is_file():
        raise UserError(f"dataset {name!r}: file {p} not found; check the path after 'npz:'")
    try:
        loaded = np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"{p}: cannot read it as .npy/.npz ({type(exc).__name__}: {exc}); "
                        "save it with numpy.save or numpy.savez") from None
    info: dict[str, Any] = {"file": str(p)}
    if isinstance(loaded, np.ndarray):
        if labels is not None:
            raise UserError(f"{p}: a .npy file holds images only; save images and labels together with numpy.savez")
        return split(name, to_images(loaded, str(p), layout), None, seed, test_fraction, info)
    with loaded as z:
        keys = list(z.files)
        for x_tr, x_te, y_tr, y_te in SPLIT_KEYS:
            if images is None and x_tr in keys and x_te in keys:
                xs = [to_images(z[k], f"{p}[{k}]", layout) for k in (x_tr, x_te)]
                if xs[0].shape[1:] != xs[1].shape[1:]:
                    raise UserError(f"{p}: {x_tr} images are {tuple(xs[0].shape[1:])} but {x_te} are "
                                    f"{tuple(xs[1].shape[1:])}; give both splits the same image shape")
                ys: list[torch.Tensor | None] = [None, None]
                if (y_tr in keys) != (y_te in keys):
                    raise UserError(f"{p}: has only one of {y_tr}/{y_te}; give labels for both splits or neither")
                if y_tr in keys:
                    (ytr, yte), info["classes"] = to_labels([z[y_tr], z[y_te]], [len(xs[0]), len(xs[1])], str(p))
                    ys = [ytr, yte]
                info["split"] = f"given ({x_tr}/{x_te})"
                return Data(name, xs[0], xs[1], ys[0], ys[1], info=info)
        ikey = images or _pick(keys, IMAGE_KEYS) or (keys[0] if len(keys) == 1 else None)
        if ikey is None or ikey not in keys:
            raise UserError(f"{p}: no image array {'named ' + repr(images) if images else 'found'} among "
                            f"{', '.join(keys) or 'no arrays'}; name it 'images' (or set images = 'NAME' in [data])")
        x = to_images(z[ikey], f"{p}[{ikey}]", layout)
        lkey = labels or _pick(keys, LABEL_KEYS)
        y = None
        if lkey is not None:
            if lkey not in keys:
                raise UserError(f"{p}: no label array named {lkey!r} among {', '.join(keys)}")
            (y,), info["classes"] = to_labels([z[lkey]], [len(x)], f"{p}[{lkey}]")
    return split(name, x, y, seed, test_fraction, info)
