"""Interval bounds (IBP) alongside the dual pass: cheap element-wise bounds that only ever tighten.

Every node's value lies in an interval computed from its inputs' intervals: ``A c + b +/- |A| r`` through an
affine layer (:meth:`~onnxdual.duals.base.AffineDual.abs_linear`) and the activation's own output interval
(:meth:`~onnxdual.duals.base.ActivationDual.interval`) from the *tightest* bounds known for its input. The
tighter relaxations intersect each activation's dual bounds with this interval: both hold, so their
intersection does, and it can only tighten the relaxation built on it. A layer that cannot say (``None``)
ends the intervals downstream of it, which costs nothing but tightness.
"""

from __future__ import annotations

import torch
from torch import Tensor

from onnxdual.duals.base import ActivationDual, AffineDual
from onnxdual.engine.build import BuiltDual, DualStep
from onnxdual.engine.input_sets import InputSet

Interval = tuple[Tensor, Tensor]


class IntervalPass:
    """Interval bounds of the values of one pass, advanced step by step by the pass that owns them."""

    def __init__(self, built: BuiltDual, input_set: InputSet):
        self.intervals: dict[str, Interval | None] = {built.graph.input_name: input_set.interval()}

    def affine(self, step: DualStep) -> None:
        """The interval of an affine step's output from its inputs' intervals."""
        layer = step.layer
        ins = [self.intervals.get(name) for name in step.variable_inputs]
        result = None
        if isinstance(layer, AffineDual) and all(i is not None for i in ins):
            centers = [(lo + hi) / 2 for lo, hi in ins]
            radii = [(hi - lo) / 2 for lo, hi in ins]
            spread = layer.abs_linear(*radii)
            if spread is not None:
                center = layer.forward(*centers)
                result = (center - spread, center + spread)
        self.intervals[step.node.name] = result

    def tighten(self, step: DualStep, lower: Tensor, upper: Tensor) -> Interval:
        """An activation's input bounds intersected with its input's interval."""
        known = self.intervals.get(step.variable_inputs[0])
        if known is None:
            return lower, upper
        lo, hi = (v.to(lower.dtype) for v in known)
        lower, upper = torch.maximum(lower, lo), torch.minimum(upper, hi)
        return lower, torch.maximum(upper, lower)  # rounding can cross them only by ulps

    def limits(self, step: DualStep, like: Tensor, split: tuple[Tensor, Tensor] | None) -> Interval:
        """The constant limits of an activation's input: its interval and its split limits, intersected
        (``+/- inf`` where nothing is known)."""
        known = self.intervals.get(step.variable_inputs[0])
        lo, hi = (known if known is not None
                  else (torch.full_like(like, -torch.inf), torch.full_like(like, torch.inf)))
        lo, hi = lo.to(like.dtype), hi.to(like.dtype)
        if split is not None:
            lo = torch.maximum(lo, split[0].to(like.device, like.dtype))
            hi = torch.minimum(hi, split[1].to(like.device, like.dtype))
        return lo, hi

    def activation(self, step: DualStep, lower: Tensor, upper: Tensor) -> None:
        """The interval of an activation's output from its (tightest) input bounds."""
        layer = step.layer
        self.intervals[step.node.name] = layer.interval(lower, upper) if isinstance(layer, ActivationDual) else None
