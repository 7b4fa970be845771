"""Dual layers of step functions: Sign, Floor, Ceil, Round, ``Cast`` of the network's values to an integer
type (truncation) or to BOOL (``x != 0``), and comparisons with a constant (``Equal``, ``Greater``, ``Less``,
``GreaterOrEqual``, ``LessOrEqual``: 1 or 0) -- an interval relaxation.

A step function has no useful linear face across a jump, so on ``[l, u]`` it is enclosed by the interval
``[f(l), f(u)]`` (slope 0), which is exact for the output's range where ``f`` is monotone; a step that is not
(``x != 0``, ``x == c``) also takes its value at its special point when that lies in ``[l, u]``. Units whose
interval holds no jump are constant and exact. The map is zero (:attr:`LinearRelaxation.constant`), so a
backward pass stops at the step: nothing below it can move a bound through it (its dual variable is 0)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from onnxdual.duals.base import ActivationDual, Face, Faces, NodeContext, Relaxation
from onnxdual.duals.smooth import unbounded


@dataclass(frozen=True)
class ConstantRelaxation(Relaxation):
    """``0 x + low <= f(x) <= 0 x + high``: the slope is zero everywhere."""

    constant = True


@dataclass(frozen=True)
class ConstantFace(Face):
    """The face ``0 x + offset`` (``offset``: ``(B, *shape)``)."""

    offset: Tensor
    constant = True

    def transpose(self, nu: Tensor) -> Tensor:
        return torch.zeros((max(nu.shape[0], self.offset.shape[0]), *nu.shape[1:]), dtype=nu.dtype,
                           device=nu.device)

    def offset_term(self, nu: Tensor) -> Tensor:
        return (nu.flatten(2) @ self.offset.flatten(1).unsqueeze(-1)).squeeze(-1)


@dataclass(frozen=True)
class ConstantFaces(Faces):
    """``low <= f(x) <= high``: the term ``low . [nu]_+ + high . [nu]_- = mid . nu - half . |nu|`` (two
    products, no copies of ``nu``'s parts); the dual variable below is zero (a stride-0 view: the engine does
    not push it, see :attr:`Faces.constant`)."""

    lower: ConstantFace
    upper: ConstantFace

    def backward(self, nu: Tensor) -> tuple[Tensor, Tensor]:
        low, high = self.lower.offset.flatten(1), self.upper.offset.flatten(1)
        flat = nu.flatten(2)
        mid, half = ((low + high) / 2).unsqueeze(-1), ((high - low) / 2).unsqueeze(-1)
        term = (flat @ mid - flat.abs() @ half).squeeze(-1)
        batch = max(nu.shape[0], low.shape[0])
        return nu.new_zeros(()).expand(batch, *nu.shape[1:]), term


class StepDual(ActivationDual):
    """A piecewise-constant ``fn``: the relaxation ``0 x + low <= f(x) <= 0 x + high``. Monotone ``fn``:
    ``[low, high]`` is the hull of ``f(l)`` and ``f(u)``; ``points`` (broadcast to the input) are where a
    non-monotone one takes other values (``x != 0`` at 0, ``x == c`` at ``c``): their values join the hull
    where they lie in ``[l, u]``."""

    def __init__(self, ctx: NodeContext | None, fn: Callable[[Tensor], Tensor], points: Tensor | None = None):
        super().__init__(ctx)
        self.fn = fn
        self.points = points

    def forward(self, x: Tensor) -> Tensor:
        return self.ctx.call(x) if self.ctx is not None else self.fn(x)

    def relax(self, lower: Tensor, upper: Tensor) -> Relaxation:
        low, high = self.interval(lower, upper)
        return ConstantRelaxation(torch.zeros_like(lower), low, high)

    def faces(self, lower: Tensor, upper: Tensor) -> Faces:
        low, high = self.interval(lower, upper)
        return ConstantFaces(ConstantFace(low), ConstantFace(high))

    def interval(self, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        at_l, at_u = self.fn(lower), self.fn(upper)
        low, high = torch.minimum(at_l, at_u), torch.maximum(at_l, at_u)
        if self.points is not None:
            p = self.points.to(lower.dtype)
            at_p = self.fn(torch.minimum(torch.maximum(p, lower), upper))  # p itself where it is in [l, u]
            low, high = torch.minimum(low, at_p), torch.maximum(high, at_p)
        return low, high

    def needs_bounds(self, lower: Tensor, upper: Tensor) -> Tensor:
        low, high = self.interval(lower, upper)
        return low != high


def _step(fn: Callable[[Tensor], Tensor]):
    def factory(ctx: NodeContext) -> StepDual:
        if ctx.variable_positions != (0,):
            raise ctx.unsupported("only the first input may depend on the network input")
        return StepDual(ctx, fn)
    return factory


sign_dual = _step(torch.sign)
floor_dual = _step(torch.floor)
ceil_dual = _step(torch.ceil)
round_dual = _step(torch.round)  # ONNX and torch both round halves to even


#: the ONNX integer types a Cast may truncate to, with their ranges (beyond them ONNX leaves the result
#: undefined); BOOL is ``x != 0``
CAST_INTEGER_RANGES = {3: (-2.0**7, 2.0**7 - 1), 5: (-2.0**15, 2.0**15 - 1), 6: (-2.0**31, 2.0**31 - 1),
                       7: (-2.0**63, 2.0**63 - 1)}  # INT8, INT16, INT32, INT64
CAST_BOOL = 9


class TruncationDual(StepDual):
    """``Cast`` to an integer type: truncation towards zero (non-decreasing), for values in the type's range."""

    def __init__(self, ctx: NodeContext | None, limits: tuple[float, float]):
        super().__init__(ctx, torch.trunc)
        self.limits = limits

    def interval(self, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        low, high = self.limits
        if bool((lower < low).any() or (upper > high).any()):
            raise unbounded(self.ctx, f"the input bounds leave the integer type's range [{low:g}, {high:g}], "
                                      "where the cast is undefined")
        return super().interval(lower, upper)


def cast_step_dual(ctx: NodeContext, to: int) -> StepDual:
    """The step dual of ``Cast`` of the network's values to ``to`` (an integer type or BOOL)."""
    if ctx.variable_positions != (0,):
        raise ctx.unsupported("only the first input may depend on the network input")
    if to == CAST_BOOL:  # x != 0: not monotone, its other value at 0
        return StepDual(ctx, lambda x: (x != 0).to(x.dtype), torch.zeros(()))
    if to in CAST_INTEGER_RANGES:
        return TruncationDual(ctx, CAST_INTEGER_RANGES[to])
    raise ctx.unsupported("a Cast of the network's values to float32 (the identity), an integer type "
                          "(truncation) or BOOL (x != 0) is supported, not to this type")


#: the comparison operators, as functions of (first input, second input)
COMPARISONS = {"Equal": torch.eq, "Greater": torch.gt, "Less": torch.lt, "GreaterOrEqual": torch.ge,
               "LessOrEqual": torch.le}


def comparison_dual(ctx: NodeContext) -> StepDual:
    """A comparison of the network's values with a constant (either side): a step at the constant, 1 where
    it holds and 0 elsewhere; ``Equal`` is not monotone (its other value is at the constant itself)."""
    if len(ctx.variable_positions) != 1:
        raise ctx.unsupported("a comparison of two values that both depend on the network input is not "
                              "supported (one side must be a constant)")
    compare = COMPARISONS[ctx.op_type]
    const = ctx.constant(1 - ctx.variable_positions[0]).float()
    if ctx.variable_positions == (0,):
        def fn(x: Tensor) -> Tensor:
            return compare(x, const.to(x.dtype)).to(x.dtype)
    else:
        def fn(x: Tensor) -> Tensor:
            return compare(const.to(x.dtype), x).to(x.dtype)
    return StepDual(ctx, fn, const if ctx.op_type == "Equal" else None)
