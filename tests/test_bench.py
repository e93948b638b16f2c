import json
from pathlib import Path

import pytest

from latentbench.cli import main
from latentbench.errors import UserError
from latentbench.runner.grid import parse_shard, run_grid, shard_cells
from latentbench.spec import Cell, Grid, grid_from_dict, grid_to_toml, load_grid

TINY = {"epochs": 2, "n_samples": 150, "iw_k": 4, "net": {"hidden": [32]}}


def tiny_grid(**kw):
    g = Grid(name="t", remedies=["vae", "expost_gmm"], latents=["2", "4"], seeds=[0], base=dict(TINY))
    for k, v in kw.items():
        setattr(g, k, v)
    return g


def test_grid_expands_remedies_by_latents_by_seeds_with_unique_ids():
    g = tiny_grid(seeds=[0, 1])
    cells = g.cells()
    assert len(cells) == 2 * 2 * 2 and len({c.id for c in cells}) == 8


def test_cell_ids_are_stable_and_independent_of_key_order():
    a = Cell.from_dict({"remedy": "vae", "latent": "8", "seed": 1, "net": {"hidden": [3, 4]}})
    b = Cell.from_dict({"net": {"hidden": [3, 4]}, "seed": 1, "latent": "8", "remedy": "vae"})
    assert a.id == b.id
    assert a.id.startswith("vae-8-s1-") and len(a.id.split("-")[-1]) == 12
    assert Cell(remedy="vae", latent="8", seed=1).id == Cell(remedy="vae", latent=" 8 ", seed=1).id
    assert Cell(seed=1).id != Cell(seed=2).id


def test_shards_partition_the_grid():
    cells = tiny_grid(seeds=[0, 1, 2]).cells()
    parts = [shard_cells(cells, (i, 5)) for i in range(5)]
    ids = [c.id for p in parts for c in p]
    assert sorted(ids) == sorted(c.id for c in cells) and len(ids) == len(set(ids))


@pytest.mark.parametrize("bad", ["3/2", "2/2", "-1/2", "1/0", "a/b", "1"])
def test_bad_shards_are_user_errors(bad):
    with pytest.raises(UserError, match="bad --shard"):
        parse_shard(bad)


def test_spec_toml_round_trips_and_rejects_unknown_keys_and_types(tmp_path):
    g = grid_from_dict({"name": "x", "remedies": ["vae"], "latents": ["2", "4x4x2"], "seeds": [0, 3],
                        "epochs": 5, "net": {"hidden": [8]}, "score": {"n_samples": 100},
                        "remedy": {"beta_vae": {"beta": 2.0}}})
    p = tmp_path / "g.toml"
    p.write_text(grid_to_toml(g))
    back = load_grid(p)
    assert [c.id for c in back.cells()] == [c.id for c in g.cells()]
    with pytest.raises(UserError, match=r"unknown key 'epoch' in the top level; did you mean 'epochs'\?"):
        grid_from_dict({"epoch": 3}, src="s.toml")
    with pytest.raises(UserError, match=r"unknown key 'n_sample' in \[score\]"):
        grid_from_dict({"score": {"n_sample": 3}}, src="s.toml")
    with pytest.raises(UserError, match="key 'epochs' in the top level must be an integer, got str"):
        grid_from_dict({"epochs": "3"}, src="s.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nepochs = = 3\n')
    with pytest.raises(UserError, match=r"bad.toml: invalid TOML: .*line 2"):
        load_grid(bad)


def test_default_grid_is_the_digits_baseline_and_keeps_the_published_cell_ids():
    import argparse
    import json

    from latentbench.cli import build_parser
    from latentbench.cli.run import build_grid

    args = build_parser().parse_args(["run"])
    g = build_grid(args)
    spec = load_grid(Path(__file__).parents[1] / "baselines" / "digits.toml")
    assert g.name == "default" and isinstance(args, argparse.Namespace)
    assert [c.id for c in g.cells()] == [c.id for c in spec.cells()]
    # every published record's id is still the id of the cell it stores (old records stay valid)
    for f in sorted((Path(__file__).parents[1] / "leaderboards" / "digits" / "records").glob("*.json")):
        rec = json.loads(f.read_text())
        assert Cell.from_dict(rec["cell"]).id == rec["id"] == f.stem


def test_a_grid_from_flags_alone_is_named_after_its_output_folder(tmp_path):
    from latentbench.cli import build_parser
    from latentbench.cli.run import build_grid

    parse = build_parser().parse_args
    assert build_grid(parse(["run", "--out", str(tmp_path / "sweep-a")])).name == "sweep-a"
    assert build_grid(parse(["run", "--out", str(tmp_path / "sweep-b") + "/"])).name == "sweep-b"
    assert build_grid(parse(["run", "--out", str(tmp_path / "x"), "--name", "mine"])).name == "mine"
    spec = tmp_path / "s.toml"
    spec.write_text('name = "from-spec"\nremedies = ["vae"]\nlatents = ["2"]\n')
    assert build_grid(parse(["run", str(spec), "--out", str(tmp_path / "y")])).name == "from-spec"


BOARDS = {"digits-3seeds": "digits", "fashion_mnist-cpu": "fashion_mnist-cpu",
          "fashion_mnist-conv-cpu": "fashion_mnist-conv-cpu", "ghosh2020": "ghosh2020",
          "fashion_mnist-seed": "fashion_mnist-seed"}  # spec -> leaderboards/ folder
PARTIAL = {"fashion_mnist-seed"}  # published with --partial: a subset of its spec's cells
SHIPPED = sorted((Path(__file__).parents[1] / "latentbench" / "baselines").glob("*.toml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_baseline_parses_names_known_things_and_matches_its_board(path):
    from latentbench.runner.preflight import check_names, check_scoring

    grid = load_grid(path)
    cells = grid.cells()
    assert grid.name == path.stem and cells
    check_names(cells)
    check_scoring(cells)
    # the published board built from this spec holds exactly its cells
    board = BOARDS.get(path.stem)
    if board is not None:
        ids = {f.stem for f in (Path(__file__).parents[1] / "leaderboards" / board / "records").glob("*.json")}
        assert ids and (ids <= {c.id for c in cells} if board in PARTIAL else ids == {c.id for c in cells})


def test_where_the_data_lives_changes_neither_the_cell_id_nor_the_settings(tmp_path, cpu):
    from latentbench.report.compare import settings
    from latentbench.runner.grid import adopt_legacy_files, is_finished
    from latentbench.runner.records import make_record, read_record, write_record

    plain = Cell(remedy="vae", latent="2", data={"max_train": 500})
    here = Cell(remedy="vae", latent="2", data={"max_train": 500, "data_root": "/data/a", "download": True})
    there = Cell(remedy="vae", latent="2", data={"max_train": 500, "data_root": "/mnt/b"})
    assert here.id == there.id == plain.id == plain.legacy_id and here.train_key == plain.train_key
    assert Cell(remedy="vae", latent="2", data={"max_train": 400}).id != plain.id  # what the data is still counts
    recs = [make_record(c, status="ok", notes={"scorer_version": 2}) for c in (here, there)]
    assert settings(recs[0]) == settings(recs[1])
    # a run made while the location was part of the id resumes from its files under the new name
    records = tmp_path / "records"
    records.mkdir()
    old = {**make_record(here, status="ok", prov={"command": "latentbench run"}), "id": here.legacy_id}
    write_record(records / f"{here.legacy_id}.json", old)
    assert read_record(records / f"{here.legacy_id}.json")["id"] == here.id  # not corrupt
    adopt_legacy_files(tmp_path, [here])  # the same grid rerun; from then on the data may live anywhere
    assert is_finished(records / f"{there.id}.json", there) and not (records / f"{here.legacy_id}.json").exists()


def test_rerun_skips_finished_cells_and_completes_the_rest(tmp_path, cpu):
    g = tiny_grid()
    s1 = run_grid(g, tmp_path, cpu, quiet=True)
    assert s1["done"] == 4 and not s1["failed"]
    files = sorted((tmp_path / "records").glob("*.json"))
    before = {f: f.read_bytes() for f in files}
    files[0].unlink()  # as if the run had been killed before this cell finished
    s2 = run_grid(g, tmp_path, cpu, quiet=True)
    assert s2["done"] == 1 and s2["skipped"] == 3
    for f in files[1:]:
        assert f.read_bytes() == before[f]
    assert files[0].exists()
    s3 = run_grid(g, tmp_path, cpu, quiet=True, force=True)
    assert s3["done"] == 4


def _register_nan_remedy():
    from latentbench.priors.standard_normal import StandardNormal
    from latentbench.registry import REMEDIES
    from latentbench.remedies import Remedy

    class NaNPrior(StandardNormal):
        def analytic_kl(self, mu, logvar):
            return None

        def log_prob(self, z):
            return super().log_prob(z) * float("nan")

    class NaNRemedy(Remedy):
        name = "test_nan"

        def build_prior(self, latent, image_shape):
            return NaNPrior(latent)

    if "test_nan" not in REMEDIES:
        REMEDIES.register("test_nan", NaNRemedy)


def test_a_failing_cell_is_recorded_and_the_grid_goes_on(tmp_path, cpu):
    _register_nan_remedy()
    g = tiny_grid(remedies=["test_nan"], latents=["2"])
    g2 = tiny_grid(remedies=["vae"], latents=["3"])
    s = run_grid(g, tmp_path, cpu, quiet=True)
    assert len(s["failed"]) == 1
    rec = s["failed"][0]
    assert rec["status"] == "failed" and "non-finite loss at epoch" in rec["error"]
    assert run_grid(g2, tmp_path, cpu, quiet=True)["done"] == 1


@pytest.mark.slow  # a whole grid through the CLI: the full suite
def test_end_to_end_tiny_grid_through_the_cli(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", "--remedies", "vae,vamp", "--latents", "2,4", "--epochs", "2", "--n-samples", "150",
            "--out", str(out), "--quiet"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "fid_prior" in text and "| vamp" in text and "z=4" in text
    recs = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
    assert len(recs) == 4 and all(r["status"] == "ok" for r in recs)
    r = recs[0]
    for key in ("latentbench", "torch", "python", "device", "command", "started_at"):
        assert r["provenance"][key]
    assert r["provenance"]["command"].startswith("latentbench run --remedies vae,vamp")
    assert {"fid_prior", "fid_post", "fid_prior_post", "hole_fraction", "nll_iw", "active_units"} <= set(r["metrics"])
    pngs = list((out / "plots").glob("*.png"))
    assert {"fid_prior.png", "samples.png", "norms.png"} <= {p.name for p in pngs}
    assert all(p.stat().st_size > 5000 for p in pngs)
    # the same command again does no work
    assert main(args) == 0
    assert "0 cells run, 4 already done" in capsys.readouterr().out


@pytest.mark.parametrize("argv,msg", [
    (["run", "--shard", "3/2"], "bad --shard"),
    (["run", "--seeds", "-1"], "seeds must be >= 0"),
    (["run", "--epochs", "0"], "epochs must be >= 1"),
    (["run", "--remedies", "vampp"], "did you mean 'vamp'"),
    (["run", "--latents", "8x8x"], "bad latent size"),
    (["run", "--device", "cuda"], "CUDA is not available"),
])
def test_run_input_errors_are_one_line_exit_2_and_write_nothing(argv, msg, tmp_path, capsys, monkeypatch):
    import torch

    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.chdir(tmp_path)
    assert main(argv + ["--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0]
    assert not (tmp_path / "runs").exists()


def test_a_typo_in_a_remedy_table_of_the_spec_is_caught(tmp_path, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text('remedies = ["vae"]\nlatents = ["2"]\n[remedy.vaee]\nbeta = 2.0\n')
    assert main(["run", str(spec), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert "unknown remedy 'vaee'; did you mean 'vae'?" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_subgrid_adds_its_remedies_at_its_latents_and_round_trips(tmp_path):
    from latentbench.cli import build_parser
    from latentbench.cli.run import build_grid
    from latentbench.errors import UserError
    from latentbench.spec import grid_from_dict, grid_to_toml, tomllib

    spec = tmp_path / "s.toml"
    spec.write_text('remedies = ["vae", "beta_vae"]\nlatents = ["2"]\nseeds = [0, 1]\n'
                    '[[subgrid]]\nremedies = ["vae", "expost_gmm"]\nlatents = ["4"]\n')
    g = load_grid(spec)
    cells = {(c.remedy, c.latent, c.seed) for c in g.cells()}
    assert len(g.cells()) == len(cells) == 8
    assert ("expost_gmm", "4", 1) in cells and ("beta_vae", "4", 0) not in cells
    assert [c.id for c in grid_from_dict(tomllib.loads(grid_to_toml(g))).cells()] == [c.id for c in g.cells()]
    parse = build_parser().parse_args
    assert len(build_grid(parse(["run", str(spec), "--remedies", "vae"])).cells()) == 2  # the flags' grid only
    spec.write_text('remedies = ["vae"]\nlatents = ["2"]\n[[subgrid]]\nremedies = ["vae"]\n')
    with pytest.raises(UserError, match="needs both remedies and latents"):
        load_grid(spec)
    spec.write_text('remedies = ["vae"]\nlatents = ["2"]\n[[subgrid]]\nremedies = ["vae"]\nlatent = ["4"]\n')
    with pytest.raises(UserError, match="unknown key 'latent' in \\[\\[subgrid\\]\\]"):
        load_grid(spec)
