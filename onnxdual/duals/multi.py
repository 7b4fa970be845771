"""The dual-layer contract for non-linear operations of several variable inputs (``x * y``, ``max(x, y)``,
``x @ y`` of two activations, as attention computes them).

A :class:`MultiInputActivation` gives faces that are linear in *all* its inputs,
``sum_i A_i x_i + b_l <= f(x_1..x_n) <= sum_i A'_i x_i + b_u`` on the box of its inputs, and one dual
variable per input comes back (``nu_i = A_i^T [nu]_+ + A'_i^T [nu]_-``). The engine never sees several
inputs: the builder puts a :class:`PackDual` step in front (the variable inputs flattened and concatenated,
an exact affine map), so the activation has one input, the packed vector, whose bounds are the inputs'
bounds side by side. Everything the engine does for one input then applies unchanged and the single-input
path is untouched: forward columns and random projections (the paper's relaxation is one linear map ``A``
of the packed vector plus an interval, Corollary 2's argument with ``A = [A_1 .. A_n]``), separate and
optimised faces, interval bounds, split limits. The pack's transpose (Corollary 1) splits the packed dual
variable back into one ``nu`` per input, which is exactly ``Faces.backward`` returning one nu per input.

A subclass writes its math per input through the ``*_inputs`` methods; this module translates between the
packed vector and the inputs.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from onnxdual.duals.base import (ActivationDual, AffineDual, ElementwiseFace, Faces, LinearRelaxation, NodeContext,
                                 ParametricFaces)

Bounds = tuple[Tensor, ...]


class Packing:
    """Flattened variable inputs side by side: ``(..., *shape_1), (..., *shape_2)`` <-> ``(..., n_1 + n_2)``."""

    def __init__(self, shapes: tuple[torch.Size, ...]):
        self.shapes = tuple(torch.Size(s) for s in shapes)
        self.sizes = tuple(math.prod(s) for s in self.shapes)
        self.size = sum(self.sizes)

    def pack(self, parts: tuple[Tensor, ...], lead: int) -> Tensor:
        """``lead`` leading dimensions (batch, or batch and rows) kept; each part flattened after them."""
        return torch.cat([p.reshape(*p.shape[:lead], n) for p, n in zip(parts, self.sizes)], lead)

    def unpack(self, packed: Tensor, lead: int) -> tuple[Tensor, ...]:
        chunks = torch.split(packed.reshape(*packed.shape[:lead], self.size), self.sizes, dim=lead)
        return tuple(c.reshape(*packed.shape[:lead], *s) for c, s in zip(chunks, self.shapes))


class PackDual(AffineDual):
    """The builder's step in front of a :class:`MultiInputActivation`: ``z = [flat(x_1), .., flat(x_n)]``.
    Exact (a permutation of coordinates); its transpose splits ``nu`` back into one part per input."""

    def __init__(self, ctx: NodeContext, packing: Packing):
        super().__init__(ctx)
        self.packing = packing

    def forward(self, *xs: Tensor) -> Tensor:
        return self.packing.pack(xs, 1)

    def linear(self, *xs: Tensor | None) -> Tensor:
        like = next(x for x in xs if x is not None)
        parts = tuple(like.new_zeros((like.shape[0], *s)) if x is None else x
                      for x, s in zip(xs, self.packing.shapes))
        return self.packing.pack(parts, 1)

    def abs_linear(self, *radii: Tensor) -> Tensor:
        return self.linear(*radii)

    def offset(self) -> Tensor:
        return torch.zeros((1, self.packing.size), dtype=self._dtype(), device=self._device())

    def transpose(self, nu: Tensor) -> tuple[Tensor, ...]:
        return self.packing.unpack(nu, 1)


def reduce_to(t: Tensor, shape: torch.Size, lead: int) -> Tensor:
    """Sum ``t`` (``(*lead dims, *out_shape)``) over the dimensions along which an input of per-example
    ``shape`` was broadcast to the output: the adjoint of numpy broadcasting."""
    extra = t.dim() - lead - len(shape)
    if extra > 0:
        t = t.sum(dim=tuple(range(lead, lead + extra)))
    dims = [lead + d for d, n in enumerate(shape) if n == 1 and t.shape[lead + d] != 1]
    return t.sum(dim=dims, keepdim=True) if dims else t


def rows(t: Tensor, like: Tensor) -> Tensor:
    """``t`` shared by every row ``(B, *shape)`` or per row ``(B, K, *shape)``, aligned with ``like``
    (``(B or 1, K, *shape)``)."""
    return t if t.dim() == like.dim() else t.unsqueeze(1)


class MultiInputActivation(ActivationDual):
    """Dual of a non-linear operation of several variable inputs (in the order of their ONNX positions).

    Implement :meth:`relax_inputs` (the paper's relaxation: a :class:`PackedRelaxation`), optionally
    :meth:`faces_inputs` (separate faces: :class:`Faces` of :class:`PlanesFace` s, or :class:`ParametricFaces`
    returning them), :meth:`interval_inputs` and :meth:`needs_bounds_inputs`. Bounds arrive per input,
    ``(B, *shape_i)``."""

    def __init__(self, ctx: NodeContext):
        super().__init__(ctx)
        self.packing = Packing(tuple(ctx.input_shapes[p] for p in ctx.variable_positions))

    def forward(self, *xs: Tensor) -> Tensor:
        """The operation on its inputs, or on the packed vector (one argument)."""
        if len(xs) == 1:
            xs = self.packing.unpack(xs[0], 1)
        return self.ctx.call(*xs)

    @abstractmethod
    def relax_inputs(self, lowers: Bounds, uppers: Bounds) -> LinearRelaxation:
        """A sound enclosure ``A [x_1..x_n] + low <= f <= A [x_1..x_n] + high`` on the inputs' box."""

    def faces_inputs(self, lowers: Bounds, uppers: Bounds) -> Faces | ParametricFaces:
        return Faces.of(self.relax_inputs(lowers, uppers))

    def interval_inputs(self, lowers: Bounds, uppers: Bounds) -> tuple[Tensor, Tensor] | None:
        return None

    def needs_bounds_inputs(self, lowers: Bounds, uppers: Bounds) -> Bounds:
        return tuple(lo < hi for lo, hi in zip(lowers, uppers))

    # the single-input contract the engine uses, on the packed vector
    def relax(self, lower: Tensor, upper: Tensor) -> LinearRelaxation:
        return self.relax_inputs(self.packing.unpack(lower, 1), self.packing.unpack(upper, 1))

    def faces(self, lower: Tensor, upper: Tensor) -> Faces | ParametricFaces:
        return self.faces_inputs(self.packing.unpack(lower, 1), self.packing.unpack(upper, 1))

    def interval(self, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor] | None:
        return self.interval_inputs(self.packing.unpack(lower, 1), self.packing.unpack(upper, 1))

    def needs_bounds(self, lower: Tensor, upper: Tensor) -> Tensor:
        need = self.needs_bounds_inputs(self.packing.unpack(lower, 1), self.packing.unpack(upper, 1))
        return self.packing.pack(need, 1)


class PackedRelaxation(LinearRelaxation):
    """A :class:`LinearRelaxation` of the packed vector written per input: subclasses give
    :meth:`apply_inputs` (``sum_i A_i x_i`` on columns ``(B or 1, K, *shape_i)``) and
    :meth:`transpose_inputs` (one ``A_i^T nu`` per input); ``low``/``high`` have the output's shape."""

    packing: Packing

    @abstractmethod
    def apply_inputs(self, xs: tuple[Tensor, ...]) -> Tensor: ...

    @abstractmethod
    def transpose_inputs(self, nu: Tensor) -> tuple[Tensor, ...]: ...

    def apply(self, x: Tensor) -> Tensor:
        return self.apply_inputs(self.packing.unpack(x, 2))

    def transpose(self, nu: Tensor) -> Tensor:
        return self.packing.pack(self.transpose_inputs(nu), 2)


class PlanesRelaxation(PackedRelaxation):
    """``sum_i slope_i * broadcast(x_i) + [low, high]`` element-wise on the output (binary ops with numpy
    broadcasting: ``x * y``, ``max(x, y)``); each slope has the output's shape ``(B, *out_shape)``."""

    def __init__(self, packing: Packing, slopes: tuple[Tensor, ...], low: Tensor, high: Tensor):
        self.packing, self.slopes, self.low, self.high = packing, slopes, low, high

    def apply_inputs(self, xs: tuple[Tensor, ...]) -> Tensor:
        return sum(a.unsqueeze(1) * x for a, x in zip(self.slopes, xs))

    def transpose_inputs(self, nu: Tensor) -> tuple[Tensor, ...]:
        return tuple(reduce_to(nu * a.unsqueeze(1), s, 2) for a, s in zip(self.slopes, self.packing.shapes))


@dataclass(frozen=True)
class PlanesFace(ElementwiseFace):
    """One face ``sum_i slope_i * broadcast(x_i) + offset`` of an element-wise operation of several inputs:
    ``slope`` is a tuple, one tensor per input, each ``(B, *out_shape)`` or per row ``(B, K, *out_shape)``
    (optimised parameters); ``offset`` likewise. Its transpose is the packed ``nu`` of all inputs."""

    packing: Packing = None

    def transpose(self, nu: Tensor) -> Tensor:
        parts = tuple(reduce_to(nu * rows(a, nu), s, 2) for a, s in zip(self.slope, self.packing.shapes))
        return self.packing.pack(parts, 2)


Plane = tuple[tuple[Tensor, ...], Tensor]  # (one slope per input, offset), each of the output's shape


def parallelogram(packing: Packing, lower: Plane, upper: Plane, lowers: Bounds, uppers: Bounds) -> PlanesRelaxation:
    """The paper's relaxation (one map for both sides) from a lower and an upper plane of an element-wise
    operation: the map is their mean ``A``, and ``low`` / ``high`` are the exact extremes over the box of
    ``lower - A x`` / ``upper - A x`` (linear, so at a vertex); ``lowers`` / ``uppers`` are the inputs'
    bounds broadcast to the output's shape. Where both planes have the same slopes this is exact."""
    slopes = tuple((a + b) / 2 for a, b in zip(lower[0], upper[0]))
    low, high = lower[1], upper[1]
    for a_l, a_u, a, lo, hi in zip(lower[0], upper[0], slopes, lowers, uppers):
        d_l, d_u = a_l - a, a_u - a
        low = low + torch.minimum(d_l * lo, d_l * hi)
        high = high + torch.maximum(d_u * lo, d_u * hi)
    return PlanesRelaxation(packing, slopes, low, torch.maximum(high, low))
