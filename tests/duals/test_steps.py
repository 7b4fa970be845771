"""Step functions (onnxdual/duals/steps.py): one-node ONNX models against onnxruntime, the interval
relaxation on a dense grid (float32 and float64) and sound network bounds in every relaxation."""

import numpy as np
import pytest
import torch

from tests.duals.elementwise_checks import (OpCase, assert_network_sound, check_dense_grid, check_one_node,
                                            layer_of, network)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: threads only contend
rng = np.random.default_rng(23)
CASES = [OpCase("Sign", opsets=(9, 13), points=(0.0,)), OpCase("Floor", opsets=(6, 13), points=(-1.0, 0.0, 1.0)),
         OpCase("Ceil", opsets=(6, 13), points=(-1.0, 0.0, 1.0)), OpCase("Round", opsets=(11,), points=(-0.5, 0.5, 1.5))]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_one_node_matches_onnxruntime_at_every_opset(case):
    for opset in case.opsets:
        check_one_node(case, opset, rng)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_interval_relaxation_encloses_the_step(case, dtype):
    check_dense_grid(case, dtype, rng)


@pytest.mark.parametrize("relaxation", ["paper", "adaptive", "optimized"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_network_bounds_are_sound(case, relaxation):
    assert_network_sound(network(case, rng), rng.normal(size=(2, 4)).astype(np.float32), 0.4, relaxation, rng)


def test_a_unit_without_a_jump_is_exact_and_needs_no_bounds():
    layer = layer_of(CASES[1].model())
    lower, upper = torch.tensor([[0.2, -0.5]]), torch.tensor([[0.7, 0.5]])
    relax = layer.relax(lower, upper)
    assert relax.low[0, 0] == relax.high[0, 0] == 0.0 and relax.low[0, 1] == -1 and relax.high[0, 1] == 0
    assert layer.needs_bounds(lower, upper).tolist() == [[False, True]]
