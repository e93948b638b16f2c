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
