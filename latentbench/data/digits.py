"""scikit-learn's bundled ``load_digits``: 1797 real 8x8 handwritten digits, no download needed."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from latentbench.data import Data


def load(seed: int = 0, test_fraction: float = 0.2, **_: object) -> Data:
    """Digits scaled to [0, 1], with a stratified train/test split fixed by ``seed``."""
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None]  # (1797, 1, 8, 8)
    y = digits.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=seed
    )
    return Data(
        "digits",
        torch.from_numpy(xtr),
        torch.from_numpy(xte),
        torch.from_numpy(ytr),
        torch.from_numpy(yte),
        info={"split": f"stratified test_fraction={test_fraction} seed={seed}"},
    )
