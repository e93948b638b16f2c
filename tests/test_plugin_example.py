"""The example plugin package is discovered through its entry point and runs in a tiny grid."""

import sys
from pathlib import Path

import pytest

from latentbench.registry import Registry
from latentbench.runner.grid import run_grid
from latentbench.spec import Grid

EXAMPLE = Path(__file__).parents[1] / "examples" / "latentbench-studentt"


@pytest.fixture
def installed_example(tmp_path, monkeypatch):
    """Install the example as pip would for its metadata: a dist-info with its entry points on sys.path."""
    import tomllib

    meta = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    eps = meta["project"]["entry-points"]["latentbench.remedies"]
    dist = tmp_path / "latentbench_studentt-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: latentbench-studentt\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text(
        "[latentbench.remedies]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items())
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import latentbench.registry as reg

    fresh = Registry("remedy", "latentbench.remedies")
    for name in reg.REMEDIES.names():
        fresh.register(name, reg.REMEDIES._items[name])
    monkeypatch.setattr(reg, "REMEDIES", fresh)
    import latentbench.remedies as remedies_mod

    monkeypatch.setattr(remedies_mod, "REMEDIES", fresh)
    yield fresh
    sys.modules.pop("latentbench_studentt", None)


def test_example_plugin_is_listed_beside_the_builtins(installed_example):
    names = installed_example.names()
    assert "studentt_prior" in names and "vae" in names
    assert "Takahashi" in installed_example.describe("studentt_prior")


def test_example_plugin_runs_in_a_tiny_grid(installed_example, tmp_path, cpu):
    g = Grid(name="p", remedies=["vae", "studentt_prior"], latents=["2"], seeds=[0],
             base={"epochs": 2, "n_samples": 150, "iw_k": 4, "net": {"hidden": [32]}})
    s = run_grid(g, tmp_path / "run", cpu, quiet=True)
    assert s["done"] == 2 and not s["failed"]


METRIC_EXAMPLE = Path(__file__).parents[1] / "examples" / "latentbench-priorlogp"


def test_example_metric_plugin_is_found_through_its_entry_point_and_recorded(tmp_path, monkeypatch, cpu):
    import tomllib

    from latentbench.registry import METRICS

    meta = tomllib.loads((METRIC_EXAMPLE / "pyproject.toml").read_text())
    eps = meta["project"]["entry-points"]["latentbench.metrics"]
    dist = tmp_path / "latentbench_priorlogp-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: latentbench-priorlogp\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[latentbench.metrics]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(METRIC_EXAMPLE))
    with METRICS.isolated():
        METRICS._plugins_loaded = False  # discover the example's entry point now
        assert METRICS.get("prior_logp_post").higher_is_better is True
        g = Grid(name="m", remedies=["vae"], latents=["2"], seeds=[0],
                 base={"epochs": 2, "n_samples": 150, "iw_k": 4, "net": {"hidden": [32]}})
        s = run_grid(g, tmp_path / "run", cpu, quiet=True)
        assert s["done"] == 1
        import json

        rec = json.loads(next((tmp_path / "run" / "records").glob("*.json")).read_text())
        assert rec["metrics"]["prior_logp_post"] < 0 and "fid_prior" in rec["metrics"]
    sys.modules.pop("latentbench_priorlogp", None)
