"""Step functions (onnxdual/duals/steps.py): one-node ONNX models against onnxruntime, the interval
relaxation on a dense grid (float32 and float64) and sound network bounds in every relaxation."""

import numpy as np
import pytest
import torch

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
