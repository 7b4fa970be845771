"""Dual layers of the elementary functions, each a :class:`~onnxdual.duals.smooth.Curve` (value, derivative,
convexity pieces) for the generic helper: Exp, Log, Reciprocal, Sqrt, Pow with a constant exponent (or a
constant positive base), Erf, Softsign, Sin and Cos.

Log, Sqrt, Reciprocal, negative and fractional powers are defined on part of the line only: the curve
declares its domain and poles and the layer refuses input bounds that reach outside (see
:mod:`onnxdual.duals.smooth`)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from onnxdual.duals.base import NodeContext
from onnxdual.duals.smooth import Curve, SmoothDual, smooth_dual

EXP = Curve(torch.exp, torch.exp, shape=1)
LOG = Curve(torch.log, torch.reciprocal, convexity=(-1,), domain=(0.0, math.inf), poles=(0.0,), shape=-1)
RECIPROCAL = Curve(torch.reciprocal, lambda x: -torch.reciprocal(x * x), breaks=(0.0,), convexity=(-1, 1),
                   poles=(0.0,))
SQRT = Curve(torch.sqrt, lambda x: 0.5 / torch.sqrt(x), convexity=(-1,), domain=(0.0, math.inf), shape=-1)
ERF = Curve(torch.erf, lambda x: 2 / math.sqrt(math.pi) * torch.exp(-x * x), breaks=(0.0,), convexity=(1, -1))
SOFTSIGN = Curve(lambda x: x / (1 + x.abs()), lambda x: (1 + x.abs()) ** -2, breaks=(0.0,), convexity=(1, -1))
SIN = Curve(torch.sin, torch.cos, breaks=(0.0, math.pi), convexity=(-1, 1), period=2 * math.pi,
            value_range=(-1.0, 1.0))
COS = Curve(torch.cos, lambda x: -torch.sin(x), breaks=(math.pi / 2, 3 * math.pi / 2), convexity=(1, -1),
            period=2 * math.pi, value_range=(-1.0, 1.0))


def _factory(curve: Curve):
    """The registered factory of a fixed curve (one variable input)."""
    def factory(ctx: NodeContext) -> SmoothDual:
        return smooth_dual(ctx, curve)
    return factory


exp_dual, log_dual, reciprocal_dual, sqrt_dual = (_factory(c) for c in (EXP, LOG, RECIPROCAL, SQRT))
erf_dual, softsign_dual, sin_dual, cos_dual = (_factory(c) for c in (ERF, SOFTSIGN, SIN, COS))


def power_curve(p: float) -> Curve:
    """``x ** p`` for a constant ``p``: its convexity pieces, domain and poles (integer powers are defined on
    the whole line but 0 for ``p < 0``; fractional ones on ``x >= 0``, without 0 for ``p < 0``)."""
    def fn(x: Tensor) -> Tensor:
        return torch.pow(x, p)

    def derivative(x: Tensor) -> Tensor:
        return p * torch.pow(x, p - 1) if p != 0 else torch.zeros_like(x)

    if p in (0.0, 1.0):
        return Curve(fn, derivative, convexity=(0,))
    if float(p).is_integer():
        poles = (0.0,) if p < 0 else ()
        if int(p) % 2 == 0:  # even: convex on each side (on the whole line for p > 0)
            return Curve(fn, derivative, breaks=(0.0,), convexity=(1, 1), poles=poles, shape=1)
        return Curve(fn, derivative, breaks=(0.0,), convexity=(-1, 1), poles=poles)  # odd: x^3, 1/x
    shape = 1 if (p > 1 or p < 0) else -1
    return Curve(fn, derivative, convexity=(shape,), domain=(0.0, math.inf), poles=(0.0,) if p < 0 else (),
                 shape=shape)


def _scalar(ctx: NodeContext, value: Tensor, what: str) -> float:
    flat = value.detach().reshape(-1).double()
    if flat.numel() == 0 or not bool((flat == flat[0]).all()):
        raise ctx.unsupported(f"a {what} that varies between elements is not supported (only one constant)")
    return float(flat[0])


def pow_dual(ctx: NodeContext) -> SmoothDual:
    """``x ** p`` with a constant exponent, or ``c ** x = exp(x ln c)`` with a constant base ``c > 0``."""
    if ctx.variable_positions == (0,):
        return smooth_dual(ctx, power_curve(_scalar(ctx, ctx.constant(1), "exponent")))
    if ctx.variable_positions == (1,):
        base = _scalar(ctx, ctx.constant(0), "base")
        if not base > 0:
            raise ctx.unsupported(f"a variable exponent needs a positive constant base (got {base:g})")
        log_base = math.log(base)
        curve = Curve(lambda x: torch.pow(base, x), lambda x: log_base * torch.pow(base, x),
                      convexity=(1 if base != 1 else 0,), shape=1 if base != 1 else 0)
        return SmoothDual(ctx, curve)
    raise ctx.unsupported("a power of two values that depend on the network input is not supported")
