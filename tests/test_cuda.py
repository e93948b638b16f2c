"""The CUDA path: each training precision, device-resident data, channels_last. Skipped without a GPU."""

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_conv_cell_trains_and_scores_on_cuda():
    from latentbench.device import pick_device
    from latentbench.score.scorer import score_model
    from latentbench.spec import Cell
    from latentbench.training.loop import train_cell

    dev = pick_device("auto")
    assert dev.type == "cuda"
    cell = Cell(dataset="synthetic", arch="conv", latent="4x4x8", epochs=2, n_samples=200, iw_k=4,
                data={"n_train": 256, "n_test": 64, "size": 16})
    model, data, info = train_cell(cell, dev, quiet=True)
    assert next(model.parameters()).is_cuda
    metrics, _, _ = score_model(model, data, cell, dev)
    assert all(v == v for v in metrics.values())  # no NaN


@pytest.mark.parametrize("name", ["fp32", "tf32", "bf16"])
def test_seed_scale_step_runs_at_each_precision(name):
    from latentbench.device import precision
    from latentbench.model import build_model
    from latentbench.spec import Cell

    dev = torch.device("cuda")
    model, _ = build_model(Cell(arch="conv", latent="8x8x1024", likelihood="bernoulli"), (1, 28, 28))
    model.to(dev)
    with precision(dev, name):
        loss = model.loss(torch.rand(128, 1, 28, 28, device=dev))
    loss.backward()
    assert torch.isfinite(loss)


def test_diagnose_runs_on_cuda(tmp_path):
    from latentbench.report.diagnose import diagnose
    from latentbench.spec import Cell
    from latentbench.training.loop import train_cell

    dev = torch.device("cuda")
    cell = Cell(dataset="synthetic", arch="conv", latent="4x4x8", epochs=2, n_samples=200, iw_k=4,
                data={"n_train": 256, "n_test": 64, "size": 16})
    train_cell(cell, dev, checkpoint=tmp_path / "records" / "m.pt", quiet=True)
    (report,) = diagnose(tmp_path, dev)
    text = report.read_text()
    assert "**Reading.**" in text and "sub_spread" in text
    assert (report.parent / "spectrum.png").is_file() or "collapsed" in text
