"""SIGKILL during ``train`` at random counted points (the N-th rename or fsync of the run, strace ``when=N``;
N drawn from the run's soundness seed), then ``--resume``: the model equals an uninterrupted run's bit for
bit, and the run directory holds no leftovers (issue 17, fault tests)."""

from __future__ import annotations

import random

from onnxdual.training import TrainConfig, train
from onnxdual.training.checkpoint import CHECKPOINT
from tests.strace_faults import require_strace, run_injected
from tests.training.shared import synthetic

EPOCHS = 3
#: per epoch: checkpoint.pt and metrics.csv (one rename and one fsync each); then model.onnx
RENAMES = 2 * EPOCHS + 1


def _config() -> TrainConfig:
    return TrainConfig(eps=0.05, proj=4, epochs=EPOCHS, batch_size=10, ramp_epochs=1, seed=3)


def test_sigkill_then_resume_equals_an_uninterrupted_run(conv_model, tmp_path, soundness_seed):
    require_strace()
    data = synthetic(30)
    straight = tmp_path / "straight"
    history = [{k: v for k, v in row.items() if k != "seconds"}
               for row in train(conv_model, data, _config(), straight).history]
    expected = (straight / "model.onnx").read_bytes()
    rng = random.Random(soundness_seed)
    points = [f"rename:signal=SIGKILL:when={n}" for n in sorted(rng.sample(range(1, RENAMES + 1), 3))]
    points.append(f"fsync:signal=SIGKILL:when={rng.randint(1, RENAMES)}")
    for rule in points:
        out = tmp_path / rule.replace(":", "_").replace("=", "")
        outcome = run_injected(lambda: train(conv_model, data, _config(), out), rule)
        assert outcome == -9, f"{rule} (seed {soundness_seed}): the run was not killed ({outcome})"
        resume = (out / CHECKPOINT).exists()
        result = train(None if resume else conv_model, data, _config(), out, resume=resume)
        assert (out / "model.onnx").read_bytes() == expected, f"{rule} (seed {soundness_seed})"
        assert [{k: v for k, v in row.items() if k != "seconds"} for row in result.history] == history, rule
        assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "metrics.csv", "model.onnx"], rule
        assert (out / "metrics.csv").read_text().count("\n") == EPOCHS + 1, rule
