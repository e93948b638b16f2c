import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
# One thread per pytest-xdist worker: two workers with two threads each on two cores run small nets
# ten times slower (measured: a two-stage fit took 15.5 s with 1 thread and 162 s oversubscribed).
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_threads = max(1, min(2, (os.cpu_count() or 1) // _workers))
torch.set_num_threads(_threads)
os.environ.setdefault("OMP_NUM_THREADS", str(_threads))  # the latentbench subprocesses tests start


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


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One finished one-cell run per test module: (folder, record path, checkpoint path)."""
    from latentbench.cli import main
    from tests.tiny import TINY

    out = tmp_path_factory.mktemp("tiny") / "run"
    assert main([*TINY, "--out", str(out)]) == 0
    rec = next((out / "records").glob("*.json"))
    return out, rec, rec.with_suffix(".pt")
