"""Dual layers of operators that select, copy or rearrange values: Concat, Slice, Squeeze, Unsqueeze,
Expand, Tile, DepthToSpace and SpaceToDepth (Split: the frontend writes it as one Slice per output). Each is
a linear map with a 0/1 matrix (a constant operand of Concat adds an offset), so its dual is the adjoint map
(Corollary 1), here the exact vector-Jacobian product of :meth:`linear`, and ``|A| = A`` for interval
bounds. Every layer is built from the ONNX node: axes, starts, ends, steps, shapes and repeats come from its
attributes or constant inputs, as its opset defines them; the batch axis (0) must stay where it is.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from onnxdual.duals.base import AffineDual, NodeContext


def ints(ctx: NodeContext, attribute: str, position: int, since: int) -> list[int] | None:
    """A list of integers the node takes as an attribute before opset ``since`` and as constant input
    ``position`` from it on (ONNX moved ``axes``, ``starts``, ... to inputs); None when omitted."""
    if (ctx.since_version or ctx.opset) < since:
        value = ctx.attributes.get(attribute)
        return None if value is None else [int(v) for v in value]
    if position in ctx.variable_positions:
        raise ctx.unsupported(f"its {attribute} depend on the network input")
    value = ctx.constant(position)
    return None if value is None else [int(v) for v in value.reshape(-1).tolist()]


def axis_of(ctx: NodeContext, axis: int, rank: int) -> int:
    """``axis`` (negative counts from the end) of a rank-``rank`` tensor; the batch axis 0 is refused."""
    axis = axis + rank if axis < 0 else axis
    if not 0 < axis < rank:
        raise ctx.unsupported(f"axis {axis} is the batch axis or out of range; only per-example axes are "
                              "linear maps of one example")
    return axis


class SelectionDual(AffineDual):
    """A linear map of one variable input with a 0/1 matrix and no offset: the op itself is ``linear``."""

    def forward(self, *xs: Tensor) -> Tensor:
        return self.linear(*xs)

    def abs_linear(self, *radii: Tensor) -> Tensor:
        return self.linear(*radii)


def only_data_input(ctx: NodeContext) -> None:
    if ctx.variable_positions != (0,):
        raise ctx.unsupported("only the data input may depend on the network input")


class ConcatDual(AffineDual):
    """``Concat`` along a per-example axis; constant operands are the offset (zeros in :meth:`linear`)."""

    def __init__(self, ctx: NodeContext):
        super().__init__(ctx)
        rank = len(ctx.output_shape) + 1
        self.axis = axis_of(ctx, int(ctx.attributes.get("axis", 1 if ctx.opset < 4 else 0)), rank)

    def _parts(self, xs: Sequence[Tensor | None], n: int, like: Tensor, offset: bool) -> list[Tensor]:
        it = iter(xs)
        parts = []
        for position, value in enumerate(self.ctx.inputs):
            if position in self.ctx.variable_positions:
                x = next(it)
                shape = (n, *self.ctx.input_shapes[position])
                parts.append(x if x is not None else like.new_zeros(shape))
            else:
                value = value.to(like.dtype)
                shape = (n, *value.shape[1:])
                parts.append(value.expand(shape) if offset else like.new_zeros(shape))
        return parts

    def _like(self, xs: Sequence[Tensor | None]) -> Tensor:
        return next(x for x in xs if x is not None)

    def forward(self, *xs: Tensor) -> Tensor:
        like = self._like(xs)
        return torch.cat(self._parts(xs, like.shape[0], like, True), self.axis)

    def linear(self, *xs: Tensor | None) -> Tensor:
        like = self._like(xs)
        return torch.cat(self._parts(xs, like.shape[0], like, False), self.axis)

    def abs_linear(self, *radii: Tensor) -> Tensor:
        return self.linear(*radii)


def concat_dual(ctx: NodeContext) -> AffineDual:
    return ConcatDual(ctx)


def slice_indices(start: int, end: int, step: int, size: int) -> range:
    """The indices ``Slice`` takes on an axis of ``size`` (ONNX: negative values count from the end, then
    starts and ends are clamped to ``[0, size]``, or ``[0, size - 1]`` and ``[-1, size - 1]`` for a
    negative step)."""
    start, end = start + size if start < 0 else start, end + size if end < 0 else end
    if step > 0:
        return range(min(max(start, 0), size), min(max(end, 0), size), step)
    return range(min(max(start, 0), size - 1), min(max(end, -1), size - 1), step)


class SliceDual(SelectionDual):
    """``Slice`` with constant starts, ends, axes and steps (negative values and steps as ONNX defines them,
    ends clamped): an index selection per sliced axis."""

    def __init__(self, ctx: NodeContext):
        super().__init__(ctx)
        only_data_input(ctx)
        in_shape = tuple(ctx.input_shapes[0])
        rank = len(in_shape) + 1
        starts, ends = ints(ctx, "starts", 1, 10), ints(ctx, "ends", 2, 10)
        if starts is None or ends is None:
            raise ctx.unsupported("starts and ends must be constants")
        axes = ints(ctx, "axes", 3, 10) or list(range(len(starts)))
        steps = ints(ctx, "steps", 4, 10) or [1] * len(starts)
        self.selections: list[tuple[int, Tensor]] = []
        for start, end, axis, step in zip(starts, ends, axes, steps):
            axis = axis + rank if axis < 0 else axis
            if axis == 0:
                if start == 0 and end >= 2**31 - 1 and step == 1:
                    continue  # the whole batch
                raise ctx.unsupported("slicing the batch axis is not a map of one example")
            if not 0 < axis < rank or step == 0:
                raise ctx.unsupported(f"axis {axis} or step {step} is invalid")
            size = in_shape[axis - 1]
            index = slice_indices(start, end, step, size)
            self.selections.append((axis, torch.tensor(list(index), dtype=torch.long)))

    def linear(self, x: Tensor) -> Tensor:
        for axis, index in self.selections:
            x = x.index_select(axis, index.to(x.device))
        return x


def slice_dual(ctx: NodeContext) -> AffineDual:
    return SliceDual(ctx)


def split_dual(ctx: NodeContext) -> AffineDual:
    """A ``Split`` reaches the engine only where the frontend could not write it as Slices
    (:func:`onnxdual.frontend.rewrites.split_to_slices`): its sizes were unknown."""
    raise ctx.unsupported("the split sizes are neither constant nor derivable from a static axis")


class ReshapeToOutputDual(SelectionDual):
    """Squeeze/Unsqueeze of per-example axes: a reshape to the node's per-example output shape."""

    def __init__(self, ctx: NodeContext):
        super().__init__(ctx)
        only_data_input(ctx)
        axes = ints(ctx, "axes", 1, 13)
        if axes is None:
            raise ctx.unsupported("Squeeze without axes would also squeeze a batch of one; give axes")
        out_rank = len(ctx.output_shape) + 1
        rank = out_rank if ctx.op_type == "Unsqueeze" else len(ctx.input_shapes[0]) + 1
        for axis in axes:
            axis_of(ctx, axis, rank)
        self.out_shape = tuple(ctx.output_shape)

    def linear(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.out_shape)


def squeeze_dual(ctx: NodeContext) -> AffineDual:
    return ReshapeToOutputDual(ctx)


class ExpandDual(SelectionDual):
    """``Expand`` (broadcast to a constant shape) that keeps the batch axis: copies of the input."""

    def __init__(self, ctx: NodeContext):
        super().__init__(ctx)
        only_data_input(ctx)
        shape = ints(ctx, "shape", 1, 8)
        if shape is None:
            raise ctx.unsupported("the shape must be a constant")
        in_shape = tuple(ctx.input_shapes[0])
        if len(shape) > len(in_shape) + 1 or (len(shape) == len(in_shape) + 1 and shape[0] not in (1, -1)):
            raise ctx.unsupported(f"expanding to {shape} moves or broadcasts the batch axis")
        self.out_shape = tuple(ctx.output_shape)

    def linear(self, x: Tensor) -> Tensor:
        return x.expand(x.shape[0], *self.out_shape)


def expand_dual(ctx: NodeContext) -> AffineDual:
    return ExpandDual(ctx)


class TileDual(SelectionDual):
    """``Tile`` with constant repeats (1 on the batch axis)."""

    def __init__(self, ctx: NodeContext):
        super().__init__(ctx)
        only_data_input(ctx)
        repeats = ints(ctx, "repeats", 1, 6)
        if repeats is None or len(repeats) != len(ctx.input_shapes[0]) + 1 or repeats[0] != 1:
            raise ctx.unsupported(f"repeats {repeats} must be constant, one per axis, 1 on the batch axis")
        self.repeats = repeats

    def linear(self, x: Tensor) -> Tensor:
        return x.repeat(*self.repeats)


def tile_dual(ctx: NodeContext) -> AffineDual:
    return TileDual(ctx)


class DepthToSpaceDual(SelectionDual):
    """DepthToSpace (``DCR`` or ``CRD`` mode, opset 11) and SpaceToDepth: the reshape-transpose-reshape of
    the ONNX definition."""

    def __init__(self, ctx: NodeContext):
        super().__init__(ctx)
        only_data_input(ctx)
        if len(ctx.input_shapes[0]) != 3:
            raise ctx.unsupported("the input must be (N, C, H, W)")
        self.b = int(ctx.attributes["blocksize"])
        mode = ctx.attributes.get("mode", "DCR")
        self.mode = mode.decode() if isinstance(mode, bytes) else mode
        self.to_space = ctx.op_type == "DepthToSpace"

    def linear(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        b = self.b
        if not self.to_space:
            t = x.reshape(n, c, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4)
            return t.reshape(n, c * b * b, h // b, w // b)
        if self.mode == "CRD":
            t = x.reshape(n, c // (b * b), b, b, h, w).permute(0, 1, 4, 2, 5, 3)
        else:
            t = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
        return t.reshape(n, c // (b * b), h * b, w * b)


def depth_to_space_dual(ctx: NodeContext) -> AffineDual:
    return DepthToSpaceDual(ctx)
