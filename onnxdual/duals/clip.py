"""Dual layer of Clip (and HardTanh, which exporters write as Clip(-1, 1)); App. B.4.

Clip is piecewise linear with kinks at its bounds. The relaxation uses the chord slope over ``[l, u]`` --
the slopes of cases B.4.2-B.4.6, and for B.4.1 the chord between the two lines the paper offers -- with the
tightest offsets for that slope, computed at the kinks inside the interval."""

from __future__ import annotations

import torch
from torch import Tensor

from onnxdual.duals.base import ElementwiseActivation, NodeContext


def _limit(value) -> float | None:
    if value is None:
        return None
    return float(torch.as_tensor(value).reshape(-1)[0])


def clip_dual(ctx: NodeContext) -> ElementwiseActivation:
    module = ctx.module
    if isinstance(module, torch.nn.ReLU6):
        low, high = 0.0, 6.0
    elif isinstance(module, torch.nn.ReLU):
        low, high = 0.0, None
    elif isinstance(module, torch.nn.Hardtanh):
        low, high = module.min_val, module.max_val
    elif isinstance(module, torch.nn.Identity):
        low, high = None, None
    else:
        low, high = _limit(getattr(module, "min_val", None)), _limit(getattr(module, "max_val", None))
        if len(ctx.inputs) > 1 and ctx.inputs[1] is not None:
            low = _limit(ctx.inputs[1])
        if len(ctx.inputs) > 2 and ctx.inputs[2] is not None:
            high = _limit(ctx.inputs[2])
    if len(ctx.variable_positions) != 1 or ctx.variable_positions[0] != 0:
        raise ctx.unsupported("Clip limits that depend on the network input are not supported")

    def clip(x: Tensor) -> Tensor:
        return torch.clamp(x, low, high)

    return ElementwiseActivation(ctx, fn=clip, kinks=[k for k in (low, high) if k is not None])
