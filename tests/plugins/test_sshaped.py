"""The S-shaped plugin (plugins/onnxdual-sshaped): one-node ONNX tests and soundness by sampling."""

import numpy as np
import pytest
import torch
from onnx import helper

pytest.importorskip("onnxdual_sshaped", reason="plugins/onnxdual-sshaped is not installed")

rng = np.random.default_rng(7)


@pytest.mark.parametrize("op", ["Sigmoid", "Tanh"])
def test_one_node_sound(dual_check, onnx_model, op):
    model = onnx_model([helper.make_node(op, ["input"], ["output"])], [6], [6])
    dual_check(model, rng.normal(size=(4, 6)) * 2, eps=1.5)


@pytest.mark.parametrize("op", ["Sigmoid", "Tanh"])
def test_in_a_network(dual_check, onnx_model, op):
    w1, w2 = rng.normal(size=(4, 8)).astype(np.float32), rng.normal(size=(8, 3)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["input", "W1"], ["h"]), helper.make_node(op, ["h"], ["a"]),
             helper.make_node("MatMul", ["a", "W2"], ["output"])]
    dual_check(onnx_model(nodes, [4], [3], {"W1": w1, "W2": w2}), rng.normal(size=(3, 4)), eps=0.6)


def test_relaxation_encloses_the_function():
    from onnxdual_sshaped import sigmoid_dual, tanh_dual

    lower = torch.tensor([-5.0, -1.0, 0.5, -0.2, 2.0])
    upper = torch.tensor([4.0, -0.5, 3.0, 0.2, 2.0])
    for fn, factory in ((torch.sigmoid, sigmoid_dual), (torch.tanh, tanh_dual)):
        relax = factory(None).relax(lower, upper)
        grid = lower + (upper - lower) * torch.linspace(0, 1, 2001).unsqueeze(1)
        vals = fn(grid)
        assert (vals >= relax.slope * grid + relax.low - 1e-6).all()
        assert (vals <= relax.slope * grid + relax.high + 1e-6).all()
