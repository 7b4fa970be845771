"""Dual layer of ReLU (Corollary 2, eq. 10-11; derivation in App. B.3).

With pre-activation bounds ``l <= x <= u`` the paper's relaxation uses ``D = u / (u - l)`` on crossing units,
1 on active units and 0 on dead ones. In same-slope form that is ``D x <= relu(x) <= D x - D l``, whose dual
term is ``-l [nu]_+`` (eq. 10). The slope is a parameter of the layer (``slope_rule``) so tighter choices can
be plugged in without changing the contract; every choice is sound because the offsets are computed for it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from onnxdual.duals.base import ElementwiseActivation, NodeContext, SlopeRule, chord_slope


class ReluDual(ElementwiseActivation):
    def __init__(self, ctx: NodeContext, slope_rule: SlopeRule = chord_slope):
        super().__init__(ctx, fn=torch.relu, kinks=(0.0,), slope_rule=slope_rule)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x)


def relu_dual(ctx: NodeContext) -> ReluDual:
    return ReluDual(ctx)
