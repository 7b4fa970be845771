"""S-shaped activations (Sigmoid, Tanh) for onnxdual.

Same-slope parallelogram relaxation: the slope is the chord over ``[l, u]``; the offsets are the extremes of
``g(x) = sigma(x) - slope * x`` on ``[l, u]``, which a smooth ``g`` attains at an end point or where
``sigma'(x) = slope``. Both functions have closed-form inverses of their derivative, so the offsets are exact.

Separate faces (the tighter relaxations) use the same fact: *every* slope gives a sound lower face
``a x + min g_a`` and upper face ``a x + max g_a``, so the faces are :class:`onnxdual.SlopeFaces` whose slopes
the engine may optimise. The adaptive start is the tangent at the midpoint where the function is convex
(lower face, ``u <= 0``) or concave (upper face, ``l >= 0``), where a tangent lies below / above the curve,
and the chord otherwise.
"""

from __future__ import annotations

import torch
from torch import Tensor

from onnxdual import ActivationDual, NodeContext, Relaxation, SlopeFaces


def _clamp(x: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
    return torch.minimum(torch.maximum(x, lower), upper)


class SShapedDual(ActivationDual):
    def __init__(self, ctx: NodeContext, fn, stationary_points, derivative):
        super().__init__(ctx)
        self.fn, self.stationary_points, self.derivative = fn, stationary_points, derivative

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def relax(self, lower: Tensor, upper: Tensor) -> Relaxation:
        f_lower, f_upper = self.fn(lower), self.fn(upper)
        width = upper - lower
        slope = torch.where(width > 0, (f_upper - f_lower) / torch.where(width > 0, width, 1.0), 0.0)
        candidates = [lower, upper] + [_clamp(p, lower, upper) for p in self.stationary_points(slope)]
        gaps = torch.stack([self.fn(c) - slope * c for c in candidates])
        return Relaxation(slope, gaps.min(0).values, gaps.max(0).values)

    def gaps(self, slope: Tensor, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        """Exact extremes of ``sigma(x) - slope x`` on ``[lower, upper]``: at a stationary point or an end
        (stationary points first: on ties the optimiser then gets the derivative that holds inside).
        The points carry no gradient: where ``g_a' = 0`` the extreme's derivative in ``a`` is ``-x*`` whatever
        the point's own derivative (envelope theorem), and the inverse derivatives have infinite slopes at
        the ends of their range."""
        points = self.stationary_points(slope.detach())
        candidates = [_clamp(p, lower, upper) for p in points] + [lower, upper]
        gaps = torch.stack([self.fn(c) - slope * c for c in candidates])
        return gaps.min(0).values, gaps.max(0).values

    def faces(self, lower: Tensor, upper: Tensor) -> SlopeFaces:
        chord = self.relax(lower, upper).slope
        tangent = self.derivative((lower + upper) / 2)
        lower_slope = torch.where(upper <= 0, tangent, chord)  # convex part: a tangent lies below
        upper_slope = torch.where(lower >= 0, tangent, chord)  # concave part: a tangent lies above
        ends = torch.stack([self.derivative(lower), self.derivative(upper)])
        steepest = torch.where((lower < 0) & (upper > 0), self.derivative(torch.zeros_like(lower)),
                               ends.max(0).values)
        return SlopeFaces(self.gaps, lower, upper, lower_slope, upper_slope,
                          slope_range=(ends.min(0).values, steepest))

    def interval(self, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        return self.fn(lower), self.fn(upper)  # increasing


def _sigmoid_points(slope: Tensor) -> list[Tensor]:
    # sigmoid' = s(1-s) = slope  ->  s = (1 +/- sqrt(1 - 4 slope)) / 2
    root = torch.sqrt(torch.clamp(1 - 4 * slope, min=0.0))
    return [torch.logit(torch.clamp((1 + sign * root) / 2, 1e-7, 1 - 1e-7)) for sign in (-1.0, 1.0)]


def _tanh_points(slope: Tensor) -> list[Tensor]:
    # tanh' = 1 - t^2 = slope  ->  t = +/- sqrt(1 - slope)
    t = torch.sqrt(torch.clamp(1 - slope, min=0.0))
    return [torch.atanh(torch.clamp(sign * t, -1 + 1e-7, 1 - 1e-7)) for sign in (-1.0, 1.0)]


def _sigmoid_derivative(x: Tensor) -> Tensor:
    s = torch.sigmoid(x)
    return s * (1 - s)


def _tanh_derivative(x: Tensor) -> Tensor:
    return 1 - torch.tanh(x) ** 2


def sigmoid_dual(ctx: NodeContext) -> SShapedDual:
    return SShapedDual(ctx, torch.sigmoid, _sigmoid_points, _sigmoid_derivative)


def tanh_dual(ctx: NodeContext) -> SShapedDual:
    return SShapedDual(ctx, torch.tanh, _tanh_points, _tanh_derivative)
