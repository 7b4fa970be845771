"""A pass asked to stop (a deadline) raises DeadlineExceeded before its next chunk of backward rows, and the
deadline reaches the pass through OptimizeOptions.stop."""

import pytest
import torch
from torch import nn

import onnxdual
from onnxdual.engine.optimize import OptimizeOptions
from onnxdual.errors import DeadlineExceeded


@pytest.mark.parametrize("relaxation", ["paper", "adaptive", "optimized"])
def test_a_stopped_pass_raises_deadline_exceeded(relaxation):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(2, 4)
    c = torch.randn(2, 3, 2)
    asked = []
    dual = onnxdual.DualNetwork(net, x, 0.1, relaxation=relaxation,
                                optimize=OptimizeOptions(stop=lambda: asked.append(1) or True))
    with pytest.raises(DeadlineExceeded):
        dual.lower_bound(c)
    assert asked
    free = onnxdual.DualNetwork(net, x, 0.1, relaxation=relaxation, optimize=OptimizeOptions(stop=lambda: False))
    assert torch.isfinite(free.lower_bound(c)).all()


def test_row_chunks_cover_every_row_once_in_order_and_stop_before_a_chunk():
    from onnxdual.engine import cost

    rows = torch.arange(1000)
    assert torch.equal(torch.cat(list(cost.row_chunks(rows, 64, None))), rows)
    chunks = list(cost.row_chunks(rows, 64, lambda: False))
    assert torch.equal(torch.cat(chunks), rows) and max(c.numel() for c in chunks) <= 64
    asked = []
    with pytest.raises(DeadlineExceeded):
        for _ in cost.row_chunks(rows, 64, lambda: asked.append(1) or len(asked) > 2):
            pass
    assert len(asked) == 3


def test_no_rows_no_chunks():
    from onnxdual.engine import cost

    assert list(cost.row_chunks(torch.arange(0), 8, None)) == list(cost.row_chunks(torch.arange(0), 8, lambda: 0)) == []


def test_a_predicting_stop_refuses_a_step_that_would_end_past_the_deadline(monkeypatch):
    """Deadline.predicting: True once 1.5 times the last interval between its calls would not fit (a fake
    clock: no sleeps)."""
    from onnxdual.verify import result

    clock = [100.0]
    monkeypatch.setattr(result.time, "perf_counter", lambda: clock[0])
    deadline = result.Deadline(10.0)  # ends at 110
    stop = deadline.predicting()
    assert not stop()  # the first call has no step to go by
    clock[0] = 104.0  # a 4 s step: 1.5 x 4 = 6 s still fits in the 6 s left... exactly not
    assert stop()
    stop = deadline.predicting()
    clock[0] = 105.0
    assert not stop()
    clock[0] = 106.0  # a 1 s step, 4 s left
    assert not stop()
    clock[0] = 110.0
    assert stop()  # passed
