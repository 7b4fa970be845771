import numpy as np
import pytest
import torch
from onnx import helper

from onnxdual.duals.base import piecewise_linear_relaxation

rng = np.random.default_rng(4)


def _dense_then(act_nodes, onnx_model):
    w = rng.normal(size=(3, 5)).astype(np.float32)
    return onnx_model([helper.make_node("MatMul", ["input", "W"], ["h"]), *act_nodes], [3], [5], {"W": w})


def test_relu(dual_check, onnx_model):
    model = _dense_then([helper.make_node("Relu", ["h"], ["output"])], onnx_model)
    dual_check(model, rng.normal(size=(4, 3)), eps=0.5)


def test_relu_one_node_stable_units_are_exact(dual_check, onnx_model):
    model = onnx_model([helper.make_node("Relu", ["input"], ["output"])], [4], [4])
    x = np.array([[2.0, -2.0, 0.05, 1.0]], dtype=np.float32)
    _, lower, upper = dual_check(model, x, eps=0.1)
    assert torch.allclose(lower[0, [0, 1, 3]], torch.tensor([1.9, 0.0, 0.9]))
    assert torch.allclose(upper[0, [0, 1, 3]], torch.tensor([2.1, 0.0, 1.1]))


@pytest.mark.parametrize("limits", [(-1.0, 1.0), (0.0, 6.0), (-0.5, None), (None, 0.3)])
def test_clip(dual_check, onnx_model, limits):
    names, inits = ["h"], {}
    for key, value in zip(("lo", "hi"), limits):
        names.append("" if value is None else key)
        if value is not None:
            inits[key] = np.array(value, dtype=np.float32)
    while names and names[-1] == "":
        names.pop()
    w = rng.normal(size=(3, 5)).astype(np.float32)
    model = onnx_model([helper.make_node("MatMul", ["input", "W"], ["h"]), helper.make_node("Clip", names, ["output"])],
                       [3], [5], {"W": w, **inits})
    dual_check(model, rng.normal(size=(4, 3)), eps=0.7)


def test_clip_opset6_attributes(dual_check, onnx_model):
    model = onnx_model([helper.make_node("Clip", ["input"], ["output"], min=-1.0, max=1.0)], [4], [4], opset=6)
    dual_check(model, rng.normal(size=(3, 4)), eps=0.8)


def test_relaxation_encloses_function_and_is_tightest_for_relu():
    lower = torch.tensor([-2.0, -1.0, 0.5, -3.0])
    upper = torch.tensor([1.0, -0.5, 2.0, 3.0])
    relax = piecewise_linear_relaxation(torch.relu, lower, upper, [0.0])
    grid = lower + (upper - lower) * torch.linspace(0, 1, 1001).unsqueeze(1)
    values = torch.relu(grid)
    assert (values >= relax.slope * grid + relax.low - 1e-6).all()
    assert (values <= relax.slope * grid + relax.high + 1e-6).all()
    # Corollary 2: slope u/(u-l) and offset interval [0, -l u/(u-l)] on crossing units
    assert torch.allclose(relax.slope[[0, 3]], torch.tensor([1 / 3, 0.5]))
    assert torch.allclose(relax.high[[0, 3]], torch.tensor([2 / 3, 1.5]))
    assert torch.allclose(relax.slope[[1, 2]], torch.tensor([0.0, 1.0]))
