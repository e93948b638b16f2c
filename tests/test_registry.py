import json
import sys
import textwrap

import pytest

from latentbench.cli import main
from latentbench.errors import UserError
from latentbench.registry import REMEDIES, Registry


def test_unknown_name_suggests_closest_and_lists_known():
    with pytest.raises(UserError) as e:
        REMEDIES.get("vaee")
    msg = str(e.value)
    assert msg.startswith("unknown remedy 'vaee'; did you mean 'vae'?")
    assert "known:" in msg and "beta_vae" in msg


def test_names_are_validated_and_duplicates_rejected():
    r = Registry("widget")
    for bad in ("Bad", "has space", "a/b", "1abc", ""):
        with pytest.raises(ValueError):
            r.register(bad, object())
    r.register("ok_1", "json:dumps")
    with pytest.raises(ValueError, match="already registered"):
        r.register("ok_1", object())


def test_lazy_entry_is_imported_on_first_get():
    r = Registry("widget")
    r.register("dumps", "json:dumps", description="JSON writer")
    assert r.get("dumps") is json.dumps
    assert r.describe("dumps") == "JSON writer"


def test_decorator_registers_and_wildcard_filters():
    r = Registry("widget")

    @r.register("alpha_prior")
    class A:
        """An alpha."""

    r.register("beta", object())
    assert r.names("*prior*") == ["alpha_prior"]
    assert r.describe("alpha_prior") == "An alpha."


@pytest.fixture
def fake_plugins(tmp_path, monkeypatch):
    """A fake installed distribution with one good and one broken entry point."""
    (tmp_path / "lb_good_plugin.py").write_text(textwrap.dedent('''
        class Good:
            """A good plugin remedy."""
    '''))
    (tmp_path / "lb_bad_plugin.py").write_text("raise ImportError('boom on import')\n")
    dist = tmp_path / "lbplugins-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lbplugins\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[latentbench.test_group]\ngood_one = lb_good_plugin:Good\nbad_one = lb_bad_plugin:Bad\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for m in ("lb_good_plugin", "lb_bad_plugin"):
        sys.modules.pop(m, None)


def test_entry_points_are_discovered_and_a_broken_plugin_is_reported_and_skipped(fake_plugins, capsys):
    r = Registry("remedy", "latentbench.test_group")
    r.register("builtin", object())
    names = r.names()
    assert names == ["builtin", "good_one"]
    assert r.get("good_one").__name__ == "Good"
    err = capsys.readouterr().err
    assert "'bad_one'" in err and "boom on import" in err and "left out" in err
    assert "bad_one" in r.broken
    # reported once, not on every lookup
    r.names()
    assert capsys.readouterr().err == ""


def test_cli_list_filters_by_pattern(capsys):
    assert main(["list", "remedies", "*beta*"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("beta_vae") and "Higgins" in out[0]


def test_cli_unknown_remedy_is_one_line_exit_2(capsys):
    assert main(["train", "--remedy", "vampp", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown remedy 'vampp'" in err[0]


def test_a_plugin_of_the_wrong_type_is_one_line_at_registration():
    from latentbench.remedies import Remedy

    r = Registry("remedy", base=Remedy)
    with pytest.raises(UserError, match=r"remedy 'not_a_remedy' must be a latentbench.remedies.Remedy, got dict"):
        r.register("not_a_remedy", dict)

    class Fine(Remedy):
        """A fine remedy."""

    assert r.register("fine", Fine) is Fine


def test_isolated_registry_undoes_registrations():
    from latentbench.remedies import Remedy

    with REMEDIES.isolated():
        @REMEDIES.register("temp_remedy")
        class Temp(Remedy):
            """Only inside the block."""

        assert "temp_remedy" in REMEDIES
    assert "temp_remedy" not in REMEDIES and "vae" in REMEDIES


def test_a_metric_needs_its_direction():
    from latentbench.registry import METRICS, register_metric

    with pytest.raises(ValueError, match="higher_is_better"):
        register_metric("no_direction", description="?")
    with METRICS.isolated():
        register_metric("descriptive_one", higher_is_better=None, description="shown, never ranked")(lambda ctx: 1.0)
        m = METRICS.get("descriptive_one")
        assert not m.ranked and m.direction == "descriptive, not ranked"
    assert "descriptive_one" not in METRICS
    # every built-in metric knows its direction, and the record-only ones are registered too
    assert METRICS.get("norm_prior_std").higher_is_better is None
    assert METRICS.get("fid_prior").lower_is_better and METRICS.get("recall_post").higher_is_better


def test_list_metrics_shows_each_direction(capsys):
    assert main(["list", "metrics", "fid_prior*"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["fid_prior", "lower", "is", "better"]


def test_a_plugin_that_exits_at_import_is_reported_not_fatal(tmp_path, monkeypatch, capsys):
    (tmp_path / "lb_exit_plugin.py").write_text("import sys\nsys.exit(3)\n")
    dist = tmp_path / "lbexit-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lbexit\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[latentbench.exit_group]\nexit_prior = lb_exit_plugin:X\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    r = Registry("remedy", "latentbench.exit_group")
    r.register("vae", object())
    assert r.names() == ["vae"]
    assert "exit_prior" in capsys.readouterr().err
    with pytest.raises(UserError, match="'exit_prior' is a plugin that failed to load"):
        r.get("exit_prior")
    sys.modules.pop("lb_exit_plugin", None)


def test_list_datasets_names_the_bring_your_own_forms(capsys):
    assert main(["list", "datasets"]) == 0
    out = capsys.readouterr().out
    assert "fashion_mnist" in out and "npz:PATH" in out and "folder:PATH" in out


def test_metric_goals_are_pinned():
    """Each built-in metric's goal, target and bound (scorer v4): what tables rank, how, and what they
    only show."""
    from latentbench.registry import METRICS, register_metric

    goals = {"fid_prior_post": "min", "fid_prior": "min", "fid_post": "min", "precision_prior": "max",
             "recall_post": "max", "elbo": "max", "nll_iw": "min", "mmd_latent": "min", "mean_offset": "min",
             "hole_fraction": "target", "sub_hole_fraction": "target", "spec_wide": "target",
             "spec_narrow": "target", "sub_spread": "target", "kl": "describe", "mutual_info": "describe",
             "marginal_kl": "describe", "norm_prior": "describe", "norm_post": "describe",
             "classifier_acc": "describe", "active_units": "describe", "sub_dims": "describe",
             "fid_floor": "describe", "fid_mu_unit": "describe", "fid_swap_sub": "describe"}
    for name, goal in goals.items():
        assert METRICS.get(name).goal == goal, name
    assert METRICS.get("hole_fraction").target == 0.01 and METRICS.get("sub_spread").target == 1.0
    assert METRICS.get("mutual_info").bound == "lower" and not METRICS.get("mutual_info").ranked
    assert METRICS.get("marginal_kl").bound == "upper" and METRICS.get("sub_marginal_kl").bound == "upper"
    hf = METRICS.get("hole_fraction")
    assert hf.badness(0.012) < hf.badness(0.0) < hf.badness(0.5)  # 0.01 is best, not 0
    assert METRICS.get("recall_post").badness(0.9) < METRICS.get("recall_post").badness(0.1)
    assert "upper bound" in METRICS.get("marginal_kl").direction
    with METRICS.isolated():
        with pytest.raises(ValueError, match="target"):
            register_metric("aimed", goal="target", description="x")
        with pytest.raises(ValueError, match="bound"):
            register_metric("odd", goal="min", bound="sideways", description="x")
        m = register_metric("ranked_bound", goal="min", bound="lower", description="x")(lambda ctx: 1.0)
        assert not m.ranked  # a bound is never ranked, whatever its goal
