"""``latentbench run --track mlflow`` against the real MLflow package, with a file store in tmp_path."""

import json
import sys

import pytest

from latentbench.cli import main

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

RUN = ["run", "--remedies", "vae", "--latents", "2", "--epochs", "2", "--n-samples", "150", "--iw-k", "4",
       "--quiet"]


def _cell_runs(client, exp_id):
    return [r for r in client.search_runs([exp_id]) if "latentbench.cell_id" in r.data.tags]


@pytest.mark.slow
def test_one_mlflow_run_per_cell_with_params_epochs_metrics_and_artifacts_never_duplicated(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run"
    uri = (tmp_path / "mlruns").as_uri()
    # a grid first run without tracking: the cell gets its run from the record and checkpoint later
    assert main([*RUN, "--out", str(out)]) == 0
    assert main([*RUN, "--out", str(out), "--track", "mlflow", "--track-uri", uri]) == 0
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("run")  # named after --out
    (run,) = _cell_runs(client, exp.experiment_id)
    rec = json.loads(next((out / "records").glob("*.json")).read_text())
    assert run.data.tags["latentbench.cell_id"] == rec["id"] and run.info.status == "FINISHED"
    assert run.data.params["remedy"] == "vae" and run.data.params["latent"] == "2"
    assert run.data.params["epochs"] == "2"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]
    assert run.data.metrics["fid_prior"] == pytest.approx(rec["metrics"]["fid_prior"])
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {f"{rec['id']}.json", "samples.png"} <= names
    grid_run = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert "leaderboard.md" in {a.path for a in client.list_artifacts(grid_run.info.run_id)}

    # the same command again: the cell is done, its run is not duplicated
    assert main([*RUN, "--out", str(out), "--track", "mlflow", "--track-uri", uri]) == 0
    assert [r.info.run_id for r in _cell_runs(client, exp.experiment_id)] == [run.info.run_id]

    # a recomputed cell replaces its run, with the losses logged live while it trains
    assert main([*RUN, "--out", str(out), "--track", "mlflow", "--track-uri", uri, "--force"]) == 0
    (fresh,) = _cell_runs(client, exp.experiment_id)
    assert fresh.info.run_id != run.info.run_id and fresh.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(fresh.info.run_id, "loss")] == [1, 2]
    assert len(client.search_runs([exp.experiment_id])) == 2  # the cell's run and the grid's run


def test_the_default_store_is_mlruns_in_the_output_folder(tmp_path, monkeypatch):
    from latentbench.runner.track import make_tracker

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert make_tracker("mlflow", tmp_path / "out").uri == (tmp_path / "out" / "mlruns").resolve().as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert make_tracker("mlflow", tmp_path / "out").uri == "sqlite:///elsewhere.db"


def test_missing_mlflow_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    assert main([*RUN, "--out", str(tmp_path / "run"), "--track", "mlflow"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['latentbench: error: --track mlflow needs MLflow: pip install "latentbench[mlflow]"']
    assert not list((tmp_path / "run").glob("records/*.json")) and not list((tmp_path / "run").glob("grids/*"))


def test_an_unreachable_store_is_one_warning_and_the_grid_goes_on(tmp_path, cpu, capsys):
    from latentbench.runner.grid import run_grid
    from latentbench.runner.track import guarded
    from latentbench.spec import Grid

    class Unreachable:
        def start_grid(self, *a):
            raise ConnectionError("connection refused\nmore detail")

        finish_grid = start_grid

    given = {}

    def execute(todo, folder, device, **kw):
        given.update(kw)
        return {"done": len(todo), "skipped": 0, "busy": 0, "failed": []}

    g = Grid(name="t", remedies=["vae"], latents=["2"], seeds=[0], base={"epochs": 1, "n_samples": 100})
    assert run_grid(g, tmp_path, cpu, tracker=Unreachable(), execute=execute)["done"] == 1
    assert given["tracker"] is None  # the cells go on untracked
    assert not guarded(Unreachable().finish_grid, tmp_path)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("warning: MLflow tracking of the grid failed" in e and "connection refused" in e
                                 for e in err)
