"""certify's automatic relaxation: the tightest whose measured cost per example fits the time budget
(a clock that counts instead of timing, so the choice is the same on any machine)."""

import numpy as np
import pytest
import torch

import onnxdual
from onnxdual.certify.run import CertifySettings, choose_relaxation
from tests.milp_oracle import random_dense


@pytest.fixture
def net_and_x():
    model = random_dense(np.random.default_rng(0), 6, [10, 10], 4).onnx_model
    return onnxdual.load(model), torch.rand(8, 6)


class StepClock:
    """Each reading advances by the next given step: the cost of what ran between two readings."""

    def __init__(self, steps):
        self.now, self.steps = 0.0, list(steps)

    def __call__(self):
        if self.steps:
            self.now += self.steps.pop(0)
        return self.now


@pytest.mark.parametrize("adaptive,optimized,budget,expected", [
    (0.8, 8.0, 1.0, "optimized"),   # both fit (per example: 0.1 s and 1.0 s)
    (0.8, 80.0, 1.0, "adaptive"),   # optimized does not fit
    (80.0, None, 1.0, "paper"),     # nothing fits; optimized is then not even tried
])
def test_the_tightest_relaxation_within_the_budget_is_chosen(net_and_x, adaptive, optimized, budget, expected):
    net, x = net_and_x
    steps = [0.0, adaptive, 0.0] + ([optimized] if optimized is not None else [])
    settings = CertifySettings(eps=(0.1,), time_budget=budget)
    chosen, why = choose_relaxation(net, x, settings, 4, clock=StepClock(steps))
    assert chosen == expected and "auto" in why and "per example" in why


def test_a_fixed_or_probable_relaxation_is_not_measured(net_and_x):
    net, x = net_and_x

    def clock():
        raise AssertionError("nothing should be timed")

    assert choose_relaxation(net, x, CertifySettings(eps=(0.1,), relaxation="adaptive"), 4, clock)[0] == "adaptive"
    assert choose_relaxation(net, x, CertifySettings(eps=(0.1,), probable=0.01), 4, clock)[0] == "paper"
    with pytest.raises(onnxdual.InvalidInputError):
        CertifySettings(eps=(0.1,), relaxation="loose")
    with pytest.raises(onnxdual.InvalidInputError):
        CertifySettings(eps=(0.1,), time_budget=0)
