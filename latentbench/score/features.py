"""A domain feature space for torch-fidelity: a small classifier trained on the dataset's train split.

Inception weights cannot be assumed (and ImageNet features say little about 8x8 digits), so FID, KID
and precision/recall are computed in the penultimate layer of a classifier trained here: an MLP for
images up to 16x16, a small CNN above. It is seeded, trained once, and cached on disk under a key
that hashes the training images, the labels and the classifier's own hyperparameters, so a changed
dataset or setting never reuses stale features. Its held-out accuracy goes into every record.

Unlabeled data (a flat image folder, a ``.npy`` file) gets pseudo-labels instead: k-means clusters
of the training images in their leading PCA directions, the signal DeepCluster trains a convnet on
(Caron et al. 2018, "Deep Clustering for Unsupervised Learning of Visual Features", Sec. 3, Eq. 2).
The classifier then learns features that separate the data's main modes, which is what FID needs to
see a prior that misses or mixes them; its "accuracy" is the held-out agreement with the clusters.
The feature key says which: ``<dataset>-<hash>`` for labels, ``<dataset>-kmeans<K>-<hash>`` for
clusters. Only the data enters the key, never the path it was read from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

from latentbench.atomic import atomic_torch_save
from latentbench.fitting import fit_module
from latentbench.streams import stream_seed

EXTRACTOR_NAME = "latentbench-domain"
FEATURES_VERSION = 2  # 2: trained through fitting.fit_module with named random streams
DEFAULT_HPARAMS = {"epochs": 30, "lr": 1e-3, "batch_size": 128, "width": 128, "seed": 0}
# Pseudo-labels for unlabeled data: k-means with K clusters on the first ``pca`` principal components.
PSEUDO = {"method": "kmeans", "k": 10, "pca": 50, "n_init": 3}


def cache_dir() -> Path:
    root = os.environ.get("LATENTBENCH_CACHE") or Path.home() / ".cache" / "latentbench"
    return Path(root) / "features"


class DomainClassifier(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], n_classes: int, width: int = 128) -> None:
        super().__init__()
        c, h, w = image_shape
        if h * w <= 256:
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 256), nn.ReLU(), nn.Linear(256, width), nn.ReLU())
        else:
            self.body = nn.Sequential(
                nn.Conv2d(c, 32, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
                nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64 * 16, width), nn.ReLU(),
            )
        self.head = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.body(x)
        return f, self.head(f)


def has_labels(data) -> bool:
    """Whether ``data`` has labels of two classes or more for both splits."""
    return (data.train_labels is not None and data.test_labels is not None
            and len(torch.unique(data.train_labels)) >= 2)


def _dataset_tag(data) -> str:
    """The dataset's name without a path: ``npz:/a/b.npz`` -> ``npz``; registered names as they are."""
    return data.name.split(":", 1)[0]


def feature_key(data, hparams: dict[str, Any]) -> str:
    """Hash of the train split (images, and labels or the pseudo-label settings), image shape and
    classifier hyperparameters. The dataset enters by its content, not by the path it came from."""
    tag = _dataset_tag(data)
    meta: dict[str, Any] = {"v": FEATURES_VERSION, "dataset": tag, "shape": list(data.image_shape),
                            "hparams": hparams}
    labelled = has_labels(data)
    if not labelled:
        meta["pseudo"] = PSEUDO
    h = hashlib.sha256()
    h.update(json.dumps(meta, sort_keys=True).encode())
    h.update(data.train.contiguous().numpy().tobytes())
    if labelled:
        h.update(data.train_labels.contiguous().numpy().tobytes())
        return f"{tag}-{h.hexdigest()[:16]}"
    return f"{tag}-{PSEUDO['method']}{PSEUDO['k']}-{h.hexdigest()[:16]}"


def pseudo_labels(data, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means cluster indices of the train and test images (DeepCluster, Caron et al. 2018, Eq. 2:
    min over centroids C and assignments y_n of sum_n ||C y_n - f(x_n)||^2, here with f = PCA)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    xtr = data.train.flatten(1).numpy().astype("float64")
    xte = data.test.flatten(1).numpy().astype("float64")
    k = max(2, min(PSEUDO["k"], len(xtr) // 2))
    dims = max(1, min(PSEUDO["pca"], xtr.shape[1], len(xtr) - 1))
    pca = PCA(dims, svd_solver="randomized", random_state=stream_seed(seed, "features/pca") % 2**32).fit(xtr)
    km = KMeans(k, n_init=PSEUDO["n_init"], random_state=stream_seed(seed, "features/kmeans") % 2**32)
    km.fit(pca.transform(xtr))
    ytr = torch.from_numpy(km.labels_.astype("int64"))
    yte = torch.from_numpy(km.predict(pca.transform(xte)).astype("int64"))
    return ytr, yte


def ensure_classifier(data, device: torch.device, hparams: dict[str, Any] | None = None,
                      quiet: bool = True, announce: bool = False) -> tuple[Path, dict[str, Any]]:
    """Path to the cached classifier for ``data`` (training it first if needed) and its metadata.
    Unlabeled data trains it on k-means pseudo-labels (see the module docstring), never refuses.
    ``announce`` says so in one line on stderr before it trains (the grid does this before its first cell)."""
    hp = {**DEFAULT_HPARAMS, **(hparams or {})}
    key = feature_key(data, hp)
    path = cache_dir() / f"{key}.pt"
    if path.is_file():
        try:
            payload = torch.load(path, map_location="cpu", weights_only=False)
            return path, {"key": key, "accuracy": float(payload["accuracy"]), "cached": True}
        except Exception as exc:  # noqa: BLE001 - a truncated or foreign cache file is retrained
            import sys

            why = (str(exc).strip().splitlines() or [""])[0]
            print(f"latentbench: warning: cached feature classifier {path} is unreadable "
                  f"({type(exc).__name__}: {why}); retraining it", file=sys.stderr)
    if announce:
        import sys

        from tqdm.auto import tqdm

        tqdm.write(f"latentbench: training the feature classifier of {data.name} once (cached in {path.parent})",
                   file=sys.stderr)
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG as it was
        if not has_labels(data):
            ytr, yte = pseudo_labels(data, hp["seed"])
            data = dataclasses.replace(data, train_labels=ytr, test_labels=yte)
        return _train_classifier(data, device, hp, key, path, quiet)


def _train_classifier(data, device, hp, key, path, quiet):
    """Fit the classifier on the whole train split for ``epochs`` epochs (no validation rows: the test
    split gives the accuracy) through :func:`latentbench.fitting.fit_module`."""
    torch.manual_seed(stream_seed(hp["seed"], "features/init"))
    n_classes = data.num_classes
    net = DomainClassifier(data.image_shape, n_classes, hp["width"]).to(device)
    x, y = data.train.to(device), data.train_labels.to(device)
    fit_module(net, lambda xb, yb: F.cross_entropy(net(xb)[1], yb), (x, y),
               seed=stream_seed(hp["seed"], "features/fit"), lr=hp["lr"], batch_size=hp["batch_size"],
               epochs=hp["epochs"], val_fraction=0.0, precision="fp32", desc="train domain features", quiet=quiet)
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net(data.test[i : i + 1024].to(device))[1].argmax(1).cpu() for i in range(0, len(data.test), 1024)])
    acc = (pred == data.test_labels).float().mean().item()
    payload = {"state_dict": {k: v.cpu() for k, v in net.state_dict().items()}, "image_shape": list(data.image_shape),
               "n_classes": n_classes, "hparams": hp, "accuracy": acc, "key": key}
    atomic_torch_save(payload, path)
    return path, {"key": key, "accuracy": acc, "cached": False}


class DomainFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity extractor over a cached :class:`DomainClassifier` (weights via
    ``feature_extractor_weights_path``). Inputs are float images in [0, 1]."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise ValueError("the latentbench domain extractor needs feature_extractor_weights_path")
        payload = torch.load(feature_extractor_weights_path, map_location="cpu", weights_only=False)
        self.net = DomainClassifier(tuple(payload["image_shape"]), payload["n_classes"], payload["hparams"]["width"])
        self.net.load_state_dict(payload["state_dict"])

    @staticmethod
    def get_provided_features_list():
        return ("feat", "logits")

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "feat"

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return None

    def forward(self, x: torch.Tensor):
        feat, logits = self.net(x.float())
        out = {"feat": feat, "logits": logits}
        return tuple(out[name] for name in self.features_list)


def register() -> None:
    """Register the domain extractor with torch-fidelity (once per process)."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if EXTRACTOR_NAME not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(EXTRACTOR_NAME, DomainFeatureExtractor)
