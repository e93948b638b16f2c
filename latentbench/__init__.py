"""latentbench: how far do a VAE's prior samples fall from its aggregate posterior, across latent sizes?"""

from latentbench.catalog import register_builtins as _register_builtins

__version__ = "0.1.0"

_register_builtins()

from latentbench.registry import DATASETS, METRICS, NETS, REMEDIES, Metric, register_metric  # noqa: E402
from latentbench.remedies import Remedy, create_remedy, list_remedies  # noqa: E402

__all__ = ["DATASETS", "METRICS", "NETS", "REMEDIES", "Metric", "Remedy", "create_remedy", "list_remedies",
           "register_metric", "__version__"]
