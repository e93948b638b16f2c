"""The one fitting routine for auxiliary networks: split, early stopping, best weights, precision."""

import pytest
import torch
from torch import nn

from latentbench.fitting import fit_module, fit_precision, split_rows
from latentbench.streams import stream


def _data(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    return x, x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(n, generator=g)


def test_it_fits_and_is_deterministic_for_a_seed():
    x, y = _data()

    def run(seed):
        torch.manual_seed(0)
        net = nn.Linear(3, 1)
        fitted = fit_module(net, lambda a, b: (net(a).squeeze(1) - b).pow(2).mean(), (x, y), seed=seed, lr=0.05,
                            batch_size=32, epochs=30, patience=5)
        return net, fitted

    net, fitted = run(1)
    assert fitted.best < 0.05 and fitted.val_loss and len(fitted.train_loss) == fitted.epochs_run
    again, _ = run(1)
    other, _ = run(2)
    assert torch.equal(net.weight, again.weight)
    assert not torch.equal(net.weight, other.weight)


def test_early_stopping_restores_the_weights_of_the_best_validation_epoch():
    w = nn.Parameter(torch.zeros(()))
    module = nn.Module()
    module.w = w
    scripted = iter([3.0, 2.0, 1.0, 1.5, 2.5, 3.5, 4.5, 5.5])
    seen = []

    def loss(x):
        if module.training:
            return (w - x.mean() - 10).pow(2)  # every step moves w
        seen.append(float(w.detach()))
        return torch.tensor(next(scripted))

    fitted = fit_module(module, loss, torch.randn(50), seed=0, lr=0.1, batch_size=10, epochs=8, patience=3)
    assert fitted.stopped_early and fitted.epochs_run == 6
    assert fitted.best == 1.0 and fitted.val_loss == [3.0, 2.0, 1.0, 1.5, 2.5, 3.5]
    assert float(w.detach()) == seen[2] != seen[-1]


def test_without_validation_it_keeps_the_last_weights_and_never_stops():
    w = nn.Parameter(torch.zeros(()))
    module = nn.Module()
    module.w = w
    fitted = fit_module(module, lambda x: (w - x.mean()).pow(2), torch.randn(40), seed=0, lr=0.1, batch_size=8,
                        epochs=4, patience=1, val_fraction=0.0)
    assert fitted.epochs_run == 4 and not fitted.stopped_early and fitted.val_loss == []
    assert fitted.best == fitted.train_loss[-1]


def test_it_leaves_the_callers_global_generator_as_it_was():
    torch.manual_seed(123)
    net, x = nn.Linear(2, 1), torch.randn(30, 2)
    state = torch.get_rng_state()
    fit_module(net, lambda a: (net(a + torch.randn_like(a))).pow(2).mean(), x, seed=0, lr=0.01, batch_size=10,
               epochs=2)
    assert torch.equal(torch.get_rng_state(), state)


def test_the_enclosing_precision_reaches_the_loss():
    seen = []
    net = nn.Linear(2, 1)

    def loss(a):
        seen.append(torch.is_autocast_enabled("cpu"))
        return net(a).pow(2).mean()

    with fit_precision("bf16"):
        fit_module(net, loss, torch.randn(20, 2), seed=0, lr=0.01, batch_size=10, epochs=1)
    assert seen and all(seen)
    seen.clear()
    fit_module(net, loss, torch.randn(20, 2), seed=0, lr=0.01, batch_size=10, epochs=1)
    assert seen and not any(seen)


def test_draw_gives_fresh_randomness_each_epoch_and_a_fixed_validation_draw():
    val_batches, fit_batches = [], []
    net = nn.Linear(1, 1)

    def draw(rows, g):
        return (rows[0] + torch.randn(rows[0].shape, generator=g),)

    def loss(a):
        (fit_batches if net.training else val_batches).append(a.clone())
        return net(a).pow(2).mean()

    fit_module(net, loss, torch.zeros(20, 1), seed=0, lr=0.01, batch_size=18, epochs=3, draw=draw)
    assert len(val_batches) == 3 and all(torch.equal(v, val_batches[0]) for v in val_batches)
    assert not torch.equal(fit_batches[0], fit_batches[1])


def test_split_rows_is_seeded_and_disjoint():
    fit, val = split_rows(100, 0.1, stream(0, "fit/split"))
    assert len(val) == 10 and len(fit) == 90 and not set(fit.tolist()) & set(val.tolist())
    assert torch.equal(val, split_rows(100, 0.1, stream(0, "fit/split"))[1])
    with pytest.raises(ValueError):
        split_rows(1, 0.5, stream(0, "fit/split"))
