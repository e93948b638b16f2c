"""Shared first stages: the plain VAE trained once per setting and reused by the vae cell and every
ex-post cell of that setting (latentbench.runner.stages, latentbench.training.first_stage)."""

import json
import os
import time

import pytest
import torch

from latentbench.spec import Cell, Grid

BASE = {"epochs": 2, "n_samples": 150, "iw_k": 4, "net": {"hidden": [32]}, "data": {"max_train": 300}}
SHARING = {"vae", "expost_gmm", "expost_flow", "expost_diffusion", "expost_gaussian", "ncp_prior", "two_stage"}


def _grid(remedies=("vae", "expost_gmm", "expost_gaussian", "beta_vae"), **base):
    return Grid(name="fs", remedies=list(remedies), latents=["2"], seeds=[0], base={**BASE, **base})


def _records(folder):
    return {json.loads(p.read_text())["cell"]["remedy"]: json.loads(p.read_text())
            for p in (folder / "records").glob("*.json")}


def test_exactly_the_remedies_that_train_the_plain_vae_share_its_first_stage():
    from latentbench.remedies import create_remedy, list_remedies
    from latentbench.training.first_stage import shares_plain_training

    sharing = {name for name in list_remedies() if shares_plain_training(create_remedy(name))}
    assert sharing == SHARING  # rae trains its own objective; beta_vae, vamp, aae, ... their own models
    for name in SHARING - {"vae"}:
        assert create_remedy(name).build_expost(Cell(latent="4").latent_shape) is not None
    assert not shares_plain_training(create_remedy("beta_vae"))
    assert shares_plain_training(create_remedy("beta_vae", beta=1.0))  # beta = 1 is the plain VAE's training


def test_a_first_stage_is_named_by_the_fields_that_train_it():
    from latentbench.training.first_stage import first_stage_cell, first_stage_id

    def sid(**kw):
        stage = first_stage_cell(Cell(**{**BASE, "latent": "2", **kw}))
        return None if stage is None else first_stage_id(stage)

    plain = sid(remedy="vae")
    assert plain.startswith("vae-2-s0-") and plain == sid(remedy="expost_gmm") == sid(remedy="two_stage")
    assert sid(remedy="expost_flow", remedy_params={"n_layers": 2}) == plain  # the ex-post prior's own settings
    assert sid(remedy="expost_gmm", n_samples=400, iw_k=9, iw_images=20) == plain  # scoring settings
    assert sid(remedy="beta_vae") is None and sid(remedy="rae") is None
    for change in ({"epochs": 3}, {"lr": 3e-3}, {"latent": "4"}, {"seed": 1}, {"arch": "conv"},
                   {"likelihood": "bernoulli"}, {"data": {"max_train": 200}}, {"net": {"hidden": [16]}}):
        assert sid(remedy="expost_gmm", **change) != plain, change
    assert sid(remedy="vae", data={"max_train": 300, "data_root": "/elsewhere"}) == plain  # where the data lives


def test_the_training_of_an_expost_cell_is_the_vae_cell_of_its_seed(cpu):
    """The streams are named per stage (train/split, train/init, train/epoch/<k>), so an ex-post cell
    trained alone ends with the vae cell's weights bit for bit: sharing the stage changes no number."""
    from latentbench.data import load_data
    from latentbench.training.loop import train_cell

    data = load_data("digits", seed=0, max_train=300)
    weights = {}
    for remedy in ("vae", "expost_gaussian"):
        model, _, _ = train_cell(Cell(**BASE, remedy=remedy, latent="2"), cpu, quiet=True, data=data)
        weights[remedy] = {k: v for k, v in model.state_dict().items() if not k.startswith("expost")}
    assert weights["vae"].keys() == weights["expost_gaussian"].keys()
    for k, v in weights["vae"].items():
        assert torch.equal(v, weights["expost_gaussian"][k]), k


def test_a_grid_with_the_shared_stage_gives_the_records_of_cells_computed_alone(tmp_path, cpu):
    from latentbench.report.compare import settings
    from latentbench.runner.grid import run_grid

    g = _grid()
    shared = run_grid(g, tmp_path / "shared", cpu, quiet=True)
    alone = run_grid(g, tmp_path / "alone", cpu, quiet=True, shared=False)
    assert shared["done"] == alone["done"] == 4 and not shared["failed"] and not alone["failed"]
    a, b = _records(tmp_path / "shared"), _records(tmp_path / "alone")
    stages = list((tmp_path / "shared" / "first_stages").iterdir())
    assert len(stages) == 1 and not (tmp_path / "alone" / "first_stages").exists()
    for remedy in a:
        assert a[remedy]["metrics"].keys() == b[remedy]["metrics"].keys()
        for k, v in a[remedy]["metrics"].items():
            assert v == pytest.approx(b[remedy]["metrics"][k], rel=1e-5, abs=1e-7), (remedy, k)
        assert settings(a[remedy]) == settings(b[remedy])  # the fair-comparison guard: one setting
        assert b[remedy]["first_stage"] is None
    for remedy in ("vae", "expost_gmm", "expost_gaussian"):
        assert a[remedy]["first_stage"] == stages[0].name
    assert a["beta_vae"]["first_stage"] is None  # trains its own model
    trained = [r for r in ("vae", "expost_gmm", "expost_gaussian") if a[r]["timing"]["train_s"] > 0]
    assert len(trained) == 1  # one cell trained the stage, the others spent no time training
    outcome = json.loads((stages[0] / "stage.json").read_text())
    assert outcome["status"] == "ok" and outcome["info"]["epochs_run"] == 2
    # the cells' own checkpoints re-score as before
    from latentbench.api import score_checkpoint

    ckpt = tmp_path / "shared" / "records" / f"{a['expost_gmm']['id']}.pt"
    res = score_checkpoint(ckpt, out=tmp_path / "rescored.json")
    assert res.metrics["fid_prior"] == pytest.approx(a["expost_gmm"]["metrics"]["fid_prior"], rel=1e-5)


def test_a_failed_first_stage_fails_each_dependent_cell_with_the_same_reason(tmp_path, cpu, monkeypatch):
    import latentbench.training.loop as loop
    from latentbench.runner.grid import run_grid

    calls = []
    real_fit = loop.fit

    def broken(model, remedy, cell, *a, **k):
        calls.append(cell.remedy)
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(loop, "fit", broken)
    g = _grid(remedies=("vae", "expost_gmm", "expost_gaussian"))
    s = run_grid(g, tmp_path, cpu, quiet=True)
    assert calls == ["vae"]  # trained (and failed) once, not once per cell
    errors = {r["error"] for r in s["failed"]}
    assert len(s["failed"]) == 3 and len(errors) == 1
    (error,) = errors  # the stage's own error first (an out of memory reads as one), then the stage
    assert error.startswith("RuntimeError: boom (in first stage vae-2-s0-") and "\n" not in error
    recs = _records(tmp_path)
    assert all(r["status"] == "failed" and f"in first stage {r['first_stage']}," in error for r in recs.values())
    # a later run retries the stage (as it recomputes failed cells)
    monkeypatch.setattr(loop, "fit", real_fit)
    time.sleep(0.05)
    s = run_grid(g, tmp_path, cpu, quiet=True)
    assert s["done"] == 3 and not s["failed"]


def test_a_first_stage_held_by_another_run_is_waited_for_and_a_dead_ones_taken_over(tmp_path, cpu, monkeypatch):
    from latentbench.runner.grid import attempt_cell, fs_clock
    from latentbench.runner.locks import CellLock
    from latentbench.runner.stages import FirstStage

    class Bar:
        def start(self, *a):
            pass

        def epoch(self, *a):
            pass

        def stage(self, *a):
            pass

    cell = Cell(**BASE, remedy="expost_gmm", latent="2")
    (tmp_path / "records").mkdir()
    stage = FirstStage.of(tmp_path, cell)
    stage.dir.mkdir(parents=True)
    other = CellLock(stage.lock.path)  # another run trains the stage
    assert other.acquire()
    try:
        since = fs_clock(tmp_path / "records")
        assert attempt_cell(cell, tmp_path, cpu, Bar(), since=since) == ("busy", None)
        assert not (tmp_path / "records" / f"{cell.id}.lock").exists()  # the cell's lease is given back
    finally:
        other._stop.set()  # its heartbeat stops: the run died
    old = time.time() - 1000
    os.utime(stage.lock.path, (old, old))
    outcome, rec = attempt_cell(cell, tmp_path, cpu, Bar(), since=since)
    assert outcome == "done" and rec["first_stage"] == stage.id and stage.state(since) == "ready"
    assert not stage.lock.path.exists()


def test_a_killed_first_stage_resumes_from_its_checkpoint(tmp_path, cpu):
    from latentbench.data import load_data
    from latentbench.runner.grid import run_grid
    from latentbench.runner.locks import LeaseLost
    from latentbench.runner.stages import FirstStage
    from latentbench.training.loop import train_cell

    g = _grid(remedies=("expost_gaussian",), epochs=12)
    (cell,) = g.cells()
    stage = FirstStage.of(tmp_path / "resumed", cell)
    stage.dir.mkdir(parents=True)
    epochs = []

    def killed():  # a run killed after epoch 11: its checkpoint holds epoch 10
        epochs.append(1)
        if len(epochs) == 11:
            raise LeaseLost("killed")

    with pytest.raises(LeaseLost):
        train_cell(stage.cell, cpu, checkpoint=stage.checkpoint, quiet=True,
                   data=load_data("digits", seed=0, max_train=300), guard=killed)
    assert torch.load(stage.checkpoint, weights_only=False)["epoch"] == 10
    assert run_grid(g, tmp_path / "resumed", cpu, quiet=True)["done"] == 1
    assert run_grid(g, tmp_path / "whole", cpu, quiet=True)["done"] == 1
    a, b = _records(tmp_path / "resumed")["expost_gaussian"], _records(tmp_path / "whole")["expost_gaussian"]
    assert a["notes"]["epochs_run"] == 12
    for k, v in a["metrics"].items():
        assert v == pytest.approx(b["metrics"][k], rel=1e-5, abs=1e-7), k


def test_force_recomputes_cells_on_the_kept_first_stage(tmp_path, cpu):
    from latentbench.runner.grid import run_grid

    g = _grid(remedies=("vae", "expost_gmm"))
    assert run_grid(g, tmp_path, cpu, quiet=True)["done"] == 2
    (stage,) = (tmp_path / "first_stages").iterdir()
    before = (stage / "checkpoint.pt").stat().st_mtime_ns
    recs = _records(tmp_path)
    s = run_grid(g, tmp_path, cpu, quiet=True, force=True)
    assert s["done"] == 2 and (stage / "checkpoint.pt").stat().st_mtime_ns == before
    again = _records(tmp_path)
    assert all(again[r]["timing"]["train_s"] == 0.0 for r in again)
    assert all(again[r]["metrics"] == recs[r]["metrics"] for r in again)


def test_force_help_says_how_to_retrain_a_first_stage():
    from latentbench.cli import build_parser

    text = build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    assert "first_stages/<id>" in " ".join(text.split()) and "--no-shared-stage" in text


@pytest.mark.slow
def test_two_workers_needing_one_first_stage_train_it_once(tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "latentbench", "run", "--remedies", "vae,expost_gmm,expost_gaussian",
           "--latents", "2", "--epochs", "2", "--n-samples", "150", "--iw-k", "4", "--quiet", "--workers", "2",
           "--out", str(tmp_path)]
    env = {**os.environ, "LATENTBENCH_LEASE_S": "4"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    recs = _records(tmp_path)
    assert len(recs) == 3 and all(r["status"] == "ok" for r in recs.values())
    assert len({r["first_stage"] for r in recs.values()}) == 1
    assert sum(r["timing"]["train_s"] > 0 for r in recs.values()) == 1
