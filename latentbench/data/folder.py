"""Your own images from a folder of files: ``--dataset folder:path/to/images``.

Layouts, as torchvision's ``ImageFolder`` reads them:

- class subfolders (``images/cat/001.png``, ``images/dog/7.jpg``, nested folders inside a class
  count for that class): labelled, classes numbered in sorted folder-name order;
- flat (``images/001.png``, ...): unlabeled;
- ``train/`` and ``test/`` subfolders, each in one of the layouts above: that split is used as given.
  Otherwise a seeded train/test split is drawn (``test_fraction``, default 0.2, stratified by class).

Files: PNG, JPEG, BMP, GIF, TIFF, WebP (read with Pillow, first frame). All images must have one size;
``size = N`` in ``[data]`` resizes them to N x N. They are grey (one channel) when every file is
grey, else RGB (alpha dropped).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentbench.data import Data
from latentbench.data.arrays import resolve, split, to_images
from latentbench.errors import UserError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_GREY = ("1", "L", "LA", "I", "I;16", "F")


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in it if p.is_file() and p.suffix.lower() in EXTENSIONS and not p.name.startswith("."))


def scan(folder: Path) -> tuple[list[Path], list[int] | None, list[str]]:
    """The image files of ``folder``, their class indices (None when flat) and the class names."""
    if not folder.is_dir():
        raise UserError(f"{folder}: folder not found; check the path after 'folder:'")
    loose = _images_in(folder, recursive=False)
    subdirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    classes = [(d.name, _images_in(d, recursive=True)) for d in subdirs]
    classes = [(c, files) for c, files in classes if files]
    if loose and classes:
        raise UserError(f"{folder}: has both loose images ({loose[0].name}, ...) and class subfolders "
                        f"({classes[0][0]}/, ...); move the loose images into a class folder, or away")
    if loose:
        return loose, None, []
    if not classes:
        raise UserError(f"{folder}: no image files ({', '.join(EXTENSIONS)}) found, flat or in class subfolders")
    files = [f for _, fs in classes for f in fs]
    labels = [i for i, (_, fs) in enumerate(classes) for _ in fs]
    return files, labels, [c for c, _ in classes]


def read_images(files: list[Path], size: int | None) -> np.ndarray:
    """Decode ``files`` into one uint8 array (N, H, W) when all are grey, else (N, H, W, 3)."""
    from PIL import Image, UnidentifiedImageError

    opened = []
    for f in files:
        try:
            with Image.open(f) as im:
                im.seek(0)
                im.load()
                opened.append(im.copy())
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise UserError(f"{f}: cannot read it as an image ({type(exc).__name__}: {exc}); "
                            "replace or remove the file") from None
    grey = all(im.mode in _GREY for im in opened)
    mode = "L" if grey else "RGB"
    first = opened[0].size
    out = []
    for f, im in zip(files, opened):
        if size is not None:
            im = im.resize((size, size), Image.Resampling.BILINEAR)
        elif im.size != first:
            raise UserError(f"{f}: is {im.size[0]}x{im.size[1]} but {files[0].name} is {first[0]}x{first[1]}; "
                            "set size = N in the [data] table to resize every image to N x N")
        out.append(np.asarray(im.convert(mode), dtype=np.uint8))
    return np.stack(out)


def _part(folder: Path, size: int | None, src: str) -> tuple[torch.Tensor, list[int] | None, list[str]]:
    files, labels, classes = scan(folder)
    return to_images(read_images(files, size), src), labels, classes


def _labels(v: list[int] | None) -> torch.Tensor | None:
    return None if v is None else torch.tensor(v, dtype=torch.int64)


def load(path: str, seed: int = 0, test_fraction: float = 0.2, size: int | None = None,
         data_root: str | None = None) -> Data:
    """Load a folder of images as a dataset; see the module docstring for the layouts."""
    name = f"folder:{path}"
    root = resolve(path, data_root)
    if size is not None and (not isinstance(size, int) or size < 1):
        raise UserError(f"dataset {name!r}: size must be a positive integer, got {size!r}")
    info: dict[str, Any] = {"folder": str(root)}
    if (root / "train").is_dir() and (root / "test").is_dir():
        xtr, ltr, ctr = _part(root / "train", size, str(root / "train"))
        xte, lte, cte = _part(root / "test", size, str(root / "test"))
        if xtr.shape[1:] != xte.shape[1:]:
            raise UserError(f"{root}: train images are {tuple(xtr.shape[1:])} but test images "
                            f"{tuple(xte.shape[1:])}; give both one size (or set size = N in [data])")
        if (ltr is None) != (lte is None) or (ltr is not None and ctr != cte):
            raise UserError(f"{root}: train/ and test/ must have the same class subfolders (or both be flat); "
                            f"train has {ctr or 'none'}, test has {cte or 'none'}")
        info["split"] = "given (train/, test/)"
        if ctr:
            info["classes"] = ctr
        return Data(name, xtr, xte, _labels(ltr), _labels(lte), info=info)
    x, labels, classes = _part(root, size, str(root))
    y = _labels(labels)
    if classes:
        info["classes"] = classes
    return split(name, x, y, seed, test_fraction, info)
