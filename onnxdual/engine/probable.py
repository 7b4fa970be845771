"""Intermediate bounds that hold with high probability (App. E): the AutoDual pass for certificates of
networks too large for exact bounds.

Each activation's pre-activation bounds are computed by one of two routes:

* **estimated**: fresh random columns (``k * m`` per source: Cauchy for the box and the relaxation gaps,
  normal for an l2 ball) are pushed forward from the input to this activation, through the relaxations
  already fixed, and every unit's norm is replaced by a high-probability *upper* bound
  (:mod:`onnxdual.engine.tail_bounds`). Drawing fresh columns for every activation keeps each estimate's
  columns independent of the relaxations they are pushed through (those depend only on earlier draws), so
  each tail bound holds conditionally on the past and the union bound over all estimates applies;
* **exact**: when the layer has few units compared with the columns, the dual network is run backwards
  from its units (Theorem 1 with ``c = +/- e_j``), as in the exact pass: no estimate, no failure probability.

If every norm bound holds, every pre-activation bound is a true bound (it can only be looser than the
exact one), every relaxation is valid, and the objective ``J`` -- computed exactly from these relaxations
by the dual network -- is a true lower bound. The failure probability is spread over the number ``N`` of
estimates (an upper bound of it is fixed before any draw: units of each estimated layer times the sources
that can reach it), so the certificate of each example fails with probability at most ``delta``
(App. E.3-E.5). The probability is over the random draws only; arithmetic is treated as real, as in the
exact pass.
"""

from __future__ import annotations

import math

import torch

from onnxdual.duals.base import ActivationDual, LinearRelaxation
from onnxdual.engine.autodual import PassResult, backward_bounds, backward_rows, forward_pass
from onnxdual.engine.cost import turns_backward
from onnxdual.engine.build import BuiltDual
from onnxdual.engine.input_sets import InputSet
from onnxdual.engine.tail_bounds import TailBound


def plan(built: BuiltDual, columns: int) -> tuple[list[bool], int]:
    """For every activation (in order) whether its bounds are estimated (``True``) or exact, and the number
    ``N`` of norm estimates behind one certificate (an upper bound: every earlier activation is counted as
    a source, whether or not its gap is non-zero or reaches this layer)."""
    estimated, count, earlier = [], 0, 0
    for step in built.steps[: built.last_activation + 1]:
        if not isinstance(step.layer, ActivationDual):
            continue
        units = math.prod(step.input_shapes[0])  # the bounds are needed on the activation's input
        sources = 1 + earlier
        forward = not turns_backward(units, columns * sources)
        estimated.append(forward)
        if forward:
            count += units * sources
        earlier += 1
    return estimated, count


def probable_pass(built: BuiltDual, input_set: InputSet, delta: float, k: int, m: int,
                  generator: torch.Generator | None = None, memory_budget: int = 2 * 1024**3,
                  ) -> tuple[PassResult, int]:
    """Relaxations from intermediate bounds that all hold with probability at least ``1 - delta`` per
    example. Returns the pass and the number ``N`` of estimates the failure probability was split over."""
    estimated, count = plan(built, k * m)
    tail = TailBound.for_failure(delta / count, k, m) if count else None
    relaxations: dict[str, LinearRelaxation] = {}
    bounds: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    offsets: dict[str, torch.Tensor] = {}
    max_rows = backward_rows(built, input_set, memory_budget)
    activations = [i for i, s in enumerate(built.steps[: built.last_activation + 1])
                   if isinstance(s.layer, ActivationDual)]
    for index, forward in zip(activations, estimated):
        step = built.steps[index]
        if forward:  # fresh columns from the input, through the relaxations fixed so far
            lower, upper = forward_pass(built, input_set, tail.columns, generator, fixed=relaxations, tail=tail,
                                        stop_at=step.node.name).preactivation_bounds[step.node.name]
        else:
            lower, upper = backward_bounds(built, input_set, relaxations, step.variable_inputs[0],
                                           step.input_shapes[0], max_rows, offsets)
        bounds[step.node.name] = (lower, upper)
        relaxations[step.node.name] = step.layer.relax(lower, upper)
    return PassResult(relaxations, bounds, True), count
