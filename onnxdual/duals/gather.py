"""Dual layers of Gather and GatherElements with constant indices: each output is one input element, a
0/1 selection matrix (Corollary 1: the dual is the scatter-add, the exact vector-Jacobian product of
:meth:`linear`; ``|A| = A``). Built from the ONNX node: ``axis`` attribute and the constant ``indices``
input (negative indices count from the end, as ONNX defines them)."""

from __future__ import annotations

import torch
from torch import Tensor

from onnxdual.duals.base import AffineDual, NodeContext
from onnxdual.duals.shape import SelectionDual, axis_of, only_data_input


def _indices(ctx: NodeContext, size: int) -> Tensor:
    indices = ctx.constant(1)
    if indices is None:
        raise ctx.unsupported("the indices must be constants (gathering by a value of the network is not "
                              "linear)")
    indices = indices.to(torch.long)
    indices = torch.where(indices < 0, indices + size, indices)
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= size):
        raise ctx.unsupported(f"indices outside [-{size}, {size - 1}]")
    return indices


class ConstantIndicesDual(SelectionDual):
    """A selection along the node's ``axis`` by its constant ``indices`` (input 1)."""

    def __init__(self, ctx: NodeContext):
        super().__init__(ctx)
        only_data_input(ctx)
        self.in_shape = tuple(ctx.input_shapes[0])
        self.axis = axis_of(ctx, int(ctx.attributes.get("axis", 0)), len(self.in_shape) + 1)
        self.indices = _indices(ctx, self.in_shape[self.axis - 1])


class GatherDual(ConstantIndicesDual):
    """``Gather(x, indices, axis)``: ``out[..., j..., ...] = x[..., indices[j...], ...]`` along ``axis``."""

    def linear(self, x: Tensor) -> Tensor:
        idx = self.indices.to(x.device)
        out = x.index_select(self.axis, idx.reshape(-1))
        return out.reshape(*x.shape[:self.axis], *idx.shape, *x.shape[self.axis + 1:])


def gather_dual(ctx: NodeContext) -> AffineDual:
    return GatherDual(ctx)


class GatherElementsDual(ConstantIndicesDual):
    """``GatherElements(x, indices, axis)``: ``out[i][j][k] = x[i][indices[i][j][k]][k]`` (axis 1); the
    constant indices have a batch dimension of 1, shared by every example."""

    def __init__(self, ctx: NodeContext):
        super().__init__(ctx)
        if self.indices.dim() != len(self.in_shape) + 1 or self.indices.shape[0] != 1:
            raise ctx.unsupported("the indices must have the input's rank and one row shared by the batch")

    def linear(self, x: Tensor) -> Tensor:
        idx = self.indices.to(x.device)
        return torch.gather(x, self.axis, idx.expand(x.shape[0], *idx.shape[1:]))


def gather_elements_dual(ctx: NodeContext) -> AffineDual:
    return GatherElementsDual(ctx)
