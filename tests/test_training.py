"""The training loop's schedule: early stopping (and its resume), the KL warm-up and beta in the loss.

The early-stopping tests script the held-out ELBO the loop watches (``evaluate``), so that the epoch of
the best weights and the epoch of the stop are known in advance; the training itself is real.
"""

import pytest
import torch

from latentbench.data import load_data
from latentbench.early_stop import EarlyStopping
from latentbench.model import build_model
from latentbench.training import loop
from latentbench.training.checkpoint import load_checkpoint
from latentbench.training.loop import fit, train_cell

# held-out ELBO per epoch: best after epoch 3, then two worse epochs (patience 2 stops after epoch 5)
SCRIPT = [-10.0, -8.0, -5.0, -6.0, -7.0, -9.0, -9.5, -9.9]
BEST, STOP = 3, 5


@pytest.fixture
def scripted_elbo(monkeypatch):
    """Replace the held-out evaluation by SCRIPT, indexed by the loop's epoch counter."""
    calls = []

    def evaluate(model, x, *args, **kwargs):
        calls.append(1)
        return {"elbo": SCRIPT[len(calls) - 1], "rec": 0.0, "kl": 0.0}

    monkeypatch.setattr(loop, "evaluate", evaluate)
    return calls


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a, b, atol=0.0):
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=0.0, atol=atol) for k in a)


# -- EarlyStopping itself ---------------------------------------------------------------------------

def test_early_stopping_stops_after_patience_worse_steps_and_an_equal_loss_counts_as_worse():
    stop = EarlyStopping(patience=2)
    assert [stop.step(v) for v in (5.0, 4.0, 4.0, 3.0, 3.5, 3.9)] == [False, False, False, False, False, True]
    assert stop.best == 3.0 and stop.bad == 2


def test_early_stopping_with_patience_zero_never_stops():
    stop = EarlyStopping(patience=0)
    assert not any(stop.step(float(v)) for v in range(100))


def test_early_stopping_restores_the_weights_of_the_best_step():
    net = torch.nn.Linear(3, 2)
    stop = EarlyStopping(patience=5, module=net)
    assert not stop.restore()  # nothing kept yet
    best = None
    for step, loss in enumerate([3.0, 1.0, 2.0, 4.0]):
        with torch.no_grad():
            net.weight.fill_(float(step))
        stop.step(loss)
        if loss == 1.0:
            best = _weights(net)
    assert stop.restore()
    assert _same(_weights(net), best)


def test_early_stopping_resumed_from_its_best_and_bad_count_stops_at_the_same_step():
    losses = [5.0, 3.0, 4.0, 4.5, 6.0]
    whole = EarlyStopping(patience=3)
    stopped = [whole.step(v) for v in losses]
    first = EarlyStopping(patience=3)
    for v in losses[:3]:
        first.step(v)
    again = EarlyStopping(patience=3, best=first.best, bad=first.bad)
    assert stopped[:3] + [again.step(v) for v in losses[3:]] == stopped == [False] * 4 + [True]


# -- early stopping in the training loop ------------------------------------------------------------

def test_training_stops_early_and_restores_the_best_epochs_weights(tiny_cell, cpu, scripted_elbo, monkeypatch):
    cell = tiny_cell(epochs=len(SCRIPT), early_stop=2)
    trained, kept = [], {}
    build = loop.build_model
    monkeypatch.setattr(loop, "build_model", lambda *a, **kw: trained.append(build(*a, **kw)) or trained[-1])

    def keep(epoch, stats):
        kept[epoch] = _weights(trained[0][0])

    model, _, info = train_cell(cell, cpu, quiet=True, on_epoch=keep)
    assert info["stopped_early"] and info["epochs_run"] == STOP
    assert [h["epoch"] for h in info["history"]] == list(range(1, STOP + 1))
    assert _same(_weights(model), kept[BEST])  # not the weights of the last epoch
    assert not _same(kept[BEST], kept[STOP - 1])


def test_early_stopping_off_trains_every_epoch(tiny_cell, cpu, scripted_elbo):
    cell = tiny_cell(epochs=len(SCRIPT), early_stop=0)
    _, _, info = train_cell(cell, cpu, quiet=True)
    assert not info["stopped_early"] and info["epochs_run"] == len(SCRIPT)


def _straight_and_resumed(cell, cpu, tmp_path, monkeypatch, interrupt_after):
    """Train ``cell`` straight through, and again interrupted after ``interrupt_after`` epochs and
    resumed from its checkpoint, under the scripted held-out ELBO: (straight, resumed) (model, info)."""
    done = []  # the epoch the script has reached, carried across the interruption

    def evaluate(model, x, *args, **kwargs):
        done.append(1)
        return {"elbo": SCRIPT[len(done) - 1], "rec": 0.0, "kl": 0.0}

    monkeypatch.setattr(loop, "evaluate", evaluate)
    straight, _, straight_info = train_cell(cell, cpu, quiet=True)

    class Stop(Exception):
        pass

    def stop_after(epoch, stats):
        if epoch == interrupt_after:
            raise Stop

    ckpt = tmp_path / "c.pt"
    done.clear()
    with pytest.raises(Stop):
        train_cell(cell, cpu, checkpoint=ckpt, quiet=True, on_epoch=stop_after, checkpoint_every=1)
    _, _, partial = load_checkpoint(ckpt, cpu)
    assert partial["epoch"] == interrupt_after and not partial["complete"]
    resumed, _, resumed_info = train_cell(cell, cpu, checkpoint=ckpt, quiet=True)
    return (straight, straight_info), (resumed, resumed_info)


@pytest.mark.parametrize("interrupt_after", [BEST - 1, BEST + 1], ids=["before-the-best", "after-the-best"])
def test_a_resumed_run_stops_at_the_same_epoch_as_an_uninterrupted_one(tiny_cell, cpu, tmp_path, monkeypatch,
                                                                       interrupt_after):
    cell = tiny_cell(epochs=len(SCRIPT), early_stop=2)
    (_, a), (_, b) = _straight_and_resumed(cell, cpu, tmp_path, monkeypatch, interrupt_after)
    assert a["stopped_early"] and b["stopped_early"] and a["epochs_run"] == b["epochs_run"] == STOP
    assert [h["epoch"] for h in b["history"]] == list(range(1, STOP + 1))


def test_a_run_resumed_before_its_best_epoch_ends_with_the_same_weights(tiny_cell, cpu, tmp_path, monkeypatch):
    cell = tiny_cell(epochs=len(SCRIPT), early_stop=2)
    (a, _), (b, _) = _straight_and_resumed(cell, cpu, tmp_path, monkeypatch, BEST - 1)
    assert _same(_weights(a), _weights(b), atol=1e-6)  # as test_model's resume test


@pytest.mark.parametrize("interrupt_after", [BEST, BEST + 1], ids=["at-the-best", "after-the-best"])
def test_a_run_resumed_after_its_best_epoch_ends_with_the_same_weights(tiny_cell, cpu, tmp_path, monkeypatch,
                                                                       interrupt_after):
    cell = tiny_cell(epochs=len(SCRIPT), early_stop=2)
    (a, _), (b, _) = _straight_and_resumed(cell, cpu, tmp_path, monkeypatch, interrupt_after)
    assert _same(_weights(a), _weights(b), atol=1e-6)


# -- KL warm-up and beta -----------------------------------------------------------------------------

def _betas_seen(cell, cpu, epochs_seen):
    """Train ``cell`` with ``fit`` and return the beta the loss got, one value per epoch."""
    data = load_data(cell.dataset, seed=cell.seed, **cell.data)
    model, remedy = build_model(cell, data.image_shape)
    seen = []
    real = type(remedy).loss

    def loss(model, x, beta):
        seen.append(float(beta))
        return real(remedy, model, x, beta)

    remedy.loss = loss
    fit(model, remedy, cell, data.train, cpu, quiet=True)
    per_epoch = len(seen) // epochs_seen
    assert len(seen) == per_epoch * epochs_seen
    epochs = [seen[i * per_epoch:(i + 1) * per_epoch] for i in range(epochs_seen)]
    assert all(len(set(e)) == 1 for e in epochs)  # one beta for every batch of an epoch
    return [e[0] for e in epochs]


def test_kl_warm_up_ramps_beta_linearly_over_kl_warmup_epochs_then_holds_it(tiny_cell, cpu):
    cell = tiny_cell(epochs=6, kl_warmup=4, remedy="beta_vae", remedy_params={"beta": 2.0})
    assert _betas_seen(cell, cpu, 6) == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.0, 2.0])


def test_without_warm_up_every_epoch_trains_with_the_remedys_beta(tiny_cell, cpu):
    cell = tiny_cell(epochs=3, kl_warmup=0, remedy="beta_vae", remedy_params={"beta": 4.0})
    assert _betas_seen(cell, cpu, 3) == [4.0, 4.0, 4.0]
    assert _betas_seen(tiny_cell(epochs=2), cpu, 2) == [1.0, 1.0]  # the plain VAE: beta = 1


@pytest.mark.parametrize("beta", [0.0, 0.25, 1.0, 4.0])
def test_the_loss_is_the_reconstruction_plus_beta_times_the_kl(tiny_cell, beta):
    cell = tiny_cell(remedy="beta_vae", remedy_params={"beta": beta})
    data = load_data(cell.dataset, seed=cell.seed, **cell.data)
    model, remedy = build_model(cell, data.image_shape)
    x = data.test[:64]
    torch.manual_seed(7)
    terms = model.terms(x)
    torch.manual_seed(7)  # the same z ~ q(z|x)
    loss = remedy.loss(model, x, remedy.beta)
    assert remedy.beta == beta
    assert torch.equal(loss, (terms["rec"] + beta * terms["kl"]).mean())
    assert terms["kl"].mean() > 0  # so that beta changes the loss
    torch.manual_seed(7)
    assert torch.equal(remedy.loss(model, x, 0.0), terms["rec"].mean())  # beta 0: the reconstruction alone
