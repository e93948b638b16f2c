"""Named random streams for scoring: a re-export of :mod:`latentbench.streams`, where they live so
that every room (training, priors, scoring) draws from the same kind of stream."""

from __future__ import annotations

from latentbench.streams import seed_of, stream, stream_seed

__all__ = ["seed_of", "stream", "stream_seed"]
