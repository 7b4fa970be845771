"""Dual layers of maxima and minima: ``Max`` / ``Min`` of two tensors (element-wise, numpy broadcasting; one
of them may be constant) and ``ReduceMax`` / ``ReduceMin`` (the extreme over axes).

**Max / Min of two** as a ReLU of the difference: ``max(x, y) = y + relu(x - y)`` and
``min(x, y) = x - relu(x - y)``, with ``d = x - y`` in ``[lx - uy, ux - ly]`` (every value of that interval
is attained on the box, so ReLU's faces on it are as tight as in one variable). ReLU's lower face ``a d``
holds for every ``a`` in ``[0, 1]`` (free for the optimiser; CROWN's choice to start) and its chord above;
where the sign of ``d`` is decided both are exact (``max = x`` or ``max = y``). The paper's relaxation is
the chord slope with the exact extremes of ``relu(d) - s d`` (eq. 11 in ``d``).

**ReduceMax** as a selection (the MaxPool plugin's argument): per output the input ``j*`` with the largest
lower bound; ``x_j* <= max_i x_i <= x_j* + max(0, max_{i != j*} u_i - l_j*)``. Separate faces keep the
selection below and take, per output, the better of ``x_j* + gap`` and the constant ``max_i u_i`` above.
``ReduceMin`` is ``-ReduceMax(-x)``; ``GlobalMaxPool`` is ``ReduceMax`` over the axes after the channels.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from onnxdual.duals.base import ActivationDual, Face, Faces, LinearRelaxation, NodeContext, ParametricFaces
from onnxdual.duals.multi import Bounds, MultiInputActivation, Plane, PlanesFace, PlanesRelaxation, rows


class MaxMinDual(MultiInputActivation):
    """``Max`` / ``Min`` of two operands, at least one of them variable (see the module docstring)."""

    def __init__(self, ctx: NodeContext):
        super().__init__(ctx)
        if len(ctx.inputs) != 2:
            raise ctx.unsupported(f"{ctx.op_type} of {len(ctx.inputs)} inputs (two are supported)")
        self.sign = 1.0 if ctx.op_type == "Max" else -1.0
        self.out_shape = tuple(ctx.output_shape)

    def _operands(self, lowers: Bounds, uppers: Bounds) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``lx, ux, ly, uy`` broadcast to ``(B, *out_shape)``; a constant operand is a degenerate box."""
        lows, highs = iter(lowers), iter(uppers)
        like = lowers[0]
        shape = (like.shape[0], *self.out_shape)
        out = []
        for position in range(2):
            if position in self.ctx.variable_positions:
                out += [next(lows).expand(shape), next(highs).expand(shape)]
            else:
                c = self.ctx.inputs[position].to(like.dtype).expand(shape)
                out += [c, c]
        return tuple(out)

    def _plane(self, ax: Tensor, ay: Tensor, offset: Tensor, lx: Tensor, ly: Tensor) -> Plane:
        """``ax x + ay y + offset`` with a constant operand's term folded into the offset."""
        slopes = []
        for position, (a, c) in enumerate(((ax, lx), (ay, ly))):
            if position in self.ctx.variable_positions:
                slopes.append(a)
            else:
                offset = offset + a * rows(c, a)
        return tuple(slopes), offset

    def _relu(self, lx, ux, ly, uy) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """ReLU of ``d = x - y``: the interval of ``d``, the chord's slope and offset."""
        dl, du = lx - uy, ux - ly
        crossing = (dl < 0) & (du > 0)
        safe = torch.where(crossing, du - dl, torch.ones_like(du))
        chord = torch.where(dl >= 0, torch.ones_like(du), torch.where(crossing, du / safe, torch.zeros_like(du)))
        return dl, du, chord, torch.where(crossing, -chord * dl, torch.zeros_like(du))

    def faces_from(self, bounds: tuple[Tensor, ...], a: Tensor) -> Faces:
        """The faces for ReLU lower slope ``a`` (``(B, *out)`` or per row ``(B, K, *out)``)."""
        lx, ux, ly, uy = bounds
        _, _, chord, chord_offset = (rows(t, a) for t in self._relu(lx, ux, ly, uy))
        zero = torch.zeros_like(a)
        if self.sign > 0:  # y + relu(d): below y + a d, above y + chord (d - dl)
            lower = self._plane(a, 1 - a, zero, lx, ly)
            upper = self._plane(chord + zero, 1 - chord, chord_offset + zero, lx, ly)
        else:  # x - relu(d): below x - chord (d - dl), above x - a d
            lower = self._plane(1 - chord + zero, chord + zero, -chord_offset + zero, lx, ly)
            upper = self._plane(1 - a, a, zero, lx, ly)
        return Faces(PlanesFace(*lower, self.packing), PlanesFace(*upper, self.packing))

    def faces_inputs(self, lowers: Bounds, uppers: Bounds) -> ParametricFaces:
        return _MaxMinFaces(self, self._operands(lowers, uppers))

    def relax_inputs(self, lowers: Bounds, uppers: Bounds) -> PlanesRelaxation:
        lx, ux, ly, uy = self._operands(lowers, uppers)
        dl, du, chord, _ = self._relu(lx, ux, ly, uy)
        kink = torch.minimum(torch.maximum(torch.zeros_like(dl), dl), du)
        gaps = torch.stack([torch.relu(d) - chord * d for d in (kink, dl, du)])
        g_lo, g_hi = gaps.min(0).values, gaps.max(0).values
        if self.sign > 0:
            slopes, offset = self._plane(chord, 1 - chord, torch.zeros_like(chord), lx, ly)
            low, high = offset + g_lo, offset + g_hi
        else:
            slopes, offset = self._plane(1 - chord, chord, torch.zeros_like(chord), lx, ly)
            low, high = offset - g_hi, offset - g_lo
        return PlanesRelaxation(self.packing, slopes, low, high)

    def interval_inputs(self, lowers: Bounds, uppers: Bounds) -> tuple[Tensor, Tensor]:
        lx, ux, ly, uy = self._operands(lowers, uppers)
        pick = torch.maximum if self.sign > 0 else torch.minimum
        return pick(lx, ly), pick(ux, uy)


class _MaxMinFaces(ParametricFaces):
    """ReLU's lower slope ``a`` of ``d = x - y`` free in ``[0, 1]`` where ``d``'s sign is undecided."""

    def __init__(self, layer: MaxMinDual, bounds: tuple[Tensor, ...]):
        self.layer, self.bounds = layer, bounds
        dl, du, _, _ = layer._relu(*bounds)
        self.crossing = (dl < 0) & (du > 0)
        self.fixed = (dl >= 0).to(dl.dtype)  # the exact slope where decided
        self.start = torch.where(self.crossing, (du > -dl).to(dl.dtype), self.fixed)

    def initial(self) -> tuple[Tensor, ...]:
        return (self.start,)

    def faces(self, theta: tuple[Tensor, ...]) -> Faces:
        return self.layer.faces_from(self.bounds, theta[0])

    def project(self, theta: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        (a,) = theta
        return (torch.where(rows(self.crossing, a), a.clamp(0.0, 1.0), rows(self.fixed, a)),)


class SelectionRelaxation(LinearRelaxation):
    """``A x`` = for every example and output the input at flat index ``index[b, o]``; ``low``, ``high`` of
    the output's shape."""

    def __init__(self, index: Tensor, in_shape: torch.Size, out_shape: torch.Size, low: Tensor, high: Tensor):
        self.index, self.in_shape, self.out_shape, self.low, self.high = index, in_shape, out_shape, low, high

    def apply(self, x: Tensor) -> Tensor:
        batch, k = self.index.shape[0], x.shape[1]
        flat = x.reshape(x.shape[0], k, math.prod(self.in_shape)).expand(batch, k, -1)
        return flat.gather(2, self.index.unsqueeze(1).expand(batch, k, -1)).reshape(batch, k, *self.out_shape)

    def transpose(self, nu: Tensor) -> Tensor:
        batch, k = self.index.shape[0], nu.shape[1]
        flat = nu.reshape(nu.shape[0], k, -1).expand(batch, k, -1)
        out = nu.new_zeros((batch, k, math.prod(self.in_shape)))
        out.scatter_add_(2, self.index.unsqueeze(1).expand(batch, k, -1), flat)
        return out.reshape(batch, k, *self.in_shape)


class KeptSelectionFace(Face):
    """The selection where ``keep`` is 1 and nothing where it is 0, plus ``offset``."""

    def __init__(self, relaxation: SelectionRelaxation, keep: Tensor, offset: Tensor):
        self.relaxation, self.keep, self.offset = relaxation, keep, offset

    def transpose(self, nu: Tensor) -> Tensor:
        return self.relaxation.transpose(nu * rows(self.keep, nu))

    def offset_term(self, nu: Tensor) -> Tensor:
        return (nu.flatten(2) @ self.offset.flatten(1).unsqueeze(-1)).squeeze(-1)


class ReduceMaxDual(ActivationDual):
    """``ReduceMax`` / ``ReduceMin`` over axes (attribute, or constant input from opset 18), ``keepdims``
    either way."""

    def __init__(self, ctx: NodeContext, axes: tuple[int, ...]):
        super().__init__(ctx)
        self.sign = -1.0 if ctx.op_type == "ReduceMin" else 1.0
        self.in_shape, self.out_shape = ctx.input_shapes[0], ctx.output_shape
        kept = [d for d in range(len(self.in_shape)) if d not in axes]
        self.perm = (*kept, *axes)
        positions = torch.arange(math.prod(self.in_shape)).reshape(self.in_shape).permute(self.perm)
        self.positions = positions.reshape(-1, math.prod(self.in_shape[d] for d in axes))  # (outputs, window)

    def _windows(self, t: Tensor) -> Tensor:
        """``(B, *in_shape)`` -> ``(B, outputs, window)``, as a maximum (a minimum is negated)."""
        t = self.sign * t
        return t.permute(0, *(d + 1 for d in self.perm)).reshape(t.shape[0], *self.positions.shape)

    def _max_relax(self, lower: Tensor, upper: Tensor) -> tuple[SelectionRelaxation, Tensor]:
        """The selection of ``sign * x``'s maximum (low 0, high the gap) and ``max u`` per output."""
        if self.sign < 0:
            lower, upper = upper, lower
        lw, uw = self._windows(lower), self._windows(upper)
        best = lw.argmax(-1, keepdim=True)
        others = uw.scatter(-1, best, -math.inf).amax(-1, keepdim=True) if uw.shape[-1] > 1 else None
        gap = (torch.zeros_like(best, dtype=lw.dtype) if others is None
               else torch.clamp(others - lw.gather(-1, best), min=0.0)).squeeze(-1)
        index = self.positions.to(lower.device).expand(lower.shape[0], -1, -1).gather(-1, best).squeeze(-1)
        shape = (lower.shape[0], *self.out_shape)
        relax = SelectionRelaxation(index, self.in_shape, self.out_shape, torch.zeros(shape, dtype=lw.dtype,
                                    device=lw.device), gap.reshape(shape))
        return relax, uw.amax(-1).reshape(shape)

    def relax(self, lower: Tensor, upper: Tensor) -> SelectionRelaxation:
        relax, _ = self._max_relax(lower, upper)
        if self.sign < 0:  # min x = -max(-x): x_j* - gap <= min <= x_j*
            relax.low, relax.high = -relax.high, relax.low
        return relax

    def faces(self, lower: Tensor, upper: Tensor) -> Faces:
        relax, top = self._max_relax(lower, upper)
        centre = relax.apply((self.sign * (lower + upper) / 2).unsqueeze(1)).squeeze(1)
        keep = (centre + relax.high <= top).to(lower.dtype)  # the selection face is better at the centre
        offset = torch.where(keep.bool(), relax.high, top)
        if self.sign > 0:
            return Faces(KeptSelectionFace(relax, torch.ones_like(keep), relax.low),
                         KeptSelectionFace(relax, keep, offset))
        return Faces(KeptSelectionFace(relax, keep, -offset),
                     KeptSelectionFace(relax, torch.ones_like(keep), relax.low))

    def interval(self, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        a, b = self._windows(lower).amax(-1), self._windows(upper).amax(-1)
        if self.sign < 0:
            a, b = -b, -a
        shape = (lower.shape[0], *self.out_shape)
        return torch.minimum(a, b).reshape(shape), torch.maximum(a, b).reshape(shape)


def max_min_dual(ctx: NodeContext) -> MaxMinDual:
    return MaxMinDual(ctx)


def reduce_max_dual(ctx: NodeContext) -> ReduceMaxDual:
    """``ReduceMax`` / ``ReduceMin`` of one variable input."""
    if ctx.variable_positions != (0,):
        raise ctx.unsupported("the reduced tensor must be the only input that depends on the network input")
    rank = len(ctx.input_shapes[0]) + 1
    axes = ctx.attributes.get("axes")
    if ctx.constant(1) is not None:
        axes = [int(a) for a in ctx.constant(1).flatten().tolist()]
    if not axes:
        if ctx.attributes.get("noop_with_empty_axes", 0):
            raise ctx.unsupported("noop_with_empty_axes with no axes (an identity) is not supported")
        axes = list(range(1, rank))
    axes = sorted({int(a) % rank for a in axes})
    if 0 in axes:
        raise ctx.unsupported("reducing over the batch axis")
    return ReduceMaxDual(ctx, tuple(a - 1 for a in axes))


def global_max_pool_dual(ctx: NodeContext) -> ReduceMaxDual:
    """``GlobalMaxPool``: the maximum over every axis after the channels (the frontend writes it as that
    ``ReduceMax`` before conversion, :func:`onnxdual.frontend.lowering.global_max_pools`)."""
    if ctx.variable_positions != (0,) or len(ctx.input_shapes[0]) < 2:
        raise ctx.unsupported("GlobalMaxPool needs one variable input with channels and spatial axes")
    return ReduceMaxDual(ctx, tuple(range(1, len(ctx.input_shapes[0]))))
