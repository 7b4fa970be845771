"""`onnxdual certify`: the main job end to end, consistency with the Python API, and every user error."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from onnx import helper

import onnxdual
from onnxdual_cli.main import cli
from tests.onnx_builders import make_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small dense MNIST-shaped model and 30 labelled inputs (labels = its own predictions mostly)."""
    tmp = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    w1 = (rng.normal(size=(32, 784)) / 28).astype(np.float32)
    w2 = (rng.normal(size=(10, 32)) / 6).astype(np.float32)
    nodes = [helper.make_node("Flatten", ["input"], ["f"]), helper.make_node("Gemm", ["f", "W1"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["r"]), helper.make_node("Gemm", ["r", "W2"], ["output"], transB=1)]
    model_path = tmp / "tiny.onnx"
    import onnx
    onnx.save(make_model(nodes, [1, 28, 28], [10], {"W1": w1, "W2": w2}), str(model_path))
    x = rng.uniform(0, 1, size=(30, 1, 28, 28)).astype(np.float32)
    net = onnxdual.load(model_path)
    y = net(torch.from_numpy(x)).argmax(1).numpy()
    y[:3] = (y[:3] + 1) % 10  # a few misclassified examples
    data_path = tmp / "data.npz"
    np.savez(data_path, x=x, y=y)
    return model_path, data_path


def run(*args):
    return CliRunner().invoke(cli, list(map(str, args)), catch_exceptions=False)


def test_certify_writes_all_outputs_consistent_with_the_api(tiny, tmp_path):
    model, data = tiny
    out = tmp_path / "rep"
    result = run("certify", model, "--data", data, "--eps", "0.001,0.01", "--clip", "none", "--out", out,
                 "--quiet", "--pgd-steps", "10")
    assert result.exit_code == 0, result.output
    for name in ("examples.csv", "summary.csv", "summary.json", "report.html"):
        assert (out / name).stat().st_size > 0
    ex = pd.read_csv(out / "examples.csv")
    assert len(ex) == 60 and set(ex.eps) == {0.001, 0.01}
    d = np.load(data)
    net = onnxdual.load(model)
    x, y = torch.from_numpy(d["x"]), torch.from_numpy(d["y"]).long()
    summary = json.loads((out / "summary.json").read_text())
    relaxation = summary["meta"]["relaxation"]  # auto: the tightest within the time budget
    assert relaxation in ("paper", "adaptive", "optimized") and (ex.relaxation == relaxation).all()
    with torch.no_grad():
        pred = net(x).argmax(1)
        lb = onnxdual.DualNetwork(net, x, 0.01, relaxation=relaxation).lower_bound(onnxdual.margin_matrix(pred, 10))
    lb[torch.arange(30), pred] = float("inf")
    e = ex[ex.eps == 0.01].sort_values("index")
    np.testing.assert_allclose(e.margin_lower_bound, lb.min(1).values.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(e.certified, (lb.min(1).values > 0).numpy() & (pred == y).numpy())
    assert not (e.certified & e.pgd_success).any()
    assert summary["meta"]["bound"] == "exact"


@pytest.mark.parametrize("relaxation", ["paper", "adaptive", "optimized"])
def test_a_chosen_relaxation_is_used_and_reported_everywhere(tiny, tmp_path, relaxation):
    model, data = tiny
    out = tmp_path / relaxation
    result = run("certify", model, "--data", data, "--eps", "0.01", "--clip", "none", "--out", out,
                 "--pgd-steps", "2", "--relaxation", relaxation)
    assert result.exit_code == 0, result.output
    assert f"relaxation: {relaxation}" in result.stdout
    ex, summary = pd.read_csv(out / "examples.csv"), pd.read_csv(out / "summary.csv")
    meta = json.loads((out / "summary.json").read_text())["meta"]
    assert (ex.relaxation == relaxation).all() and (summary.relaxation == relaxation).all()
    assert meta["relaxation"] == relaxation and relaxation in (out / "report.html").read_text()
    net = onnxdual.load(model)
    d = np.load(data)
    x = torch.from_numpy(d["x"])
    with torch.no_grad():
        pred = net(x).argmax(1)
        lb = onnxdual.DualNetwork(net, x, 0.01, relaxation=relaxation).lower_bound(onnxdual.margin_matrix(pred, 10))
    lb[torch.arange(30), pred] = float("inf")
    np.testing.assert_allclose(ex.sort_values("index").margin_lower_bound, lb.min(1).values.numpy(),
                               rtol=1e-4, atol=1e-5)


def test_a_probable_bound_refuses_the_tighter_relaxations(tiny, tmp_path):
    model, data = tiny
    result = run("certify", model, "--data", data, "--probable", "0.01", "--relaxation", "optimized",
                 "--out", tmp_path / "r")
    assert result.exit_code == 2 and "paper" in result.output


def test_json_flag_prints_only_json(tiny, tmp_path):
    model, data = tiny
    result = run("certify", model, "--data", data, "--eps", "0.01", "--out", tmp_path / "r", "--json",
                 "--pgd-steps", "2")
    assert result.exit_code == 0
    payload = json.loads(result.stdout)
    assert payload["summary"][0]["n"] == 30


def test_embedded_default_runs_with_no_arguments(tmp_path):
    result = run("certify", "--limit", "20", "--out", tmp_path / "r", "--pgd-steps", "5")
    assert result.exit_code == 0, result.output
    assert "certified" in result.output and (tmp_path / "r" / "report.html").exists()


def test_probable_bounds_are_labelled_everywhere_and_agree_with_the_api(tiny, tmp_path):
    model, data = tiny
    out = tmp_path / "prob"
    result = run("certify", model, "--data", data, "--eps", "0.002", "--clip", "none", "--out", out,
                 "--probable", "0.05", "--projections", "16,2", "--pgd-steps", "5", "--seed", "3")
    assert result.exit_code == 0, result.output
    assert "with probability >= 0.95" in result.output
    summary = pd.read_csv(out / "summary.csv")
    assert (summary.bound == "probabilistic (delta=0.05, k=16, m=2)").all()
    assert json.loads((out / "summary.json").read_text())["meta"]["bound"].startswith("probabilistic")
    assert "Probabilistic bounds" in (out / "report.html").read_text()
    # every probable margin is at most the exact one here (looser intermediate bounds, same objective)
    exact_out = tmp_path / "exact"
    assert run("certify", model, "--data", data, "--eps", "0.002", "--clip", "none", "--out", exact_out,
               "--quiet", "--pgd-steps", "5").exit_code == 0
    probable = pd.read_csv(out / "examples.csv").margin_lower_bound.to_numpy()
    exact = pd.read_csv(exact_out / "examples.csv").margin_lower_bound.to_numpy()
    assert (probable <= exact + 1e-4).all() and (probable < exact - 1e-6).any()
    assert (pd.read_csv(exact_out / "summary.csv").bound == "exact").all()


@pytest.mark.parametrize("args,message", [
    (["certify", "MISSING.onnx"], "not found"),
    (["certify", "{bad}"], "cannot read"),
    (["certify", "{model}", "--eps", "-1"], "eps"),
    (["certify", "{model}", "--eps", "abc"], "not a number"),
    (["certify", "{model}", "--eps", "0"], "eps"),
    (["certify", "{model}", "--data", "{wrong_shape}"], "does not fit"),
    (["certify", "{model}", "--data", "{bad_labels}"], "labels"),
    (["certify", "{model}", "--data", "{data}", "--out", "{file}/sub"], ""),
    (["certify", "{unsupported}"], "no dual layer"),
    (["certify", "{model}", "--clip", "1,0"], "empty range"),
    (["certify", "{model}", "--probable", "0"], "probable"),
    (["certify", "{model}", "--probable", "1.5"], "probable"),
    (["certify", "{model}", "--probable", "0.01", "--projections", "200"], "k,m"),
    (["certify", "{model}", "--probable", "0.01", "--projections", "0,3"], "positive"),
])
def test_user_errors_give_one_line_and_exit_2(tiny, tmp_path, args, message):
    model, data = tiny
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file at all" * 10)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((4, 3, 32, 32), np.float32), y=np.zeros(4, np.int64))
    labels = tmp_path / "labels.npz"
    np.savez(labels, x=np.zeros((4, 1, 28, 28), np.float32), y=np.array([0, 1, 42, 3]))
    afile = tmp_path / "afile"
    afile.write_text("x")
    unsupported = tmp_path / "soft.onnx"
    import onnx
    onnx.save(make_model([helper.make_node("Tan", ["input"], ["output"])], [10], [10]), str(unsupported))
    subs = {"{model}": model, "{bad}": bad, "{wrong_shape}": wrong, "{bad_labels}": labels, "{data}": data,
            "{file}": afile, "{unsupported}": unsupported}
    argv = []
    for a in args:
        for k, v in subs.items():
            a = a.replace(k, str(v))
        argv.append(a)
    result = CliRunner().invoke(cli, argv + ["--quiet", "--pgd-steps", "1"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    err = result.stderr.strip()
    assert err.count("\n") == 0 or err.startswith("Usage"), err
    assert message.lower() in err.lower()


@pytest.mark.parametrize("args", [["--out", ""], ["--out", "  "], ["--batch-size", "1000000"],
                                  ["--pgd-restarts", "5000"]])
def test_an_empty_out_or_an_absurd_size_is_refused_before_any_work(tmp_path, args):
    result = run("certify", *args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("onnxdual: error:")
