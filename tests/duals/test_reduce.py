"""ReduceSum, ReduceMean (axes as attribute and as input), Sum and Mean of several inputs."""

import numpy as np
import pytest
import torch
from onnx import helper

import onnxdual
from onnxdual.errors import UnsupportedNodeError
from tests.duals.affine_checks import check_exact

rng = np.random.default_rng(5)
I64 = np.int64


def _reduce_node(op, opset, axes, keepdims):
    since = {"ReduceSum": 13, "ReduceMean": 18}[op]
    if opset >= since:
        node = helper.make_node(op, ["input", "axes"], ["output"], keepdims=keepdims)
        return [node], {"axes": np.array(axes, I64)}
    return [helper.make_node(op, ["input"], ["output"], axes=axes, keepdims=keepdims)], {}


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean"])
@pytest.mark.parametrize("opset", [11, 13, 18])
@pytest.mark.parametrize("axes,keepdims,out", [([2, 3], 1, [2, 1, 1]), ([-1], 0, [2, 3]), ([1], 0, [3, 4])])
def test_reduce(onnx_model, op, opset, axes, keepdims, out):
    nodes, inits = _reduce_node(op, opset, axes, keepdims)
    model = onnx_model(nodes, [2, 3, 4], out, inits, opset=opset)
    x = rng.normal(size=(2, 2, 3, 4))
    check_exact(model, x)


def test_reduce_over_the_batch_is_refused(onnx_model):
    model = onnx_model([helper.make_node("ReduceSum", ["input"], ["output"], keepdims=1)], [3], [1], opset=11)
    with pytest.raises(UnsupportedNodeError, match="batch axis"):
        onnxdual.DualNetwork(onnxdual.load(model), torch.zeros(2, 3), 0.1).lower_bound(torch.zeros(2, 1, 1))


@pytest.mark.parametrize("op", ["Sum", "Mean"])
@pytest.mark.parametrize("opset", [8, 13])
def test_sum_mean_of_several_inputs_with_a_constant_and_broadcasting(dual_check, onnx_model, op, opset):
    nodes = [helper.make_node("Relu", ["input"], ["r"]),
             helper.make_node("Neg", ["input"], ["n"]),
             helper.make_node(op, ["input", "n", "c", "input"], ["s"]),
             helper.make_node(op, ["r", "s"], ["output"])]
    model = onnx_model(nodes, [2, 3], [2, 3], {"c": np.array([0.5, -1.0, 2.0], np.float32)}, opset=opset)
    dual_check(model, rng.normal(size=(2, 2, 3)))
    lin = onnx_model(nodes[1:3] + [helper.make_node("Identity", ["s"], ["output"])], [2, 3], [2, 3],
                     {"c": np.array([0.5, -1.0, 2.0], np.float32)}, opset=opset)
    x = rng.normal(size=(2, 2, 3))
    check_exact(lin, x, layers=2)
