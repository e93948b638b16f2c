"""The smallest real run the reliability tests share (one cell, seconds on a CPU)."""

TINY = ["run", "--remedies", "vae", "--latents", "2", "--epochs", "2", "--n-samples", "150", "--iw-k", "4", "--quiet"]
