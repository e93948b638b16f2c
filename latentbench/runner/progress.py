"""One progress bar for a grid: the cells in progress with their epoch or scoring stage, and an ETA.

A cell counts as one unit of work: its training epochs fill the first ``TRAIN_SHARE`` of it and the
scoring stages the rest, so the bar moves during a long cell and its ETA (elapsed time over work done,
times the work left) covers the whole grid, not just the cell count. The same events arrive from the
grid loop in this process or, with ``--workers``, from the worker processes through pipes
(:mod:`latentbench.runner.workers`).
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

TRAIN_SHARE = 0.75
# the scorer's stages, in the order a cell usually reaches them (see score.scorer.ScoreContext)
SCORE_STAGES = ("sample", "geometry", "features", "likelihood", "fidelity", "subspace")


class GridProgress:
    """The grid's bar. ``total`` is the number of cells this process will try to compute."""

    def __init__(self, name: str, total: int, *, quiet: bool = False, file: Any = None) -> None:
        self.name, self.total, self.quiet = name, total, quiet
        self.finished = 0
        self.failed = 0
        self.active: dict[str, dict[str, Any]] = {}
        self.bar = tqdm(total=max(total, 1), disable=quiet, file=file or sys.stderr, smoothing=0,
                        desc=f"grid {name} 0/{total} cells",
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]")
        self._draw()

    def start(self, cell_id: str, label: str, token: str | None = None) -> None:
        """A cell was claimed (under the lease ``token``) and starts training."""
        self.active[cell_id] = {"label": label, "fraction": 0.0, "where": "starting"}
        self._draw()

    def epoch(self, cell_id: str, epoch: int, epochs: int) -> None:
        """``epoch`` of ``epochs`` training epochs of the cell are done."""
        if cell_id in self.active:
            self.active[cell_id].update(fraction=TRAIN_SHARE * epoch / max(epochs, 1), where=f"ep {epoch}/{epochs}")
            self._draw()

    def stage(self, cell_id: str, stage: str, fraction: float = 0.0) -> None:
        """The cell is in a scoring stage (``sample``, ``features``, ``fidelity``, ...), ``fraction`` of
        the way through it (0 as it starts; stages that report their progress, like the likelihood bound
        over the held-out images, send more)."""
        if cell_id in self.active:
            k = SCORE_STAGES.index(stage) if stage in SCORE_STAGES else len(SCORE_STAGES) - 1
            inside = min(max(float(fraction), 0.0), 1.0)
            frac = TRAIN_SHARE + (1 - TRAIN_SHARE) * (k + inside) / len(SCORE_STAGES)
            a = self.active[cell_id]
            where = f"scoring {stage}" + (f" {inside:.0%}" if inside > 0 else "")
            a.update(fraction=max(a["fraction"], frac), where=where)
            self._draw()

    def end(self, cell_id: str, outcome: str) -> None:
        """The cell ended: ``done`` or ``failed`` count as work done; ``skipped`` (finished by another
        process meanwhile) and ``busy`` (held by another process) leave the work to be done."""
        self.active.pop(cell_id, None)
        if outcome in ("done", "failed"):
            self.finished += 1
            self.failed += outcome == "failed"
        else:
            self.total = max(self.finished, self.total - 1)
            self.bar.total = max(self.total, 1)
        self._draw()

    def write(self, message: str) -> None:
        """A line above the bar (or plain stderr when quiet)."""
        if self.quiet:
            print(message, file=sys.stderr)
        else:
            tqdm.write(message, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()

    def _draw(self) -> None:
        if self.quiet:
            return
        self.bar.n = min(self.total, self.finished + sum(a["fraction"] for a in self.active.values()))
        failed = f", {self.failed} failed" if self.failed else ""
        self.bar.set_description_str(f"grid {self.name} {self.finished}/{self.total} cells{failed}", refresh=False)
        self.bar.set_postfix_str(" | ".join(f"{a['label']} {a['where']}" for a in self.active.values()), refresh=True)


def cell_label(cell: Any) -> str:
    """Short name of a cell for the bar: remedy, latent size and seed."""
    return f"{cell.remedy} z={cell.latent} s{cell.seed}"
