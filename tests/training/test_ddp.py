"""Distributed data parallel training: 2 CPU processes (gloo), launched with the environment ``torchrun``
sets, end with the same weights as one process on the same global batches."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from onnxdual.training import ArrayData, TrainConfig, train

SHAPE = (1, 8, 8)
REPO = Path(__file__).resolve().parents[2]

WORKER = textwrap.dedent("""
    import json, sys
    import numpy as np, torch
    import torch.distributed as dist
    from onnxdual.training import ArrayData, TrainConfig, init_distributed, train

    model, data_path, config_path, out, mode = sys.argv[1:6]
    dev = init_distributed("cpu")
    d = np.load(data_path)
    data = ArrayData(torch.from_numpy(d["x"]), torch.from_numpy(d["y"]), "synthetic", 10)
    config = TrainConfig.from_dict(json.load(open(config_path)))
    if mode == "cascade":
        from onnxdual.training import train_cascade

        def bright(net, x):  # each rank certifies its own share of the remaining examples
            return x.flatten(1).mean(1) > 0.55

        result = train_cascade(2, model, data, config, out, certifier=bright)
        json.dump(result.manifest["stages"], open(f"{out}/stages{dist.get_rank()}.json", "w"))
    else:
        run = train(model, data, config, out)
        torch.save(run.net.state_dict(), f"{out}/rank{dist.get_rank()}.pt")
        json.dump(run.history, open(f"{out}/history{dist.get_rank()}.json", "w"))
    dist.destroy_process_group()
""")


def launch(tmp_path, model, config, out, mode="train"):
    """Start 2 ranks with the environment torchrun sets; fail with their output if one fails."""
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    (tmp_path / "worker.py").write_text(WORKER)
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    args = [sys.executable, str(tmp_path / "worker.py"), str(model), str(tmp_path / "data.npz"),
            str(tmp_path / "config.json"), str(out), mode]
    procs = [subprocess.Popen(args, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in range(2)]
    logs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)


def tiny_problem(tmp_path):
    """A small conv ONNX model and 90 labelled 8x8 images saved as data.npz."""
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(1, 4, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 10))
    model = tmp_path / "conv.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(seq, torch.zeros(1, *SHAPE), str(model), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (90,), generator=g)
    x = (0.25 + 0.5 * y.view(-1, 1, 1, 1) + 0.25 * (torch.rand(90, *SHAPE, generator=g) - 0.5)).clamp(0, 1)
    np.savez(tmp_path / "data.npz", x=x.numpy(), y=y.numpy())
    return model, ArrayData(x, y, "synthetic", 10)




def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process_on_the_same_global_batches(tmp_path):
    model, data = tiny_problem(tmp_path)
    # batch 15 over 2 ranks: uneven shards of 8 and 7; random projections (shared by the global batch)
    config = TrainConfig(eps=0.05, proj=10, epochs=2, batch_size=15, ramp_epochs=1)
    out = tmp_path / "ddp"
    launch(tmp_path, model, config, out)

    single = train(model, data, config, tmp_path / "single")
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for name, value in single.net.state_dict().items():
        assert torch.equal(ranks[0][name], ranks[1][name]), name  # ranks apply identical updates
        torch.testing.assert_close(ranks[0][name], value, rtol=0, atol=1e-5)
    # only rank 0 writes the run's files; they hold the same weights
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["world_size"] == 2 and all(torch.equal(ckpt["model"][k], ranks[0][k]) for k in ranks[0])
    assert (out / "model.onnx").exists() and (out / "metrics.csv").exists()
    histories = [json.loads((out / f"history{r}.json").read_text()) for r in range(2)]
    for a, b, c in zip(histories[0], histories[1], single.history):
        for key in ("robust_loss", "robust_err_estimate", "clean_err", "eps", "lr"):
            assert a[key] == b[key]
            assert a[key] == pytest.approx(c[key], abs=1e-5)


def test_a_distributed_cascade_filters_like_a_single_process(tmp_path):
    from onnxdual.training import train_cascade

    model, data = tiny_problem(tmp_path)
    config = TrainConfig(eps=0.05, proj=None, epochs=1, batch_size=10, ramp_epochs=1)
    launch(tmp_path, model, config, tmp_path / "ddp", mode="cascade")
    single = train_cascade(2, model, data, config, tmp_path / "single",
                           certifier=lambda net, x: x.flatten(1).mean(1) > 0.55)
    ranks = [json.loads((tmp_path / "ddp" / f"stages{r}.json").read_text()) for r in range(2)]
    for entry in ranks[0] + ranks[1]:
        entry.pop("final_metrics")  # holds each rank's own wall-clock seconds
    assert ranks[0] == ranks[1]  # every rank agrees on what was certified
    assert [s["trained_on"] for s in ranks[0]] == [s["trained_on"] for s in single.manifest["stages"]] == \
        [90, int((data.x.flatten(1).mean(1) <= 0.55).sum())]
    for stage in single.manifest["stages"]:
        np.testing.assert_array_equal(np.load(tmp_path / "ddp" / stage["train_indices"]),
                                      np.load(tmp_path / "single" / stage["train_indices"]))
    assert json.loads((tmp_path / "ddp" / "cascade.json").read_text())["complete"]


def test_torchrun_onnxdual_train_matches_a_single_process_run(tmp_path):
    """The command line under ``torchrun``: 2 ranks, rank 0 alone writes, same weights as one process."""
    import onnx
    from click.testing import CliRunner
    from onnx import numpy_helper

    from onnxdual_cli.train import train_command

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=40)
    x = np.clip(0.3 + 0.4 * y[:, None, None, None] + 0.1 * rng.uniform(-1, 1, size=(40, 1, 28, 28)), 0, 1)
    np.savez(tmp_path / "data.npz", x=x.astype(np.float32), y=y.astype(np.int64))
    args = ["--arch", "wide:1", "--data", str(tmp_path / "data.npz"), "--eps", "0.05", "--epochs", "2",
            "--batch-size", "10", "--proj", "5", "--ramp-epochs", "1", "--device", "cpu", "--no-eval",
            "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed next to this Python")
    # ``-m onnxdual_cli.train`` is the same click command as ``onnxdual train``
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "onnxdual_cli.train",
                           *args, "--out", str(tmp_path / "ddp")], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    single = CliRunner().invoke(train_command, [*args, "--out", str(tmp_path / "single")],
                                catch_exceptions=False)
    assert single.exit_code == 0, single.output

    def weights(path):
        return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}

    ddp, one = weights(tmp_path / "ddp" / "model.onnx"), weights(tmp_path / "single" / "model.onnx")
    assert ddp.keys() == one.keys()
    for name in one:
        np.testing.assert_allclose(ddp[name], one[name], rtol=0, atol=1e-5, err_msg=name)
    assert torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)["world_size"] == 2
