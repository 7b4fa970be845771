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
    """Limits from the ONNX node: attributes ``min``/``max`` before Clip-11, optional inputs 1, 2 after."""
    version = ctx.since_version or ctx.opset
    if version and version < 11:
        low, high = _limit(ctx.attributes.get("min")), _limit(ctx.attributes.get("max"))
    else:
        low, high = _limit(ctx.constant(1)), _limit(ctx.constant(2))
    if ctx.variable_positions != (0,):
        raise ctx.unsupported("Clip limits that depend on the network input are not supported")

    def clip(x: Tensor) -> Tensor:
        return x if low is None and high is None else torch.clamp(x, low, high)

    # both faces may move: any slope in [0, 1] between the pieces' slopes is useful, every slope is sound
    return ElementwiseActivation(ctx, fn=clip, kinks=[k for k in (low, high) if k is not None],
                                 slope_range=(0.0, 1.0))
