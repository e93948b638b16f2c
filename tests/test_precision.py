"""Training precision is a cell setting; the default keeps every existing cell id."""

import pytest
import torch

from latentbench.errors import UserError
from latentbench.spec import Cell
from latentbench.training.loop import train_cell


def test_default_precision_is_fp32_and_leaves_cell_ids_unchanged():
    c = Cell(remedy="vae", latent="8")
    assert c.precision == "fp32"
    assert "precision" not in c._identity()
    assert Cell(remedy="vae", latent="8", precision="bf16").id != c.id


def test_unknown_precision_is_a_user_error():
    with pytest.raises(UserError, match="precision must be one of fp32, tf32, bf16"):
        Cell(precision="fp8")


def test_bf16_trains_on_the_cpu_path_and_changes_the_numbers(tiny_cell, cpu):
    runs = {}
    for name in ("fp32", "bf16"):
        model, data, info = train_cell(tiny_cell(latent="4", epochs=2, precision=name), cpu, quiet=True)
        runs[name] = info["history"][-1]["loss"]
        assert torch.isfinite(torch.tensor(runs[name]))
    assert runs["fp32"] != runs["bf16"]


def test_compile_mode_reaches_torch_compile(tiny_cell, cpu, monkeypatch):
    seen = {}

    def fake_compile(fn, mode=None):
        seen["mode"] = mode
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    train_cell(tiny_cell(latent="4", epochs=1), cpu, quiet=True, compile="reduce-overhead")
    assert seen["mode"] == "reduce-overhead"
    train_cell(tiny_cell(latent="4", epochs=1), cpu, quiet=True, compile=True)
    assert seen["mode"] is None
