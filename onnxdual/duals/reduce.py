"""Dual layers of sums and means: ReduceSum and ReduceMean over per-example axes, and the variadic Sum and
Mean of several tensors (with broadcasting). Each is linear with non-negative coefficients (``|A| = A`` for
interval bounds); the dual is the exact vector-Jacobian product of :meth:`linear` (Corollary 1): a
broadcast of ``nu`` back over the reduced axes. Built from the ONNX node: ``axes`` is an attribute before
ReduceSum-13 / ReduceMean-18 and a constant input from then on, ``keepdims`` and ``noop_with_empty_axes``
are attributes."""

from __future__ import annotations

import torch
from torch import Tensor

from onnxdual.duals.base import AffineDual, NodeContext
from onnxdual.duals.shape import SelectionDual, ints, only_data_input

#: the opset in which each reduction's ``axes`` became an input
AXES_INPUT_SINCE = {"ReduceSum": 13, "ReduceMean": 18}


class ReduceDual(SelectionDual):
    """``ReduceSum`` / ``ReduceMean`` over per-example axes (reducing the batch axis is refused)."""

    def __init__(self, ctx: NodeContext):
        super().__init__(ctx)
        only_data_input(ctx)
        rank = len(ctx.input_shapes[0]) + 1
        axes = ints(ctx, "axes", 1, AXES_INPUT_SINCE[ctx.op_type])
        if not axes:
            if int(ctx.attributes.get("noop_with_empty_axes", 0)):
                axes = []
            else:
                raise ctx.unsupported("without axes it reduces the batch axis too; give the per-example axes")
        self.axes = sorted({a + rank if a < 0 else a for a in axes})
        if any(not 0 < a < rank for a in self.axes):
            raise ctx.unsupported(f"axes {axes} include the batch axis or are out of range")
        self.keepdims = bool(int(ctx.attributes.get("keepdims", 1)))
        self.mean = ctx.op_type == "ReduceMean"

    def linear(self, x: Tensor) -> Tensor:
        if not self.axes:
            return x
        fn = torch.mean if self.mean else torch.sum
        return fn(x, dim=self.axes, keepdim=self.keepdims)


def reduce_dual(ctx: NodeContext) -> AffineDual:
    return ReduceDual(ctx)


class SumMeanDual(AffineDual):
    """``Sum`` / ``Mean`` of several inputs with numpy broadcasting; constant inputs are the offset."""

    def __init__(self, ctx: NodeContext):
        super().__init__(ctx)
        self.scale = 1.0 / len(ctx.inputs) if ctx.op_type == "Mean" else 1.0
        self.out_shape = tuple(ctx.output_shape)

    def _total(self, xs, constants: bool) -> Tensor:
        like = next(x for x in xs if x is not None)
        total = like.new_zeros((like.shape[0], *self.out_shape))
        it = iter(xs)
        for position, value in enumerate(self.ctx.inputs):
            if position in self.ctx.variable_positions:
                x = next(it)
                if x is not None:
                    total = total + x
            elif constants:
                total = total + value.to(like.dtype)
        return total * self.scale if self.scale != 1.0 else total

    def forward(self, *xs: Tensor) -> Tensor:
        return self._total(xs, True)

    def linear(self, *xs: Tensor | None) -> Tensor:
        return self._total(xs, False)

    def abs_linear(self, *radii: Tensor) -> Tensor:
        return self.linear(*radii)


def sum_mean_dual(ctx: NodeContext) -> AffineDual:
    return SumMeanDual(ctx)
