"""Training: the shared loop every remedy trains through (``loop``), the ex-post fit of a prior on the
aggregate-posterior codes (``expost``), and checkpoints (``checkpoint``)."""
