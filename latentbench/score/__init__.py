"""Scoring one trained cell: sample sets, sample quality (torch-fidelity), latent geometry, IWAE NLL."""
