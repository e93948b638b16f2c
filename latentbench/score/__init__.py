"""Scoring: how far do prior samples fall from what this decoder can produce?

``sampling`` draws the prior / posterior-mixture / data sets, ``metrics`` registers every metric with
its direction, ``scorer`` loops over that registry for one trained cell; ``fidelity`` and ``features``
give FID/KID/PRC in a domain feature space, ``geometry`` the latent picture, ``likelihood`` the IWAE
bound.
"""
