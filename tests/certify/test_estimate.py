"""A run's estimate before it starts: the time model fitted to the probe (a virtual clock that advances by
what each call would cost, so the numbers are the same on any machine), the memory from the one cost model,
the probable-vs-exact check, and what ``onnxdual certify`` prints from them (one line each)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import onnxdual
import onnxdual.certify.estimate as estimate
import onnxdual.certify.run as run_module
from onnxdual.certify.estimate import ProbableCheck, RunEstimate, RunPlan, plan_run
from onnxdual.certify.run import CertifySettings
from onnxdual.engine.cost import examples_per_pass, forward_bytes
from onnxdual.engine.network import DualNetwork
from onnxdual_cli.main import cli
from tests.milp_oracle import random_dense


class VirtualClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def problem():
    net = onnxdual.load(random_dense(np.random.default_rng(0), 6, [10, 10], 4).onnx_model)
    x = torch.rand(40, 6, generator=torch.Generator().manual_seed(0))
    return net, x, torch.zeros(40, dtype=torch.long)


def fake_costs(monkeypatch, clock, per_batch, per_example, probable=0.0, exact=0.0):
    calls = []

    def batch(nets, x, *args, **kwargs):
        calls.append(x.shape[0])
        clock.now += per_batch + per_example * x.shape[0]

    def margins(net, x, eps, norm, clip, probable_delta=None, *args, **kwargs):
        clock.now += (probable if probable_delta is not None else exact) * x.shape[0]

    monkeypatch.setattr(estimate, "certify_batch", batch)
    monkeypatch.setattr(estimate, "worst_margins", margins)
    return calls


def test_the_time_model_splits_a_batch_into_a_fixed_and_a_per_example_part(problem, monkeypatch):
    net, x, y = problem
    clock = VirtualClock()
    calls = fake_costs(monkeypatch, clock, per_batch=2.0, per_example=0.5)
    settings = CertifySettings(eps=(0.01, 0.1), batch_size=10, clip=None)
    plan = plan_run([net], x, y, settings, "adaptive", 4, pairs_left=80, batches_left=8, clock=clock)
    assert calls == [1, 4, 8]  # a warm-up example, then half the probe and the whole probe
    assert plan.estimate.seconds == pytest.approx(8 * 2.0 + 80 * 0.5)
    assert plan.estimate.eps == 0.1 and plan.probable is None
    assert "example-eps pairs" in plan.estimate.describe() and "cost model" in plan.estimate.describe()
    # a short run needs no estimate (it is about as short as the probe): nothing is measured
    assert plan_run([net], x, y, settings, "adaptive", 4, 16, 2, clock=clock) == RunPlan(None, None)


def test_the_memory_is_the_cost_models(problem):
    net, x, y = problem
    settings = CertifySettings(eps=(0.1,), batch_size=10, clip=None)
    built = DualNetwork(net, x[:1], 0.1).built
    columns = (6, 6)
    batch = examples_per_pass(built, columns, 10, 4, 2 * 1024**3)
    assert estimate.exact_pass_bytes([net], x, settings, 0.1) >= forward_bytes(built, columns, batch, 4) > 0


@pytest.mark.parametrize("probable,exact,slower", [(3.0, 1.0, True), (1.0, 3.0, False), (1.0, 9.0, False)])
def test_probable_is_compared_with_exact_bounds_by_measurement(problem, monkeypatch, probable, exact, slower):
    net, x, y = problem
    clock = VirtualClock()
    fake_costs(monkeypatch, clock, per_batch=0.0, per_example=0.1, probable=probable, exact=exact)
    settings = CertifySettings(eps=(0.1,), batch_size=10, clip=None, probable=0.01)
    plan = plan_run([net], x, y, settings, "paper", 4, 40, 4, clock=clock)
    assert plan.probable.slower is slower
    assert plan.estimate.peak_bytes is None  # no exact pass in a probable run
    if slower:
        assert "--probable is slower" in plan.probable.describe()


@pytest.fixture
def tiny_files(tmp_path):
    import onnx
    model = random_dense(np.random.default_rng(0), 6, [10, 10], 4).onnx_model
    onnx.save(model, str(tmp_path / "m.onnx"))
    x = np.random.default_rng(1).uniform(0, 1, size=(12, 6)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros(12, dtype=np.int64))
    return tmp_path / "m.onnx", tmp_path / "d.npz"


def test_certify_prints_the_estimate_and_one_warning_line(tiny_files, tmp_path, monkeypatch):
    model, data = tiny_files
    big = RunEstimate(seconds=7200.0, pairs=12, probe=12, eps=0.1, peak_bytes=3 << 30, batch=4)
    monkeypatch.setattr(run_module, "plan_run", lambda *a, **k: RunPlan(big, ProbableCheck(2.0, 1.0)))
    result = CliRunner().invoke(cli, ["certify", str(model), "--data", str(data),
                                      "--out", str(tmp_path / "r"),
                                      "--probable", "0.01", "--pgd-steps", "2", "--batch-size", "4"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines() if hasattr(result, "stderr") else result.output.splitlines()
    warnings = [line for line in lines if line.startswith("onnxdual: warning: --probable is slower")]
    assert len(warnings) == 1
    assert any(line.startswith("onnxdual: estimate: about 2 h") and "3 GiB" in line for line in lines)
    assert not Path(tmp_path / "r" / "certify-progress.jsonl").exists()  # the report holds it all now
