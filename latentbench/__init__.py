"""latentbench: how far do a VAE's prior samples fall from its aggregate posterior, across latent sizes?"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from latentbench.catalog import register_builtins as _register_builtins

__version__ = "0.1.0"

_register_builtins()

from latentbench.registry import DATASETS, METRICS, NETS, REMEDIES, Metric, register_metric  # noqa: E402
from latentbench.remedies import Remedy, create_remedy, list_remedies  # noqa: E402

if TYPE_CHECKING:  # what type checkers see of the lazy names below
    from latentbench.api import (
        TUNE_DEFAULTS,
        FixResult,
        SamplesResult,
        ScoreResult,
        TrainResult,
        diagnose_model,
        fix_model,
        load_model,
        load_sampler,
        make_cell,
        report_run,
        score_checkpoint,
        score_model,
        score_samples,
        train,
        tune_cell,
        wrap,
    )

# The Python API, imported on first use so that ``import latentbench`` stays cheap: name -> module.
_LAZY = {
    "train": "latentbench.api",
    "score_checkpoint": "latentbench.api",
    "report_run": "latentbench.api",
    "make_cell": "latentbench.api",
    "tune_cell": "latentbench.api",
    "TUNE_DEFAULTS": "latentbench.api",
    "TrainResult": "latentbench.api",
    "ScoreResult": "latentbench.api",
    "FixResult": "latentbench.api",
    "SamplesResult": "latentbench.api",
    "wrap": "latentbench.api",
    "load_model": "latentbench.api",
    "load_sampler": "latentbench.api",
    "score_model": "latentbench.api",
    "diagnose_model": "latentbench.api",
    "fix_model": "latentbench.api",
    "score_samples": "latentbench.api",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'latentbench' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["DATASETS", "METRICS", "NETS", "REMEDIES", "Metric", "Remedy", "create_remedy", "list_remedies",
           "register_metric", "__version__",
           # the Python API (lazy)
           "TUNE_DEFAULTS", "ScoreResult", "TrainResult", "make_cell", "report_run", "score_checkpoint", "train",
           "tune_cell", "wrap", "load_model", "load_sampler", "score_model", "diagnose_model", "fix_model",
           "score_samples", "FixResult", "SamplesResult"]
