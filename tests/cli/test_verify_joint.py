"""`onnxdual verify` on VNN-LIB 2.0 queries beyond one network with one input and one output (the joint
network, onnxdual.specs.joint): several networks (one declared equal-to another), several inputs, hidden
nodes, linear constraints over inputs and products of variables; unsat where the query is unsatisfiable,
sat with an assignment that onnxruntime confirms, and the theories claimed by `supports`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper
from onnxdual_cli.verify import standalone

from tests.onnx_builders import make_model, run_ort

pytest.importorskip("vnnlib", reason="VNN-LIB 2.0 support needs the 'vnnlib' package")


def run(*args):
    return CliRunner().invoke(standalone, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def two_inputs(tmp_path_factory) -> Path:
    """Unbatched inputs a, b of 2: hidden node s = a + b, output relu(s)."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Relu", ["s"], ["y"])], "two",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in ("a", "b")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("net") / "two.onnx"
    onnx.save(model, str(path))
    return path


def box(name: str, lo: float, hi: float, shape=(0,)) -> str:
    index = ",".join(str(i) for i in shape)
    return f"(assert (and (>= {name}[{index}] {lo}) (<= {name}[{index}] {hi})))\n"


def equal_networks_query(tmp_path: Path, bound: float) -> Path:
    text = ("(vnnlib-version <2.0>)\n"
            "(declare-network N1 (declare-input X float32 [1,2]) (declare-output Y float32 [1,2]))\n"
            "(declare-network N2 (equal-to N1) (declare-input X2 float32 [1,2])\n"
            "  (declare-output Y2 float32 [1,2]))\n"
            + box("X", 0.0, 1.0, (0, 0)) + box("X", 0.0, 1.0, (0, 1))
            + box("X2", 1.0, 2.0, (0, 0)) + box("X2", 1.0, 2.0, (0, 1))
            + f"(assert (<= (- Y2[0,0] Y[0,0]) {bound}))\n")
    path = tmp_path / f"equal{bound}.vnnlib"
    path.write_text(text)
    return path


def assignment(stdout: str) -> dict[str, np.ndarray]:
    lines = stdout.splitlines()
    assert lines[0] == "sat"
    out, k = {}, 1
    while k < len(lines):
        name, _, dims = lines[k].split()
        n = int(np.prod([int(d) for d in dims.strip("[]").split(",")]))
        out[name] = np.array([float(v) for v in lines[k + 1:k + 1 + n]], np.float32)
        k += 1 + n
    return out


def test_two_networks_one_equal_to_the_other(relu_net, tmp_path):
    # Y2[0,0] = x0 + x1 over [1, 2]^2 is at least 2, Y[0,0] over [0, 1]^2 at most 2: Y2 - Y >= 0
    result = run("verify", equal_networks_query(tmp_path, -0.5), "--network", f"N1={relu_net}")
    assert result.exit_code == 0 and result.stdout == "unsat\n", result.output
    result = run("verify", equal_networks_query(tmp_path, 0.25), "--network", f"N1={relu_net}")
    assert result.exit_code == 0, result.output
    values = assignment(result.stdout)
    assert list(values) == ["X", "X2", "Y", "Y2"]
    model = onnx.load(str(relu_net))
    for x, y in (("X", "Y"), ("X2", "Y2")):
        np.testing.assert_array_equal(run_ort(model, values[x].reshape(1, 2)).reshape(-1), values[y])
    assert values["Y2"][0] - values["Y"][0] <= 0.25


def poly_query(tmp_path: Path, bound: float) -> Path:
    text = ("(vnnlib-version <2.0>)\n"
            "(declare-network N (declare-input A float32 [2]) (declare-input B float32 [2])\n"
            "  (declare-hidden S float32 [2] \"s\") (declare-output Y float32 [2]))\n"
            + box("A", 0.0, 1.0, (0,)) + box("A", 0.0, 1.0, (1,)) + box("B", 0.0, 1.0, (0,))
            + box("B", 0.0, 1.0, (1,))
            + "(assert (<= (+ A[0] B[1]) 1.5))\n"  # linear over two inputs
            + f"(assert (>= (* S[0] Y[1]) {bound}))\n")
    path = tmp_path / f"poly{bound}.vnnlib"
    path.write_text(text)
    return path


def test_several_inputs_hidden_nodes_linear_input_constraints_and_products(two_inputs, tmp_path):
    # S = A + B, Y = relu(S); with A[0] + B[1] <= 1.5, S[0] * Y[1] = (A0 + B0)(A1 + B1) <= 2 * 2 = 4
    result = run("verify", poly_query(tmp_path, 4.5), "--network", f"N={two_inputs}")
    assert result.exit_code == 0 and result.stdout == "unsat\n", result.output
    result = run("verify", poly_query(tmp_path, 2.5), "--network", f"N={two_inputs}")
    assert result.exit_code == 0, result.output
    values = assignment(result.stdout)
    assert list(values) == ["A", "B", "Y"]
    a, b = values["A"], values["B"]
    assert np.all((0 <= a) & (a <= 1) & (0 <= b) & (b <= 1)) and a[0] + b[1] <= 1.5
    np.testing.assert_array_equal(values["Y"], np.maximum(a + b, 0))
    assert (a[0] + b[0]) * values["Y"][1] >= 2.5


def test_supports_claims_the_theories_of_the_joint_network():
    def ask(cap):
        result = run("supports", cap)
        assert result.exit_code == 0, result.output
        return result.stdout.splitlines()

    assert ask("--hidden-node-theories") == ["NH", "H"]
    assert ask("--multiple-network-theories") == ["SNET", "MNET", "MENET", "MINET"]
    assert ask("--multiple-input-output-theories") == ["SIO", "MIO"]
    assert ask("--arithmetic-complexity-theories") == ["BND", "OUTC", "LIN", "POLY"]
