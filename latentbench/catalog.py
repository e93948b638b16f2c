"""The built-in datasets and nets, registered lazily: nothing here imports torch-heavy code until it is used.

Built-in remedies register beside their definitions (``@register_remedy`` in each module of
``latentbench.remedies``), imported on the first lookup of a remedy name; metrics likewise
(``latentbench.score.metrics``).
"""

from __future__ import annotations

from latentbench.registry import DATASETS, NETS

_DATASETS = {
    "digits": ("latentbench.data.digits:load", "scikit-learn's 1797 real 8x8 digits, embedded (default)"),
    "mnist": ("latentbench.data.idx:mnist", "MNIST 28x28 from its idx files, .gz or not (--data-root, --download)"),
    "fashion_mnist": ("latentbench.data.idx:fashion_mnist",
                      "Fashion-MNIST 28x28 idx files; found in Debian's dataset-fashion-mnist by itself"),
    "cifar10": ("latentbench.data.vision:cifar10", "CIFAR-10 32x32 colour via torchvision (--data-root, --download)"),
    "synthetic": ("latentbench.data.synthetic:load", "procedural shapes with known factors, any size"),
}

_NETS = {
    "mlp": ("latentbench.nets.mlp:build", "fully connected encoder/decoder (flat view of any latent)"),
    "conv": ("latentbench.nets.conv:build", "DCGAN-style conv nets; spatial latents stay feature maps"),
}


def register_builtins() -> None:
    for registry, table in ((DATASETS, _DATASETS), (NETS, _NETS)):
        for name, (target, desc) in table.items():
            registry.register(name, target, description=desc)
