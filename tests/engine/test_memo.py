"""engine/memo.py: results are reused only while their inputs are the same unchanged tensors."""

import torch

from onnxdual.engine.memo import Memo


def test_a_result_is_reused_until_an_input_changes():
    calls = []
    memo = Memo()
    a, b = torch.ones(3), torch.arange(3.0)

    def f(x, y):
        calls.append(1)
        return x * y

    first = memo("k", (a, b), f)
    assert memo("k", (a, b), f) is first and len(calls) == 1
    assert torch.equal(memo("k", (a, b.clone()), f), first) and len(calls) == 2  # another tensor
    a.mul_(2)  # in place: the same tensor, other values
    assert torch.equal(memo("k", (a, b), f), 2 * first) and len(calls) == 3
    assert memo("k", (a, None), lambda x, _: x) is a  # None inputs are allowed


def test_graphs_are_kept_only_when_asked_and_nothing_when_disabled():
    w = torch.ones(2, requires_grad=True)
    plain, graphs, off = Memo(), Memo(graphs=True), Memo(enabled=False)
    assert plain("k", (w,), lambda t: t * 2) is not plain("k", (w,), lambda t: t * 2)
    assert graphs("k", (w,), lambda t: t * 2) is graphs("k", (w,), lambda t: t * 2)
    x = torch.ones(2)
    assert off("k", (x,), lambda t: t + 1) is not off("k", (x,), lambda t: t + 1)
