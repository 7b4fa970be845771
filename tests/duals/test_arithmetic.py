import numpy as np
import pytest
from onnx import helper

import onnxdual

rng = np.random.default_rng(1)


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("variable_first", [True, False])
def test_constant_operand(dual_check, onnx_model, op, variable_first):
    c = rng.uniform(0.5, 2.0, size=(1, 4)).astype(np.float32)
    inputs = ["input", "C"] if variable_first else ["C", "input"]
    model = onnx_model([helper.make_node(op, inputs, ["output"])], [4], [4], {"C": c})
    if op == "Div" and not variable_first:
        with pytest.raises(onnxdual.InvalidInputError, match="not linear"):
            onnxdual.DualNetwork(onnxdual.load(model), __import__("torch").zeros(1, 4), 0.1).lower_bound(
                __import__("torch").zeros(1, 1, 4))
        return
    dual_check(model, rng.normal(size=(3, 4)), exact=True)


def test_broadcasting_constant(dual_check, onnx_model):
    c = rng.normal(size=(3, 1, 1)).astype(np.float32)  # per-channel normalisation constant
    model = onnx_model([helper.make_node("Sub", ["input", "C"], ["t"]), helper.make_node("Div", ["t", "C"], ["output"])],
                       [3, 2, 2], [3, 2, 2], {"C": np.abs(c) + 0.5})
    dual_check(model, rng.normal(size=(2, 3, 2, 2)), exact=True)


@pytest.mark.parametrize("op", ["Add", "Sub"])
def test_two_variable_operands(dual_check, onnx_model, op):
    w = rng.normal(size=(4, 4)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["input", "W"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node(op, ["r", "input"], ["output"])]
    model = onnx_model(nodes, [4], [4], {"W": w})
    dual_check(model, rng.normal(size=(3, 4)), eps=0.5)


def test_same_value_twice(dual_check, onnx_model):
    model = onnx_model([helper.make_node("Add", ["input", "input"], ["output"])], [3], [3])
    dual_check(model, rng.normal(size=(2, 3)), exact=True)


def test_neg(dual_check, onnx_model):
    model = onnx_model([helper.make_node("Neg", ["input"], ["output"])], [3], [3])
    dual_check(model, rng.normal(size=(2, 3)), exact=True)
