"""Selu with non-default alpha / gamma: onnx2torch's Selu is torch's (default constants only), so the frontend
writes it as ``Mul(Elu(x, alpha), gamma)`` (onnxdual/frontend/lowering.py). The lowered model against
onnxruntime's Selu, the default Selu left alone, and sampled / PGD soundness of the bounds in every
relaxation."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

import onnxdual
from onnxdual.frontend.lowering import selu_parameters
from tests.dual_checks import check_dual
from tests.onnx_builders import make_model, run_ort
from tests.oracles.attacks import pgd_minimize

pytestmark = pytest.mark.usefixtures("one_thread")
RELAXATIONS = ("paper", "adaptive", "optimized")
PARAMETERS = [{"alpha": 2.0, "gamma": 1.5}, {"alpha": 0.5}, {"gamma": 3.0}, {"alpha": 1.0, "gamma": 1.0}]


def _selu(attrs, opset=13, shape=(6,)):
    return make_model([helper.make_node("Selu", ["input"], ["output"], **attrs)], list(shape), list(shape),
                      opset=opset)


@pytest.mark.parametrize("attrs", PARAMETERS)
def test_lowered_selu_matches_onnxruntime(attrs):
    model = _selu(attrs)
    lowered = selu_parameters(onnx.ModelProto.FromString(model.SerializeToString()))
    assert [n.op_type for n in lowered.graph.node] == ["Elu", "Mul"]
    x = np.linspace(-8, 8, 600, dtype=np.float32).reshape(100, 6)
    x = np.concatenate([x, np.zeros((1, 6), np.float32)])
    np.testing.assert_allclose(run_ort(lowered, x), run_ort(model, x), rtol=1e-6, atol=1e-6)


def test_the_default_selu_is_left_to_onnx2torch():
    model = _selu({})
    assert [n.op_type for n in selu_parameters(model).graph.node] == ["Selu"]


@pytest.mark.parametrize("relaxation", RELAXATIONS)
@pytest.mark.parametrize("attrs", PARAMETERS[:2])
def test_one_node_bounds_are_sound(attrs, relaxation):
    x = np.random.default_rng(3).uniform(-3, 3, size=(3, 6))
    check_dual(_selu(attrs), x, eps=0.5, relaxation=relaxation)  # onnxruntime parity (converted) + samples


@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_a_network_with_selu_is_bounded_soundly(relaxation):
    rng = np.random.default_rng(4)
    inits = {"W1": rng.normal(size=(4, 8)).astype(np.float32),
             "W2": rng.normal(size=(8, 3)).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["input", "W1"], ["h"]),
             helper.make_node("Selu", ["h"], ["s"], alpha=2.5, gamma=0.7),
             helper.make_node("MatMul", ["s", "W2"], ["output"])]
    model = make_model(nodes, [4], [3], inits)
    net = onnxdual.load(model)
    x = rng.normal(size=(2, 4)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(net(torch.tensor(x)).numpy(), run_ort(model, x), rtol=1e-5, atol=1e-5)
    c = torch.tensor(rng.normal(size=(2, 4, 3)), dtype=torch.float32)
    eps = 0.5
    lb = onnxdual.DualNetwork(net, torch.tensor(x), eps, relaxation=relaxation).lower_bound(c).detach()
    for b in range(2):
        found = pgd_minimize(net, c[b].numpy(), x[b] - eps, x[b] + eps, steps=40, restarts=4, seed=b)
        assert (lb[b].numpy() <= found + 1e-4 * (1 + np.abs(found))).all(), lb[b].numpy() - found
