import pickle
import struct

import numpy as np
import pytest
import torch

from latentbench.data import load_data
from latentbench.errors import UserError


def test_digits_is_real_scaled_and_split_stratified_by_seed():
    d = load_data("digits", seed=0)
    assert d.train.shape[1:] == (1, 8, 8) and len(d.train) + len(d.test) == 1797
    assert d.train.min() >= 0 and d.train.max() <= 1 and d.train.max() > 0.9
    # stratified: every class in the test split, in proportion
    counts = torch.bincount(d.test_labels, minlength=10)
    assert counts.min() >= 30
    again = load_data("digits", seed=0)
    assert torch.equal(d.test, again.test)
    other = load_data("digits", seed=1)
    assert not torch.equal(d.test, other.test)


def test_synthetic_any_size_and_channels_with_labels():
    d = load_data("synthetic", seed=0, n_train=50, n_test=10, size=20, channels=3)
    assert d.train.shape == (50, 3, 20, 20) and d.test.shape == (10, 3, 20, 20)
    assert d.train.min() >= 0 and d.train.max() <= 1
    assert set(d.train_labels.tolist()) <= set(range(5))
    assert torch.equal(d.train, load_data("synthetic", seed=0, n_train=50, n_test=10, size=20, channels=3).train)


def _write_idx(path, arr):
    arr = np.asarray(arr, dtype=np.uint8)
    magic = 0x0800 | arr.ndim
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic))
        for n in arr.shape:
            f.write(struct.pack(">I", n))
        f.write(arr.tobytes())


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_formats_load_from_idx_files(tmp_path, name, folder):
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("t10k", 5)):
        _write_idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, (n,)))
    d = load_data(name, data_root=str(tmp_path))
    assert d.train.shape == (12, 1, 28, 28) and d.test.shape == (5, 1, 28, 28)
    assert 0 <= d.train.min() and d.train.max() <= 1
    assert d.train_labels.dtype == torch.int64


def test_cifar10_loads_from_pickled_batches(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    # The tiny files cannot match the real archive's checksums; everything else is torchvision's code.
    monkeypatch.setattr(cifar.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for nm in names:
        entry = {"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), "labels": [0, 1, 2]}
        (base / nm).write_bytes(pickle.dumps(entry))
    (base / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    d = load_data("cifar10", data_root=str(tmp_path))
    assert d.train.shape == (15, 3, 32, 32) and d.test.shape == (3, 3, 32, 32)


def test_missing_files_offline_say_where_and_how(tmp_path):
    with pytest.raises(UserError) as e:
        load_data("mnist", data_root=str(tmp_path / "nowhere"))
    msg = str(e.value)
    assert "nowhere" in msg and "--download" in msg and "--data-root" in msg and "\n" not in msg


def test_max_train_caps_the_training_split():
    assert len(load_data("digits", max_train=100).train) == 100
