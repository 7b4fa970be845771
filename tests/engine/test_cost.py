"""The one cost model (engine/cost.py): its memory sizing walks the exact pass with the pass's own switch rule,
so it never under-counts the forward columns the pass really carries."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import onnxdual
from onnxdual.engine import autodual, cost
from onnxdual.engine.network import DualNetwork
from tests.oracles.networks import random_network


def _measured_largest(monkeypatch, dual: DualNetwork) -> int:
    """Elements of the largest forward state the exact pass builds (all its source terms together)."""
    largest = [0]
    for name in ("_apply_affine", "_activation_state"):
        real = getattr(autodual, name)

        def spy(*args, _real=real, **kwargs):
            state = _real(*args, **kwargs)
            largest[0] = max(largest[0], sum(t.numel() for t in state.terms.values()))
            return state

        monkeypatch.setattr(autodual, name, spy)
    dual.bounds()
    return largest[0]


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("batch", [1, 3, 8])
@pytest.mark.parametrize("eps", [0.02, 0.5])
def test_memory_sizing_never_under_counts_the_forward_phase(monkeypatch, seed, batch, eps):
    net = random_network(seed)
    torch_net = onnxdual.load(net.model)
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.uniform(-1, 1, (batch, *net.input_shape))).float()
    radius = torch.from_numpy(rng.choice([0.0, eps], size=x.shape, p=[0.3, 0.7])).float()  # some fixed
    dual = DualNetwork(torch_net, x, radius)
    predicted = cost.forward_elements(dual.built, dual.input_set.column_range(), batch)
    assert _measured_largest(monkeypatch, dual) <= predicted


def test_switch_rule_counts_shared_columns_once_per_batch():
    # 100 shared columns over a batch of 10 cost 10 per example; 30 per-example columns cost 30
    assert cost.column_cost([(1, 100), (10, 30)], 10) == 40
    assert cost.turns_backward(19, 40) and not cost.turns_backward(20, 40)


def test_examples_per_pass_fits_the_budget():
    net = random_network(3)
    dual = DualNetwork(onnxdual.load(net.model), torch.zeros(64, *net.input_shape), 0.1)
    n = dual.input_set.column_range()
    need = cost.TERM_COPIES * cost.forward_elements(dual.built, n, 64) * 4
    for budget in (need, need // 3, need // 50, 1):
        b = cost.examples_per_pass(dual.built, n, 64, 4, budget)
        assert 1 <= b <= 64
        assert b == 1 or cost.TERM_COPIES * cost.forward_elements(dual.built, n, b) * 4 <= budget


def test_backward_rows_hold_at_most_the_budget_and_the_working_set():
    per_row = cost.TERM_COPIES * 16 * 3136 * 4  # 16 examples, a 16x14x14 value, float32
    big = cost.backward_rows(16, 3136, 4, 2 * 1024**3)
    assert big * per_row <= cost.ROWS_WORKING_SET < (big + 1) * per_row  # the cap, not the 2 GB budget
    small = cost.backward_rows(16, 3136, 4, cost.ROWS_WORKING_SET // 4)
    assert small * per_row <= cost.ROWS_WORKING_SET // 4 < (small + 1) * per_row
    assert cost.backward_rows(16, 10**9, 4, 1024) == 1  # always at least one row
