"""The Python API: the workflows the commands run, callable without the CLI, with the CLI's results."""

import json
import subprocess
import sys

import pytest


def test_import_latentbench_does_not_import_the_api_until_a_name_is_used():
    code = ("import sys, latentbench; assert 'latentbench.api' not in sys.modules; "
            "latentbench.train; assert 'latentbench.api' in sys.modules; print(sorted(latentbench.TUNE_DEFAULTS))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['epochs', 'iw_k', 'n_samples']"


def test_an_unknown_attribute_is_an_attribute_error():
    import latentbench

    with pytest.raises(AttributeError, match="no_such_name"):
        latentbench.no_such_name  # noqa: B018


def test_train_score_and_report_through_the_api(tmp_path):
    import latentbench as lb

    res = lb.train("vae", "2", 0, out=tmp_path / "train", device="cpu", epochs=2, net={"hidden": [32]})
    assert res.checkpoint.is_file() and res.checkpoint.parent == tmp_path / "train"
    assert set(res.evaluation) >= {"rec", "kl", "elbo"} and res.eval_note == ""
    assert res.info["epochs_run"] == 2

    scored = lb.score_checkpoint(res.checkpoint, n_samples=150, iw_k=4, device="cpu")
    assert scored.path == tmp_path / "train" / "rescored" / f"{scored.record['id']}.json"
    on_disk = json.loads(scored.path.read_text())
    assert on_disk["metrics"]["fid_prior_post"] == pytest.approx(scored.metrics["fid_prior_post"])
    assert on_disk["origin"] == "score" and on_disk["cell"]["n_samples"] == 150

    brief = lb.report_run(scored.path.parent)
    assert brief is not None and "vae" in brief
    assert (scored.path.parent / "leaderboard.md").is_file()


def test_tune_cells_take_the_api_defaults_under_the_flags_given():
    import latentbench as lb

    base = lb.tune_cell("beta_vae", "8", beta=2.0, dataset="digits")
    assert (base.epochs, base.n_samples, base.iw_k) == (30, 1000, 20)
    assert base.remedy_params == {"beta": 2.0}
    assert lb.tune_cell("vae", "8", epochs=5).epochs == 5


def test_the_cli_train_prints_what_the_api_returns(tmp_path, capsys):
    from latentbench.cli import main

    assert main(["train", "--latent", "2", "--epochs", "1", "--device", "cpu", "--out", str(tmp_path),
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"checkpoint: {tmp_path}") and "held-out" in out and "(1 epochs" in out
