"""FID, KID and precision/recall through torch-fidelity's ``calculate_metrics`` on Dataset inputs.

Three comparisons per cell: prior vs data, posterior mixture vs data, prior vs posterior mixture.
KID's subset size shrinks to the smaller sample count when samples are few.
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


def compare(a: torch.Tensor, b: torch.Tensor, *, features: str, weights: Path | None, device: torch.device,
            seed: int, fid_only: bool = False) -> dict[str, float]:
    """FID, KID (mean, std), precision and recall of sample set ``a`` against reference ``b``
    (FID alone with ``fid_only``)."""
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
        cuda=device.type == "cuda", fid=True, kid=not fid_only, prc=not fid_only,
        kid_subset_size=min(1000, len(a), len(b)), kid_subsets=50,
        batch_size=500, save_cpu_ram=True, cache=False, verbose=False, rng_seed=seed, **kw,
    )
    if fid_only:
        return {"fid": float(m["frechet_inception_distance"])}
    return {
        "fid": float(m["frechet_inception_distance"]),
        "kid": float(m["kernel_inception_distance_mean"]),
        "kid_std": float(m["kernel_inception_distance_std"]),
        "precision": float(m["precision"]),
        "recall": float(m["recall"]),
    }
