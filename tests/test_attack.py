"""onnxdual.attack: the one PGD. It must find known minima, stay inside its set, never beat the true minimum,
count and start where its callers rely on (certify: the centre, then each step's point; verify: every
iterate), honour a deadline, and be reproducible from its generator."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from onnxdual.attack import AttackResult, box_starts, cosine_steps, minimise, pgd, row_minimum, sampled_starts
from onnxdual.engine.input_sets import Box, L2Ball
from onnxdual.errors import DeadlineExceeded


def _linear(w: torch.Tensor) -> nn.Module:
    net = nn.Linear(w.shape[1], w.shape[0], bias=False)
    with torch.no_grad():
        net.weight.copy_(w)
    return net


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))


def test_pgd_finds_the_minimising_vertex_of_a_linear_objective_on_a_box():
    w = torch.tensor([[1.0, -2.0, 0.5]])
    lower, upper = torch.tensor([[-1.0, -1.0, 0.0]]), torch.tensor([[1.0, 2.0, 3.0]])
    result = pgd(_linear(w), Box(lower, upper), torch.ones(1, 1, 1), steps=20)
    exact = float(torch.minimum(w * lower, w * upper).sum())
    assert result.value.item() == pytest.approx(exact, abs=1e-5)
    assert torch.all(result.x >= lower) and torch.all(result.x <= upper)


def test_pgd_on_an_l2_ball_reaches_the_minimum_and_stays_inside():
    w = torch.tensor([[3.0, 4.0]])
    x0 = torch.tensor([[0.5, -0.5]])
    result = pgd(_linear(w), L2Ball(x0, 0.5), torch.ones(1, 1, 1), steps=30)
    exact = float(w @ x0.T) - 0.5 * 5.0
    assert result.value.item() == pytest.approx(exact, abs=1e-3)
    assert float((result.x - x0).norm()) <= 0.5 + 1e-6


@pytest.mark.parametrize("seed", range(3))
def test_pgd_returns_points_of_the_set_with_their_objective_and_beats_sampling(seed):
    net = _mlp(seed)
    x = torch.rand(5, 4)
    box = Box.ball(x, 0.2)
    c = torch.randn(5, 2, 3)
    result = pgd(net, box, c, steps=15, restarts=3, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        dense = box.sample(2000, torch.Generator().manual_seed(1))  # (n, B, 4)
        values = torch.einsum("bmo,nbo->nbm", c, net(dense)).amin(2)
        at_x = torch.einsum("bmo,bo->bm", c, net(result.x)).amin(1)
    assert torch.all(box.project(result.x) == result.x)
    assert torch.allclose(result.value, at_x, atol=1e-6)
    # a point of the set with its true value cannot beat the minimum; and gradient steps are about as good
    # as 2000 samples (the objective is not convex: a restart may end in a local minimum)
    assert torch.all(result.value <= values.amin(0) + 0.05)
    assert (result.value <= values.amin(0) + 1e-4).sum() >= 3


def test_pgd_restores_the_training_mode_and_is_reproducible():
    net = _mlp(0).train()
    x = torch.rand(3, 4)
    c = torch.randn(3, 2, 3)
    runs = [pgd(net, Box.ball(x, 0.3), c, steps=5, restarts=3, generator=torch.Generator().manual_seed(7))
            for _ in range(2)]
    assert net.training
    assert torch.equal(runs[0].x, runs[1].x) and torch.equal(runs[0].value, runs[1].value)


def test_a_mask_leaves_rows_out():
    w = torch.tensor([[1.0], [-1.0]])
    c = torch.eye(2).unsqueeze(0)  # rows y0 and y1
    box = Box(torch.tensor([[0.0]]), torch.tensor([[1.0]]))
    both = pgd(_linear(w), box, c, steps=10).value.item()
    only_first = pgd(_linear(w), box, c, steps=10, mask=torch.tensor([[True, False]])).value.item()
    assert both == pytest.approx(-1.0) and only_first == pytest.approx(0.0)


def _counting(objective):
    calls = []

    def counted(x):
        calls.append(x.detach().clone())
        return objective(x)

    return counted, calls


def test_after_step_counts_the_centre_and_every_stepped_point_but_not_random_starts():
    net = _mlp(1).eval()
    box = Box.ball(torch.rand(2, 4), 0.1)
    objective, calls = _counting(row_minimum(net, torch.randn(2, 1, 3)))
    minimise(objective, box, steps=4, restarts=2,
             starts=sampled_starts(box, torch.Generator().manual_seed(0)))
    assert len(calls) == 1 + 2 * (2 * 4)  # the centre, then per step a gradient and an evaluation
    assert torch.equal(calls[0], box.center)


def test_iterates_counts_every_iterate_and_reports_each_restart():
    net = _mlp(2).eval()
    box = Box(torch.zeros(3, 4), torch.ones(3, 4))
    objective, calls = _counting(row_minimum(net, torch.randn(3, 1, 3)))
    seen: list[AttackResult] = []
    result = minimise(objective, box, steps=5, restarts=3, step_size=cosine_steps,
                      scale=box.upper - box.lower, starts=box_starts(box, torch.Generator().manual_seed(0)),
                      count="iterates", after_restart=seen.append)
    assert len(calls) == 3 * (5 + 1)
    assert torch.equal(calls[0], torch.full((3, 4), 0.5))  # the midpoint first
    assert len(seen) == 3 and torch.equal(seen[-1].value, result.value)
    values = torch.stack([objective(x) for x in calls[:18]])
    assert torch.equal(result.value, values.amin(0))  # the best of all iterates, starts included


def test_box_starts_are_inside_the_box_and_follow_the_generator():
    box = Box(torch.tensor([[-1.0, 0.0], [2.0, 2.0]]), torch.tensor([[1.0, 0.5], [3.0, 2.0]]))
    first = box_starts(box, torch.Generator().manual_seed(3))
    second = box_starts(box, torch.Generator().manual_seed(3))
    for r in range(4):
        a, b = first(r), second(r)
        assert torch.equal(a, b) and torch.all(a >= box.lower) and torch.all(a <= box.upper)


def test_sampled_starts_begin_at_the_centre():
    ball = L2Ball(torch.rand(2, 3), 0.5)
    start = sampled_starts(ball, torch.Generator().manual_seed(0))
    assert torch.equal(start(0), ball.center)
    assert torch.all((start(1) - ball.center).norm(dim=1) <= 0.5 + 1e-6)


def test_cosine_steps_decrease_to_the_floor():
    sizes = [cosine_steps(s, 10) for s in range(11)]
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[0] == pytest.approx(2.0 / 10 + 1e-3) and sizes[-1] == pytest.approx(1e-3)


class _Passed:
    def passed(self) -> bool:
        return True


def test_a_passed_deadline_stops_before_any_network_evaluation():
    box = Box(torch.zeros(1, 4), torch.ones(1, 4))
    objective, calls = _counting(row_minimum(_mlp(0).eval(), torch.ones(1, 1, 3)))
    with pytest.raises(DeadlineExceeded):
        minimise(objective, box, steps=3, count="iterates", starts=box_starts(box), deadline=_Passed())
    assert not calls


def test_an_objective_without_finite_values_keeps_inf():
    box = Box(torch.zeros(2, 1), torch.ones(2, 1))
    result = minimise(lambda x: torch.full((x.shape[0],), math.inf) + 0 * x.sum(1), box, steps=2,
                      count="iterates", starts=box_starts(box))
    assert torch.all(torch.isinf(result.value))


def test_step_functions_pass_a_straight_through_gradient_and_keep_their_exact_values():
    """``sum sign(x + 0.3)`` has a zero gradient everywhere it has one: through Sign the attack steps along
    the straight-through surrogate and reaches the minimum -6 from the centre (value 6), and every value it
    keeps is the function's own at its point."""
    box = Box(torch.full((1, 6), -1.0), torch.full((1, 6), 1.0))
    objective = lambda x: torch.sign(x + 0.3).sum(1)  # noqa: E731
    found = minimise(objective, box, steps=20, count="iterates", starts=lambda _r: box.center.clone())
    assert float(found.value) == -6.0
    assert torch.equal(found.value, objective(found.x))
    assert bool(((found.x >= box.lower) & (found.x <= box.upper)).all())
    net = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 1))  # no step: the exact gradient
    x = torch.randn(2, 6, requires_grad=True)
    (exact,) = torch.autograd.grad(net(x).sum(), x)
    from onnxdual.attack import straight_through

    with straight_through():
        (same,) = torch.autograd.grad(net(x).sum(), x)
    assert torch.equal(exact, same)


def test_without_a_gradient_the_straight_through_context_changes_nothing():
    from onnxdual.attack import straight_through

    x = torch.tensor([-1.5, 0.0, 2.5])
    with straight_through():
        assert torch.equal(torch.sign(x), torch.tensor([-1.0, 0.0, 1.0]))
        y = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(torch.sign(y).sum() + y.floor().sum(), y)
    assert torch.equal(g, torch.full((3,), 2.0))
    (g0,) = torch.autograd.grad(torch.sign(y).sum(), y)
    assert torch.equal(g0, torch.zeros(3))
