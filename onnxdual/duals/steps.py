"""Dual layers of non-decreasing step functions: Sign, Floor, Ceil, Round (an interval relaxation).

A step function has no useful linear face across a jump, so on ``[l, u]`` it is enclosed by the interval
``[f(l), f(u)]`` (slope 0), which is exact for the output's range because ``f`` does not decrease; units
whose interval holds no jump are constant and exact."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from onnxdual.duals.base import ActivationDual, NodeContext, Relaxation


class StepDual(ActivationDual):
    """A non-decreasing step function ``fn``: the relaxation ``0 x + f(l) <= f(x) <= 0 x + f(u)``."""

    def __init__(self, ctx: NodeContext | None, fn: Callable[[Tensor], Tensor]):
        super().__init__(ctx)
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.ctx.call(x) if self.ctx is not None else self.fn(x)

    def relax(self, lower: Tensor, upper: Tensor) -> Relaxation:
        low, high = self.interval(lower, upper)
        return Relaxation(torch.zeros_like(lower), low, high)

    def interval(self, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        return self.fn(lower), self.fn(upper)

    def needs_bounds(self, lower: Tensor, upper: Tensor) -> Tensor:
        return self.fn(lower) != self.fn(upper)


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
