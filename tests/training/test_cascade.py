"""Robust cascades (Alg. 2): each stage trains only on what earlier stages do not certify; the manifest
round-trips through ``onnxdual.certify.load_stages``; early stop; resume; evaluation of a cascade."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import onnxdual
from onnxdual.certify import load_stages
from onnxdual.errors import InvalidInputError
from onnxdual.training import (ArrayData, CascadeCallback, TrainConfig, evaluate, exact_certifier,
                               train_cascade)

from tests.training.shared import SHAPE, synthetic  # noqa: E402


def config(**kw) -> TrainConfig:
    base = dict(eps=0.05, proj=10, epochs=1, batch_size=20, ramp_epochs=1)
    base.update(kw)
    return TrainConfig(**base)


def graded(n: int = 60, seed: int = 0) -> ArrayData:
    """Flat images whose brightness is spread over [0.1, 0.9], label = brighter than 0.5: the examples
    near 0.5 cannot be certified, the others can."""
    g = torch.Generator().manual_seed(seed)
    level = torch.rand(n, generator=g) * 0.8 + 0.1
    x = (level.view(-1, 1, 1, 1) + 0.05 * (torch.rand(n, *SHAPE, generator=g) - 0.5)).clamp(0, 1)
    return ArrayData(x, (level > 0.5).long(), "graded", 10)


def by_brightness(net, x):
    """A stand-in certification test that does not depend on training: certifies the brightest 40%."""
    return x.flatten(1).mean(1) > 0.55


def test_stage_two_trains_only_on_examples_stage_one_does_not_certify(conv_model, tmp_path):
    data = synthetic()
    result = train_cascade(2, conv_model, data, config(), tmp_path, certifier=by_brightness)
    certified_by_1 = (data.x.flatten(1).mean(1) > 0.55).numpy()
    assert 0 < certified_by_1.sum() < len(certified_by_1)
    stage1, stage2 = result.manifest["stages"]
    np.testing.assert_array_equal(np.load(tmp_path / stage1["train_indices"]), np.arange(120))
    stage2_indices = np.load(tmp_path / stage2["train_indices"])
    np.testing.assert_array_equal(stage2_indices, np.flatnonzero(~certified_by_1))
    assert stage1["trained_on"] == 120 and stage1["certified_train"] == int(certified_by_1.sum())
    assert stage2["trained_on"] == int((~certified_by_1).sum())
    # stage 2's own run saw exactly those examples: its checkpoint fingerprint counts them
    ckpt = torch.load(tmp_path / "stage2" / "checkpoint.pt", weights_only=True)
    assert ckpt["fingerprint"][0] == stage2["trained_on"]
    assert result.manifest["complete"] and not result.manifest["stopped_early"]


def test_exact_certifier_counts_what_the_dual_bound_certifies(conv_model, tmp_path):
    data = graded(60)
    result = train_cascade(2, conv_model, data, config(epochs=5, lr=0.01, batch_size=10), tmp_path)
    stage1, stage2 = result.manifest["stages"]
    net = onnxdual.load(tmp_path / "stage1.onnx")
    with torch.no_grad():
        pred = net(data.x).argmax(1)
        dual = onnxdual.DualNetwork(net, data.x, 0.05, clip=(0.0, 1.0))
        lb = dual.lower_bound(onnxdual.margin_matrix(pred, 10))
    lb[torch.arange(60), pred] = float("inf")
    expected = (lb.min(1).values > 0).numpy()  # Alg. 2: the stage's own prediction is certified
    assert 0 < expected.sum() < 60
    np.testing.assert_array_equal(np.load(tmp_path / stage1["certified"]), expected)
    in_batches_of_7 = exact_certifier(0.05, clip=(0.0, 1.0), batch_size=7)(net, data.x)
    np.testing.assert_array_equal(in_batches_of_7.numpy(), expected)
    np.testing.assert_array_equal(np.load(tmp_path / stage2["train_indices"]), np.flatnonzero(~expected))
    assert stage2["trained_on"] == 60 - stage1["certified_train"]


def test_manifest_round_trips_through_load_stages(conv_model, tmp_path):
    data = synthetic(60)
    result = train_cascade(3, conv_model, data, config(), tmp_path,
                           certifier=lambda net, x: x[:, 0, 0, 0] > 0.6)
    manifest = json.loads((tmp_path / "cascade.json").read_text())
    assert manifest == result.manifest
    assert manifest["format"] == "onnxdual-cascade" and manifest["version"] == 1
    assert manifest["eps"] == 0.05 and manifest["norm"] == "linf" and manifest["normalization"] is None
    assert {"onnxdual", "torch", "onnx"} <= set(manifest["versions"])
    stages = load_stages(tmp_path / "cascade.json")
    assert [s.path.name for s in stages] == [s["onnx"] for s in manifest["stages"]] == \
        [f"stage{i}.onnx" for i in range(1, len(stages) + 1)]
    x = data.x[:5]
    for stage in stages:
        own = onnxdual.load(stage.path)
        with torch.no_grad():
            assert torch.equal(stage.net(x), own(x))
    # stages start from different seeds
    with torch.no_grad():
        assert not torch.equal(stages[0].net(x), stages[1].net(x))


def test_a_stage_that_certifies_everything_stops_the_cascade(conv_model, tmp_path):
    events = []

    class Record(CascadeCallback):
        def on_stage_start(self, stage, stages, n_examples):
            events.append(("start", stage, n_examples))

        def on_stage_end(self, stage, info):
            events.append(("end", stage, info["certified_train"]))

    result = train_cascade(3, conv_model, synthetic(40), config(), tmp_path, callbacks=[Record()],
                           certifier=lambda net, x: torch.ones(x.shape[0], dtype=torch.bool))
    assert result.stopped_early and "stage 1 certified every remaining training example" in \
        result.manifest["stop_reason"]
    assert len(result.manifest["stages"]) == 1 and not (tmp_path / "stage2").exists()
    assert events == [("start", 1, 40), ("end", 1, 40)]
    assert len(load_stages(result.manifest_path)) == 1


def test_resume_finishes_an_interrupted_cascade_identically(conv_model, tmp_path):
    data = synthetic(60)

    def half(net, x):
        return x.flatten(1).mean(1) > 0.5

    train_cascade(2, conv_model, data, config(epochs=2), tmp_path / "a", certifier=half)

    class KillInStage2(CascadeCallback):
        stage = 0

        def on_stage_start(self, stage, stages, n_examples):
            self.stage = stage

        def on_epoch(self, metrics):
            if self.stage == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_cascade(2, conv_model, data, config(epochs=2), tmp_path / "b", certifier=half,
                      callbacks=[KillInStage2()])
    partial = json.loads((tmp_path / "b" / "cascade.json").read_text())
    assert len(partial["stages"]) == 1 and not partial["complete"]
    with pytest.raises(InvalidInputError, match="already holds a cascade"):
        train_cascade(2, conv_model, data, config(epochs=2), tmp_path / "b", certifier=half)
    resumed = train_cascade(2, conv_model, data, config(epochs=2), tmp_path / "b", certifier=half,
                            resume=True)
    assert resumed.manifest["complete"]
    for name in ("stage1.onnx", "stage2.onnx"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    with pytest.raises(InvalidInputError, match="different settings"):
        train_cascade(2, conv_model, data, config(epochs=2, eps=0.1), tmp_path / "b", resume=True)
    with pytest.raises(InvalidInputError, match="nothing to resume"):
        train_cascade(2, conv_model, data, config(), tmp_path / "c", resume=True)


def test_cascade_evaluation_uses_exact_certification(conv_model, tmp_path):
    result = train_cascade(2, conv_model, synthetic(60), config(), tmp_path,
                           certifier=lambda net, x: x[:, 0, 0, 0] > 0.6)
    ev = evaluate(result.manifest_path, synthetic(20, seed=4), eps=0.05, pgd_steps=3,
                  report_dir=tmp_path / "report")
    assert ev.result.cascade_frame() is not None
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["cascade"] and summary["meta"]["bound"] == "exact"
