"""First stages: the trained plain VAE that an ex-post remedy is fitted on, trained once and shared.

An ex-post remedy (expost_gmm, expost_flow, expost_diffusion, expost_gaussian, ncp_prior, two_stage)
trains exactly the plain VAE of the ``vae`` cell at the same seed and knobs, then fits a prior on its
codes (Ghosh et al. 2020, Sec. 4; Dai & Wipf 2019, Sec. 4). Its training is the first stage; the fit
is the second. A grid trains each first stage once and fits every ex-post prior of that setting on the
same decoder, so the ex-post priors are compared on one model, and the grid trains half the VAEs.

Whether a remedy shares the plain VAE's training is read from what the training loop uses of it
(:func:`shares_plain_training`): the N(0, I) training prior, beta = 1, the beta-ELBO loss, no networks
of its own, a stochastic encoder. A remedy that changes any of them (beta_vae, vamp, rae, aae, ...)
trains its own model. The first stage's identity is the plain ``vae`` cell's training fields (dataset,
split and data settings, arch, net, latent, seed, training knobs, likelihood): :func:`first_stage_cell`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from latentbench.data import Data
from latentbench.errors import UserError
from latentbench.model import VAE
from latentbench.remedies import Remedy, create_remedy
from latentbench.spec import Cell, cell_fields
from latentbench.training.checkpoint import load_checkpoint, save_checkpoint
from latentbench.training.expost import fit_expost

# the hooks of a remedy the training loop calls (model.py, training/loop.py): a remedy that overrides
# none of them, keeps beta = 1 and a stochastic encoder trains the plain VAE
TRAINING_HOOKS = ("build_prior", "setup", "loss", "aux_modules", "aux_step")
PLAIN = "vae"  # the remedy whose training every first stage is


def shares_plain_training(remedy: Remedy) -> bool:
    """Whether ``remedy`` trains exactly the plain VAE (its model then comes from a first stage)."""
    cls = type(remedy)
    same_hooks = all(getattr(cls, hook) is getattr(Remedy, hook) for hook in TRAINING_HOOKS)
    return same_hooks and not remedy.deterministic and float(remedy.beta) == 1.0


def first_stage_cell(cell: Cell) -> Cell | None:
    """The plain ``vae`` cell whose training ``cell`` shares (scoring fields at their defaults), or None
    when the cell's remedy trains a model of its own."""
    if not shares_plain_training(create_remedy(cell.remedy, **cell.remedy_params)):
        return None
    d = cell.to_dict()
    for f in cell_fields(train=False):  # scoring settings change no weight
        d.pop(f.name, None)
    return Cell.from_dict({**d, "remedy": PLAIN, "remedy_params": {}})


def first_stage_id(stage: Cell) -> str:
    """The first stage's id: readable prefix + the hash of its training fields (``Cell.train_key``), so
    cells that differ only in the ex-post prior or in scoring settings share it."""
    return f"{PLAIN}-{stage.latent}-s{stage.seed}-{stage.train_key}"


def fit_on_first_stage(cell: Cell, stage_checkpoint: Path, device: torch.device, data: Data, *,
                       stage_id: str, checkpoint: Path | None = None, quiet: bool = True,
                       guard: Callable[[], None] | None = None) -> tuple[VAE, dict[str, Any]]:
    """The cell's model from its finished first stage: the stage's weights (read back from disk, so
    that the decoder is the one every dependent cell sees), the cell's ex-post prior fitted on them
    (streams ``expost/*`` of the cell's seed, as when the cell trains alone), and the cell's own
    finished checkpoint written (a re-score reads it). Returns (model, info) like ``train_cell``;
    ``train_s`` is 0 (this cell trained nothing), ``first_stage_train_s`` the stage's training time."""
    model, _, payload = load_checkpoint(stage_checkpoint, device)
    if not payload.get("complete"):
        raise UserError(f"{stage_checkpoint}: the first stage {stage_id} is not finished; rerun the grid")
    stage_info = payload.get("info") or {}
    remedy = create_remedy(cell.remedy, **cell.remedy_params)
    expost_s = fit_expost(model, remedy, data.train.to(device), cell.seed, quiet=quiet, precision=cell.precision)
    info = {"history": stage_info.get("history", []), "epochs_run": stage_info.get("epochs_run", 0),
            "stopped_early": stage_info.get("stopped_early", False), "train_s": 0.0,
            "first_stage_train_s": stage_info.get("train_s", 0.0), "expost_s": expost_s,
            "first_stage": stage_id}
    if guard is not None:
        guard()
    if checkpoint is not None:
        save_checkpoint(checkpoint, model, cell, data.image_shape, epoch=info["epochs_run"],
                        history=info["history"], complete=True, info=info)
    return model, info
