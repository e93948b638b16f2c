import pytest
import torch

from latentbench.latent import LatentShape
from latentbench.nets import build_nets


@pytest.mark.parametrize(
    "arch,image,latent",
    [
        ("mlp", (1, 8, 8), "32"),
        ("mlp", (1, 8, 8), "2x2x4"),
        ("conv", (1, 8, 8), "16"),
        ("conv", (1, 8, 8), "2x2x8"),
        ("conv", (1, 16, 16), "4x4x8"),
        ("conv", (3, 32, 32), "64"),
        ("conv", (1, 28, 28), "10"),
        ("conv", (1, 8, 8), "8x8x2"),
    ],
)
def test_encoder_decoder_shapes(arch, image, latent):
    z = LatentShape.parse(latent)
    enc, dec = build_nets(arch, image, z)
    x = torch.rand(3, *image)
    mu, logvar = enc(x)
    assert mu.shape == (3, *z.shape) and logvar.shape == mu.shape
    assert dec(mu).shape == (3, *image)


def test_seed_scale_spatial_latent_8x8x1024_on_28x28_batch_2():
    z = LatentShape.parse("8x8x1024")
    enc, dec = build_nets("conv", (1, 28, 28), z)
    mu, logvar = enc(torch.rand(2, 1, 28, 28))
    assert mu.shape == (2, 1024, 8, 8)
    assert dec(mu).shape == (2, 1, 28, 28)


def test_mlp_widths_are_configurable():
    enc, _ = build_nets("mlp", (1, 8, 8), LatentShape.parse("4"), hidden=[7, 5])
    sizes = [m.out_features for m in enc.net if isinstance(m, torch.nn.Linear)]
    assert sizes == [7, 5, 8]
