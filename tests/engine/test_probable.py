"""onnxdual.engine.probable and DualNetwork.probable_lower_bound (App. E): bounds that hold with high
probability are below the exact MILP minimum on random networks (with few projections, so the estimated
route is really taken), their intermediate bounds contain the exact dual bounds no less often than
promised (and an unscaled estimator fails that check), and the result is its own type."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import onnxdual
from onnxdual.engine import probable
from onnxdual.engine.probable import plan, probable_pass
from onnxdual.engine.tail_bounds import TailBound
from onnxdual.errors import InvalidInputError
from tests.milp_oracle import conv_as_dense, milp_minimum, random_dense


def _case(seed: int):
    rng = np.random.default_rng([seed, 77])
    if seed % 3 == 2:
        net = conv_as_dense(rng, channels=1, size=4, filters=2, hidden=8)
    else:
        net = random_dense(rng, int(rng.integers(3, 7)), [int(rng.integers(8, 16))] * int(rng.integers(1, 4)),
                           3, skip=seed % 3 == 1)
    center = rng.uniform(-1, 1, size=(2, *net.input_shape)).astype(np.float32)
    eps = float(rng.uniform(0.05, 0.4))
    c = rng.normal(size=(2, 3, net.out_w.shape[0])).astype(np.float32)
    return net, center, eps, c


@pytest.mark.parametrize("k,m", [(4, 2), (8, 2)])
@pytest.mark.parametrize("seed", range(12))
def test_probable_bound_is_below_the_exact_minimum(seed, k, m):
    net, center, eps, c = _case(seed)
    module = onnxdual.load(net.onnx_model)
    dual = onnxdual.DualNetwork(module, torch.from_numpy(center), eps,
                                generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        result = dual.probable_lower_bound(torch.from_numpy(c), delta=0.01, k=k, m=m)
    assert result.estimates > 0, "the estimated route must be exercised"
    for b in range(center.shape[0]):
        for j in range(c.shape[1]):
            exact = milp_minimum(net, c[b, j], center[b] - eps, center[b] + eps)
            assert result.value[b, j] <= exact + 1e-5 * (1 + abs(exact))


def _first_layer_misses(seeds: range, delta: float) -> float:
    """Fraction of draws whose estimated bounds of the first activation's input fail to contain the exact
    dual bounds (which are exact interval bounds there: nothing is relaxed before the first activation)."""
    rng = np.random.default_rng(5)
    net = random_dense(rng, 12, [40, 10], 3)
    module = onnxdual.load(net.onnx_model)
    x = torch.from_numpy(rng.uniform(-1, 1, size=(1, 12)).astype(np.float32))
    exact = onnxdual.DualNetwork(module, x, 0.3)
    name = next(iter(exact.bounds()))
    lo, hi = exact.bounds()[name].lower, exact.bounds()[name].upper
    misses = 0
    for s in seeds:
        dual = onnxdual.DualNetwork(module, x, 0.3, generator=torch.Generator().manual_seed(s))
        result, count = probable_pass(dual.built, dual.input_set, delta, 3, 1, dual.generator)
        assert count > 0
        plo, phi = result.preactivation_bounds[name]
        misses += bool((plo > lo + 1e-5).any() or (phi < hi - 1e-5).any())
    return misses / len(seeds)


def test_intermediate_bounds_fail_no_more_often_than_delta():
    delta, seeds = 0.3, range(60)
    rate = _first_layer_misses(seeds, delta)
    assert rate <= delta + 4 * math.sqrt(delta * (1 - delta) / len(seeds))


def test_the_check_catches_an_estimate_passed_off_as_a_bound(monkeypatch):
    unscaled = lambda failure, k, m: TailBound(k, m, failure, 1.0, 1.0)  # noqa: E731
    monkeypatch.setattr(probable.TailBound, "for_failure", staticmethod(unscaled))
    assert _first_layer_misses(range(30), 0.3) > 0.6


def test_plan_counts_estimates_and_bounds_small_layers_exactly():
    rng = np.random.default_rng(0)
    net = random_dense(rng, 5, [30, 4], 2)
    built = onnxdual.DualNetwork(onnxdual.load(net.onnx_model), torch.zeros(1, 5), 0.1).built
    estimated, count = plan(built, columns=10)
    assert estimated == [True, False] and count == 30  # 30 units x 1 source; 4 units are cheaper backwards
    estimated, count = plan(built, columns=100)
    assert estimated == [False, False] and count == 0


def test_probable_bound_is_its_own_type_and_validates_its_arguments():
    rng = np.random.default_rng(1)
    net = random_dense(rng, 4, [12], 3)
    module = onnxdual.load(net.onnx_model)
    x = torch.zeros(3, 4)
    c = onnxdual.margin_matrix(torch.tensor([0, 1, 2]), 3)
    projected = onnxdual.DualNetwork(module, x, 0.1, proj=5)
    with pytest.raises(TypeError):
        projected.lower_bound(c)
    result = projected.probable_lower_bound(c, delta=0.05, k=8, m=2)
    assert isinstance(result, onnxdual.ProbableBound) and not isinstance(result, torch.Tensor)
    assert (result.delta, result.k, result.m) == (0.05, 8, 2) and result.value.shape == (3, 3)
    tiny = onnxdual.DualNetwork(module, x, 0.1, memory_budget=1)  # one example per chunk
    assert tiny.probable_lower_bound(c, k=8, m=2).value.shape == (3, 3)
    for bad in ({"delta": 0.0}, {"delta": 1.0}, {"k": 0}, {"m": 1.5}, {"delta": "0.1"}):
        with pytest.raises(InvalidInputError):
            projected.probable_lower_bound(c, **bad)


def test_l2_balls_use_the_normal_tail_bound():
    rng = np.random.default_rng(2)
    net = random_dense(rng, 6, [20, 12], 3)
    module = onnxdual.load(net.onnx_model)
    x = torch.from_numpy(rng.uniform(-1, 1, size=(2, 6)).astype(np.float32))
    c = torch.from_numpy(rng.normal(size=(2, 3, 3)).astype(np.float32))
    exact = onnxdual.DualNetwork(module, x, 0.5, "l2").lower_bound(c)
    result = onnxdual.DualNetwork(module, x, 0.5, "l2", generator=torch.Generator().manual_seed(0)
                                  ).probable_lower_bound(c, delta=0.01, k=8, m=2)
    assert result.estimates > 0
    # the ball's exact dual bound is below the true minimum; the probable one loosens only the relaxations
    assert (result.value <= exact + 1e-4).all()
