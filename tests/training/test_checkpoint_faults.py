"""Damaged checkpoints on resume (issue 17 E) and diverging runs (F): a typed error naming the damaged part
or the epoch and step, and the last good checkpoint is never overwritten."""

from __future__ import annotations

import io
import shutil

import pytest
import torch

from onnxdual.errors import CheckpointError, DivergenceError
from onnxdual.training import TrainCallback, TrainConfig, loop, train
from onnxdual.training.checkpoint import read_checkpoint
from tests.training.shared import synthetic


def config(**kw) -> TrainConfig:
    return TrainConfig(**{**dict(eps=0.05, proj=None, epochs=2, batch_size=20, ramp_epochs=1), **kw})


class StopAfterFirstEpoch(TrainCallback):
    def on_epoch(self, metrics):
        raise KeyboardInterrupt


@pytest.fixture(scope="module")
def interrupted(conv_model, tmp_path_factory):
    """A run directory killed after epoch 1 of 2 (a good checkpoint to damage)."""
    out = tmp_path_factory.mktemp("ckpt") / "run"
    with pytest.raises(KeyboardInterrupt):
        train(conv_model, synthetic(40), config(), out, callbacks=[StopAfterFirstEpoch()])
    return out


def _save(ckpt) -> bytes:
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    return buf.getvalue()


def _edit(edit):
    def damage(good: bytes) -> bytes:
        ckpt = torch.load(io.BytesIO(good), weights_only=True)
        edit(ckpt)
        return _save(ckpt)
    return damage


def _nan_weight(ckpt):
    name = next(iter(ckpt["model"]))
    ckpt["model"][name] = torch.full_like(ckpt["model"][name], float("nan"))


def _drop_weight(ckpt):
    ckpt["model"].pop(next(iter(ckpt["model"])))


DAMAGES = {
    "empty file": (lambda good: b"", "the file is empty"),
    "truncated file": (lambda good: good[: len(good) // 2], "cannot be read"),
    "garbage": (lambda good: b"\x00garbage" * 100, "cannot be read"),
    "not a checkpoint": (lambda good: _save({"hello": 1}), "not an onnxdual training checkpoint"),
    "missing config": (_edit(lambda c: c.pop("config")), "'config' is missing"),
    "bad config": (_edit(lambda c: c["config"].update(eps=-1)), "settings (config) are invalid"),
    "config of the wrong type": (_edit(lambda c: c.update(config=[1, 2])), "'config' is a list"),
    "corrupt template": (_edit(lambda c: c.update(template=b"\x08\x07corrupt" * 50)), "template model"),
    "one-byte template": (_edit(lambda c: c.update(template=b"x")), "template model"),
    "empty state dict": (_edit(lambda c: c.update(model={})), "model weights (state dict) are empty"),
    "state dict missing a key": (_edit(_drop_weight), "do not match its template model (missing"),
    "NaN weight": (_edit(_nan_weight), "holds NaN or infinite values"),
    "optimizer without groups": (_edit(lambda c: c.update(optimizer={"state": {}})), "optimiser state"),
    "short data-order RNG state": (_edit(lambda c: c["rng"].update(data_order=c["rng"]["data_order"][:10])),
                                   "data-order random state"),
    "short torch RNG state": (_edit(lambda c: c["rng"]["ranks"][0].update(torch=torch.zeros(7).byte())),
                              "random state of process 0 (torch)"),
    "numpy RNG state": (_edit(lambda c: c["rng"]["ranks"][0].update(numpy=[1, 2])), "(numpy)"),
    "no RNG states": (_edit(lambda c: c["rng"].update(ranks=[])), "per-process random states"),
    "history shorter than the epochs": (_edit(lambda c: c.update(history=[])), "metrics history"),
}


@pytest.mark.parametrize("case", list(DAMAGES))
def test_a_damaged_checkpoint_names_the_part_and_is_left_alone(interrupted, tmp_path, case):
    damage, message = DAMAGES[case]
    out = tmp_path / "run"
    shutil.copytree(interrupted, out)
    broken = damage((out / "checkpoint.pt").read_bytes())
    (out / "checkpoint.pt").write_bytes(broken)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(CheckpointError) as info:
        train(None, synthetic(40), config(), out, resume=True)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing overwritten, no model.onnx


def test_the_undamaged_copy_resumes(interrupted, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(interrupted, out)
    assert train(None, synthetic(40), config(), out, resume=True).resumed_from_epoch == 1


def test_divergence_stops_at_the_step_and_keeps_the_last_finite_checkpoint(conv_model, tmp_path, monkeypatch):
    with pytest.raises(DivergenceError, match=r"diverged at epoch 1, step \d+ of 2 .*nothing was saved"):
        train(conv_model, synthetic(40), config(lr=1e30), tmp_path / "fast")
    assert list((tmp_path / "fast").iterdir()) == []

    real_step, calls = loop._train_step, []

    def poisoned_step(run, index, eps, *rest):  # the weights blow up in the first step of epoch 2
        local = real_step(run, index, eps, *rest)
        calls.append(1)
        if len(calls) == 3:
            with torch.no_grad():
                run.params[0].fill_(float("inf"))
        return local

    monkeypatch.setattr(loop, "_train_step", poisoned_step)
    out = tmp_path / "poisoned"
    with pytest.raises(DivergenceError, match=r"epoch 2, step 1 of 2 .*checkpoint of epoch 1 .* is kept"):
        train(conv_model, synthetic(40), config(), out)
    ckpt = read_checkpoint(out / "checkpoint.pt")  # whole and finite
    assert ckpt["epoch"] == 1 and not (out / "model.onnx").exists()


def test_no_model_is_exported_when_the_trained_network_overflows(conv_model, tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "_check_finite", lambda *args: None)  # let the diverged weights through
    with pytest.raises(DivergenceError, match="outputs overflow float32"):
        train(conv_model, synthetic(40), config(lr=1e30, epochs=1), tmp_path / "run")
    assert not (tmp_path / "run" / "model.onnx").exists()
