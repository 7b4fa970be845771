"""The rectifier family (onnxdual/duals/rectifiers.py): per operator use a one-node ONNX model against
onnxruntime at the opsets where the operator changed, dense-grid soundness of every relaxation in float32 and
float64, and sound certified bounds of a small network in every relaxation (sampling and PGD)."""

import numpy as np
import pytest
import torch

from tests.duals.elementwise_checks import OpCase, op_tests

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: threads only contend
rng = np.random.default_rng(21)
RELAXATIONS = ["paper", "adaptive", "optimized"]
CASES = [
    OpCase("LeakyRelu", opsets=(6, 16), points=(0.0,)),
    OpCase("LeakyRelu", {"alpha": 0.2}, opsets=(16,), points=(0.0,)),
    OpCase("LeakyRelu", {"alpha": 2.5}, opsets=(16,), points=(0.0,)),  # concave
    OpCase("PRelu", inits={"slope": np.array([0.1, -0.5, 1.5, 0.0, 1.0, 0.3], np.float32)}, opsets=(9, 16),
           points=(0.0,)),
    OpCase("Abs", opsets=(6, 13), points=(0.0,)),
    OpCase("HardSigmoid", opsets=(6,), points=(-2.5, 2.5)),
    OpCase("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, opsets=(6,), points=(-4 / 3, 2.0)),
    OpCase("Elu", opsets=(6,), points=(0.0,)),
    OpCase("Elu", {"alpha": 0.4}, opsets=(6,), points=(0.0,)),
    OpCase("Elu", {"alpha": 1.7}, opsets=(6,), points=(0.0,)),  # a concave kink
    OpCase("Selu", opsets=(6,), points=(0.0,)),
    OpCase("Celu", {"alpha": 0.5}, opsets=(12,), points=(0.0,)),
    OpCase("Celu", opsets=(12,), points=(0.0,)),
    OpCase("Softplus", opsets=(7,), domain=(-60.0, 60.0)),
    OpCase("HardSwish", opsets=(14,), points=(-3.0, 3.0)),
    OpCase("Gelu", opsets=(20,), points=(-2 ** 0.5, 2 ** 0.5)),
    OpCase("Gelu", {"approximate": "tanh"}, opsets=(20,), points=(-1.4185, 1.4185)),
]


# onnxruntime parity at every opset, dense grids in float32 and float64, networks in every relaxation
(test_one_node_matches_onnxruntime_at_every_opset, test_every_face_encloses_the_function_on_a_dense_grid,
 test_network_bounds_are_sound) = op_tests(CASES, rng)


def test_prelu_per_channel_slopes(dual_check, onnx_model):
    from onnx import helper

    slope = np.array([[0.2], [-0.4], [1.5]], np.float32)  # (C, 1) against (N, C, W)
    node = helper.make_node("PRelu", ["input", "slope"], ["output"])
    model = onnx_model([node], [3, 4], [3, 4], {"slope": slope})
    dual_check(model, rng.normal(size=(2, 3, 4)), eps=0.8)
    for relaxation in RELAXATIONS:
        dual_check(model, rng.normal(size=(2, 3, 4)), eps=0.8, relaxation=relaxation)


def test_gelu_tanh_inflection_points_are_where_the_curvature_changes():
    from onnxdual.duals.rectifiers import gelu_tanh_curve, gelu_tanh_derivative

    left, right = gelu_tanh_curve().breaks
    for point, side in ((left, -1), (right, 1)):
        x = torch.tensor([point - 1e-6, point + 1e-6], dtype=torch.float64, requires_grad=True)
        second = torch.autograd.grad(gelu_tanh_derivative(x).sum(), x)[0]
        assert second[0] * second[1] < 0 and side * second[0] > 0
