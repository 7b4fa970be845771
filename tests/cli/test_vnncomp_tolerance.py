"""VNN-COMP's counterexample tolerance (``vnncomp --counterexample-tolerance``): off by default (exact
semantics), never an option of ``verify``; when on, a witness up to TOL outside the box answers sat, and the
witness is within TOL of the box while its output reaches the unsafe region exactly."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import helper
from onnxdual_cli.verify import VNNCOMP_TOLERANCE, standalone

from tests.onnx_builders import make_model, run_ort

BOX = ("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
       "(declare-const Y_1 Real)\n(assert (>= X_0 0.0))\n(assert (<= X_0 1.0))\n(assert (>= X_1 0.0))\n"
       "(assert (<= X_1 1.0))\n")


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """y = [relu(x0 + x1), relu(x0 - x1)]: on [0, 1]^2 the largest y0 is 2, reached at (1, 1)."""
    w = np.array([[1.0, 1.0], [1.0, -1.0]], np.float32)
    nodes = [helper.make_node("Gemm", ["input", "W"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["output"])]
    model = make_model(nodes, [2], [2], {"W": w})
    path = tmp_path_factory.mktemp("net") / "net.onnx"
    onnx.save(model, str(path))
    return path, model


def vnncomp(tmp_path, net_path, threshold: float, *options):
    prop = tmp_path / "p.vnnlib"
    prop.write_text(BOX + f"(assert (>= Y_0 {threshold}))\n")
    out = tmp_path / "results.txt"
    result = CliRunner().invoke(standalone, ["vnncomp", "t", str(net_path), str(prop), str(out), "20",
                                             *options, "--device", "cpu", "--threads", "1"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out.read_text().splitlines(), result.stderr


def witness(lines):
    values = dict(line.strip(" ()").split(" ") for line in lines[1:])
    return np.array([float(values["X_0"]), float(values["X_1"])]), float(values["Y_0"])


def test_exact_semantics_by_default(net, tmp_path):
    lines, _ = vnncomp(tmp_path, net[0], 2.00005)  # unsat in the box, sat 1e-4 outside it
    assert lines == ["unsat"]


@pytest.mark.parametrize("options,tol", [(("--counterexample-tolerance",), VNNCOMP_TOLERANCE),
                                         (("--counterexample-tolerance", "3e-4"), 3e-4)])
def test_a_witness_within_the_tolerance_answers_sat(net, tmp_path, options, tol):
    lines, stderr = vnncomp(tmp_path, net[0], 2.0 + tol / 2, *options)
    assert lines[0] == "sat"
    x, y0 = witness(lines)
    outside = max(0.0, float(np.max(-x)), float(np.max(x - 1.0)))
    assert 0 < outside <= tol
    assert run_ort(net[1], x.astype(np.float32)[None])[0, 0] >= 2.0 + tol / 2 and y0 >= 2.0 + tol / 2
    assert "outside the input box" in stderr and "exact semantics: unsat" in stderr


def test_beyond_the_tolerance_it_stays_unsat(net, tmp_path):
    lines, _ = vnncomp(tmp_path, net[0], 2.01, "--counterexample-tolerance")
    assert lines == ["unsat"]


def test_a_witness_inside_the_box_is_still_the_exact_one(net, tmp_path):
    lines, _ = vnncomp(tmp_path, net[0], 1.5, "--counterexample-tolerance")
    x, _ = witness(lines)
    assert lines[0] == "sat" and np.all((0 <= x) & (x <= 1))


def test_verify_has_no_such_option(net, tmp_path):
    prop = tmp_path / "p.vnnlib"
    prop.write_text(BOX + "(assert (>= Y_0 2.00005))\n")
    result = CliRunner().invoke(standalone, ["verify", str(prop), "--network", str(net[0]),
                                             "--counterexample-tolerance"])
    assert result.exit_code == 2 and result.stdout == ""
