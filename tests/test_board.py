"""Tables read each metric by its goal and never bold a difference within the records' noise floor."""

import json

import pytest

from latentbench.cli import main
from latentbench.registry import METRICS, Metric
from latentbench.report.leaderboard import render
from latentbench.report.tables import best_cells, records_frame, table, table_notes
from latentbench.runner.records import make_record, read_records, write_record
from latentbench.spec import Cell

# The scorer-v4 contract (goal, target, bound) of the metrics these tests use.
V4 = {
    "fid_prior": ("min", None, None), "fid_post": ("min", None, None), "fid_prior_post": ("min", None, None),
    "fid_floor": ("describe", None, None), "kid_prior_post": ("min", None, None), "kid_floor": ("describe", None, None),
    "hole_fraction": ("target", 0.01, None), "sub_hole_fraction": ("target", 0.01, None),
    "spec_wide": ("target", 1.0, None), "spec_narrow": ("target", 1.0, None), "sub_spread": ("target", 1.0, None),
    "mean_offset": ("min", None, None), "nll_iw": ("min", None, None), "kl": ("describe", None, None),
    "mutual_info": ("describe", None, "lower"), "marginal_kl": ("describe", None, "upper"),
    "gauss_kl": ("min", None, "lower"), "active_units": ("describe", None, None), "sub_dims": ("describe", None, None),
    "norm_prior": ("describe", None, None), "norm_post": ("describe", None, None),
}


@pytest.fixture
def v4_goals():
    """The metrics registered with their v4 goals for the test (whatever the installed scorer says)."""
    with METRICS.isolated():
        METRICS.names()  # built-ins and plugins loaded first, then overridden
        for name, (goal, target, bound) in V4.items():
            METRICS._items[name] = Metric(name, lambda ctx: None, goal, f"{name} (test)", target, bound)
            METRICS._descriptions[name] = f"{name} (test)"
        yield


def folder(tmp_path, cells, floors=True):
    """Records under tmp_path: cells {(remedy, latent, seed): metrics (+ "_notes")}; v4 notes with a
    fid_floor of 2.35 and a hole_fraction floor of 0.0123 unless ``floors`` is False (a scorer v3 record)."""
    for (remedy, latent, seed), metrics in cells.items():
        metrics = dict(metrics)
        extra = metrics.pop("_notes", {})
        notes = {"scorer_version": 4 if floors else 3, **extra}
        if floors:
            metrics.setdefault("fid_floor", 2.35)
            notes.setdefault("floors", {"hole_fraction": 0.0123})
        cell = Cell(remedy=remedy, latent=latent, seed=seed)
        rec = make_record(cell, status="ok", metrics=metrics, notes=notes,
                          prov={"latentbench": "0.1.0", "command": "latentbench run x"})
        write_record(tmp_path / "records" / f"{cell.id}.json", rec)
    return records_frame(read_records([tmp_path]))


FASHION = {("vae", "16", 0): {"fid_prior_post": 9.0}, ("expost_gmm", "16", 0): {"fid_prior_post": 1.08},
           ("flow_prior", "16", 0): {"fid_prior_post": 2.93}, ("vamp", "16", 0): {"fid_prior_post": 3.22}}


def test_rows_within_the_fid_floor_of_the_best_are_all_bold_and_the_note_gives_the_floor(tmp_path, v4_goals):
    df = folder(tmp_path, FASHION)
    t = table(df, "fid_prior_post")
    # 1.08 is not better than 2.93 or 3.22: two independent posterior draws are 2.35 apart
    assert [r for r in t.index if t.at[r, "z=16"].startswith("**")] == ["expost_gmm", "flow_prior", "vamp"]
    assert t.at["vae", "z=16"] == "9.000"
    note = table_notes(df, "fid_prior_post")[0]
    assert "ties are ties" in note and "fid_floor" in note and "2.350 at every latent size" in note


def test_without_floors_the_single_best_is_bold_as_before(tmp_path, v4_goals):
    df = folder(tmp_path, FASHION, floors=False)
    t = table(df, "fid_prior_post")
    assert [r for r in t.index if t.at[r, "z=16"].startswith("**")] == ["expost_gmm"]
    assert "no noise floor" in render(df, "fid_prior_post")


def test_with_several_seeds_the_spread_over_seeds_makes_ties_too(tmp_path, v4_goals):
    cells = {("vae", "2", s): {"fid_prior_post": v, "fid_floor": 0.1} for s, v in enumerate((4.0, 8.0, 12.0))}
    cells |= {("vamp", "2", s): {"fid_prior_post": v, "fid_floor": 0.1} for s, v in enumerate((5.0, 5.5, 6.0))}
    cells |= {("flow_prior", "2", s): {"fid_prior_post": v, "fid_floor": 0.1} for s, v in enumerate((20.0, 21.0, 22.0))}
    t = table(folder(tmp_path, cells), "fid_prior_post")
    assert t.at["vamp", "z=2"].startswith("**") and t.at["vae", "z=2"].startswith("**")  # 8 ± 4 against 5.5 ± 0.5
    assert not t.at["flow_prior", "z=2"].startswith("**")


def test_a_target_metric_is_ranked_by_its_distance_to_the_target(tmp_path, v4_goals):
    df = folder(tmp_path, {("vae", "8", 0): {"hole_fraction": 0.0}, ("vamp", "8", 0): {"hole_fraction": 0.3},
                           ("expost_gmm", "8", 0): {"hole_fraction": 0.011}, ("beta_vae", "8", 0): {"hole_fraction": 0.999}},
                floors=False)
    t = table(df, "hole_fraction")
    assert t.at["expost_gmm", "z=8"] == "**0.011**" and t.at["beta_vae", "z=8"] == "0.999"
    # with its floor (p = q reads up to 0.0123), 0.0085 is as good as 0.011; 0.0 is not (a prior too narrow)
    df = folder(tmp_path / "v4", {("vae", "8", 0): {"hole_fraction": 0.0}, ("vamp", "8", 0): {"hole_fraction": 0.3},
                                  ("expost_gmm", "8", 0): {"hole_fraction": 0.011},
                                  ("flow_prior", "8", 0): {"hole_fraction": 0.0085}})
    assert best_cells(df, "hole_fraction") == {"8": {"flow_prior", "expost_gmm"}}


def test_descriptive_metrics_and_bounds_are_never_bold_and_bounds_are_marked(tmp_path, v4_goals):
    cells = {(r, "32", 0): {"kl": kl, "mutual_info": mi, "marginal_kl": kl - mi, "active_units": au}
             for r, kl, mi, au in (("vae", 41.7, 5.7, 32), ("beta_vae", 19.9, 5.6, 32))}
    df = folder(tmp_path, cells)
    for m in ("kl", "mutual_info", "marginal_kl", "active_units"):
        assert not any("**" in v for v in table(df, m)["z=32"]), m
    assert table(df, "mutual_info").at["vae", "z=32"] == "≥ 5.700"
    assert table(df, "marginal_kl").at["beta_vae", "z=32"] == "≤ 14.3"
    assert "an upper bound (≤): shown, never ranked" in " ".join(table_notes(df, "marginal_kl"))


def test_a_collapsed_cell_is_flagged_and_never_ranked_best(tmp_path, v4_goals):
    df = folder(tmp_path, {("beta_vae", "2", 0): {"fid_prior_post": 0.003, "sub_dims": 0, "_notes": {"collapsed": True}},
                           ("vae", "2", 0): {"fid_prior_post": 40.8, "sub_dims": 2},
                           ("expost_gmm", "2", 0): {"fid_prior_post": 3.0, "sub_dims": 2}})
    t = table(df, "fid_prior_post")
    assert t.at["beta_vae", "z=2"] == "0.003 ∅" and t.at["expost_gmm", "z=2"] == "**3.000**"
    assert any("collapsed" in n for n in table_notes(df, "fid_prior_post"))
    # sub_dims 0 alone (a record without the note) is collapsed too
    df = folder(tmp_path / "b", {("beta_vae", "2", 0): {"fid_prior_post": 0.003, "sub_dims": 0},
                                 ("vae", "2", 0): {"fid_prior_post": 40.8, "sub_dims": 2},
                                 ("vamp", "2", 0): {"fid_prior_post": 41.0, "sub_dims": 2}}, floors=False)
    t = table(df, "fid_prior_post")
    assert t.at["vae", "z=2"] == "**40.8**" and t.at["beta_vae", "z=2"] == "0.003 ∅"


def test_nll_iw_that_is_not_a_bound_is_marked_and_never_ranked(tmp_path, v4_goals):
    df = folder(tmp_path, {("ncp_prior", "8", 0): {"nll_iw": 50.0, "_notes": {"nll_iw_bound": False}},
                           ("vae", "8", 0): {"nll_iw": 57.2}, ("vamp", "8", 0): {"nll_iw": 60.0}})
    t = table(df, "nll_iw")
    assert t.at["ncp_prior", "z=8"] == "≈50.0" and t.at["vae", "z=8"] == "**57.2**"
    assert any("not a bound" in n for n in table_notes(df, "nll_iw"))


BOARD = {(r, lat, 0): {"fid_prior_post": 3.0 * i + 1, "fid_prior": 4.0 * i + 2, "fid_post": 1.5, "kl": 20.0 + i,
                       "active_units": 8, "hole_fraction": 0.01 * i, "mutual_info": 5.0, "marginal_kl": 15.0,
                       "spec_wide": 1.0 + i, "nll_iw": 90.0 + i}
         for i, r in enumerate(("vae", "beta_vae", "vamp", "mog_prior", "flow_prior", "expost_gmm", "expost_flow",
                                "expost_diffusion", "two_stage", "ncp_prior"))
         for lat in ("2", "8", "32", "128")}


def test_the_printed_board_leads_with_the_gap_and_the_reconstruction_side_and_fits_a_terminal(tmp_path, v4_goals):
    df = folder(tmp_path, BOARD)
    brief = render(df, brief=True)
    assert brief.startswith("**fid_prior_post**") and "Noise floor of fid_prior_post" in brief
    assert "**fid_prior**" in brief and "fid_post / kl / active_units" in brief and "| 1.50 / 20 / 8 " in brief
    assert "hole_fraction" not in brief and "nll_iw" not in brief
    assert len(brief.splitlines()) <= 60 and max(len(line) for line in brief.splitlines() if line.startswith("|")) <= 100
    full = render(df)
    for words in ("### Latent geometry", "**hole_fraction**", "**spec_wide**", "### Likelihood",
                  "### Bounds and interventions (never ranked)", "≥ 5.000", "≤ 15.0"):
        assert words in full, words


def test_cli_prints_the_short_board_and_writes_every_table(tmp_path, v4_goals, capsys):
    folder(tmp_path, BOARD)
    assert main(["leaderboard", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("**fid_prior_post**") and "### Latent geometry" not in out and "--full" in out
    assert main(["leaderboard", str(tmp_path), "--full"]) == 0
    assert "### Latent geometry" in capsys.readouterr().out
    assert main(["leaderboard", str(tmp_path), "--out", str(tmp_path / "lb.md"), "--metric", "hole_fraction"]) == 0
    text = (tmp_path / "lb.md").read_text()
    assert text.startswith("**hole_fraction**") and "best at 0.01" in text and "**fid_prior_post**" in text
    js = json.loads(render(records_frame(read_records([tmp_path])), "fid_prior_post", "json"))
    assert js["goal"] == "min" and js["rows"]["vae"]["2"]["floor"] == 2.35 and js["rows"]["vae"]["2"]["best"]


def test_list_metrics_shows_goals_and_bounds(v4_goals, capsys):
    assert main(["list", "metrics"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "best at 0.01" in lines["hole_fraction"] and "descriptive, not ranked" in lines["kl"]
    assert "lower bound, not ranked" in lines["mutual_info"] and "upper bound, not ranked" in lines["marginal_kl"]
    assert "lower bound, not ranked; lower is better" in lines["gauss_kl"]
    assert "bounds are shown, never ranked" in out.splitlines()[-1]
