"""FID, KID and precision/recall through torch-fidelity's ``calculate_metrics`` on Dataset inputs.

Every image set of a cell passes through the feature extractor once (:class:`FeatureSpace`); the
comparisons (prior vs data, posterior mixture vs data, prior vs posterior mixture, the noise floor
between two posterior-mixture draws, the swap interventions) reuse the features. KID's subset size
shrinks to the smaller sample count when samples are few.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from latentbench.errors import UserError

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"


class TensorImages(Dataset):
    """Images as torch-fidelity wants them: float [0, 1] for the domain extractor, uint8 RGB for
    Inception."""

    def __init__(self, x: torch.Tensor, uint8_rgb: bool = False) -> None:
        if uint8_rgb:
            x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
            if x.shape[1] == 1:
                x = x.repeat(1, 3, 1, 1)
        self.x = x.cpu()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]


def inception_weights() -> Path:
    path = os.environ.get("LATENTBENCH_INCEPTION_WEIGHTS")
    if path:
        p = Path(path)
    else:
        p = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    if not p.is_file():
        raise UserError(
            f"--features inception: Inception weights not found at {p}; put {INCEPTION_FILE} there "
            "(or set LATENTBENCH_INCEPTION_WEIGHTS), or use --features domain"
        )
    return p


class FeatureSpace:
    """One feature extractor for a whole cell: each image set is passed through it once
    (:meth:`features`), and every comparison between sets reuses those features
    (:meth:`compare_features`), through torch-fidelity's own statistics, KID and PRC functions.

    The numbers are those of ``torch_fidelity.calculate_metrics`` on the same inputs and settings (a
    test checks it); only the repeated feature extraction is saved.
    """

    def __init__(self, *, features: str, weights: Path | None, device: torch.device) -> None:
        from torch_fidelity.utils import create_feature_extractor

        from latentbench.score.features import EXTRACTOR_NAME, register

        if features == "domain":
            register()
            self.kw = {"feature_extractor": EXTRACTOR_NAME, "feature_extractor_weights_path": str(weights)}
        else:
            self.kw = {"feature_extractor": "inception-v3-compat",
                       "feature_extractor_weights_path": str(inception_weights())}
        self.uint8 = features == "inception"
        self.cuda = device.type == "cuda"
        from torch_fidelity.utils import resolve_feature_layer_for_metric

        self.layers = {m: resolve_feature_layer_for_metric(m, **self.kw) for m in ("fid", "kid", "prc")}
        self.extractor = create_feature_extractor(self.kw["feature_extractor"], sorted(set(self.layers.values())),
                                                  cuda=self.cuda, verbose=False, **self.kw)

    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The extractor's features of one image set, by layer name."""
        from torch_fidelity.utils import get_featuresdict_from_dataset

        return get_featuresdict_from_dataset(TensorImages(images, self.uint8), self.extractor, batch_size=500,
                                             cuda=self.cuda, save_cpu_ram=True, verbose=False)

    def compare_features(self, fa: dict[str, torch.Tensor], fb: dict[str, torch.Tensor], *, seed: int,
                         fid_only: bool = False) -> dict[str, float]:
        """FID, KID (mean, std), precision and recall of features ``fa`` against reference ``fb``."""
        from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
        from torch_fidelity.metric_kid import kid_features_to_metric
        from torch_fidelity.metric_prc import prc_features_to_metric

        a, b = fa[self.layers["fid"]], fb[self.layers["fid"]]
        fid = fid_statistics_to_metric(fid_features_to_statistics(a), fid_features_to_statistics(b), False)
        out = {"fid": float(fid["frechet_inception_distance"])}
        if fid_only:
            return out
        kw = {"kid_subset_size": min(1000, len(a), len(b)), "kid_subsets": 50, "rng_seed": seed,
              "save_cpu_ram": True, "verbose": False}
        kid = kid_features_to_metric(fa[self.layers["kid"]], fb[self.layers["kid"]], **kw)
        prc = prc_features_to_metric(fa[self.layers["prc"]], fb[self.layers["prc"]], **kw)
        out.update({"kid": float(kid["kernel_inception_distance_mean"]),
                    "kid_std": float(kid["kernel_inception_distance_std"]),
                    "precision": float(prc["precision"]), "recall": float(prc["recall"])})
        return out


def compare(a: torch.Tensor, b: torch.Tensor, *, features: str, weights: Path | None, device: torch.device,
            seed: int, fid_only: bool = False) -> dict[str, float]:
    """FID, KID (mean, std), precision and recall of sample set ``a`` against reference ``b``
    (FID alone with ``fid_only``)."""
    space = FeatureSpace(features=features, weights=weights, device=device)
    return space.compare_features(space.features(a), space.features(b), seed=seed, fid_only=fid_only)


def compare_reference(a: torch.Tensor, b: torch.Tensor, *, features: str, weights: Path | None,
                      device: torch.device, seed: int) -> dict[str, float]:
    """The same comparison through ``torch_fidelity.calculate_metrics`` (a test holds :class:`FeatureSpace`
    to it)."""
    import torch_fidelity

    from latentbench.score.features import EXTRACTOR_NAME, register

    if features == "domain":
        register()
        kw = {"feature_extractor": EXTRACTOR_NAME, "feature_extractor_weights_path": str(weights)}
    else:
        kw = {"feature_extractor": "inception-v3-compat", "feature_extractor_weights_path": str(inception_weights())}
    uint8 = features == "inception"
    m = torch_fidelity.calculate_metrics(
        input1=TensorImages(a, uint8), input2=TensorImages(b, uint8),
        cuda=device.type == "cuda", fid=True, kid=True, prc=True,
        kid_subset_size=min(1000, len(a), len(b)), kid_subsets=50,
        batch_size=500, save_cpu_ram=True, cache=False, verbose=False, rng_seed=seed, **kw,
    )
    return {
        "fid": float(m["frechet_inception_distance"]),
        "kid": float(m["kernel_inception_distance_mean"]),
        "kid_std": float(m["kernel_inception_distance_std"]),
        "precision": float(m["precision"]),
        "recall": float(m["recall"]),
    }
