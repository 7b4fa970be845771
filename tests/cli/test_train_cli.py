"""`onnxdual train`: a tiny end-to-end run (single model and cascade, resume) and every user error as one line
with exit code 2."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import helper

from onnxdual_cli.train import CommandOptions, parse_options, train_command
from tests.onnx_builders import make_model


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small dense MNIST-shaped ONNX model and 60 labelled inputs in a .npz."""
    tmp = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    w1 = (rng.normal(size=(16, 784)) / 28).astype(np.float32)
    b1 = np.zeros(16, dtype=np.float32)
    w2 = (rng.normal(size=(10, 16)) / 4).astype(np.float32)
    nodes = [helper.make_node("Flatten", ["input"], ["f"]),
             helper.make_node("Gemm", ["f", "W1", "B1"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "W2"], ["output"], transB=1)]
    model_path = tmp / "tiny.onnx"
    onnx.save(make_model(nodes, [1, 28, 28], [10], {"W1": w1, "B1": b1, "W2": w2}), str(model_path))
    y = rng.integers(0, 2, size=60)
    x = np.clip(0.3 + 0.4 * y[:, None, None, None] + 0.1 * rng.uniform(-1, 1, size=(60, 1, 28, 28)), 0, 1)
    data_path = tmp / "data.npz"
    np.savez(data_path, x=x.astype(np.float32), y=y.astype(np.int64))
    return model_path, data_path


def run(*args):
    return CliRunner().invoke(train_command, [str(a) for a in args], catch_exceptions=False)


FAST = ("--epochs", "1", "--batch-size", "20", "--projections", "exact", "--ramp-epochs", "1", "--device", "cpu",
        "--eval-limit", "10", "--pgd-steps", "2")


def test_train_writes_model_metrics_checkpoint_and_report(tiny, tmp_path):
    model, data = tiny
    out = tmp_path / "run"
    result = run(model, "--data", data, "--eps", "0.05", *FAST, "--out", out)
    assert result.exit_code == 0, result.output
    for name in ("model.onnx", "metrics.csv", "checkpoint.pt", "report/summary.json", "report/report.html"):
        assert (out / name).stat().st_size > 0, name
    assert "certified" in result.stdout and "model:" in result.stdout
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["meta"]["bound"] == "exact" and summary["summary"][0]["n"] == 10
    # resuming a finished run only re-exports and re-evaluates
    again = run(model, "--data", data, "--eps", "0.05", *FAST, "--out", out, "--resume", "--quiet")
    assert again.exit_code == 0, again.output
    assert again.stdout == ""


def test_cascade_option_writes_a_manifest(tiny, tmp_path):
    model, data = tiny
    out = tmp_path / "cas"
    result = run(model, "--data", data, "--eps", "0.05", *FAST, "--cascade", "2", "--out", out, "--quiet",
                 "--no-eval")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "cascade.json").read_text())
    assert manifest["format"] == "onnxdual-cascade" and manifest["complete"]
    assert all((out / s["onnx"]).exists() for s in manifest["stages"])


@pytest.mark.parametrize("args, message", [
    (("--eps", "0.1"), "--data is required"),
    (("--data", "{tmp}/missing", "--eps", "0.1"), "data not found"),
    (("--data", "{data}", "--eps", "abc"), "is not a number"),
    (("--data", "{data}", "--eps", "-0.1"), "must be positive"),
    (("--data", "{data}", "--eps", "0"), "must be positive"),
    (("--data", "{data}", "--arch", "huge"), "unknown architecture"),
    (("--data", "{data}", "--arch", "wide:x"), "positive integer K"),
    (("--data", "{data}", "--normalize", "0.1"), "--normalize"),
    (("{model}", "--data", "{data}", "--arch", "small"), "either MODEL or --arch"),
    (("{tmp}/nope.onnx", "--data", "{data}"), "model file not found"),
    (("{model}", "--data", "{data}", "--projections", "0"), "--proj"),
    (("{model}", "--data", "{data}", "--projections", "many"), "--proj"),
    (("{model}", "--data", "{data}", "--clip", "1,0"), "--clip"),
    (("{model}", "--data", "{data}", "--ibp-weight", "1.5"), "--ibp-weight"),
    (("{model}", "--data", "{data}", "--ibp-weight", "0,1,0"), "--ibp-weight"),
    (("{model}", "--data", "{data}", "--ibp-weight", "half"), "--ibp-weight"),
    (("{model}", "--data", "{data}", "--clean-weight", "1,-1"), "--clean-weight"),
    (("{model}", "--data", "{data}", "--out", "{tmp}/file"), "not a directory"),
    (("{model}", "--data", "{data}", "--out", "{tmp}/file/sub"), "cannot create output directory"),
    (("{model}", "--data", "{data}", "--out", "{tmp}/empty", "--resume"), "nothing to resume"),
])
def test_user_errors_are_one_line_with_exit_code_2(tiny, tmp_path, args, message):
    model, data = tiny
    (tmp_path / "file").write_text("not a directory")
    (tmp_path / "empty").mkdir()
    argv = [a.format(tmp=tmp_path, data=data, model=model) for a in args]
    result = run(*argv, "--out", tmp_path / "out") if "--out" not in args else run(*argv)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxdual: error:"), result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.output


def test_a_run_in_progress_is_not_overwritten(tiny, tmp_path):
    model, data = tiny
    out = tmp_path / "run"
    assert run(model, "--data", data, *FAST, "--out", out, "--quiet", "--no-eval").exit_code == 0
    result = run(model, "--data", data, *FAST, "--out", out, "--quiet", "--no-eval")
    assert result.exit_code == 2 and "already holds a training run" in result.stderr
    changed = run(model, "--data", data, *FAST, "--eps", "0.2", "--out", out, "--resume", "--no-eval")
    assert changed.exit_code == 2 and "different settings" in changed.stderr


def test_a_soundness_violation_exits_with_code_3(tiny, tmp_path, monkeypatch):
    import onnxdual.training.evaluation as evaluation

    def broken(*args, **kwargs):
        raise evaluation.SoundnessError("soundness violation: robust error below PGD error (test)")

    monkeypatch.setattr(evaluation, "evaluate", broken)
    model, data = tiny
    result = run(model, "--data", data, *FAST, "--out", tmp_path / "run", "--quiet")
    assert result.exit_code == 3
    assert result.stderr.strip() == ("onnxdual: error: soundness violation: robust error below PGD error "
                                     "(test)")


def test_cuda_without_a_cuda_device_is_a_one_line_user_error(tiny, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also where a GPU is present
    model, data = tiny
    result = run(model, "--data", data, "--eps", "0.05", "--device", "cuda", "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxdual: error:") and "CUDA" in lines[0], result.stderr
    assert not (tmp_path / "out" / "checkpoint.pt").exists()


def test_ibp_options_train_and_become_the_config(tiny, tmp_path):
    model, data = tiny
    base = [str(model), "--data", str(data), "--ramp-epochs", "1"]
    argv = [*base, "--ibp-weight", "0,1", "--ibp-warmup", "2", "--epochs", "3", "--clean-weight", "1,0.5"]
    config, _ = parse_options(train_command.make_context("train", argv).params)
    assert config.interval_weight == (0.0, 1.0) and config.ibp_warmup == 2
    assert config.clean_weight == (1.0, 0.5)
    config, _ = parse_options(train_command.make_context("train", [*base, "--ibp-weight", "0.25"]).params)
    assert config.interval_weight == (0.25, 0.25) and config.ibp_warmup == 0
    out = tmp_path / "ibp"
    result = run(model, "--data", data, "--eps", "0.05", *FAST, "--ibp-warmup", "1", "--out", out,
                 "--no-eval")
    assert result.exit_code == 0, result.output
    assert "--ibp-warmup 1 covers every epoch" in result.stderr


def test_the_options_become_a_train_config_and_the_command_options(tiny):
    """The command line is split into the library's TrainConfig (its defaults are the library's) and the
    command's own record; the device stays as given until the command resolves it."""
    from pathlib import Path

    from onnxdual.training import TrainConfig

    model, data = tiny
    argv = [str(model), "--data", str(data), "--eps", "0.2", "--projections", "exact", "--clip", "none",
            "--epoch-onnx", "--cascade", "2", "--no-eval"]
    config, opts = parse_options(train_command.make_context("train", argv).params)
    assert config == TrainConfig(eps=0.2, proj=None, clip=None, device="auto", export_epochs=True)
    assert opts == CommandOptions(source=model, data=data, test_data=None, stages=2,
                                  out=Path("onnxdual-train"), resume=False, limit=None, eval_limit=None,
                                  no_eval=True, pgd_steps=40, quiet=False, device="auto")
    config, opts = parse_options(train_command.make_context("train", ["--data", str(data), "--eps-start",
                                                                      "0.01"]).params)
    assert config.eps_start == 0.01 and config.eps == 0.1 and opts.source == "small"
