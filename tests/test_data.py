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


def test_max_train_caps_the_training_split():
    assert len(load_data("digits", max_train=100).train) == 100


# ---- MNIST / Fashion-MNIST idx files -------------------------------------------------------------
DEBIAN = "/usr/share/datasets/fashion-mnist"
IDX_NAMES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


def _idx_bytes(arr):
    arr = np.asarray(arr, dtype=np.uint8)
    head = struct.pack(">I", 0x0800 | arr.ndim) + b"".join(struct.pack(">I", n) for n in arr.shape)
    return head + arr.tobytes()


def _write_idx_set(folder, gz=False, n=(12, 5), seed=0):
    """The four idx files of a small MNIST-shaped set; returns the arrays written."""
    import gzip

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {"train_images": rng.integers(0, 256, (n[0], 28, 28)), "train_labels": rng.integers(0, 10, n[0]),
              "test_images": rng.integers(0, 256, (n[1], 28, 28)), "test_labels": rng.integers(0, 10, n[1])}
    for key, arr in arrays.items():
        raw = _idx_bytes(arr)
        if gz:
            (folder / f"{IDX_NAMES[key]}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / IDX_NAMES[key]).write_bytes(raw)
    return arrays


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("layout", ["flat", "torchvision"])
@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_idx_files_load_gzipped_or_not_flat_or_torchvision_layout(tmp_path, name, folder, layout, gz):
    where = tmp_path if layout == "flat" else tmp_path / folder / "raw"
    arrays = _write_idx_set(where, gz=gz)
    d = load_data(name, data_root=str(tmp_path))
    assert d.name == name and d.train.shape == (12, 1, 28, 28) and d.test.shape == (5, 1, 28, 28)
    assert torch.equal(d.train[:, 0], torch.from_numpy(arrays["train_images"] / 255.0).float())
    assert d.train_labels.tolist() == arrays["train_labels"].tolist()
    assert d.test_labels.dtype == torch.int64 and d.test_labels.tolist() == arrays["test_labels"].tolist()


def _one_line_error(match, **kw):
    with pytest.raises(UserError) as e:
        load_data(**kw)
    msg = str(e.value)
    assert "\n" not in msg and match in msg, msg
    return msg


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_truncated_idx_file_is_one_line_naming_the_file(tmp_path, gz):
    import gzip

    _write_idx_set(tmp_path, gz=gz)
    f = tmp_path / (IDX_NAMES["train_images"] + (".gz" if gz else ""))
    raw = f.read_bytes()
    if gz:  # a cut download: the gzip stream ends early
        f.write_bytes(raw[: len(raw) // 2])
    else:
        f.write_bytes(raw[:-100])
    msg = _one_line_error(str(f), name="fashion_mnist", data_root=str(tmp_path))
    assert "truncated" in msg or "cannot read" in msg
    if not gz:
        assert "header says 12x28x28" in msg
    # a gzip file holding a truncated idx payload is caught by the size check too
    if gz:
        f.write_bytes(gzip.compress(gzip.decompress(raw)[:-1]))
        assert "truncated" in _one_line_error(str(f), name="fashion_mnist", data_root=str(tmp_path))


def test_wrong_magic_or_mismatched_files_are_one_line_naming_the_file(tmp_path):
    _write_idx_set(tmp_path)
    labels = tmp_path / IDX_NAMES["train_labels"]
    images = tmp_path / IDX_NAMES["train_images"]
    saved = images.read_bytes()
    images.write_bytes(labels.read_bytes())  # a labels file where the images should be
    msg = _one_line_error(str(images), name="mnist", data_root=str(tmp_path))
    assert "magic 0x00000801, expected 0x00000803" in msg
    images.write_bytes(saved)
    labels.write_bytes(_idx_bytes(np.zeros(11)))
    assert "11 labels for 12 images" in _one_line_error(str(labels), name="mnist", data_root=str(tmp_path))
    labels.unlink()
    _one_line_error("train-labels-idx1-ubyte", name="mnist", data_root=str(tmp_path))


def test_fashion_mnist_search_order_and_where_it_looked(tmp_path, monkeypatch):
    import latentbench.data.idx as idx

    debian, env, cwd = tmp_path / "usr", tmp_path / "env", tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.setattr(idx, "DEBIAN_ROOT", debian)
    monkeypatch.setenv("LATENTBENCH_DATA", str(env))
    monkeypatch.chdir(cwd)
    msg = _one_line_error("not found", name="fashion_mnist")
    for place in (str(debian / "fashion-mnist"), str(env), "data ("):
        assert place in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "--data-root" in msg and "--download" in msg
    # flat files in a shared root are ambiguous (MNIST has the same names): not taken
    _write_idx_set(env, n=(3, 2))
    _one_line_error("not found", name="fashion_mnist")
    _write_idx_set(cwd / "data" / "FashionMNIST" / "raw", n=(4, 2))
    assert len(load_data("fashion_mnist").train) == 4  # ./data, last in line
    _write_idx_set(env / "fashion-mnist", gz=True, n=(5, 2))
    assert len(load_data("fashion_mnist").train) == 5  # $LATENTBENCH_DATA before ./data
    _write_idx_set(debian / "fashion-mnist", gz=True, n=(6, 2))
    assert len(load_data("fashion_mnist").train) == 6  # Debian's folder first
    assert len(load_data("mnist", data_root=str(env)).train) == 3  # an explicit root may be flat


def test_download_goes_through_torchvision_then_reads_the_idx_files(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    import latentbench.data.idx as idx

    monkeypatch.setattr(idx, "DEBIAN_ROOT", tmp_path / "none")
    calls = []

    class FakeFashionMNIST:  # stands in for the network: writes the files torchvision would
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            _write_idx_set(tmp_path / "dl" / "FashionMNIST" / "raw", gz=False, n=(7, 3))

    monkeypatch.setattr(tvd, "FashionMNIST", FakeFashionMNIST)
    d = load_data("fashion_mnist", data_root=str(tmp_path / "dl"), download=True)
    assert len(d.train) == 7 and calls and all(c[2] for c in calls)

    def offline(root, train, download):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(tvd, "FashionMNIST", offline)
    msg = _one_line_error("download failed", name="fashion_mnist", data_root=str(tmp_path / "x"), download=True)
    assert "RuntimeError: Error downloading" in msg


def test_real_fashion_mnist_from_debian_package():
    import os

    if not os.path.isdir(DEBIAN):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{DEBIAN} missing under CI; .ci/run installs dataset-fashion-mnist")
        pytest.skip("Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
    d = load_data("fashion_mnist", max_train=1000)
    assert d.info["root"] == DEBIAN and d.info["max_train"] == 1000
    assert d.train.shape == (1000, 1, 28, 28) and d.test.shape == (10000, 1, 28, 28)
    assert d.test.dtype == torch.float32 and d.test.min() == 0 and d.test.max() == 1
    assert abs(d.test.mean().item() - 0.2868) < 0.002  # Fashion-MNIST's test mean, not MNIST's 0.133
    assert torch.bincount(d.test_labels).tolist() == [1000] * 10
    assert d.train_labels[:5].tolist() == [9, 0, 0, 3, 0]  # the official training order


# ---- your own data: .npz / .npy and image folders ------------------------------------------------
def _images(n=40, h=8, w=8, seed=0):
    """Two easily told-apart kinds of images (bright top half / bright left half) with labels."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.integers(0, 60, (n, h, w)).astype(np.uint8)
    for i in range(n):
        if y[i]:
            x[i, : h // 2] += 180
        else:
            x[i, :, : w // 2] += 180
    return x, y


@pytest.mark.parametrize("shape", ["nhw", "nhwc", "nchw", "float"])
def test_npz_images_in_any_accepted_shape_and_dtype(tmp_path, shape):
    x, y = _images()
    arr = {"nhw": x, "nhwc": np.repeat(x[..., None], 3, -1), "nchw": x[:, None],
           "float": x.astype(np.float32) / 255}[shape]
    np.savez(tmp_path / "d.npz", images=arr, labels=y)
    d = load_data(f"npz:{tmp_path / 'd.npz'}", seed=0)
    c = 3 if shape == "nhwc" else 1
    assert d.name == f"npz:{tmp_path / 'd.npz'}" and d.image_shape == (c, 8, 8)
    assert len(d.train) == 32 and len(d.test) == 8 and d.train.min() >= 0 and d.train.max() <= 1
    assert torch.bincount(d.test_labels).tolist() == [4, 4]  # stratified
    everything = torch.cat([d.train, d.test])[:, 0].mul(255).round().to(torch.uint8)
    assert sorted(map(bytes, everything.numpy())) == sorted(map(bytes, x))


def test_npz_split_is_seeded_given_splits_and_string_labels_are_kept(tmp_path):
    x, y = _images()
    np.savez(tmp_path / "d.npz", x=x, y=np.array(["shirt", "boot"])[y])
    a, b, c = (load_data(f"npz:{tmp_path / 'd.npz'}", seed=s) for s in (0, 0, 1))
    assert torch.equal(a.test, b.test) and not torch.equal(a.test, c.test)
    assert a.info["classes"] == ["boot", "shirt"] and "stratified" in a.info["split"]
    np.savez(tmp_path / "k.npz", x_train=x[:30], y_train=y[:30], x_test=x[30:], y_test=y[30:])
    k = load_data("npz:k.npz", data_root=str(tmp_path))  # relative to --data-root
    assert len(k.train) == 30 and torch.equal(k.test_labels, torch.from_numpy(y[30:]))
    np.save(tmp_path / "u.npy", x)
    u = load_data(f"npz:{tmp_path / 'u.npy'}", test_fraction=0.25)
    assert u.train_labels is None and len(u.test) == 10 and "random" in u.info["split"]


@pytest.mark.parametrize("arrays,match", [
    ({"images": np.zeros((4, 5, 6, 7))}, "set layout = 'nhwc' or 'nchw'"),
    ({"images": np.full((4, 8, 8), -1.0)}, "rescale them"),
    ({"images": np.zeros((4, 8))}, "must be (N, H, W)"),
    ({"images": np.zeros((4, 8, 8)), "labels": np.zeros(3)}, "do not match 4 images"),
    ({"a": np.zeros((4, 8, 8)), "b": np.zeros(4)}, "name it 'images'"),
    ({"x_train": np.zeros((4, 8, 8)), "x_test": np.zeros((2, 8, 8)), "y_train": np.zeros(4)}, "only one of"),
])
def test_bad_npz_arrays_are_one_line(tmp_path, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    _one_line_error(match, name=f"npz:{tmp_path / 'bad.npz'}")


def test_dataset_names_with_a_path_pass_cell_validation_and_fail_clearly(tmp_path):
    from latentbench.spec import Cell

    assert Cell(dataset="npz:some/file.npz").dataset == "npz:some/file.npz"
    assert Cell(dataset="folder:imgs").dataset == "folder:imgs"
    _one_line_error("not found", name=f"npz:{tmp_path / 'missing.npz'}")
    _one_line_error("not found", name=f"folder:{tmp_path / 'missing'}")
    _one_line_error("no path after", name="folder:")
    _one_line_error("write --dataset npz:x.npz", name="x.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    _one_line_error("cannot read it", name=f"npz:{tmp_path / 'junk.npz'}")
    np.save(tmp_path / "u.npy", np.zeros((4, 8, 8)))
    _one_line_error("unexpected keyword", name=f"npz:{tmp_path / 'u.npy'}", download=True)


def _write_pngs(folder, x, names, fmt="png"):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for img, nm in zip(x, names):
        Image.fromarray(img).save(folder / f"{nm}.{fmt}")


def test_image_folder_class_layout_flat_layout_and_given_split(tmp_path):
    x, y = _images(n=20)
    for cls in (0, 1):
        _write_pngs(tmp_path / "cls" / ["left", "top"][cls], x[y == cls], range(10))
    d = load_data(f"folder:{tmp_path / 'cls'}", seed=3)
    assert d.image_shape == (1, 8, 8) and d.info["classes"] == ["left", "top"]
    assert len(d.train) == 16 and torch.bincount(d.test_labels).tolist() == [2, 2]
    left = torch.cat([d.train[d.train_labels == 0], d.test[d.test_labels == 0]])
    assert left[:, 0, :, :4].mean() > left[:, 0, :, 4:].mean() + 0.4  # labels follow the folders
    _write_pngs(tmp_path / "flat", x, range(20))
    f = load_data(f"folder:{tmp_path / 'flat'}")
    assert f.train_labels is None and len(f.train) + len(f.test) == 20
    rgb = np.repeat(x[..., None], 3, -1)
    rgb[0, 0, 0] = (255, 0, 0)
    _write_pngs(tmp_path / "split" / "train", rgb[:15], range(15))
    _write_pngs(tmp_path / "split" / "test", rgb[15:], range(5), fmt="jpg")
    s = load_data(f"folder:{tmp_path / 'split'}")
    assert s.image_shape == (3, 8, 8) and (len(s.train), len(s.test)) == (15, 5) and s.info["split"].startswith("given")


def test_image_folder_sizes_must_agree_or_be_resized(tmp_path):
    from PIL import Image

    x, _ = _images(n=4)
    _write_pngs(tmp_path / "imgs", x, range(4))
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(tmp_path / "imgs" / "odd.png")
    msg = _one_line_error("odd.png", name=f"folder:{tmp_path / 'imgs'}")
    assert "is 12x10" in msg and "size = N" in msg
    d = load_data(f"folder:{tmp_path / 'imgs'}", size=6, test_fraction=0.4)
    assert d.image_shape == (1, 6, 6) and len(d.train) + len(d.test) == 5
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG broken")
    _one_line_error("broken.png", name=f"folder:{tmp_path / 'imgs'}", size=6)
    (tmp_path / "empty").mkdir()
    _one_line_error("no image files", name=f"folder:{tmp_path / 'empty'}")


def test_unlabeled_data_is_scored_end_to_end_on_cluster_features(tmp_path, cpu, tiny_cell):
    from latentbench.data import Data
    from latentbench.runner.grid import run_cell
    from latentbench.score.features import ensure_classifier, pseudo_labels

    x, kind = _images(n=300)
    t = torch.from_numpy(x[:, None] / 255.0).float()
    clusters, _ = pseudo_labels(Data("npz:x", t, t[:10]), seed=0)
    for c in clusters.unique():  # each cluster holds one kind of image only
        assert len(np.unique(kind[clusters.numpy() == c.item()])) == 1
    for where in ("a", "b"):
        (tmp_path / where).mkdir()
        np.save(tmp_path / where / "faces.npy", x)
    cell = tiny_cell(dataset=f"npz:{tmp_path / 'a' / 'faces.npy'}", latent="4", epochs=2, n_samples=150,
                     iw_k=4, net={"hidden": [32]})
    rec = run_cell(cell, tmp_path / "run", cpu, command="test", quiet=True, compile=False, data_cache={})
    assert rec["status"] == "ok", rec["error"]
    key = rec["notes"]["feature_key"]
    assert key.startswith("npz-kmeans10-") and "faces" not in key
    assert np.isfinite(rec["metrics"]["fid_prior"]) and 0 < rec["metrics"]["classifier_acc"] <= 1
    # the same data read from another path reuses the same cached classifier
    moved = load_data(f"npz:{tmp_path / 'b' / 'faces.npy'}")
    _, info = ensure_classifier(moved, cpu)
    assert info["cached"] and info["key"] == key
