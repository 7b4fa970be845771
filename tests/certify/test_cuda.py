"""The device: ``--device auto`` (every command's default) means CUDA when there is one; CUDA without one is
a one-line user error; and the CUDA-only paths -- certification, one training epoch, a VNN-COMP instance and
joining a process group with NCCL, one GPU per rank -- give what the CPU gives. The CUDA tests run where
CUDA is available and skip with a reason elsewhere (benchmarks/gpu/smoke.py times the same on a GPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from onnxdual_cli.main import cli

from onnxdual import bench
from onnxdual.certify import CertifySettings, certify, load_stages
from onnxdual.data import load_dataset
from onnxdual.distributed import join_torchrun, resolve_device
from onnxdual_cli.certify import default_model

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO / "benchmarks" / "vnnlib"
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")


@pytest.mark.parametrize("present", [True, False])
def test_auto_is_cuda_exactly_when_there_is_one(monkeypatch, present):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: present)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert resolve_device("auto").type == ("cuda" if present else "cpu")
    dev, world = join_torchrun("auto")
    assert dev.type == ("cuda" if present else "cpu") and not world.active


@pytest.mark.parametrize("command", ["certify", "train", "verify", "bench"])
def test_every_command_defaults_to_auto_and_says_what_it_means(command):
    text = CliRunner().invoke(cli, [command, "--help"]).output
    assert "auto: CUDA when present" in text and "[default: auto]" in " ".join(text.split()), text


@pytest.mark.skipif(torch.cuda.is_available(), reason="there is a CUDA device here")
def test_cuda_without_a_cuda_device_is_one_line_error():
    result = CliRunner().invoke(cli, ["bench", str(SUITE), "--device", "cuda", "--out", "unused"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxdual: error:") and "CUDA" in lines[0], result.output


@requires_cuda
def test_certify_on_cuda_gives_the_cpu_bounds():
    data = load_dataset(None, limit=8)
    settings = CertifySettings(eps=(0.1,), clip=(0.0, 1.0), batch_size=8, pgd_steps=10, relaxation="adaptive")
    cpu = certify(load_stages(default_model()), data.x, data.y, settings).examples_frame()
    stages = load_stages(default_model())
    for stage in stages:
        stage.net.to("cuda")
    gpu = certify(stages, data.x.cuda(), data.y.cuda(), settings).examples_frame()
    torch.testing.assert_close(torch.tensor(gpu.margin_lower_bound.to_numpy()),
                               torch.tensor(cpu.margin_lower_bound.to_numpy()), rtol=1e-4, atol=1e-4)
    assert (gpu.margin_lower_bound <= gpu.pgd_margin + 1e-4).all()  # a bound, on the GPU too


@requires_cuda
def test_a_vnncomp_instance_on_cuda_gets_the_cpu_answer():
    instances = [i for i in bench.read_instances(SUITE) if "conv" in i.onnx]
    cpu = bench.run_benchmark(instances, device=torch.device("cpu"))
    gpu = bench.run_benchmark(instances, device=torch.device("cuda"))
    assert list(gpu.answer) == list(cpu.answer) == ["unsat", "sat"]


@requires_cuda
def test_one_training_epoch_on_cuda(tmp_path):
    from onnxdual.training import TrainConfig, train
    from tests.training.test_ddp import tiny_problem

    model, data = tiny_problem(tmp_path)
    run = train(model, data, TrainConfig(eps=0.05, proj=10, epochs=1, batch_size=30, ramp_epochs=1,
                                         device="cuda"), tmp_path / "run")
    assert next(run.net.parameters()).device.type == "cuda"
    assert all(torch.isfinite(torch.tensor(h["robust_loss"])) for h in run.history)


@requires_cuda
def test_a_rank_joins_with_nccl_on_its_own_gpu():
    code = ("from onnxdual.distributed import backend, join_torchrun, shutdown_distributed\n"
            "dev, world = join_torchrun('auto')\n"
            "print(dev, world.rank, world.world_size, backend())\n"
            "shutdown_distributed()\n")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run([*torchrun, "--no-python", sys.executable, "-c", code], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    n = torch.cuda.device_count()
    lines = sorted(line for line in done.stdout.splitlines() if line.startswith("cuda"))
    assert lines == [f"cuda:{r % n} {r} 2 nccl" for r in range(2)]
