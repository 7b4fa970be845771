"""Dual layers of element-wise arithmetic: Add/Sub of two tensors (residual connections, App. B.2) and
Add/Sub/Mul/Div by constants (e.g. input normalisation an exporter put into the graph), and Neg.
All are affine in their variable inputs, so Corollary 1 applies; Mul/Div of two variable tensors are not and
go to :mod:`onnxdual.duals.bilinear`."""

from __future__ import annotations

import torch
from torch import Tensor

from onnxdual.duals.base import AffineDual, NodeContext
from onnxdual.duals.bilinear import product_dual
from onnxdual.duals.multi import MultiInputActivation


class SumDual(AffineDual):
    """``a +/- b`` where both operands depend on the network input (a skip connection)."""

    def __init__(self, ctx: NodeContext, sign: float):
        super().__init__(ctx)
        self.sign = sign

    def linear(self, a: Tensor | None, b: Tensor | None) -> Tensor:
        if b is None:
            return a
        if a is None:
            return b if self.sign > 0 else -b
        return a + b if self.sign > 0 else a - b

    def transpose(self, nu: Tensor) -> tuple[Tensor, Tensor]:
        return self._reduce(nu, 0), self._reduce(nu if self.sign > 0 else -nu, 1)

    def abs_linear(self, a: Tensor | None, b: Tensor | None) -> Tensor:
        return a if b is None else b if a is None else a + b  # |+/-1| = 1

    def _reduce(self, nu: Tensor, which: int) -> Tensor:
        """Sum ``nu`` over the dimensions along which operand ``which`` was broadcast."""
        shape = self.ctx.input_shapes[which]
        target = (nu.shape[0], *shape)
        if tuple(nu.shape) == target:
            return nu
        extra = nu.dim() - len(target)
        if extra:
            nu = nu.sum(dim=tuple(range(1, 1 + extra)))
        dims = [d for d in range(1, nu.dim()) if target[d] == 1 and nu.shape[d] != 1]
        return nu.sum(dim=dims, keepdim=True) if dims else nu


class ConstantOperandDual(AffineDual):
    """``x + c``, ``x - c``, ``c - x``, ``x * c``, ``c * x``, ``x / c`` for a constant ``c``."""

    def __init__(self, ctx: NodeContext):
        super().__init__(ctx)
        (position,) = ctx.variable_positions
        self.constant = ctx.inputs[1 - position]
        self.variable_first = position == 0
        op = ctx.op_type
        if op == "Div" and not self.variable_first:
            raise ctx.unsupported("dividing by a value that depends on the network input is not linear")
        if op in ("Mul", "Div") and not self.constant.is_floating_point():
            self.constant = self.constant.float()
        self.op = op
        self.broadcasts = tuple(ctx.output_shape) != tuple(ctx.input_shapes[position])

    def linear(self, x: Tensor) -> Tensor:
        c = self.constant
        if self.op in ("Add", "Sub"):
            y = x if self.op == "Add" or self.variable_first else -x
            # adding exact zeros only reproduces the broadcast of the original op
            return y + torch.zeros_like(c) if self.broadcasts else y
        if self.op == "Mul":
            return x * c
        return x / c

    def abs_linear(self, r: Tensor) -> Tensor:
        if self.op in ("Add", "Sub"):
            return r + torch.zeros_like(self.constant) if self.broadcasts else r
        return r * self.constant.abs() if self.op == "Mul" else r / self.constant.abs()

    def transpose(self, nu: Tensor) -> tuple[Tensor]:
        c = self.constant
        if self.op in ("Add", "Sub"):
            out = nu if self.op == "Add" or self.variable_first else -nu
        else:
            out = nu * c if self.op == "Mul" else nu / c
        return (self._reduce_to_input(out),)

    def _reduce_to_input(self, nu: Tensor) -> Tensor:
        shape = self.ctx.input_shapes[0 if self.variable_first else 1]
        extra = nu.dim() - 1 - len(shape)
        if extra > 0:
            nu = nu.sum(dim=tuple(range(1, 1 + extra)))
        dims = [d for d in range(1, nu.dim()) if shape[d - 1] == 1 and nu.shape[d] != 1]
        return nu.sum(dim=dims, keepdim=True) if dims else nu


def arithmetic_dual(ctx: NodeContext) -> AffineDual | MultiInputActivation:
    variable = ctx.variable_positions
    if len(variable) == 2:
        if ctx.op_type in ("Mul", "Div"):  # not linear: a product's relaxation (onnxdual.duals.bilinear)
            return product_dual(ctx)
        return SumDual(ctx, 1.0 if ctx.op_type == "Add" else -1.0)
    return ConstantOperandDual(ctx)


class NegDual(AffineDual):
    def linear(self, x: Tensor) -> Tensor:
        return -x

    def transpose(self, nu: Tensor) -> tuple[Tensor]:
        return (-nu,)

    def abs_linear(self, r: Tensor) -> Tensor:
        return r


def neg_dual(ctx: NodeContext) -> AffineDual:
    return NegDual(ctx)
