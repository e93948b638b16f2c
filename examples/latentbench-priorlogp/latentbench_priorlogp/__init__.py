"""A third-party latentbench metric: how plausible the prior finds the codes the decoder is fed from
the posterior mixture, E_{z ~ q(z)}[log p(z)] / D (nats per dimension; a cross-entropy term of
marginal KL, Hoffman & Johnson 2016, Eq. 2). Higher is better: a prior with holes where the
posterior mixture lives scores low.
"""

from __future__ import annotations

import torch

from latentbench import register_metric


@register_metric("prior_logp_post", higher_is_better=True,
                 description="mean log p(z) / D of posterior-mixture samples under the prior (nats)")
def prior_logp_post(ctx) -> float | None:
    from latentbench.score.latents import draw_posterior

    post = ctx.posteriors()  # the held-out posteriors (mu, logvar) the scorer uses
    z, _ = draw_posterior(post["mu"], post["logvar"], ctx.cell.n_samples, ctx.stream("priorlogp/post"))
    z = z.reshape(len(z), *ctx.model.latent.shape)
    prior = ctx.model.generative_prior
    with torch.no_grad():
        lp = torch.cat([prior.log_prob(z[i : i + 512]).double() for i in range(0, len(z), 512)])
    return (lp.mean() / z[0].numel()).item()
