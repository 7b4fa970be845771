"""Dual layers of products of two values that both depend on the network input: ``Mul`` and ``Div`` of two
tensors (gating, squeeze-excitation, normalisation by a computed sum) and ``MatMul`` of two tensors (attention:
``Q K^T`` and ``softmax(.) V``). Products with a constant stay the affine layers of ``arithmetic`` / ``linear``.

**Mul** (McCormick 1976). On the box ``lx <= x <= ux``, ``ly <= y <= uy`` the four planes

    ly x + lx y - lx ly  <=  x y  >=  uy x + ux y - ux uy        (lower: (x - lx)(y - ly) >= 0, ...)
    uy x + lx y - lx uy  >=  x y  <=  ly x + ux y - ux ly        (upper)

hold, and so does every convex combination of the two lower (upper) planes: the optimised relaxation moves
the weights ``alpha``, ``beta`` in ``[0, 1]`` per element and row; the adaptive choice is ``1/2``, whose two
faces have the same slopes ``(yc, xc)`` and offsets ``-xc yc -/+ rx ry``: the paper's parallelogram, exact
at the box's vertices.

**Div** ``x / y`` with ``0`` outside ``[ly, uy]``: ``x w`` with ``w = 1 / y`` in ``[1/uy, 1/ly]`` through the
McCormick planes of ``(x, w)``; each plane's ``w`` term is replaced by a linear face of ``1 / y`` in ``y``
(convex for ``y > 0``: a tangent below, the chord above; concave for ``y < 0``), the lower one where the
term's coefficient is positive and the upper one where it is negative, so every plane stays sound. A divisor
whose bounds contain 0 has no finite bound: :class:`~onnxdual.errors.UnsupportedNodeError`.

**MatMul** ``z = x @ y``: each entry is a sum of products ``x_ip y_pj`` over independent boxes, so the sum
of their midpoint planes, ``x @ yc + xc @ y - xc @ yc -/+ rx @ ry``, is exact at the vertices per entry.
"""

from __future__ import annotations

import torch
from torch import Tensor

from onnxdual.duals import linear
from onnxdual.duals.base import AffineDual, Face, Faces, NodeContext, ParametricFaces
from onnxdual.duals.multi import (Bounds, MultiInputActivation, Packing, PackedRelaxation, Plane, PlanesFace,
                                  parallelogram, reduce_to, rows)
from onnxdual.errors import UnboundedRelaxationError


class ElementwiseBinary(MultiInputActivation):
    """Base of element-wise operations of two variable inputs with numpy broadcasting."""

    def __init__(self, ctx: NodeContext):
        super().__init__(ctx)
        if len(ctx.variable_positions) != 2:
            raise ctx.unsupported(f"{ctx.op_type} needs two inputs that depend on the network input here")
        self.out_shape = tuple(ctx.output_shape)

    def broadcast(self, bounds: Bounds) -> Bounds:
        return tuple(t.expand(t.shape[0], *self.out_shape) if tuple(t.shape[1:]) != self.out_shape
                     else t for t in bounds)

    def planes_face(self, plane: Plane) -> PlanesFace:
        return PlanesFace(plane[0], plane[1], self.packing)


def mccormick(lx: Tensor, ux: Tensor, ly: Tensor, uy: Tensor, alpha: Tensor, beta: Tensor) -> tuple[Plane, Plane]:
    """The lower plane ``alpha``-combining ``(ly, lx)`` and ``(uy, ux)`` and the upper plane ``beta``-combining
    ``(uy, lx)`` and ``(ly, ux)``; bounds are aligned with the weights (``rows``)."""
    lx, ux, ly, uy = (rows(t, alpha) for t in (lx, ux, ly, uy))
    lower = ((alpha * ly + (1 - alpha) * uy, alpha * lx + (1 - alpha) * ux),
             -(alpha * lx * ly + (1 - alpha) * ux * uy))
    upper = ((beta * uy + (1 - beta) * ly, beta * lx + (1 - beta) * ux),
             -(beta * lx * uy + (1 - beta) * ux * ly))
    return lower, upper


class McCormickFaces(ParametricFaces):
    """Faces of ``x * y`` with the convex-combination weights ``(alpha, beta)`` free in ``[0, 1]``."""

    def __init__(self, layer: "MulDual", lowers: Bounds, uppers: Bounds):
        self.layer, self.bounds = layer, (lowers[0], uppers[0], lowers[1], uppers[1])

    def initial(self) -> tuple[Tensor, ...]:
        half = torch.full_like(self.bounds[0], 0.5)
        return half, half.clone()

    def faces(self, theta: tuple[Tensor, ...]) -> Faces:
        lower, upper = mccormick(*self.bounds, *theta)
        return Faces(self.layer.planes_face(lower), self.layer.planes_face(upper))

    def project(self, theta: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return tuple(t.clamp(0.0, 1.0) for t in theta)


class MulDual(ElementwiseBinary):
    """``x * y`` of two variable tensors (McCormick planes, see the module docstring)."""

    def relax_inputs(self, lowers: Bounds, uppers: Bounds):
        lx, ly = self.broadcast(lowers)
        ux, uy = self.broadcast(uppers)
        half = torch.full_like(lx, 0.5)
        return parallelogram(self.packing, *mccormick(lx, ux, ly, uy, half, half), (lx, ly), (ux, uy))

    def faces_inputs(self, lowers: Bounds, uppers: Bounds) -> Faces | McCormickFaces:
        lx, ly = self.broadcast(lowers)
        ux, uy = self.broadcast(uppers)
        if lx[0].numel() > 2 * self.packing.size:  # an outer-product broadcast: weights would outgrow the
            return Faces.of(self.relax_inputs(lowers, uppers))  # optimiser's budget (sized by the input)
        return McCormickFaces(self, (lx, ly), (ux, uy))

    def interval_inputs(self, lowers: Bounds, uppers: Bounds) -> tuple[Tensor, Tensor]:
        lx, ly = self.broadcast(lowers)
        ux, uy = self.broadcast(uppers)
        corners = torch.stack([lx * ly, lx * uy, ux * ly, ux * uy])
        return corners.min(0).values, corners.max(0).values


def reciprocal_planes(ly: Tensor, uy: Tensor) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Lower and upper linear faces ``(slope, offset)`` of ``1 / y`` on ``[ly, uy]`` not containing 0: the
    tangent parallel to the chord (at ``+/- sqrt(ly uy)``) and the chord; which is below depends on the sign."""
    chord = -1.0 / (ly * uy)
    chord_offset = 1.0 / ly + 1.0 / uy
    t = torch.sign(ly) * torch.sqrt(ly * uy)
    tangent_offset = 2.0 / t  # the tangent at t: 1/t - (y - t)/t^2, with slope -1/t^2 = chord
    positive = ly > 0
    low = torch.where(positive, tangent_offset, chord_offset)
    high = torch.where(positive, chord_offset, tangent_offset)
    return (chord, low), (chord, high)


class DivDual(ElementwiseBinary):
    """``x / y`` of two variable tensors, the divisor bounded away from 0 (see the module docstring)."""

    def _planes(self, lowers: Bounds, uppers: Bounds) -> tuple[Plane, Plane]:
        lx, ly = self.broadcast(lowers)
        ux, uy = self.broadcast(uppers)
        if bool(((ly <= 0) & (uy >= 0)).any()):
            raise self.ctx.unsupported("the divisor's bounds contain 0, so the quotient has no finite bound",
                                      UnboundedRelaxationError)
        (w_slope, w_low), (_, w_high) = reciprocal_planes(ly, uy)
        half = torch.full_like(lx, 0.5)
        (lower, lower_c), (upper, upper_c) = mccormick(lx, ux, 1.0 / uy, 1.0 / ly, half, half)
        planes = []
        for (a_x, a_w), c, sign in ((lower, lower_c, 1.0), (upper, upper_c, -1.0)):
            # a_w * w >= a_w * (w's lower face) where sign * a_w >= 0, else its upper face
            offset = torch.where(sign * a_w >= 0, w_low, w_high)
            planes.append(((a_x, a_w * w_slope), c + a_w * offset))
        return planes[0], planes[1]

    def relax_inputs(self, lowers: Bounds, uppers: Bounds):
        return parallelogram(self.packing, *self._planes(lowers, uppers), self.broadcast(lowers),
                             self.broadcast(uppers))

    def faces_inputs(self, lowers: Bounds, uppers: Bounds) -> Faces:
        lower, upper = self._planes(lowers, uppers)
        return Faces(self.planes_face(lower), self.planes_face(upper))

    def interval_inputs(self, lowers: Bounds, uppers: Bounds) -> tuple[Tensor, Tensor]:
        lx, ly = self.broadcast(lowers)
        ux, uy = self.broadcast(uppers)
        corners = torch.stack([lx / ly, lx / uy, ux / ly, ux / uy])
        return corners.min(0).values, corners.max(0).values


class MatMulRelaxation(PackedRelaxation):
    """``x @ yc + xc @ y`` plus ``-xc @ yc -/+ rx @ ry`` (one map for both sides)."""

    def __init__(self, layer: "BilinearMatMulDual", xc: Tensor, yc: Tensor, low: Tensor, high: Tensor):
        self.packing, self.xc, self.yc, self.low, self.high = layer.packing, xc, yc, low, high

    def apply_inputs(self, xs: tuple[Tensor, ...]) -> Tensor:
        x, y = xs
        return rows_times(x, self.yc, True) + rows_times(y, self.xc, False)

    def transpose_inputs(self, nu: Tensor) -> tuple[Tensor, ...]:
        sx, sy = self.packing.shapes
        return (reduce_to(rows_times(nu, self.yc.transpose(-1, -2), True), sx, 2),
                reduce_to(rows_times(nu, self.xc.transpose(-1, -2), False), sy, 2))


def rows_times(rows: Tensor, matrix: Tensor, right: bool) -> Tensor:
    """``rows @ matrix`` (``right``) or ``matrix @ rows`` for dual rows ``(B or 1, K, *lead, a, b)`` and one
    matrix per example ``(B, *lead, ., .)``: with equal leading dimensions the ``K`` rows are folded into one
    GEMM per example and leading index (instead of ``K`` small products); otherwise plain broadcasting."""
    if tuple(rows.shape[2:-2]) != tuple(matrix.shape[1:-2]):
        return rows @ matrix.unsqueeze(1) if right else matrix.unsqueeze(1) @ rows
    batch = max(rows.shape[0], matrix.shape[0])
    rows = rows.expand(batch, *rows.shape[1:])
    k, (a, b) = rows.shape[1], rows.shape[-2:]
    if right:  # (B, *lead, K a, b) @ (B, *lead, b, c)
        out = rows.movedim(1, -3).reshape(batch, *rows.shape[2:-2], k * a, b) @ matrix
        return out.reshape(batch, *rows.shape[2:-2], k, a, -1).movedim(-3, 1)
    out = matrix @ rows.movedim(1, -2).reshape(batch, *rows.shape[2:-2], a, k * b)  # (B, *lead, c, K b)
    return out.reshape(batch, *rows.shape[2:-2], -1, k, b).movedim(-2, 1)


class BilinearMatMulDual(MultiInputActivation):
    """``x @ y`` of two variable tensors of at least two dimensions each (see the module docstring)."""

    def __init__(self, ctx: NodeContext):
        super().__init__(ctx)
        if any(len(s) < 2 for s in self.packing.shapes):
            raise ctx.unsupported("MatMul of two variable inputs needs at least two dimensions on each side")

    def relax_inputs(self, lowers: Bounds, uppers: Bounds) -> MatMulRelaxation:
        (lx, ly), (ux, uy) = lowers, uppers
        xc, yc, rx, ry = (lx + ux) / 2, (ly + uy) / 2, (ux - lx) / 2, (uy - ly) / 2
        base, spread = -(xc @ yc), rx @ ry
        return MatMulRelaxation(self, xc, yc, base - spread, base + spread)

    def faces_inputs(self, lowers: Bounds, uppers: Bounds) -> Faces | ParametricFaces:
        (lx, ly), (ux, uy) = lowers, uppers
        products = lx.shape[-2] * lx.shape[-1] * ly.shape[-1] * max(lx[0, ..., 0, 0].numel(), 1)
        # the optimiser sizes its per-row parameters by the activation's input (the packed x and y): weights
        # per product are kept to twice that, else (and for broadcast leading dimensions) the faces are fixed
        if (products > min(PARAMETRIC_PRODUCTS, 2 * self.packing.size)
                or lx.shape[1:-2] != ly.shape[1:-2]):
            return Faces.of(self.relax_inputs(lowers, uppers))
        return MatMulFaces(self, lowers, uppers)

    def interval_inputs(self, lowers: Bounds, uppers: Bounds) -> tuple[Tensor, Tensor]:
        (lx, ly), (ux, uy) = lowers, uppers
        xc, yc, rx, ry = (lx + ux) / 2, (ly + uy) / 2, (ux - lx) / 2, (uy - ly) / 2
        center, radius = xc @ yc, xc.abs() @ ry + rx @ yc.abs() + rx @ ry
        return center - radius, center + radius


#: the most products ``x_ip y_pj`` per example whose McCormick weights the optimiser moves (per dual row;
#: also at most twice the packed input, see ``faces_inputs``)
PARAMETRIC_PRODUCTS = 20_000


class MatMulPlanes(Face):
    """``z_ij`` against ``sum_p ax_ipj x_ip + ay_ipj y_pj + c_ipj``: one McCormick plane per product; the
    tensors are ``(B, *lead, n, k, m)`` or per row ``(B, K, *lead, n, k, m)``."""

    def __init__(self, packing: Packing, ax: Tensor, ay: Tensor, c: Tensor):
        self.packing, self.ax, self.ay, self.c = packing, ax, ay, c

    def _aligned(self, t: Tensor, nu: Tensor) -> Tensor:
        return t if t.dim() == nu.dim() + 1 else t.unsqueeze(1)

    def transpose(self, nu: Tensor) -> Tensor:
        sx, sy = self.packing.shapes
        wide = nu.unsqueeze(-2)  # (.., n, 1, m)
        nu_x = (wide * self._aligned(self.ax, nu)).sum(-1)
        nu_y = (wide * self._aligned(self.ay, nu)).sum(-3)
        return self.packing.pack((reduce_to(nu_x, sx, 2), reduce_to(nu_y, sy, 2)), 2)

    def offset_term(self, nu: Tensor) -> Tensor:
        return (nu * self._aligned(self.c, nu).sum(-2)).flatten(2).sum(-1)


class MatMulFaces(ParametricFaces):
    """Faces of ``x @ y`` with one pair of McCormick weights ``(alpha, beta)`` in ``[0, 1]`` per product (as
    for ``Mul``); the adaptive choice ``1/2`` is the relaxation's own map (the same faces, one GEMM)."""

    def __init__(self, layer: "BilinearMatMulDual", lowers: Bounds, uppers: Bounds):
        self.layer, self.lowers, self.uppers = layer, lowers, uppers
        (lx, ly), (ux, uy) = lowers, uppers
        self.bounds = (lx.unsqueeze(-1), ux.unsqueeze(-1), ly.unsqueeze(-3), uy.unsqueeze(-3))  # (.., n, k, m)
        half = torch.full(torch.broadcast_shapes(self.bounds[0].shape, self.bounds[2].shape), 0.5,
                          dtype=lx.dtype, device=lx.device)
        self.start = (half, half.clone())

    def initial(self) -> tuple[Tensor, ...]:
        return self.start

    def faces(self, theta: tuple[Tensor, ...]) -> Faces:
        if theta is self.start:
            return Faces.of(self.layer.relax_inputs(self.lowers, self.uppers))
        lower, upper = mccormick(*self.bounds, *theta)
        packing = self.layer.packing
        return Faces(MatMulPlanes(packing, *lower[0], lower[1]), MatMulPlanes(packing, *upper[0], upper[1]))

    def project(self, theta: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return tuple(t.clamp(0.0, 1.0) for t in theta)


def product_dual(ctx: NodeContext) -> MultiInputActivation:
    """``Mul`` / ``Div`` of two variable inputs."""
    return MulDual(ctx) if ctx.op_type == "Mul" else DivDual(ctx)


def matmul_dual(ctx: NodeContext) -> AffineDual | MultiInputActivation:
    """``MatMul``: affine with a constant operand (:mod:`onnxdual.duals.linear`), bilinear with two variable ones."""
    return BilinearMatMulDual(ctx) if len(ctx.variable_positions) == 2 else linear.matmul_dual(ctx)
