"""The elementary functions (onnxdual/duals/elementary.py): per operator use a one-node ONNX model against
onnxruntime at the opsets where the operator changed, dense-grid soundness of every relaxation in float32 and
float64, sound certified bounds of a small network in every relaxation (sampling and PGD), and bounds outside
a function's domain refused with one clear error."""

import math

import numpy as np
import pytest
import torch

from onnxdual.errors import UnsupportedNodeError
from tests.duals.elementwise_checks import OpCase, layer_of, op_tests

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: threads only contend
rng = np.random.default_rng(22)
POSITIVE = {"domain": (1e-3, 1e3), "scale": 0.2, "shift": 2.0}
TRIG_POINTS = tuple(k * math.pi / 2 for k in range(-8, 9))


def _exp(value, dtype=np.float32):
    return {"e": np.array(value, dtype)}


CASES = [
    OpCase("Exp", opsets=(6, 13), domain=(-40.0, 20.0)),
    OpCase("Log", opsets=(6, 13), **POSITIVE),
    OpCase("Reciprocal", opsets=(6, 13), **POSITIVE),
    OpCase("Reciprocal", opsets=(13,), domain=(-1e3, -1e-2), scale=0.2, shift=-2.0),
    OpCase("Sqrt", opsets=(6, 13), domain=(0.0, 1e3), scale=0.2, shift=2.0),
    OpCase("Pow", inits=_exp(2.0), opsets=(7, 12, 13, 15), domain=(-1e3, 1e3), points=(0.0,)),
    OpCase("Pow", inits=_exp(3.0), opsets=(13,), domain=(-1e2, 1e2), points=(0.0,)),
    OpCase("Pow", inits=_exp(3, np.int64), opsets=(12, 15), domain=(-1e2, 1e2), points=(0.0,)),
    OpCase("Pow", inits=_exp(0.5), opsets=(13,), domain=(0.0, 1e3), scale=0.2, shift=2.0),
    OpCase("Pow", inits=_exp(2.5), opsets=(13,), domain=(0.0, 1e2), scale=0.2, shift=2.0),
    OpCase("Pow", inits=_exp(-1.0), opsets=(13,), **POSITIVE),
    OpCase("Pow", inits=_exp(-2.0), opsets=(13,), domain=(-1e3, -1e-2), scale=0.2, shift=-2.0),
    OpCase("Pow", inits={"b": np.array(2.0, np.float32)}, inputs=("b", "input"), opsets=(13,),
           domain=(-40.0, 20.0)),
    OpCase("Erf", opsets=(9, 13), points=(0.0,)),
    OpCase("Softsign", opsets=(7,), domain=(-1e3, 1e3), points=(0.0,)),
    OpCase("Sin", opsets=(7,), domain=(-1e3, 1e3), points=TRIG_POINTS, scale=2.0),
    OpCase("Cos", opsets=(7,), domain=(-1e3, 1e3), points=TRIG_POINTS, scale=2.0),
]


# onnxruntime parity at every opset, dense grids in float32 and float64, networks in every relaxation
(test_one_node_matches_onnxruntime_at_every_opset, test_every_face_encloses_the_function_on_a_dense_grid,
 test_network_bounds_are_sound) = op_tests(CASES, rng)


@pytest.mark.parametrize("op,inits,lower,upper", [
    ("Log", {}, 0.0, 1.0), ("Log", {}, -1.0, 2.0), ("Sqrt", {}, -0.1, 1.0), ("Reciprocal", {}, -1.0, 1.0),
    ("Pow", _exp(0.5), -1.0, 1.0), ("Pow", _exp(-1.0), -2.0, 0.0), ("Exp", {}, 0.0, 200.0),
])
def test_bounds_outside_the_domain_are_refused(op, inits, lower, upper):
    """No finite linear face encloses ``log`` near 0 or ``1/x`` across 0: one typed error, never a
    non-bound."""
    layer = layer_of(OpCase(op, inits=inits).model())
    lo, hi = torch.tensor([[1.0, lower]]), torch.tensor([[2.0, upper]])
    for method in (layer.relax, layer.faces, layer.interval):
        with pytest.raises(UnsupportedNodeError, match=op):
            method(lo, hi)


def test_pow_with_exponents_that_vary_or_depend_on_the_input_is_refused():
    from onnx import helper

    from tests.onnx_builders import make_model

    model = OpCase("Pow", inits={"e": np.array([2.0, 3.0, 2.0, 2.0, 2.0, 2.0], np.float32)}).model()
    with pytest.raises(UnsupportedNodeError, match="exponent"):
        layer_of(model)
    square = make_model([helper.make_node("Pow", ["input", "input"], ["output"])], [6], [6])
    with pytest.raises(UnsupportedNodeError):
        layer_of(square)
