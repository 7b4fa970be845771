"""The generic helper (onnxdual/duals/smooth.py): faces from a curve's value, derivative and convexity
pieces are sound for every slope on a dense grid (float32 and float64, intervals from 1e-7 to 1e3 wide,
ends on the breaks), and tight: the offsets are the grid's extremes up to the grid's resolution. A curve
declared with the wrong convexity is caught by the same check (so the check can fail). The plugin guide's
few-line example runs as written."""

import dataclasses
import math

import numpy as np
import pytest
import torch

import onnxdual
from onnxdual.duals import elementary, rectifiers
from onnxdual.duals.base import Faces
from onnxdual.duals.smooth import Curve, SmoothDual, curve_gaps
from tests.duals.elementwise_checks import all_faces, assert_encloses, grid, intervals

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: threads only contend
rng = np.random.default_rng(24)
TRIG = tuple(k * math.pi / 2 for k in range(-6, 7))
#: every curve the built-ins use that has no one-node ONNX test of its own (Gelu-20 has no onnx2torch
#: converter) plus a few shapes the ops tests do not reach
CURVES = {
    "gelu": (rectifiers.GELU, (-8.0, 8.0), (-math.sqrt(2), math.sqrt(2))),
    "gelu-tanh": (rectifiers.gelu_tanh_curve(), (-8.0, 8.0), rectifiers.gelu_tanh_curve().breaks),
    "hard-swish": (rectifiers.HARD_SWISH, (-1e3, 1e3), (-3.0, 3.0)),
    "softplus": (rectifiers.SOFTPLUS, (-60.0, 60.0), ()),
    "erf": (elementary.ERF, (-1e3, 1e3), (0.0,)),
    "sin": (elementary.SIN, (-1e3, 1e3), TRIG),
    "cos": (elementary.COS, (-1e3, 1e3), TRIG),
    "cube": (elementary.power_curve(3.0), (-1e2, 1e2), (0.0,)),
    "root": (elementary.power_curve(0.5), (0.0, 1e3), (0.0,)),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(CURVES))
def test_faces_of_every_slope_enclose_the_curve(name, dtype):
    curve, domain, points = CURVES[name]
    layer = SmoothDual(None, curve)
    lower, upper = intervals(rng, 300, dtype, domain, points)
    assert_encloses(curve.fn, Faces.of(layer.relax(lower, upper)), lower, upper, points)
    for faces in all_faces(layer, lower, upper, rng):
        assert_encloses(curve.fn, faces, lower, upper, points)


@pytest.mark.parametrize("name", ["gelu", "hard-swish", "sin", "cube", "root"])
def test_offsets_are_the_extremes_up_to_the_grid(name):
    curve, domain, points = CURVES[name]
    # widths up to 6: within the pieces a periodic curve lists (longer ones fall back to its range)
    lower, upper = intervals(rng, 200, torch.float64, (max(domain[0], -3.0), min(domain[1], 3.0)), points)
    slope = torch.tensor(rng.normal(size=lower.shape))
    low, high = curve_gaps(curve, slope, lower, upper)
    x = grid(lower, upper, points, steps=20001)
    g = curve.fn(x) - slope * x
    assert (g.min(0).values - low).max() < 1e-6 and (high - g.max(0).values).max() < 1e-6


def test_a_wrong_convexity_is_caught_by_the_grid_check():
    wrong = dataclasses.replace(elementary.ERF, convexity=(-1, 1))
    lower, upper = torch.tensor([[-3.0, 0.5]]), torch.tensor([[-0.5, 3.0]])
    with pytest.raises(AssertionError, match="crosses"):
        assert_encloses(wrong.fn, Faces.of(SmoothDual(None, wrong).relax(lower, upper)), lower, upper)


def test_long_periodic_intervals_fall_back_to_the_range():
    lower, upper = torch.tensor([[-500.0, 0.0]]), torch.tensor([[500.0, 30.0]])
    low, high = SmoothDual(None, elementary.SIN).interval(lower, upper)
    torch.testing.assert_close(low, torch.tensor([[-1.0, -1.0]]))
    torch.testing.assert_close(high, torch.tensor([[1.0, 1.0]]))


def test_optimized_faces_tighten_a_network_of_smooth_functions(onnx_model):
    """The free slopes are used: the optimised relaxation is at least as tight as adaptive and beats the
    paper's parallelogram somewhere."""
    from onnx import helper

    w1, w2 = rng.normal(size=(4, 8)).astype(np.float32), rng.normal(size=(8, 3)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["input", "W1"], ["h"]), helper.make_node("Erf", ["h"], ["a"]),
             helper.make_node("MatMul", ["a", "W2"], ["o"]), helper.make_node("Softplus", ["o"], ["output"])]
    net = onnxdual.load(onnx_model(nodes, [4], [3], {"W1": w1, "W2": w2}))
    x, c = torch.randn(3, 4), torch.randn(3, 5, 3)
    bounds = {mode: onnxdual.DualNetwork(net, x, 0.5, relaxation=mode).lower_bound(c).detach()
              for mode in ("paper", "adaptive", "optimized")}
    assert (bounds["optimized"] >= bounds["adaptive"] - 1e-5).all()
    assert (bounds["optimized"] - bounds["paper"]).max() > 0


def test_the_plugin_guides_new_function_example_runs_as_written(onnx_model):
    """The few-line Atan example of the plugin guide, registered through a per-call registry: loads, matches
    onnxruntime, and its bounds are sound against sampling in every relaxation."""
    import re
    from importlib import resources

    from onnx import helper

    from onnxdual import registry
    from tests.onnx_builders import run_ort

    from tests.conftest import REPO

    guide = (resources.files("onnxdual") / "assets" / "plugin_guide.md").read_text()
    code = re.search(r"New function in a few lines.*?```python\n(.*?)```", guide, re.S).group(1)
    readme_text = (REPO / "plugins" / "README.md").read_text()
    readme = re.search(r"complete plugin for `Atan`.*?```python\n(.*?)```", readme_text, re.S).group(1)
    strip = lambda text: [line.split("  #")[0].rstrip() for line in text.splitlines()]  # noqa: E731
    assert strip(readme) == strip(code)  # the README shows the same plugin
    namespace: dict = {}
    exec(compile(code, "plugin_guide.md", "exec"), namespace)
    reg = registry.default().with_overrides({"Atan": namespace["atan_dual"]})
    w = rng.normal(size=(4, 6)).astype(np.float32) * 2
    nodes = [helper.make_node("MatMul", ["input", "W"], ["h"]), helper.make_node("Atan", ["h"], ["a"]),
             helper.make_node("MatMul", ["a", "V"], ["output"])]
    model = onnx_model(nodes, [4], [3],
                       {"W": w, "V": rng.normal(size=(6, 3)).astype(np.float32)})
    net = onnxdual.load(model, registry=reg)
    x, c = torch.randn(3, 4), torch.randn(3, 5, 3)
    np.testing.assert_allclose(net(x).detach().numpy(), run_ort(model, x.numpy()), rtol=1e-5, atol=1e-5)
    box = onnxdual.Box(x - 0.8, x + 0.8)
    points = box.sample(2000, torch.Generator().manual_seed(0)).flatten(0, 1)
    values = torch.einsum("sbo,bmo->sbm", net(points).reshape(2000, 3, 3), c).detach()
    for mode in ("paper", "adaptive", "optimized"):
        bound = onnxdual.DualNetwork(net, x, 0.8, relaxation=mode).lower_bound(c).detach()
        assert (values >= bound - 1e-5 * (1 + values.abs())).all(), mode


ELEMENTWISE_OPS = ["LeakyRelu", "PRelu", "Abs", "HardSigmoid", "Elu", "Selu", "Celu", "Softplus", "HardSwish",
                   "Gelu", "Exp", "Log", "Reciprocal", "Sqrt", "Pow", "Erf", "Softsign", "Sin", "Cos", "Sign",
                   "Floor", "Ceil", "Round"]


def test_ops_and_supports_list_the_elementwise_operators_as_builtins():
    from click.testing import CliRunner

    from onnxdual_cli.main import cli

    def run(*args):
        result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout

    rows = {line.split()[0]: line for line in run("ops").splitlines() if line.strip()}
    for op in ELEMENTWISE_OPS:
        assert op in rows and rows[op].split()[-2] == "onnxdual", op
    listed = set(run("supports", "--onnx-operators").replace(",", " ").split())
    assert set(ELEMENTWISE_OPS) <= listed
