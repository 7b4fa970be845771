"""Interval bounds (IBP) alongside the dual pass: cheap element-wise bounds that only ever tighten.

Every node's value lies in an interval computed from its inputs' intervals: ``A c + b +/- |A| r`` through an
affine layer (:meth:`~onnxdual.duals.base.AffineDual.abs_linear`) and the activation's own output interval
(:meth:`~onnxdual.duals.base.ActivationDual.interval`) from the *tightest* bounds known for its input. The
tighter relaxations intersect each activation's dual bounds with this interval: both hold, so their
intersection does, and it can only tighten the relaxation built on it. A layer that cannot say (``None``)
ends the intervals downstream of it, which costs nothing but tightness.

:func:`interval_bound` is interval bound propagation on its own (IBP, Gowal et al. 2018): a bound of the
margins ``C f(x')`` from these intervals alone, which IBP and CROWN-IBP training use.
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


def interval_bound(built: BuiltDual, input_set: InputSet, c: Tensor) -> Tensor:
    """Interval bound propagation (IBP, Gowal et al. 2018) of ``c . f(x')`` over the input set, for ``c`` of
    shape ``(B, m, *out_shape)``: intervals through every step up to the last activation, then the affine
    tail after it composed with ``c`` and bounded exactly on those intervals (the "elision" of the last
    layer, which costs nothing and is tighter than ``c`` applied to the output's interval). A sound lower
    bound, ``(B, m)``, differentiable in the parameters; cheaper than the dual objective and looser.

    Raises ``ValueError`` when a layer before the last activation cannot give intervals (``abs_linear``
    is ``None``): IBP does not apply to that network."""
    intervals = IntervalPass(built, input_set)
    last = built.last_activation
    for step in built.steps[: last + 1]:
        if isinstance(step.layer, ActivationDual):
            known = intervals.intervals.get(step.variable_inputs[0])
            if known is None:
                raise ValueError(f"interval bounds do not reach activation {step.node.name!r}: a layer "
                                 "before it cannot bound intervals")
            intervals.activation(step, *known)
        else:
            intervals.affine(step)
    batch, m = input_set.center.shape[0], c.shape[1]
    nus: dict[str, Tensor] = {built.graph.output_name: c}
    linear = torch.zeros((batch, m), dtype=c.dtype, device=c.device)
    for step in reversed(built.steps[last + 1:]):  # affine steps only: the last activation is before them
        nu = nus.pop(step.node.name, None)
        if nu is None:
            continue
        offset = step.layer.offset().to(c.dtype).flatten(1)
        linear = linear + (nu.flatten(2) @ offset.unsqueeze(-1).expand(offset.shape[0], -1, 1)).squeeze(-1)
        grads = step.layer.transpose(nu.reshape(nu.shape[0] * m, *nu.shape[2:]))
        for name, g in zip(step.variable_inputs, grads):
            if g is not None:
                g = g.reshape(nu.shape[0], m, *g.shape[1:])
                nus[name] = g if name not in nus else nus[name] + g
    for name, nu in nus.items():  # values at or before the last activation: bounded on their intervals
        if name == built.graph.input_name:
            lin, spread = input_set.dual_parts(nu)  # the set itself (e.g. an l2 ball), not its box
        else:
            known = intervals.intervals.get(name)
            if known is None:
                raise ValueError(f"no interval bounds for value {name!r}")
            lo, hi = (v.to(c.dtype) for v in known)
            flat = nu.flatten(2)
            lin = (flat @ ((lo + hi) / 2).flatten(1).unsqueeze(-1)).squeeze(-1)
            spread = (flat.abs() @ ((hi - lo) / 2).flatten(1).unsqueeze(-1)).squeeze(-1)
        linear = linear + lin - spread
    return linear
