import pytest

from latentbench.errors import UserError
from latentbench.latent import LatentShape


def test_flat_latent():
    z = LatentShape.parse("32")
    assert z.shape == (32,) and z.dim == 32 and not z.spatial and str(z) == "32"


def test_spatial_latent_is_hxwxc_and_channels_first_in_torch():
    z = LatentShape.parse("8x8x1024")
    assert z.spatial and z.shape == (1024, 8, 8) and z.dim == 65536 and str(z) == "8x8x1024"


def test_canonical_string_normalises_spacing_and_case():
    assert str(LatentShape.parse(" 4X2x3 ")) == "4x2x3"


@pytest.mark.parametrize("bad", ["8x8x", "0", "-4", "8x8x1024x2", "abc", "", "4x0x2", "8x8"])
def test_malformed_or_nonpositive_latents_are_user_errors(bad):
    with pytest.raises(UserError, match="bad latent size"):
        LatentShape.parse(bad)
