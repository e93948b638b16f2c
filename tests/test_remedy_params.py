"""Remedies as typed declarations: parameters checked once, registration beside the definition, the
dict API of older plugins, and every published cell keeping its id."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from latentbench.cli import main
from latentbench.errors import UserError
from latentbench.registry import REMEDIES
from latentbench.remedies import Remedy, create_remedy
from latentbench.remedies.params import field_types
from latentbench.spec import Cell, load_grid

ROOT = Path(__file__).parents[1]
BUILTINS = ["vae", "beta_vae", "mog_prior", "vamp", "flow_prior", "expost_gaussian", "expost_gmm", "expost_flow",
            "two_stage", "ncp_prior", "expost_diffusion", "wae_mmd", "info_vae", "aae", "rae", "lars_prior"]
RECORDS = sorted(ROOT.glob("leaderboards/*/records/*.json"))


def test_every_published_cell_keeps_its_id_and_its_remedy_parameters_are_accepted():
    assert RECORDS, "no published records under leaderboards/*/records/"
    checked = 0
    for path in RECORDS:
        record = json.loads(path.read_text())
        cell = Cell.from_dict(record["cell"])
        assert cell.id == record["id"], path
        create_remedy(cell.remedy, **cell.remedy_params)
        checked += 1
    assert checked == len(RECORDS)


@pytest.mark.parametrize("spec", sorted(ROOT.glob("baselines/*.toml")) + sorted(ROOT.glob("leaderboards/*/grids/*.toml")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_published_spec_builds_its_remedies(spec):
    for cell in load_grid(spec).cells():
        create_remedy(cell.remedy, **cell.remedy_params)


def test_the_builtins_register_beside_their_definition_with_their_docstring():
    assert set(BUILTINS) <= set(REMEDIES.names())
    for name in BUILTINS:
        cls = REMEDIES.get(name)
        assert cls.name == name and "description" not in cls.__dict__
        assert REMEDIES.describe(name) == cls.__doc__.strip().splitlines()[0]
        assert dataclasses.is_dataclass(cls.Params)
        for f in dataclasses.fields(cls.Params):  # typed, with a default
            assert field_types(cls.Params)[f.name] is not Any and f.default is not dataclasses.MISSING, (name, f.name)


def test_list_remedies_shows_every_builtin_with_its_description(capsys):
    assert main(["list", "remedies"]) == 0
    lines = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines() if ln.strip()}
    for name in BUILTINS:
        assert REMEDIES.describe(name) in lines[name]


def test_import_latentbench_imports_no_remedy_module():
    code = ("import sys, latentbench; print(sorted(m for m in sys.modules if m.startswith('latentbench.remedies.')));"
            "latentbench.REMEDIES.names(); print('latentbench.remedies.vamp' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["['latentbench.remedies.params']", "True"]


def test_values_are_coerced_to_their_declared_types_once():
    r = create_remedy("beta_vae", beta=4)  # a spec's `beta = 4`
    assert r.params.beta == 4.0 and type(r.params.beta) is float and r.beta == 4.0
    r = create_remedy("expost_gmm", max_components=10.0, codes="mean")
    assert r.params.max_components == 10 and type(r.params.max_components) is int
    assert r.expost_codes == "mean" and dict(r.p) == {"codes": "mean", "max_components": 10, "max_full_dim": 64}
    assert type(r).defaults() == {"codes": "sample", "max_components": 20, "max_full_dim": 64}


@pytest.mark.parametrize(("name", "params", "words"), [
    ("vamp", {"n_pseudo": 2.5}, "parameter 'n_pseudo' must be an integer, got 2.5 (float)"),
    ("vamp", {"n_pseudo": "50"}, "parameter 'n_pseudo' must be an integer, got '50' (str)"),
    ("beta_vae", {"beta": True}, "parameter 'beta' must be a number, got True (bool)"),
    ("wae_mmd", {"multiscale": 1}, "parameter 'multiscale' must be true or false, got 1 (int)"),
    ("expost_gmm", {"codes": "means"}, "parameter 'codes' must be one of 'mean', 'sample', got 'means'"),
    ("expost_diffusion", {"variance": "learned"}, "parameter 'variance' must be one of 'posterior', 'beta'"),
    ("mog_prior", {"n_component": 3}, "no parameter 'n_component' (did you mean 'n_components'?)"),
])
def test_a_wrong_type_or_name_is_one_line_naming_the_parameter_and_the_known_ones(name, params, words):
    with pytest.raises(UserError) as e:
        create_remedy(name, **params)
    msg = str(e.value)
    assert words in msg and "its parameters: " in msg and "\n" not in msg
    for known in create_remedy(name).p:
        assert known in msg.split("its parameters: ")[1]


def test_parameters_are_read_only():
    r = create_remedy("vamp", n_pseudo=7)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.params.n_pseudo = 8
    with pytest.raises(TypeError):
        r.p["n_pseudo"] = 8  # type: ignore[index]
    assert r.p["n_pseudo"] == 7 and list(r.p) == ["n_pseudo"] and len(r.p) == 1


def test_expost_codes_are_samples_by_default_and_means_for_a_deterministic_encoder():
    for name in ("expost_gaussian", "expost_gmm", "expost_flow", "two_stage", "ncp_prior", "expost_diffusion"):
        assert create_remedy(name).expost_codes == "sample", name
    assert create_remedy("rae").expost_codes == "mean"  # z = mu(x): q(z|x) is a point mass

    class Plugin(Remedy):
        """An ex-post plugin without a codes parameter."""

    assert Plugin().expost_codes == "sample"


def test_a_prior_fitted_on_unknown_codes_is_one_user_error():
    import torch

    from latentbench.latent import LatentShape
    from latentbench.priors.base import check_codes
    from latentbench.priors.gmm import ExpostGMMPrior

    assert check_codes("mean") == "mean"
    with pytest.raises(UserError, match="codes must be 'mean' or 'sample', got 'all'"):
        ExpostGMMPrior(LatentShape.parse("2"), ks=(1,)).fit_posterior(torch.zeros(4, 2), torch.zeros(4, 2), codes="all")


class OldStylePlugin(Remedy):
    """A remedy written against the dict API."""

    name = "old_style"
    description = "its own description"
    params = {"df": 3.0, "k": 2, "codes": "mean", "layers": [8, 8]}

    def read(self):
        return float(self.p["df"]), int(self.p["k"]), self.p["layers"], self.params["df"]


def test_a_plugin_written_against_the_dict_api_keeps_working():
    r = OldStylePlugin(df=5, k="4")  # values as given: such a plugin casts what it reads
    assert r.read() == (5.0, 4, [8, 8], 5)
    assert r.expost_codes == "mean" and OldStylePlugin.params == {"df": 3.0, "k": 2, "codes": "mean", "layers": [8, 8]}
    assert OldStylePlugin.defaults()["df"] == 3.0 and OldStylePlugin().p["layers"] is not OldStylePlugin.params["layers"]
    with pytest.raises(UserError, match="remedy 'old_style' has no parameter 'dof'"):
        OldStylePlugin(dof=5)
    with pytest.raises(UserError, match="parameter 'codes' must be one of 'mean', 'sample'"):
        OldStylePlugin(codes="x")
    with REMEDIES.isolated():
        REMEDIES.register("old_style", OldStylePlugin)
        assert REMEDIES.describe("old_style") == "its own description"
        assert create_remedy("old_style", df=7.0).p["df"] == 7.0


def test_params_must_be_a_dataclass():
    with pytest.raises(TypeError, match="Params must be a dataclass"):
        class Broken(Remedy):
            class Params:
                beta = 2.0
