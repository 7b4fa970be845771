"""Projected gradient descent (PGD, Madry et al. 2018): the one attack of onnxdual.

It bounds from above what a sound bound may claim: certification and training evaluation attack each example
(:func:`pgd`; an example that is both certified and successfully attacked is a soundness violation), and the
verifier looks for counterexample candidates with it (:mod:`onnxdual.verify.counterexamples`). PGD minimises
an objective of the network input over an input set -- :func:`pgd`: ``min_j (c_j . f(x'))``, for
classification with ``C = e_y - e_j`` the smallest margin; the verifier: how far the output is from an
unsafe region -- with sign-gradient steps for boxes and normalised-gradient steps for l2 balls (the steepest
descent directions of the l-inf and l2 norms), with restarts.

:func:`minimise` is the algorithm; what varies between its callers is explicit:

* the start of each restart (:func:`sampled_starts`: the centre, then points drawn by
  :meth:`InputSet.sample`; :func:`box_starts`: the box midpoint, then a random vertex or uniform point);
* the step schedule (a constant, or a function of the step such as :func:`cosine_steps`), times a
  per-coordinate scale (by default the box radius, or the l2 radius);
* which points count (``count``): ``"after_step"`` values the centre once and then every point a step
  reaches with a forward pass of its own; ``"iterates"`` values every iterate, each restart's start
  included, by the forward pass that also gives its gradient (plus the last iterate);
* a deadline checked before every step (:class:`onnxdual.errors.DeadlineExceeded`), and a hook called
  with the best points after every restart.

Step functions (``Sign``, as in binarised networks) have a zero gradient almost everywhere, so the gradient
is taken with a *straight-through* surrogate (:func:`straight_through`: the step's gradient is the identity,
Bengio et al. 2013; BinaryNet's estimator). Only the direction of a step changes: every value the attack
keeps is the network's own, and a verifier re-checks any candidate exactly (onnxruntime, zero tolerance), so
the surrogate can propose points but never make a wrong claim.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from onnxdual.engine.input_sets import Box, InputSet
from onnxdual.errors import DeadlineExceeded

#: an objective to minimise: network inputs ``(B, *in_shape)`` -> values ``(B,)``
Objective = Callable[[Tensor], Tensor]
#: where restart ``r`` starts: ``r -> (B, *in_shape)``
Starts = Callable[[int], Tensor]
#: the step size of step ``s`` of ``steps``, in units of the scale: ``(s, steps) -> float``
StepSize = Callable[[int, int], float]


class SupportsPassed(Protocol):
    """A deadline (e.g. :class:`onnxdual.verify.Deadline`)."""

    def passed(self) -> bool: ...


@dataclass(frozen=True)
class AttackResult:
    """Best point found per example and the objective there (for :func:`pgd`: ``min_j c_j . f(x)``)."""

    x: Tensor
    value: Tensor


class _StraightThrough(torch.autograd.Function):
    """``step(x)`` forward (exactly), the identity backward."""

    @staticmethod
    def forward(ctx, x: Tensor, step: Callable[[Tensor], Tensor]) -> Tensor:  # noqa: ARG004
        return step(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: ARG004
        return grad, None


#: the step functions whose gradient is zero almost everywhere (torch functions and Tensor methods)
STEPS = {f: f for f in (torch.sign, torch.floor, torch.ceil, torch.round)} | {
    torch.Tensor.sign: torch.sign, torch.Tensor.floor: torch.floor, torch.Tensor.ceil: torch.ceil,
    torch.Tensor.round: torch.round}


class straight_through(TorchFunctionMode):  # noqa: N801 (used as a context manager, like torch.no_grad)
    """Within this context, step functions called on tensors that need a gradient (:data:`STEPS`, without
    extra arguments) keep their exact value and pass the gradient straight through."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        step = STEPS.get(func)
        if step is not None and len(args) == 1 and not kwargs and isinstance(args[0], Tensor) \
                and args[0].requires_grad and args[0].is_floating_point():
            return _StraightThrough.apply(args[0], step)
        return func(*args, **kwargs)


def row_minimum(net: nn.Module, c: Tensor, mask: Tensor | None = None) -> Objective:
    """``x -> min_j c_j . f(x)`` (``c``: ``(B, m, n_out)``) over the rows ``mask`` ``(B, m)`` selects."""

    def objective(x: Tensor) -> Tensor:
        out = net(x).flatten(1)
        vals = torch.einsum("bmo,bo->bm", c, out)
        if mask is not None:
            vals = vals.masked_fill(~mask, float("inf"))
        return vals.min(1).values

    return objective


def sampled_starts(input_set: InputSet, generator: torch.Generator | None = None) -> Starts:
    """The centre first, then for each further restart a point drawn by ``input_set.sample``."""
    center = input_set.center.detach()

    def start(restart: int) -> Tensor:
        if restart == 0:
            return center.clone()
        return input_set.sample(2, generator)[1].detach()

    return start


def box_starts(box: Box, generator: torch.Generator | None = None) -> Starts:
    """The midpoint ``lower + (upper - lower) / 2`` first; then for each example, with probability 1/2, a
    random vertex, else a uniform point (drawn on the CPU, so the points do not depend on the device);
    projected onto the box."""
    lower, width = box.lower, box.upper - box.lower

    def start(restart: int) -> Tensor:
        if restart == 0:
            x = lower + width / 2
        else:
            shape = lower.shape
            u = torch.rand(shape, generator=generator).to(lower.device)
            corner = (torch.rand(shape, generator=generator) < 0.5).to(lower.device, lower.dtype)
            pick = torch.rand(shape[0], *[1] * (len(shape) - 1), generator=generator).to(lower.device) < 0.5
            x = lower + width * torch.where(pick, corner, u)
        return box.project(x)

    return start


def cosine_steps(step: int, steps: int) -> float:
    """A cosine-annealed step from ``2 / max(steps, 4)`` down to ``1e-3`` (in units of the scale)."""
    return 0.5 * (1 + math.cos(math.pi * step / steps)) * 2.0 / max(steps, 4) + 1e-3


def minimise(objective: Objective, input_set: InputSet, *, steps: int, restarts: int = 1,
             step_size: float | StepSize | None = None, scale: Tensor | None = None,
             starts: Starts | None = None, count: Literal["after_step", "iterates"] = "after_step",
             deadline: SupportsPassed | None = None,
             after_restart: Callable[[AttackResult], None] | None = None) -> AttackResult:
    """PGD on ``objective`` over ``input_set`` (see the module docstring for the choices).

    ``step_size`` defaults to ``2.5 / steps``; ``scale`` to the box radius (or the l2 radius); ``starts`` to
    :func:`sampled_starts` without a generator. Returns the best point and value per example; with
    ``count="iterates"``, an example without a finite value keeps ``+inf`` (and the centre)."""
    center = input_set.center.detach()
    if scale is None:
        scale = input_set.radius.detach() if isinstance(input_set, Box) else \
            torch.as_tensor(input_set.eps, dtype=center.dtype, device=center.device)
    if step_size is None:
        step_size = 2.5 / max(steps, 1)
    size = step_size if callable(step_size) else (lambda _s, _n, a=step_size: a)
    start = starts if starts is not None else sampled_starts(input_set)
    iterates = count == "iterates"
    best_x = center.clone()
    best: Tensor | None = None
    if not iterates:
        with torch.no_grad():
            best = objective(center)
    for restart in range(restarts):
        x = start(restart)
        for step in range(steps + 1 if iterates else steps):
            if deadline is not None and deadline.passed():
                raise DeadlineExceeded("the time limit was reached during an attack")
            grad = None
            if step < steps:
                x = x.detach().requires_grad_(True)
                with torch.enable_grad(), straight_through():
                    value = objective(x)
                    # a network whose output does not follow its input differentiably (a Cast to an
                    # integer type in the way) gives no direction: the restarts' own points are tried
                    (grad,) = (torch.autograd.grad(value.sum(), x) if value.requires_grad
                               else (torch.zeros_like(x),))
            else:  # the last iterate: no step follows
                with torch.no_grad():
                    value = objective(x)
            with torch.no_grad():
                if iterates:
                    best = _keep_better(best, best_x, value.detach(), x.detach())
                if grad is None:
                    break
                x = input_set.project(_step(x.detach(), grad, size(step, steps), scale, input_set))
                if not iterates:
                    best = _keep_better(best, best_x, objective(x), x)
        if after_restart is not None:
            after_restart(AttackResult(best_x, best))
    return AttackResult(best_x, best)


def _step(x: Tensor, grad: Tensor, size: float, scale: Tensor, input_set: InputSet) -> Tensor:
    """One descent step: the sign of the gradient for boxes, the normalised gradient for l2 balls."""
    if isinstance(input_set, Box):
        return x - size * scale * grad.sign()
    norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
    shape = (-1, *[1] * (grad.dim() - 1))
    return x - size * scale * grad / norms.reshape(shape)


def _keep_better(best: Tensor | None, best_x: Tensor, value: Tensor, x: Tensor) -> Tensor:
    """The element-wise better of ``best`` and ``value`` (``best_x`` takes the points in place)."""
    if best is None:
        best = torch.full_like(value, math.inf)
    better = value < best
    best_x[better] = x[better]
    return torch.where(better, value, best)


def pgd(net: nn.Module, input_set: InputSet, c: Tensor, *, steps: int = 40, restarts: int = 1,
        step_size: float | None = None, mask: Tensor | None = None,
        generator: torch.Generator | None = None) -> AttackResult:
    """Minimise ``min_j c_j . f(x')`` over the input set (``c``: ``(B, m, n_out)``; ``mask`` selects rows).

    The first restart starts at the centre, the others at random points of the set; ``net`` is evaluated in
    eval mode (its mode is restored)."""
    was_training = net.training
    net.eval()
    try:
        return minimise(row_minimum(net, c, mask), input_set, steps=steps, restarts=restarts,
                        step_size=step_size, starts=sampled_starts(input_set, generator))
    finally:
        net.train(was_training)
