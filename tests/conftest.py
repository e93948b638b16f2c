import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def cpu():
    return torch.device("cpu")


@pytest.fixture
def tiny_cell():
    """A cell that trains in well under a second on digits."""
    from latentbench.spec import Cell

    def make(**kw):
        base = dict(epochs=3, n_samples=200, iw_k=8, net={"hidden": [64]})
        base.update(kw)
        return Cell(**base)

    return make


@pytest.fixture(autouse=True, scope="session")
def _feature_cache(tmp_path_factory):
    """Domain-feature classifiers are cached per test session, never in the user's cache."""
    os.environ["LATENTBENCH_CACHE"] = str(tmp_path_factory.mktemp("lb-cache"))
    yield
