"""A domain feature space for torch-fidelity: a small classifier trained on the dataset's train split.

Inception weights cannot be assumed (and ImageNet features say little about 8x8 digits), so FID, KID
and precision/recall are computed in the penultimate layer of a classifier trained here: an MLP for
images up to 16x16, a small CNN above. It is seeded, trained once, and cached on disk under a key
that hashes the training images, the labels and the classifier's own hyperparameters, so a changed
dataset or setting never reuses stale features. Its held-out accuracy goes into every record.
"""

from __future__ import annotations

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
from latentbench.errors import UserError

EXTRACTOR_NAME = "latentbench-domain"
FEATURES_VERSION = 1
DEFAULT_HPARAMS = {"epochs": 30, "lr": 1e-3, "batch_size": 128, "width": 128, "seed": 0}


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


def feature_key(data, hparams: dict[str, Any]) -> str:
    """Hash of the train split (images and labels), image shape and classifier hyperparameters."""
    h = hashlib.sha256()
    h.update(json.dumps({"v": FEATURES_VERSION, "dataset": data.name, "shape": list(data.image_shape),
                         "hparams": hparams}, sort_keys=True).encode())
    h.update(data.train.contiguous().numpy().tobytes())
    h.update(data.train_labels.contiguous().numpy().tobytes())
    return f"{data.name}-{h.hexdigest()[:16]}"


def ensure_classifier(data, device: torch.device, hparams: dict[str, Any] | None = None,
                      quiet: bool = True) -> tuple[Path, dict[str, Any]]:
    """Path to the cached classifier for ``data`` (training it first if needed) and its metadata."""
    if data.train_labels is None:
        raise UserError(f"dataset {data.name!r} has no labels to train domain features on; use --features inception")
    hp = {**DEFAULT_HPARAMS, **(hparams or {})}
    key = feature_key(data, hp)
    path = cache_dir() / f"{key}.pt"
    if path.is_file():
        payload = torch.load(path, map_location="cpu", weights_only=False)
        return path, {"key": key, "accuracy": payload["accuracy"], "cached": True}
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG as it was
        return _train_classifier(data, device, hp, key, path, quiet)


def _train_classifier(data, device, hp, key, path, quiet):
    from tqdm.auto import tqdm

    g = torch.Generator().manual_seed(hp["seed"])
    torch.manual_seed(hp["seed"])
    n_classes = data.num_classes
    net = DomainClassifier(data.image_shape, n_classes, hp["width"]).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=hp["lr"])
    x, y = data.train.to(device), data.train_labels.to(device)
    bs = min(hp["batch_size"], len(x))
    for _ in tqdm(range(hp["epochs"]), desc="train domain features", disable=quiet, leave=False):
        perm = torch.randperm(len(x), generator=g).to(device)
        for i in range(0, len(x) - bs + 1, bs):
            idx = perm[i : i + bs]
            loss = F.cross_entropy(net(x[idx])[1], y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
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
