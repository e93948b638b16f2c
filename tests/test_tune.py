import os
import subprocess
import sys

import optuna
import pytest

from latentbench.cli import main
from latentbench.spec import load_grid
from latentbench.tune import build_study

TUNE = ["tune", "--remedy", "beta_vae", "--latent", "2", "--epochs", "2", "--n-samples", "150", "--quiet"]


def _worker(storage: str, study: str, out: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "latentbench", *TUNE, "--trials", "3", "--storage", storage, "--study", study,
           "--out", out]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _two_workers(storage: str, study: str, tmp_path) -> optuna.Study:
    procs = [_worker(storage, study, str(tmp_path / f"best{i}.toml")) for i in range(2)]
    for p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out
    from latentbench.tune import make_storage

    return optuna.load_study(study_name=study, storage=make_storage(storage, study))


@pytest.mark.slow
def test_two_processes_share_one_journal_study(tmp_path):
    study = _two_workers(str(tmp_path / "journal.log"), "shared", tmp_path)
    finished = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(study.trials) == 6 and len(finished) == 6
    drawn = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(drawn)) == 6  # the two workers, both seeded with --seed 0, drew six different trials


@pytest.mark.parametrize("sampler", ["tpe", "random", "grid"])
def test_workers_started_together_or_restarted_draw_different_trials(tmp_path, sampler):
    from latentbench.tune import suggest

    storage = str(tmp_path / "journal.log")
    workers = [build_study("c", storage, sampler=sampler, seed=0) for _ in range(3)]  # same --seed
    trials = [w.ask() for w in workers]  # all three ask before any trial ends
    restarted = build_study("c", storage, sampler=sampler, seed=0).ask()
    remedy = "vae" if sampler == "grid" else "beta_vae"  # a grid needs a finite space: vae's is the knobs'
    drawn = [tuple(sorted(suggest(t, remedy, 30)[1].items())) + tuple(sorted(t.params.items()))
             for t in [*trials, restarted]]
    assert len(set(drawn)) == 4


@pytest.fixture(scope="module")
def postgres_url():
    from tests.pg import PostgresServer

    try:
        server = PostgresServer()
        url = server.start()
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the PostgreSQL test, but no server could be started: {exc}")
        pytest.skip(f"no PostgreSQL server could be started: {exc}")
    yield url
    server.stop()


@pytest.mark.slow
def test_two_processes_share_one_postgresql_study(postgres_url, tmp_path):
    study = _two_workers(postgres_url, "pg-shared", tmp_path)
    assert len(study.trials) == 6
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in study.trials)


def test_pruning_happens_on_a_crafted_objective(tmp_path):
    study = build_study("crafted", str(tmp_path / "j.log"), "minimize", "random", seed=0, warmup_epochs=1)

    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        for epoch in range(1, 6):
            trial.report(x * epoch, epoch)  # larger x is worse at every epoch
            if trial.should_prune():
                raise optuna.TrialPruned()
        return x

    study.optimize(objective, n_trials=20)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.PRUNED) >= 3
    assert states.count(optuna.trial.TrialState.COMPLETE) >= 2


def test_best_spec_round_trips_into_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "board.toml").write_text('name = "b"\nremedies = ["vae"]\nlatents = ["2"]\nepochs = 2\n'
                                         '[score]\nn_samples = 200\niw_k = 5\n')
    assert main([*TUNE, "--trials", "2", "--study", "rt", "--sampler", "random", "--board", "board.toml"]) == 0
    out = capsys.readouterr().out
    best = tmp_path / "best-rt.toml"
    grid = load_grid(best)
    cell = grid.cells()[0]
    # the spec says when a tuned shared knob keeps its runs from ranking beside the board
    assert ("note: its runs differ from the board in" in out) == ((cell.lr, cell.batch_size, cell.kl_warmup) != (1e-3, 128, 0))
    assert cell.remedy == "beta_vae" and "beta" in cell.remedy_params and cell.epochs == 2
    assert (cell.n_samples, cell.iw_k) == (200, 5)  # the board's scoring, not the tuning's 150
    assert main(["run", str(best), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    rec = next((tmp_path / "run" / "records").glob("*.json")).read_text()
    assert f'"beta": {cell.remedy_params["beta"]}' in rec
    capsys.readouterr()
    assert main(["tune", "--show", "--study", "rt"]) == 0
    out = capsys.readouterr().out
    head = [c.strip() for c in out.splitlines()[1].split("|")]
    assert "fid_prior, minimize" in out and "params_beta" in head and "value" not in head
    assert {"fid_prior", "duration_s", "hole_fraction"} <= set(head)  # the metric by name, seconds, other metrics
    assert main(["tune", "--show"]) == 0  # no --study: the studies in runs/tune
    out = capsys.readouterr().out
    assert "| rt " in out and "fid_prior" in out and "| beta_vae " in out
    assert main([*TUNE[:6], "3", *TUNE[7:], "--trials", "1", "--study", "rt"]) == 2  # other epochs, same study
    assert "study 'rt' was tuned with other settings (epochs 2 vs 3)" in capsys.readouterr().err


def test_trials_never_draw_a_kl_warmup_longer_than_training():
    from latentbench.tune import knob_choices, suggest

    assert knob_choices(2)["kl_warmup"] == [0] and knob_choices(10)["kl_warmup"] == [0, 10]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: float(suggest(t, "vae", 5)[1]["kl_warmup"]), n_trials=15)
    assert {t.params["kl_warmup"] for t in study.trials} == {0}


@pytest.mark.parametrize("extra, words", [
    (["--arch", "nosuch"], "unknown net 'nosuch'"),
    (["--metric", "nosuch"], "unknown metric 'nosuch'"),
    (["--storage", "binary.log"], "is not an Optuna journal"),
    (["--storage", "malformed.log"], "is not an Optuna journal"),
    (["--show", "--storage", "malformed.log"], "is not an Optuna journal"),
    (["--show", "--study", "x", "--storage", "binary.log"], "is not an Optuna journal"),
    (["--storage", "/proc/latentbench-tune.log"], "cannot write the Optuna journal"),
    (["--storage", "."], "is a folder"),
    (["--out", "."], "is a folder"),
])
def test_tune_errors_are_one_line_and_write_nothing(extra, words, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "binary.log").write_bytes(bytes(range(256)))
    (tmp_path / "malformed.log").write_text('{"op_code": 0, "worker_id": "w"\nnot json\n')
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    assert main([*TUNE, "--trials", "1", *extra]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line]
    assert len(err) == 1 and words in err[0], err
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("url", ["postgresql://nobody@127.0.0.1:1/none", "nosuchdb://x/y"])
def test_bad_storage_url_fails_with_one_line(url, capsys):
    assert main([*TUNE, "--trials", "1", "--storage", url]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line]
    assert len(err) == 1 and "cannot open Optuna storage" in err[0]


def test_show_of_a_missing_study_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["tune", "--show", "--study", "nosuch"]) == 2
    assert "no study 'nosuch'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
