"""onnxdual.verify.network: loading (gzip, garbage, unsupported operators) and inputs without a batch
dimension."""

from __future__ import annotations

import gzip

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxdual.errors import ModelLoadError, UnsupportedOpsError
from onnxdual.verify import SAT, UNSAT, Deadline, Verifier, load_network
from tests.onnx_builders import make_model
from tests.verify.conftest import prop_of, save


def test_load_network_reads_gzip_and_rejects_garbage(mlp, tmp_path):
    raw = onnx.load(mlp.source)
    gz = tmp_path / "m.onnx.gz"
    gz.write_bytes(gzip.compress(raw.SerializeToString()))
    net = load_network(gz)
    assert (net.n_inputs, net.n_outputs) == (2, 2)
    bad = tmp_path / "bad.onnx.gz"
    bad.write_bytes(gzip.compress(b"not a model"))
    with pytest.raises(ModelLoadError):
        load_network(bad)
    with pytest.raises(ModelLoadError, match="not found"):
        load_network(tmp_path / "missing.onnx")


def test_unsupported_operators_are_listed_at_load(tmp_path):
    nodes = [helper.make_node("Tan", ["input"], ["s"]), helper.make_node("Asin", ["s"], ["output"])]
    with pytest.raises(UnsupportedOpsError, match="Tan.*Asin|Asin.*Tan"):
        load_network(save(make_model(nodes, [3], [3]), tmp_path / "u.onnx"))


def vector_model(nodes, in_shape, out_shape, inits, path):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return save(m, path)


def test_inputs_without_a_batch_dimension(tmp_path):
    # W @ x with a vector x (as in VNN-COMP's test_tiny), and a transpose of a [1, 2] input whose first
    # dimension is not a batch
    w = np.array([[2.0], [-1.0]], np.float32)
    p1 = vector_model([helper.make_node("MatMul", ["W", "x"], ["m"]), helper.make_node("Relu", ["m"], ["y"])],
                      [1], [2], {"W": w}, tmp_path / "wx.onnx")
    net = load_network(p1)
    assert net.example_shape == (1,)
    prop = prop_of([([-1.0], [1.0], [([-1.0, 0.0], [-2.5])])], 1, 2)  # y0 = relu(2x) >= 2.5: unsat
    assert Verifier.for_network(net).decide(prop, Deadline(5)).answer == UNSAT
    p2 = vector_model([helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]),
                       helper.make_node("Relu", ["t"], ["y"])], [1, 2], [2, 1], {}, tmp_path / "tr.onnx")
    net = load_network(p2)
    prop = prop_of([([0.0, 10.0], [1.0, 11.0], [([0.0, -1.0], [-10.0])])], 2, 2)  # y[1,0] = x[0,1] >= 10: sat
    result = Verifier.for_network(net).decide(prop, Deadline(5))
    assert result.answer == SAT and result.witness_y[1] >= 10
