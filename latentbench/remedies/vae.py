"""The VAE of Kingma & Welling (2014), "Auto-Encoding Variational Bayes".

Prior p(z) = N(0, I); loss = -ELBO, Eq. 3 with the closed-form KL of Eq. 10 (Appendix B).
This is the baseline whose prior holes grow with the latent size.
"""

from __future__ import annotations

from latentbench.remedies import Remedy, register_remedy


@register_remedy
class VAERemedy(Remedy):
    """Plain VAE, N(0, I) prior (Kingma & Welling 2014)."""

    name = "vae"
