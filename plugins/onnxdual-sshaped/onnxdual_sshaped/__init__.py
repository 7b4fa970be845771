"""S-shaped activations (Sigmoid, Tanh) for onnxdual.

Same-slope parallelogram relaxation: the slope is the chord over ``[l, u]``; the offsets are the extremes of
``g(x) = sigma(x) - slope * x`` on ``[l, u]``, which a smooth ``g`` attains at an end point or where
``sigma'(x) = slope``. Both functions have closed-form inverses of their derivative, so the offsets are exact.
"""

from __future__ import annotations

import torch
from torch import Tensor

from onnxdual import ActivationDual, NodeContext, Relaxation


def _clamp(x: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
    return torch.minimum(torch.maximum(x, lower), upper)


class SShapedDual(ActivationDual):
    def __init__(self, ctx: NodeContext, fn, stationary_points):
        super().__init__(ctx)
        self.fn, self.stationary_points = fn, stationary_points

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def relax(self, lower: Tensor, upper: Tensor) -> Relaxation:
        f_lower, f_upper = self.fn(lower), self.fn(upper)
        width = upper - lower
        slope = torch.where(width > 0, (f_upper - f_lower) / torch.where(width > 0, width, 1.0), 0.0)
        candidates = [lower, upper] + [_clamp(p, lower, upper) for p in self.stationary_points(slope)]
        gaps = torch.stack([self.fn(c) - slope * c for c in candidates])
        return Relaxation(slope, gaps.min(0).values, gaps.max(0).values)


def _sigmoid_points(slope: Tensor) -> list[Tensor]:
    # sigmoid' = s(1-s) = slope  ->  s = (1 +/- sqrt(1 - 4 slope)) / 2
    root = torch.sqrt(torch.clamp(1 - 4 * slope, min=0.0))
    return [torch.logit(torch.clamp((1 + sign * root) / 2, 1e-7, 1 - 1e-7)) for sign in (-1.0, 1.0)]


def _tanh_points(slope: Tensor) -> list[Tensor]:
    # tanh' = 1 - t^2 = slope  ->  t = +/- sqrt(1 - slope)
    t = torch.sqrt(torch.clamp(1 - slope, min=0.0))
    return [torch.atanh(torch.clamp(sign * t, -1 + 1e-7, 1 - 1e-7)) for sign in (-1.0, 1.0)]


def sigmoid_dual(ctx: NodeContext) -> SShapedDual:
    return SShapedDual(ctx, torch.sigmoid, _sigmoid_points)


def tanh_dual(ctx: NodeContext) -> SShapedDual:
    return SShapedDual(ctx, torch.tanh, _tanh_points)
