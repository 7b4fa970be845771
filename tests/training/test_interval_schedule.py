"""Training beyond the paper (issue 14, point 3): the IBP warm-up, the CROWN-IBP mix of the dual bound with
interval bounds and the clean loss's kappa (TrainConfig.ibp_warmup / interval_weight / clean_weight): the
weights of every step, the loss a step trains on, resume bit for bit, and the settings' checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import onnxdual
from onnxdual.errors import InvalidInputError
from onnxdual.training import TrainCallback, TrainConfig, train
from onnxdual.training.checkpoint import read_checkpoint
from onnxdual.training.config import clean_weight_at, interval_weight_at
from tests.training.shared import synthetic
from tests.training.test_trainer import same_weights, tiny_config


def test_interval_weight_is_one_during_the_warmup_then_ramps_with_eps():
    steps = 10
    paper = TrainConfig(eps=0.1, ramp_epochs=2)
    assert [interval_weight_at(paper, s, steps) for s in (0, 5, 19, 20, 100)] == [0.0] * 5
    warm = TrainConfig(eps=0.1, ramp_epochs=4, ibp_warmup=1)
    assert [interval_weight_at(warm, s, steps) for s in (0, 9, 10, 40)] == [1.0, 1.0, 0.0, 0.0]
    crown_ibp = TrainConfig(eps=0.1, ramp_epochs=2, interval_weight=(0.0, 1.0))
    assert [interval_weight_at(crown_ibp, s, steps) for s in (0, 1, 10, 19, 20, 50)] == \
        pytest.approx([0.0, 0.05, 0.5, 0.95, 1.0, 1.0])
    both = TrainConfig(eps=0.1, ramp_epochs=2, interval_weight=(0.2, 0.6), ibp_warmup=1)
    assert [interval_weight_at(both, s, steps) for s in (9, 10, 15, 20)] == \
        pytest.approx([1.0, 0.4, 0.5, 0.6])
    no_ramp = TrainConfig(eps=0.1, ramp_epochs=0, interval_weight=(0.0, 0.7))
    assert interval_weight_at(no_ramp, 0, steps) == 0.7


def test_clean_weight_ramps_with_eps_and_ignores_the_warmup():
    cfg = TrainConfig(eps=0.1, ramp_epochs=2, clean_weight=(1.0, 0.5), ibp_warmup=1)
    assert [clean_weight_at(cfg, s, 10) for s in (0, 10, 19, 20, 99)] == \
        pytest.approx([1.0, 0.75, 0.525, 0.5, 0.5])
    assert clean_weight_at(TrainConfig(eps=0.1), 5, 10) == 0.0


@pytest.mark.parametrize("kw", [dict(interval_weight=(0.0, 1.5)), dict(clean_weight=(0.0, 2.0)),
                                dict(interval_weight=(-0.1, 0.0)),
                                dict(interval_weight=(0.5,)), dict(interval_weight=(True, 0.0)),
                                dict(ibp_warmup=-1), dict(ibp_warmup=1.5), dict(ibp_warmup=10 ** 6)])
def test_bad_interval_settings_are_user_errors(kw):
    with pytest.raises(InvalidInputError):
        TrainConfig(eps=0.1, **kw)


def test_settings_survive_the_checkpoint_round_trip():
    cfg = TrainConfig(eps=0.1, interval_weight=(0.25, 1.0), ibp_warmup=3, clean_weight=(1.0, 0.5))
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    new = ("interval_weight", "ibp_warmup", "clean_weight")
    old = {k: v for k, v in cfg.to_dict().items() if k not in new}
    assert TrainConfig.from_dict(old) == TrainConfig(eps=0.1)  # a run from before the options: the paper's


class _Weights(TrainCallback):
    def __init__(self):
        self.seen: list[float] = []

    def on_step(self, i, n, metrics):
        self.seen.append(metrics["interval_weight"])


def test_a_run_trains_on_the_scheduled_weights_and_resumes_bit_for_bit(conv_model, tmp_path):
    data = synthetic()  # 120 examples, batch 20: 6 steps per epoch
    cfg = tiny_config(epochs=3, ramp_epochs=2, ibp_warmup=1, interval_weight=(0.0, 0.5))
    weights = _Weights()
    straight = train(conv_model, data, cfg, tmp_path / "straight", callbacks=[weights])
    assert weights.seen == pytest.approx([1.0] * 6 + [0.5 * s / 12 for s in range(6, 12)] + [0.5] * 6)

    class Kill(TrainCallback):
        def on_epoch(self, metrics):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # killed at the end of the warm-up
        train(conv_model, data, cfg, tmp_path / "killed", callbacks=[Kill()])
    assert read_checkpoint(tmp_path / "killed" / "checkpoint.pt")["epoch"] == 1
    resumed = train(None, data, cfg, tmp_path / "killed", resume=True)
    assert same_weights(straight.net, resumed.net)
    with pytest.raises(InvalidInputError, match="interval_weight"):  # another mix is another run
        train(None, data, tiny_config(epochs=3, ramp_epochs=2, ibp_warmup=1), tmp_path / "killed",
              resume=True)


def test_an_ibp_warmup_step_runs_no_dual_pass(conv_model, tmp_path, monkeypatch):
    """During the warm-up no random projections are drawn (the dual pass never runs); afterwards they are."""
    from onnxdual.engine import projected

    calls = []
    real = projected.cauchy
    monkeypatch.setattr(projected, "cauchy", lambda *a, **k: calls.append(1) or real(*a, **k))
    train(conv_model, synthetic(), tiny_config(epochs=1, ibp_warmup=1), tmp_path / "warm")
    assert calls == []
    train(conv_model, synthetic(), tiny_config(epochs=1), tmp_path / "paper")
    assert calls


def test_a_step_descends_kappa_clean_ce_plus_the_mixed_robust_ce(conv_model, tmp_path):
    """One SGD step on the whole batch moves the weights by lr times the gradient of
    ``kappa CE(f(x), y) + (1 - kappa) CE(-((1 - w) J + w J_IBP), y)`` (exact J: nothing random)."""
    data = synthetic(40)
    kappa, w, lr = 0.4, 0.3, 0.05
    cfg = TrainConfig(eps=0.05, proj=None, epochs=1, batch_size=40, ramp_epochs=0, optimizer="sgd", lr=lr,
                      momentum=0.0, interval_weight=(w, w), clean_weight=(kappa, kappa))
    run = train(conv_model, data, cfg, tmp_path)
    net = onnxdual.load(conv_model)
    robust, _ = onnxdual.robust_loss(net, 0.05, data.x, data.y, clip=(0.0, 1.0), interval_weight=w)
    loss = kappa * F.cross_entropy(net(data.x).flatten(1), data.y) + (1 - kappa) * robust
    grads = torch.autograd.grad(loss, list(net.parameters()))
    expected = {name: p.detach() - lr * g for (name, p), g in zip(net.named_parameters(), grads)}
    trained = dict(run.net.named_parameters())
    for name, value in expected.items():
        torch.testing.assert_close(trained[name].detach(), value, rtol=1e-4, atol=1e-6)
