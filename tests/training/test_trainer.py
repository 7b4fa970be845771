"""Robust training engine: schedules (App. G), exact resume, ONNX export parity, evaluation, user errors."""

from __future__ import annotations

import csv

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper
from torch import nn

import onnxdual
from onnxdual.errors import InvalidInputError, ModelLoadError
from onnxdual.training import (ArrayData, SoundnessError, TrainCallback, TrainConfig, eps_at, evaluate, lr_at,
                               train)
from onnxdual.frontend.export import parameter_bindings
from onnxdual.training.checkpoint import METRIC_COLUMNS, read_checkpoint
from onnxdual.training.config import default_eps_start, resolve_eps_start
from tests.onnx_builders import make_model, run_ort

from tests.training.shared import SHAPE, synthetic  # noqa: E402


def tiny_config(**kw) -> TrainConfig:
    base = dict(eps=0.05, proj=10, epochs=2, batch_size=20, ramp_epochs=1)
    base.update(kw)
    return TrainConfig(**base)


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- schedules --------------------------------------------------------------------------------------------
def test_eps_ramps_linearly_per_step_then_stays_at_eps():
    cfg = TrainConfig(eps=0.1, ramp_epochs=20)
    steps = 1200  # 60000 MNIST examples / batch 50
    start = resolve_eps_start(cfg, (1, 28, 28), "mnist")
    assert start == 0.01
    assert eps_at(cfg, 0, steps, start) == pytest.approx(0.01)
    assert eps_at(cfg, 10 * steps, steps, start) == pytest.approx(0.055)
    assert eps_at(cfg, 20 * steps - 1, steps, start) == pytest.approx(0.1 - 0.09 / (20 * steps))
    assert eps_at(cfg, 20 * steps, steps, start) == 0.1 and eps_at(cfg, 59 * steps, steps, start) == 0.1
    values = [eps_at(cfg, s, steps, start) for s in range(0, 20 * steps, 97)]
    assert np.allclose(np.diff(values), 0.09 * 97 / (20 * steps))
    assert eps_at(TrainConfig(eps=0.1, ramp_epochs=0), 0, steps, 0.01) == 0.1


def test_default_eps_start_follows_appendix_g_and_never_exceeds_eps():
    assert default_eps_start((1, 28, 28), "mnist") == 0.01
    assert default_eps_start((3, 32, 32), "cifar10") == 0.001
    assert resolve_eps_start(TrainConfig(eps=2 / 255), (3, 32, 32)) == 0.001
    assert resolve_eps_start(TrainConfig(eps=0.005), (1, 28, 28)) == 0.005
    assert resolve_eps_start(TrainConfig(eps=0.3, eps_start=0.05), (1, 28, 28)) == 0.05


def test_learning_rate_halves_every_10_epochs_after_the_ramp():
    adam = TrainConfig(eps=0.1)
    assert [lr_at(adam, e) for e in (0, 19, 20, 29)] == [1e-3] * 4
    assert [lr_at(adam, e) for e in (30, 39, 40, 50, 59)] == \
        pytest.approx([5e-4, 5e-4, 2.5e-4, 1.25e-4, 1.25e-4])
    sgd = TrainConfig(eps=2 / 255, optimizer="sgd")
    assert lr_at(sgd, 0) == 0.05 and lr_at(sgd, 45) == pytest.approx(0.0125)


@pytest.mark.parametrize("kw", [dict(eps=0), dict(eps=-0.1), dict(eps=float("nan")), dict(eps=0.1, proj=0),
                                dict(eps=0.1, norm="l1"), dict(eps=0.1, optimizer="rmsprop"),
                                dict(eps=0.1, epochs=0), dict(eps=0.1, clip=(1.0, 0.0))])
def test_bad_settings_are_user_errors(kw):
    with pytest.raises(InvalidInputError):
        TrainConfig(**kw)


# --- training, checkpoint, resume -------------------------------------------------------------------------
def test_resume_after_a_kill_equals_an_uninterrupted_run(conv_model, tmp_path):
    data, cfg = synthetic(), tiny_config()
    straight = train(conv_model, data, cfg, tmp_path / "straight")

    class Kill(TrainCallback):
        def on_epoch(self, metrics):
            raise KeyboardInterrupt  # killed right after epoch 1 was checkpointed

    with pytest.raises(KeyboardInterrupt):
        train(conv_model, data, cfg, tmp_path / "killed", callbacks=[Kill()])
    assert read_checkpoint(tmp_path / "killed" / "checkpoint.pt")["epoch"] == 1
    assert not (tmp_path / "killed" / "model.onnx").exists()
    resumed = train(None, data, cfg, tmp_path / "killed", resume=True)
    assert resumed.resumed_from_epoch == 1
    assert same_weights(straight.net, resumed.net)  # bit for bit
    assert (tmp_path / "straight" / "model.onnx").read_bytes() == \
        (tmp_path / "killed" / "model.onnx").read_bytes()
    with open(tmp_path / "killed" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == METRIC_COLUMNS and [r["epoch"] for r in rows] == ["1", "2"]
    for a, b in zip(straight.history, resumed.history):
        a.pop("seconds"), b.pop("seconds")
        assert a == b


def test_training_lowers_the_robust_loss_and_records_the_schedule(conv_model, tmp_path):
    seen = []

    class Record(TrainCallback):
        def on_step(self, i, n, metrics):
            seen.append((i, n, metrics["eps"], metrics["lr"]))

    run = train(conv_model, synthetic(), tiny_config(epochs=4, eps_start=0.01), tmp_path,
                callbacks=[Record()])
    assert [i for i, *_ in seen] == [1, 2, 3, 4, 5, 6] * 4
    assert [e for _, _, e, _ in seen[:7]] == pytest.approx([0.01 + 0.04 * s / 6 for s in range(6)] + [0.05])
    assert run.history[-1]["robust_loss"] < run.history[0]["robust_loss"]
    assert run.history[-1]["eps"] == 0.05


def test_exported_onnx_matches_the_trained_module_in_onnxruntime(conv_model, tmp_path):
    run = train(conv_model, synthetic(), tiny_config(epochs=1, proj=None), tmp_path)
    x = torch.rand(7, *SHAPE, generator=torch.Generator().manual_seed(3))
    sess = ort.InferenceSession(str(run.model_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        expected = run.net(x).numpy()
        before = onnxdual.load(conv_model)(x).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(got - before).max() > 1e-4  # the weights did change
    # same graph, only initializer values differ
    old, new = onnx.load(str(conv_model)), onnx.load(str(run.model_path))
    assert [n.op_type for n in old.graph.node] == [n.op_type for n in new.graph.node]
    assert [t.name for t in old.graph.initializer] == [t.name for t in new.graph.initializer]


def test_gemm_with_transposed_scaled_weights_is_written_back_correctly(tmp_path):
    """onnx2torch folds alpha/beta into nn.Linear and transposes B when transB = 0."""
    rng = np.random.default_rng(1)
    w1 = rng.normal(size=(64, 12)).astype(np.float32) / 8  # (in, out): transB = 0
    b1 = rng.normal(size=(12,)).astype(np.float32)
    w2 = rng.normal(size=(10, 12)).astype(np.float32) / 4
    nodes = [helper.make_node("Flatten", ["input"], ["f"]),
             helper.make_node("Gemm", ["f", "W1", "B1"], ["h"], alpha=0.5, beta=2.0),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "W2"], ["output"], transB=1, alpha=3.0)]
    path = tmp_path / "gemm.onnx"
    onnx.save(make_model(nodes, list(SHAPE), [10], {"W1": w1, "B1": b1, "W2": w2}), str(path))
    run = train(path, synthetic(60), tiny_config(epochs=1), tmp_path / "out")
    x = torch.rand(5, *SHAPE).numpy()
    with torch.no_grad():
        expected = run.net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run_ort(onnx.load(str(run.model_path)), x), expected, rtol=1e-5, atol=1e-5)
    assert len(run.trainable) == 3


def test_reinit_draws_fresh_weights_from_the_seed(conv_model, tmp_path):
    a = train(conv_model, synthetic(40), tiny_config(epochs=1, reinit=True, seed=5), tmp_path / "a")
    b = train(conv_model, synthetic(40), tiny_config(epochs=1, reinit=True, seed=5), tmp_path / "b")
    c = train(conv_model, synthetic(40), tiny_config(epochs=1), tmp_path / "c")
    assert same_weights(a.net, b.net) and not same_weights(a.net, c.net)


def test_shared_initializers_cannot_be_trained(tmp_path):
    w = np.eye(64, dtype=np.float32)[:, :64]
    nodes = [helper.make_node("Flatten", ["input"], ["f"]),
             helper.make_node("Gemm", ["f", "W"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["r"]), helper.make_node("Gemm", ["r", "W"], ["o"], transB=1),
             helper.make_node("Flatten", ["o"], ["output"])]
    model = make_model(nodes, list(SHAPE), [64], {"W": w})
    with pytest.raises(InvalidInputError, match="shared"):
        parameter_bindings(model, onnxdual.load(model))


def test_user_errors(conv_model, tmp_path):
    data, cfg = synthetic(40), tiny_config(epochs=1)
    with pytest.raises(InvalidInputError, match="nothing to resume"):
        train(conv_model, data, cfg, tmp_path / "none", resume=True)
    train(conv_model, data, cfg, tmp_path / "run")
    with pytest.raises(InvalidInputError, match="already holds a training run"):
        train(conv_model, data, cfg, tmp_path / "run")
    with pytest.raises(InvalidInputError, match="different settings.*eps"):
        train(conv_model, data, tiny_config(epochs=2, eps=0.1), tmp_path / "run", resume=True)
    with pytest.raises(InvalidInputError, match="training data differs"):
        train(conv_model, synthetic(40, seed=1), tiny_config(epochs=2), tmp_path / "run", resume=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidInputError, match="not a directory"):
        train(conv_model, data, cfg, tmp_path / "file")
    with pytest.raises(InvalidInputError, match="labels must lie"):
        train(conv_model, ArrayData(data.x, data.y + 10, "bad", 20), cfg, tmp_path / "labels")
    with pytest.raises(InvalidInputError, match="do not fit"):
        train(conv_model, ArrayData(torch.rand(10, 1, 5, 5), data.y[:10], "bad", 10), cfg, tmp_path / "shape")
    with pytest.raises(ModelLoadError, match="not found"):
        train(tmp_path / "missing.onnx", data, cfg, tmp_path / "m")


def test_a_later_resume_may_extend_the_number_of_epochs(conv_model, tmp_path):
    data = synthetic(40)
    train(conv_model, data, tiny_config(epochs=1), tmp_path)
    longer = train(conv_model, data, tiny_config(epochs=2, export_epochs=True), tmp_path, resume=True)
    assert [r["epoch"] for r in longer.history] == [1, 2]
    assert not (tmp_path / "epoch_01.onnx").exists()  # epoch 1 ran without export_epochs
    assert (tmp_path / "epoch_02.onnx").read_bytes() == (tmp_path / "model.onnx").read_bytes()
    again = train(None, data, tiny_config(epochs=2), tmp_path, resume=True)  # already finished: re-exports
    assert same_weights(longer.net, again.net)


# --- evaluation -------------------------------------------------------------------------------------------
def test_evaluation_certifies_exactly_and_writes_the_report(conv_model, tmp_path):
    run = train(conv_model, synthetic(), tiny_config(epochs=1), tmp_path)
    test = synthetic(30, seed=9)
    result = evaluate(run.model_path, test, eps=0.05, pgd_steps=5, report_dir=tmp_path / "report")
    assert (tmp_path / "report" / "report.html").exists() and (tmp_path / "report" / "summary.csv").exists()
    o = result.overall
    assert o["n"] == 30 and o["certified_accuracy"] <= o["pgd_accuracy"] <= o["clean_accuracy"]


def test_a_bound_beaten_by_the_attack_fails_loudly(conv_model, tmp_path, monkeypatch):
    import onnxdual.certify.batch as certify_module  # where a run bounds its batches

    def unsound(net, x, eps, *args, **kwargs):  # claims everything is certified
        with torch.no_grad():
            return net(x).flatten(1).argmax(1), torch.ones(x.shape[0])

    monkeypatch.setattr(certify_module, "worst_margins", unsound)
    data = synthetic(30)
    net = onnxdual.load(conv_model)
    with torch.no_grad():
        labels = net(data.x).argmax(1)  # every example correct, so "certified" -- and easy to attack at eps 1
    with pytest.raises(SoundnessError, match="soundness violation"):
        evaluate(conv_model, ArrayData(data.x, labels, "s", 10), eps=1.0, pgd_steps=10,
                 report_dir=tmp_path / "report")
    assert (tmp_path / "report" / "summary.json").exists()  # written before failing


def test_builtin_architecture_on_real_mnist(shared, tmp_path):
    from onnxdual.data import load_dataset

    mnist = shared("data", "mnist")
    train_set = load_dataset(mnist, split="train", limit=200)
    run = train("wide:1", train_set, TrainConfig(eps=0.1, proj=10, epochs=1, batch_size=50), tmp_path)
    assert run.history[0]["eps"] == pytest.approx(0.01 + 0.09 * 3 / 80)  # 4 steps of a 20-epoch ramp
    test = load_dataset(mnist, split="test", limit=40)
    result = evaluate(run.model_path, test, eps=0.1, pgd_steps=5)
    assert result.overall["n"] == 40
    x = test.x[:8]
    with torch.no_grad():
        expected = run.net(x).numpy()
    got = run_ort(onnx.load(str(run.model_path)), x.numpy())
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
