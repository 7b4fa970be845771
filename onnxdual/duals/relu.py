"""Dual layer of ReLU (Corollary 2, eq. 10-11; derivation in App. B.3).

With pre-activation bounds ``l <= x <= u`` the paper's relaxation uses ``D = u / (u - l)`` on crossing units,
1 on active units and 0 on dead ones. In same-slope form that is ``D x <= relu(x) <= D x - D l``, whose dual
term is ``-l [nu]_+`` (eq. 10). The slope is a parameter of the layer (``slope_rule``) so tighter choices can
be plugged in without changing the contract; every choice is sound because the offsets are computed for it.

Separate faces (the tighter relaxations): the upper face is the chord (the concave envelope; no other upper
line is tighter everywhere); the lower face ``a x`` is sound for any ``a`` in ``[0, 1]`` (Wong & Kolter 2018,
§3), starting from CROWN's adaptive choice ``a = 1`` if ``u > -l`` else ``0`` and optimised from there.
"""

from __future__ import annotations

import torch
from torch import Tensor

from onnxdual.duals.base import (ElementwiseActivation, ElementwiseFace, Faces, NodeContext, SlopeFaces, SlopeRule,
                                 chord_slope)


def adaptive_lower_slope(lower: Tensor, upper: Tensor, f_lower: Tensor, f_upper: Tensor) -> Tensor:
    """CROWN's lower slope: 1 where ``u > -l`` (the unit is more on than off), else 0; stable units get
    their exact slope (1 when on, 0 when off) from the same rule."""
    return (upper > -lower).to(lower.dtype)


class ReluDual(ElementwiseActivation):
    def __init__(self, ctx: NodeContext, slope_rule: SlopeRule = chord_slope):
        super().__init__(ctx, fn=torch.relu, kinks=(0.0,), slope_rule=slope_rule,
                         lower_rule=adaptive_lower_slope, upper_rule=chord_slope, free=("lower",),
                         slope_range=(0.0, 1.0))

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x)

    def faces(self, lower: Tensor, upper: Tensor) -> "ReluFaces":
        generic = super().faces(lower, upper)
        return ReluFaces(generic.gaps, lower, upper, generic.lower_slope, generic.upper_slope, generic.free,
                         generic.slope_range)

    def _gaps(self, slope: Tensor, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        """The extremes of ``g(x) = relu(x) - a x`` on ``[l, u]`` without stacking the candidates (the
        optimiser calls this every iteration on per-row tensors): ``g`` is convex, so its maximum is at an
        end and its minimum at an end or the kink. Ties resolve as the generic rule's do (kink, then ``l``,
        then ``u``), so values and gradients are the same."""
        kink = torch.minimum(torch.maximum(torch.zeros_like(lower), lower), upper)
        at_kink = torch.relu(kink) - slope * kink
        at_lower = torch.relu(lower) - slope * lower
        at_upper = torch.relu(upper) - slope * upper
        low_end = torch.where(at_lower <= at_upper, at_lower, at_upper)
        high_end = torch.where(at_lower >= at_upper, at_lower, at_upper)
        return (torch.where(at_kink <= low_end, at_kink, low_end),
                torch.where(at_kink >= high_end, at_kink, high_end))


class ReluFaces(SlopeFaces):
    """ReLU's faces with a lower offset that does not depend on the slope: ``relu(x) >= a x`` on the whole
    line for every ``a`` in ``[0, 1]``, so on an unstable unit the lower face's exact offset is 0 for every
    slope of its range, and a stable unit's range is its own slope alone. The slope is clamped into that
    range (the identity, gradient included, on what the optimiser projects; any other value gives the faces
    of the nearest slope of the range, so every ``theta`` is sound) and the offset is the exact one at the
    range, computed once: the same faces and the same gradients as the generic gap rule on the range,
    without its per-row work (the optimiser builds these faces every iteration for every target row)."""

    def faces(self, theta: tuple[Tensor, ...]) -> Faces:
        (a,) = theta
        lo, hi = self.slope_range
        if a.dim() != lo.dim():  # per-row slopes (B, K, *shape), one range per unit
            lo, hi = lo.unsqueeze(1), hi.unsqueeze(1)
        fixed = self.__dict__.setdefault("_fixed", {})
        if "lower" not in fixed:  # at the range's low end: 0 on unstable units, exact on stable ones
            fixed["lower"] = self.gaps(self.slope_range[0], self.lower, self.upper)[0]
            fixed["upper"] = self.gaps(self.upper_slope, self.lower, self.upper)[1]
        return Faces(ElementwiseFace(_ClampInRange.apply(a, lo, hi), fixed["lower"]),
                     ElementwiseFace(self.upper_slope, fixed["upper"]))


class _ClampInRange(torch.autograd.Function):
    """``clamp(a, lo, hi)`` whose gradient in ``a`` is passed through unchanged. The optimiser projects every
    slope into the range before it builds the faces again, where clamp's own gradient is 1 (its mask is
    inclusive): the same gradient without building the two comparisons and the selection in every backward
    pass (per-row slopes are among the largest tensors of an optimised bound). Outside the range, where only
    an unprojected start can be, the value is still clamped (sound) and the step is undone by the projection."""

    @staticmethod
    def forward(ctx, a: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
        return torch.clamp(a, lo, hi)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None, None


def relu_dual(ctx: NodeContext) -> ReluDual:
    return ReluDual(ctx)
