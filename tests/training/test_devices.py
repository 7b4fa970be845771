"""The training path on any device (issue 14, point 4): nothing in a training epoch (robust loss, projections,
interval bounds, optimiser step, metrics) or in the data fingerprint creates a tensor on an implicit device.
Checked without a GPU: with torch's default device set to ``meta``, a tensor created without an explicit
device is a meta tensor, and any arithmetic mixing it with the run's CPU tensors fails. The same runs on CUDA
are in tests/certify/test_cuda.py and benchmarks/gpu/smoke.py."""

from __future__ import annotations

import runpy
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from onnxdual.training import TrainConfig, loop, train
from onnxdual.training.checkpoint import data_fingerprint
from tests.training.shared import synthetic

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def implicit_device_is_meta(monkeypatch):
    """Every training epoch runs with the default device ``meta`` (loading and exporting the model stay
    outside: the ONNX converter builds CPU modules that are then moved to the run's device)."""
    real = loop._train_epoch

    def epoch(*args, **kwargs):
        torch.set_default_device("meta")
        try:
            return real(*args, **kwargs)
        finally:
            torch.set_default_device(None)

    monkeypatch.setattr(loop, "_train_epoch", epoch)


@pytest.mark.parametrize("settings", [dict(proj=5), dict(proj=None),
                                      dict(proj=5, ibp_warmup=1, interval_weight=(0.0, 1.0))])
def test_an_epoch_creates_no_tensor_on_an_implicit_device(conv_model, tmp_path, implicit_device_is_meta,
                                                          settings):
    run = train(conv_model, synthetic(40), TrainConfig(eps=0.05, epochs=2, batch_size=20, ramp_epochs=1,
                                                       **settings), tmp_path)
    assert len(run.history) == 2 and all(p.device.type == "cpu" for p in run.net.parameters())


def test_the_data_fingerprint_is_computed_where_the_data_lives():
    data = synthetic(10)
    expected = data_fingerprint(data)
    torch.set_default_device("meta")
    try:
        assert data_fingerprint(data) == expected
    finally:
        torch.set_default_device(None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")
@pytest.mark.parametrize("settings", [dict(proj=None), dict(proj=None, interval_weight=(0.5, 0.5)),
                                      dict(proj=None, ibp_warmup=1)])
def test_a_deterministic_run_on_cuda_follows_the_cpu_run(conv_model, tmp_path, settings):
    """Exact and interval bounds draw nothing at random, so CUDA trains what the CPU trains (to rounding);
    projected runs draw their projections on the device and differ by design."""
    config = TrainConfig(eps=0.05, epochs=2, batch_size=20, ramp_epochs=1, **settings)
    cpu = train(conv_model, synthetic(), config, tmp_path / "cpu")
    gpu = train(conv_model, synthetic(), replace(config, device="cuda"), tmp_path / "gpu")
    assert next(gpu.net.parameters()).device.type == "cuda"
    for a, b in zip(cpu.history, gpu.history):
        assert b["robust_loss"] == pytest.approx(a["robust_loss"], rel=1e-3, abs=1e-4)


def test_the_epoch_benchmark_runs_on_the_cpu_and_refuses_a_missing_cuda(tmp_path, monkeypatch, capsys):
    bench = runpy.run_path(str(REPO / "benchmarks" / "scaling" / "bench_epoch.py"))
    out = tmp_path / "epoch.md"
    assert bench["main"](["--device", "cpu", "--limit-steps", "2", "--archs", "small", "--datasets", "mnist",
                          "--projections", "2", "--out", str(out)]) == 0
    row = next(line for line in out.read_text().splitlines() if line.startswith("| small"))
    assert "| 4804 (4804) | 166406 (166406) | 2 of 1200 |" in row  # Table 1's network, extrapolated
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench["main"](["--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
