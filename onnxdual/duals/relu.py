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

from onnxdual.duals.base import ElementwiseActivation, NodeContext, SlopeRule, chord_slope


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


def relu_dual(ctx: NodeContext) -> ReluDual:
    return ReluDual(ctx)
