"""Patches (:mod:`onnxdual.engine.patches`): bounding convolutional units through windows gives the dense
pass's bounds (the same dual variables, stored smaller), for the paper's relaxation, adaptive and optimised
faces, with strides, asymmetric pads, dilation, groups, batch norm and Clip; and it is used where it applies."""

import numpy as np
import pytest
import torch

import onnxdual
from onnxdual.engine import patches
from onnxdual.engine.input_sets import Box, L2Ball
from onnxdual.engine.optimize import OptimizeOptions
from tests.oracles.fixtures import torch_one_thread  # noqa: F401  (fixture)
from tests.oracles.networks import conv_chain_net

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _case(seed: int, dtype=torch.float64):
    net = conv_chain_net(np.random.default_rng([seed, 31]))
    model = onnxdual.load(net.model).to(dtype)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((3, *net.input_shape), generator=gen, dtype=dtype)
    eps = torch.rand((3, *net.input_shape), generator=gen, dtype=dtype) * 0.15  # per-coordinate radii
    return model, x, eps


def _dense(monkeypatch):
    monkeypatch.setattr(patches, "plan", lambda *args, **kwargs: None)


def _bounds(model, x, eps, relaxation, **kw):
    dual = onnxdual.DualNetwork(model, x, eps, relaxation=relaxation, **kw)
    c = torch.eye(dual.built.output_shape[0], dtype=x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
    lb = dual.lower_bound(c).detach()
    return lb, {k: (v.lower.detach(), v.upper.detach()) for k, v in dual.bounds().items()}


@pytest.mark.parametrize("relaxation", ["paper", "adaptive"])
@pytest.mark.parametrize("seed", range(16))
def test_patches_give_the_dense_bounds(seed, relaxation, monkeypatch):
    model, x, eps = _case(seed)
    used = []
    real = patches.parts
    monkeypatch.setattr(patches, "parts", lambda *a, **k: used.append(1) or real(*a, **k))
    with_patches = _bounds(model, x, eps, relaxation)
    _dense(monkeypatch)
    dense = _bounds(model, x, eps, relaxation)
    torch.testing.assert_close(with_patches[0], dense[0], rtol=1e-9, atol=1e-9)
    for name, (lo, hi) in dense[1].items():
        torch.testing.assert_close(with_patches[1][name][0], lo, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(with_patches[1][name][1], hi, rtol=1e-9, atol=1e-9)
    if relaxation == "adaptive":  # every pass after the first activation is backward: patches must be used
        plans = [patches.plan(model_built, s.variable_inputs[0], Box(x - eps, x + eps))
                 for model_built in [onnxdual.DualNetwork(model, x, eps).built]
                 for s in model_built.steps[1:] if isinstance(s.layer, onnxdual.ActivationDual)]
        assert used or not any(plans)


def test_patches_are_used_on_a_deep_chain():
    """The generator makes chains where windows are smaller than images, so the path is exercised."""
    hits = 0
    for seed in range(16):
        model, x, eps = _case(seed)
        built = onnxdual.DualNetwork(model, x, eps).built
        acts = [s for s in built.steps if isinstance(s.layer, onnxdual.ActivationDual)]
        hits += sum(patches.plan(built, s.variable_inputs[0], Box(x - eps, x + eps)) is not None for s in acts)
    assert hits >= 8


@pytest.mark.parametrize("seed", range(6))
def test_optimized_bounds_equal_with_and_without_patches(seed, monkeypatch):
    model, x, eps = _case(seed)
    options = OptimizeOptions(iterations=3, intermediate_iterations=2)
    with_patches = _bounds(model, x, eps, "optimized", optimize=options)[0]
    _dense(monkeypatch)
    dense = _bounds(model, x, eps, "optimized", optimize=options)[0]
    torch.testing.assert_close(with_patches, dense, rtol=1e-7, atol=1e-7)


def test_float32_patches_match_dense_to_rounding(monkeypatch):
    model, x, eps = _case(3, torch.float32)
    with_patches = _bounds(model, x, eps, "adaptive")[0]
    _dense(monkeypatch)
    torch.testing.assert_close(with_patches, _bounds(model, x, eps, "adaptive")[0], rtol=1e-4, atol=1e-4)


def test_an_l2_ball_takes_the_dense_pass():
    model, x, eps = _case(1)
    built = onnxdual.DualNetwork(model, x, 0.1, norm="l2").built
    conv_outputs = [s.variable_inputs[0] for s in built.steps[1:] if isinstance(s.layer, onnxdual.ActivationDual)]
    assert all(patches.plan(built, v, L2Ball(x, torch.tensor(0.1, dtype=x.dtype))) is None for v in conv_outputs)
