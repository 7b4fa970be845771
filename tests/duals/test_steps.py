"""Step functions (onnxdual/duals/steps.py): one-node ONNX models against onnxruntime, the interval
relaxation on a dense grid (float32 and float64) and sound network bounds in every relaxation."""

import numpy as np
import pytest
import torch

from onnxdual.duals.base import ElementwiseFace, Faces, Relaxation
from tests.duals.elementwise_checks import OpCase, layer_of, op_tests

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: threads only contend
rng = np.random.default_rng(23)
CASES = [OpCase("Sign", opsets=(9, 13), points=(0.0,)),
         OpCase("Floor", opsets=(6, 13), points=(-1.0, 0.0, 1.0)),
         OpCase("Ceil", opsets=(6, 13), points=(-1.0, 0.0, 1.0)),
         OpCase("Round", opsets=(11,), points=(-0.5, 0.5, 1.5))]


# onnxruntime parity at every opset, dense grids in float32 and float64, networks in every relaxation
(test_one_node_matches_onnxruntime_at_every_opset, test_every_face_encloses_the_function_on_a_dense_grid,
 test_network_bounds_are_sound) = op_tests(CASES, rng)


def test_a_unit_without_a_jump_is_exact_and_needs_no_bounds():
    layer = layer_of(CASES[1].model())
    lower, upper = torch.tensor([[0.2, -0.5]]), torch.tensor([[0.7, 0.5]])
    relax = layer.relax(lower, upper)
    assert relax.low[0, 0] == relax.high[0, 0] == 0.0 and relax.low[0, 1] == -1 and relax.high[0, 1] == 0
    assert layer.needs_bounds(lower, upper).tolist() == [[False, True]]



def _through(relax):
    """The same enclosure, not marked constant: a pass goes on below it (with a zero dual variable)."""
    if isinstance(relax, Faces):
        return Faces(*(ElementwiseFace(torch.zeros_like(f.offset), f.offset) for f in (relax.lower, relax.upper)))
    return Relaxation(relax.slope, relax.low, relax.high)


@pytest.mark.parametrize("relaxation", ["paper", "adaptive"])
def test_a_backward_pass_stops_at_a_step(relaxation, monkeypatch):
    """Sign's map is zero: the backward pass never reaches the layers below it (their transposes are not
    called), the bound equals that of a pass that goes through, and it is sound (sampled)."""
    from onnx import helper

    import onnxdual
    from onnxdual.duals.linear import MatMulDual
    from onnxdual.engine import autodual
    from tests.onnx_builders import make_model

    w1, w2 = (rng.normal(size=s).astype(np.float32) for s in ((6, 8), (8, 4)))
    nodes = [helper.make_node("MatMul", ["input", "W1"], ["h"]), helper.make_node("Sign", ["h"], ["s"]),
             helper.make_node("MatMul", ["s", "W2"], ["output"])]
    model = make_model(nodes, [6], [4], {"W1": w1, "W2": w2})
    net = onnxdual.load(model)
    x = torch.tensor(rng.normal(size=(3, 6)), dtype=torch.float32)
    c = torch.tensor(rng.normal(size=(3, 5, 4)), dtype=torch.float32)
    dual = onnxdual.DualNetwork(net, x, 0.3, relaxation=relaxation)
    with torch.no_grad():
        lb = dual.lower_bound(c)
        pts = dual.input_set.sample(2000, torch.Generator().manual_seed(0))
        vals = torch.einsum("sbo,bmo->sbm", net(pts.flatten(0, 1)).reshape(2000, 3, 4), c)
    assert (lb <= vals.min(0).values + 1e-5).all()
    relaxations = autodual.forward_pass(dual.built, dual.input_set, relaxation=relaxation).relaxations
    assert all(r.constant for r in relaxations.values())
    calls = []
    original = MatMulDual.transpose
    monkeypatch.setattr(MatMulDual, "transpose", lambda self, nu: calls.append(1) or original(self, nu))
    with torch.no_grad():
        stopped = autodual.objective(dual.built, dual.input_set, relaxations, c)
        assert len(calls) == 1  # only the MatMul above the Sign
        full = autodual.objective(dual.built, dual.input_set, {k: _through(r) for k, r in relaxations.items()},
                                  c)
    assert len(calls) == 3
    torch.testing.assert_close(stopped, full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stopped, lb, rtol=1e-5, atol=1e-5)


def _cast_model(to: int, opset: int):
    from onnx import TensorProto, helper

    from tests.onnx_builders import make_model
    nodes = [helper.make_node("Cast", ["input"], ["c"], to=to),
             helper.make_node("Cast", ["c"], ["output"], to=TensorProto.FLOAT)]
    return make_model(nodes, [6], [6], opset=opset)


@pytest.mark.parametrize("opset", [9, 13, 19])
@pytest.mark.parametrize("to", [9, 6, 7])  # BOOL, INT32, INT64
def test_a_cast_to_an_integer_or_bool_matches_onnxruntime_and_is_bounded_soundly(to, opset):
    from tests.dual_checks import check_dual
    x = np.array([[0.0, -0.2, 0.2, 1.7, -2.6, 3.0], [0.1, -0.1, 2.95, -1.05, 0.0, 5.5]], np.float32)
    for relaxation in ("paper", "adaptive"):
        check_dual(_cast_model(to, opset), x, eps=0.3, relaxation=relaxation)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cast_steps_enclose_the_function_on_a_dense_grid(dtype):
    from onnxdual.duals.steps import CAST_INTEGER_RANGES, StepDual, TruncationDual
    ends = rng.normal(scale=3.0, size=(400, 2))
    ends[:40] = rng.normal(scale=1e-6, size=(40, 2))  # very narrow, around 0
    ends[40:60, 0] = 0.0  # an end at 0
    ends[60:70] = 0.0  # [0, 0]
    ends[70:80] = np.round(ends[70:80])  # integer ends
    lower, upper = (torch.tensor(v, dtype=dtype) for v in (ends.min(1), ends.max(1)))
    t = torch.linspace(0, 1, 2001, dtype=dtype).unsqueeze(1)
    grid = torch.cat([torch.minimum(torch.maximum(lower + t * (upper - lower), lower), upper), lower.unsqueeze(0),
                      upper.unsqueeze(0),
                      torch.where((lower <= 0) & (upper >= 0), 0.0, lower).unsqueeze(0).to(dtype)])
    nonzero = lambda v: (v != 0).to(dtype)  # noqa: E731
    for layer, f in ((StepDual(None, nonzero, torch.zeros(())), nonzero),
                     (TruncationDual(None, CAST_INTEGER_RANGES[7]), torch.trunc)):
        low, high = layer.interval(lower, upper)
        values = f(grid)
        assert (values >= low).all() and (values <= high).all()
        # tight: both ends of the interval are values the function takes on [l, u]
        assert ((values == low).any(0) & (values == high).any(0)).all()
        relax = layer.relax(lower.unsqueeze(0), upper.unsqueeze(0))
        assert (relax.low[0] == low).all() and (relax.high[0] == high).all() and relax.constant


def test_a_cast_beyond_the_integer_range_has_no_bound():
    from onnxdual.duals.steps import CAST_INTEGER_RANGES, TruncationDual
    from onnxdual.errors import UnboundedRelaxationError
    with pytest.raises(UnboundedRelaxationError, match="range"):
        TruncationDual(None, CAST_INTEGER_RANGES[3]).interval(torch.tensor([0.0]), torch.tensor([200.0]))


def _compare_model(op: str, const_first: bool, const, opset: int = 13):
    from onnx import TensorProto, helper

    from tests.onnx_builders import make_model
    inputs = ["C", "input"] if const_first else ["input", "C"]
    nodes = [helper.make_node(op, inputs, ["b"]), helper.make_node("Cast", ["b"], ["output"], to=TensorProto.FLOAT)]
    return make_model(nodes, [6], [6], {"C": np.asarray(const, np.float32)}, opset=opset)


@pytest.mark.parametrize("const_first", [False, True])
@pytest.mark.parametrize("op", ["Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual"])
def test_a_comparison_with_a_constant_matches_onnxruntime_and_is_bounded_soundly(op, const_first):
    from onnxdual.engine.autodual import RELAXATIONS
    from tests.dual_checks import check_dual
    const = np.array([0.0, 0.5, -1.0, 2.0, 0.25, -0.75], np.float32)
    # entries exactly at the constant, just beside it, and far from it
    x = np.array([[0.0, 0.5, -1.2, 2.0, 3.0, -0.75], [0.1, 0.45, -1.0, 1.0, 0.25, 5.0]], np.float32)
    for relaxation in RELAXATIONS:
        check_dual(_compare_model(op, const_first, const), x, eps=0.3, relaxation=relaxation)
        check_dual(_compare_model(op, const_first, const), x, eps=0.0, relaxation=relaxation)  # at the points


@pytest.mark.parametrize("op", ["Equal", "Greater", "LessOrEqual"])
def test_comparisons_enclose_the_function_on_a_dense_grid(op):
    from onnxdual.duals.steps import COMPARISONS, StepDual
    c = torch.tensor(rng.normal(size=300))
    ends = rng.normal(scale=2.0, size=(300, 2))
    ends[:30] = c[:30, None].numpy()  # [c, c]
    ends[30:60, 0] = c[30:60].numpy()  # one end at c
    ends[60:90] = c[60:90, None].numpy() + rng.normal(scale=1e-6, size=(30, 2))  # narrow around c
    lower, upper = torch.tensor(ends.min(1)), torch.tensor(ends.max(1))
    fn = lambda v: COMPARISONS[op](v, c).to(v.dtype)  # noqa: E731
    layer = StepDual(None, fn, c if op == "Equal" else None)
    low, high = layer.interval(lower, upper)
    t = torch.linspace(0, 1, 2001, dtype=lower.dtype).unsqueeze(1)
    inside = torch.minimum(torch.maximum(lower + t * (upper - lower), lower), upper)  # no rounding past u
    grid = torch.cat([inside, torch.minimum(torch.maximum(c, lower), upper).unsqueeze(0)])
    values = fn(grid)
    assert (values >= low).all() and (values <= high).all()
    assert ((values == low).any(0) & (values == high).any(0)).all()  # tight: both values are taken
