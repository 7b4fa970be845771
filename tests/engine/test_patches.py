"""Patches (:mod:`onnxdual.engine.patches`): bounding convolutional units through windows gives the dense
pass's bounds (the same dual variables, stored smaller), for the paper's relaxation, adaptive and optimised
faces, with strides, asymmetric pads, dilation, groups, batch norm and Clip; and it is used where it applies."""

import math

import numpy as np
import pytest
import torch
from onnx import helper

import onnxdual
from onnxdual.duals.base import Faces
from onnxdual.engine import optimize, patches
from onnxdual.engine.autodual import forward_pass
from onnxdual.engine.input_sets import Box, L2Ball
from onnxdual.engine.optimize import OptimizeOptions
from tests.onnx_builders import make_model
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


def test_optimized_parameters_at_windows_give_the_whole_image_bounds(monkeypatch):
    """The optimiser keeps a patched target's per-row parameters at the rows' windows (only those entries
    can move its bound): the same trajectory, hence the same bounds, as whole-image parameters -- on chains
    of which several really have parameters at windows (so the comparison is not vacuous)."""
    options = OptimizeOptions(iterations=6, intermediate_iterations=4)
    real, windowed_cases = optimize._windows, 0
    for seed in range(8):
        model, x, eps = _case(seed)
        made = []
        with monkeypatch.context() as m:
            m.setattr(optimize, "_windows", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
            windowed = _bounds(model, x, eps, "optimized", optimize=options)
        with monkeypatch.context() as m:
            m.setattr(optimize, "WINDOWED_PARAMETERS", False)
            whole = _bounds(model, x, eps, "optimized", optimize=options)
        torch.testing.assert_close(windowed[0], whole[0], rtol=1e-7, atol=1e-7)
        for name, (lo, hi) in whole[1].items():
            torch.testing.assert_close(windowed[1][name][0], lo, rtol=1e-7, atol=1e-7)
            torch.testing.assert_close(windowed[1][name][1], hi, rtol=1e-7, atol=1e-7)
        windowed_cases += bool(made and made[0])
    assert windowed_cases >= 3


@pytest.mark.parametrize("activations", [("Sigmoid", "Tanh"), ("Tanh", "Relu")])
def test_windowed_parameters_of_smooth_activations_give_the_whole_image_bounds(activations, monkeypatch):
    """Element-wise faces that are not zero at zero (Sigmoid's offset is 1/2 there): the entries of a window
    outside the image must not count, as they do not with whole-image parameters."""
    rng = np.random.default_rng(7)
    init = {"W1": rng.normal(size=(3, 1, 3, 3)) / 2, "B1": rng.normal(size=3),
            "W2": rng.normal(size=(4, 3, 3, 3)) / 3, "B2": rng.normal(size=4), "W3": rng.normal(size=(3, 100)) / 6}
    init = {k: v.astype(np.float32) for k, v in init.items()}
    nodes = [helper.make_node("Conv", ["input", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node(activations[0], ["c1"], ["a1"]),
             helper.make_node("Conv", ["a1", "W2", "B2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node(activations[1], ["c2"], ["a2"]),
             helper.make_node("Flatten", ["a2"], ["f"]),
             helper.make_node("Gemm", ["f", "W3"], ["output"], transB=1)]
    model = onnxdual.load(make_model(nodes, [1, 9, 9], [3], init)).to(torch.float64)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((2, 1, 9, 9), generator=gen, dtype=torch.float64)
    options = OptimizeOptions(iterations=5, intermediate_iterations=3)
    made = []
    real = optimize._windows
    with monkeypatch.context() as m:
        m.setattr(optimize, "_windows", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
        windowed = _bounds(model, x, 0.3, "optimized", optimize=options)
    assert made and made[0], "the second activation's bounds should be optimised at windows"
    monkeypatch.setattr(optimize, "WINDOWED_PARAMETERS", False)
    whole = _bounds(model, x, 0.3, "optimized", optimize=options)
    torch.testing.assert_close(windowed[0], whole[0], rtol=1e-7, atol=1e-7)
    for name, (lo, hi) in whole[1].items():
        torch.testing.assert_close(windowed[1][name][0], lo, rtol=1e-7, atol=1e-7)
        torch.testing.assert_close(windowed[1][name][1], hi, rtol=1e-7, atol=1e-7)


def test_window_maps_follow_weights_changed_in_place(monkeypatch):
    """Training changes the weights in place between bounds: a window map built from the old weights must
    not be reused (the bound would be of another network: unsound for this one)."""
    model, x, eps = _case(3)
    used = []
    real = patches.parts
    monkeypatch.setattr(patches, "parts", lambda *a, **k: used.append(1) or real(*a, **k))
    with torch.no_grad():
        _bounds(model, x, eps, "adaptive")  # builds and caches the maps
        for p in model.parameters():
            p.mul_(1.5).add_(0.01)  # an optimiser step, in place
        after = _bounds(model, x, eps, "adaptive")
        assert used
        monkeypatch.setattr(patches, "_MAPS", type(patches._MAPS)())  # nothing cached: these weights' maps
        fresh = _bounds(model, x, eps, "adaptive")
    torch.testing.assert_close(after[0], fresh[0], rtol=1e-9, atol=1e-9)


def test_window_maps_built_with_gradients_are_not_kept(monkeypatch):
    """Two differentiable bounds and backward passes in a row (exact robust training): a map built while the
    weights need a gradient must not be cached, or the second pass backwards through the first's graph."""
    model, x, eps = _case(4, torch.float32)
    used = []
    real = patches.parts
    monkeypatch.setattr(patches, "parts", lambda *a, **k: used.append(1) or real(*a, **k))
    params = list(model.parameters())
    for _ in range(2):
        dual = onnxdual.DualNetwork(model, x, eps, relaxation="adaptive")
        c = torch.eye(dual.built.output_shape[0], dtype=x.dtype)[None].expand(3, -1, -1)
        grads = torch.autograd.grad(dual.lower_bound(c).sum(), params, allow_unused=True)
        assert any(g is not None and bool(g.abs().sum() > 0) for g in grads)
    assert used


def test_prepared_rows_follow_changed_relaxations():
    """The optimiser evaluates one set of rows on many relaxations and reuses products of unchanged tensors:
    after other faces, the first ones again, and a face tensor changed in place, every value is the one a
    fresh evaluation gives (a stale product would be the bound of other faces)."""
    model, x, eps = _case(5)
    model.requires_grad_(False)  # as in the optimiser: constants, so products are remembered
    input_set = Box.ball(x, eps)
    built = onnxdual.DualNetwork(model, x, eps).built
    base = forward_pass(built, input_set, relaxation="adaptive")
    plans = {s.node.name: patches.plan(built, s.variable_inputs[0], input_set) for s in built.steps
             if isinstance(s.layer, onnxdual.ActivationDual)}
    step, plan = next((s, plans[s.node.name]) for s in built.steps if plans.get(s.node.name) is not None
                      and any(isinstance(t.layer, onnxdual.ActivationDual) for t in plans[s.node.name].steps))
    n = math.prod(step.input_shapes[0])
    units = torch.arange(0, n, 3).unsqueeze(0)
    signs = torch.where(units % 2 == 0, 1.0, -1.0).to(x.dtype)
    gen = torch.Generator().manual_seed(0)
    names = [s.node.name for s in plan.steps if isinstance(s.layer, onnxdual.ActivationDual)]
    second = dict(base.relaxations)
    for name in names:  # every parametric face of the rows' chain at random slopes of its range
        faces = built.steps[[s.node.name for s in built.steps].index(name)].layer.faces(
            *base.preactivation_bounds[name])
        theta = tuple(torch.rand(t.shape, generator=gen, dtype=t.dtype) for t in faces.initial())
        second[name] = faces.faces(faces.project(theta))

    def fresh(relaxations):
        return patches.parts(plan, built, input_set, relaxations, units, signs, {})

    rows = patches.Rows(plan, built, input_set, units, signs, {}, reuse=True)
    values = []
    for relaxations in (base.relaxations, second, base.relaxations, second):
        got, want = rows.parts(relaxations), fresh(relaxations)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        values.append(got[0] - got[1])
    assert not torch.equal(values[0], values[1])  # the two relaxations give different bounds
    second[names[-1]].upper.slope.mul_(0.5)  # in place: the same tensor with other values
    got, want = rows.parts(second), fresh(second)
    assert not torch.equal(got[0] - got[1], values[1])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_a_per_channel_offset_is_one_number_per_channel():
    bias = torch.tensor([0.5, -1.0, 2.0])
    assert torch.equal(patches._channel_offset(bias.view(1, 3, 1, 1).expand(1, 3, 4, 5)), bias)
    varying = bias.view(1, 3, 1, 1).expand(1, 3, 4, 5).clone()
    varying[0, 1, 2, 3] = 0.0
    assert patches._channel_offset(varying) is None
