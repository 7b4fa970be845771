"""Certificates about the right input (issue 17 C): a clean input outside the --clip domain is an error naming
the first offending example (never clamped into a box that does not contain it); non-finite clip bounds and
models with NaN/Inf weights are refused up front. Each: exit 2, one ``onnxdual: error:`` line."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import helper

from onnxdual.certify import CertifySettings
from onnxdual.certify.run import check_domain
from onnxdual.errors import InvalidInputError, ModelLoadError
from onnxdual.frontend.onnx_import import load
from onnxdual_cli.main import cli
from tests.onnx_builders import make_model


def _dense(path, w1_fill=None):
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(6, 4)).astype(np.float32)
    if w1_fill is not None:
        w1[2, 1] = w1_fill
    w2 = rng.normal(size=(3, 6)).astype(np.float32)
    nodes = [helper.make_node("Flatten", ["input"], ["f"]),
             helper.make_node("Gemm", ["f", "W1"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "W2"], ["output"], transB=1)]
    onnx.save(make_model(nodes, [1, 2, 2], [3], {"W1": w1, "W2": w2}), str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("domain")
    x = np.random.default_rng(1).uniform(0, 1, size=(6, 1, 2, 2)).astype(np.float32)
    y = np.zeros(6, np.int64)
    np.savez(tmp / "ok.npz", x=x, y=y)
    big = x.copy()
    big[3:] *= 1000  # pixels x1000 from example 3 on
    np.savez(tmp / "x1000.npz", x=big, y=y)
    return {"model": _dense(tmp / "m.onnx"), "nan": _dense(tmp / "nan.onnx", np.nan),
            "inf": _dense(tmp / "inf.onnx", np.inf), "ok": tmp / "ok.npz", "x1000": tmp / "x1000.npz"}


@pytest.mark.parametrize("model,data,extra,message", [
    ("model", "x1000", [], "example 3 lies outside the data domain [0, 1]"),
    ("model", "ok", ["--clip", "2,3"], "example 0 lies outside the data domain [2, 3]"),
    ("model", "ok", ["--clip", "nan,1"], "finite"),
    ("model", "ok", ["--clip", "0,inf"], "finite"),
    ("nan", "ok", [], "holds NaN values"),
    ("inf", "ok", [], "holds infinite values"),
])
def test_wrong_inputs_are_one_line_exit_2(files, tmp_path, model, data, extra, message):
    out = tmp_path / "r"
    result = CliRunner().invoke(cli, ["certify", str(files[model]), "--data", str(files[data]),
                                      "--out", str(out), "--quiet", "--pgd-steps", "1", *extra])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxdual: error: ") and message in lines[0], lines
    assert not out.exists()


@pytest.mark.parametrize("data,extra", [("x1000", ["--norm", "l2", "--eps", "0.01"]),
                                        ("x1000", ["--clip", "none"]), ("ok", ["--clip", "0,1"])])
def test_l2_runs_no_domain_and_a_fitting_domain_pass(files, tmp_path, data, extra):
    result = CliRunner().invoke(cli, ["certify", str(files["model"]), "--data", str(files[data]),
                                      "--out", str(tmp_path / "r"), "--quiet", "--pgd-steps", "1", *extra])
    assert result.exit_code == 0, result.output


def test_library_checks():
    with pytest.raises(InvalidInputError, match="finite range"):
        CertifySettings(eps=(0.1,), clip=(float("nan"), 1.0))
    with pytest.raises(InvalidInputError, match="example 1 .* value nan"):
        check_domain(torch.tensor([[0.5, 0.5], [float("nan"), 0.2]]), (0.0, 1.0))
    check_domain(torch.tensor([[0.0, 1.0]]), (0.0, 1.0))  # the bounds themselves are inside
    check_domain(torch.tensor([[5.0]]), None)


def test_load_refuses_non_finite_weights(files):
    with pytest.raises(ModelLoadError, match="'.*' holds NaN values"):
        load(files["nan"])
    assert load(files["model"]) is not None
