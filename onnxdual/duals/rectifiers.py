"""Dual layers of the rectifier family, built from the ONNX node's attributes and constant inputs.

Piecewise linear (exact offsets at the kinks, :class:`~onnxdual.ElementwiseActivation`): LeakyRelu, PRelu
(its slope is a constant input, per channel or per element), Abs, HardSigmoid. Smooth or piecewise smooth
(the generic :mod:`onnxdual.duals.smooth` helper from value, derivative and convexity pieces): Elu, Selu,
Celu, Softplus, HardSwish and Gelu (opset 20, ``approximate="none"`` or ``"tanh"``).

For the piecewise-linear ones the lower face of a convex function (LeakyRelu with ``alpha <= 1``, Abs) starts
from CROWN's choice (the steeper piece where ``u > -l``), the upper face is the chord (the concave envelope),
and the optimiser moves the free face within the pieces' slopes; every slope is sound because the offsets are
computed for it.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from onnxdual.duals.base import ElementwiseActivation, NodeContext, chord_slope
from onnxdual.duals.smooth import Curve, SmoothDual, smooth_dual

SELU_ALPHA = 1.67326319217681884765625
SELU_GAMMA = 1.05070102214813232421875


def _float(ctx: NodeContext, name: str, default: float) -> float:
    return float(ctx.attributes.get(name, default))


def _one_variable(ctx: NodeContext) -> None:
    if ctx.variable_positions != (0,):
        raise ctx.unsupported("only the first input may depend on the network input")


def _crown(left: float, right: float):
    """CROWN's lower slope of a convex two-piece function with a kink at 0: the right piece's slope where
    ``u > -l``, else the left one's; stable units get their piece's slope."""
    def rule(lower: Tensor, upper: Tensor, f_lower: Tensor, f_upper: Tensor) -> Tensor:
        return torch.where(upper > -lower, torch.full_like(lower, right), torch.full_like(lower, left))
    return rule


def _two_piece(ctx: NodeContext, fn, left: float, right: float) -> ElementwiseActivation:
    """A continuous two-piece linear function with its kink at 0 and slopes ``left``, ``right``."""
    lo, hi = min(left, right), max(left, right)
    if left <= right:  # convex: the chord is the best upper face, the lower one moves
        return ElementwiseActivation(ctx, fn, (0.0,), lower_rule=_crown(left, right), upper_rule=chord_slope,
                                     free=("lower",), slope_range=(lo, hi))
    return ElementwiseActivation(ctx, fn, (0.0,), lower_rule=chord_slope, upper_rule=_crown(left, right),
                                 free=("upper",), slope_range=(lo, hi))


def leaky_relu_dual(ctx: NodeContext) -> ElementwiseActivation:
    _one_variable(ctx)
    alpha = _float(ctx, "alpha", 0.01)
    return _two_piece(ctx, lambda x: torch.where(x >= 0, x, alpha * x), alpha, 1.0)


def abs_dual(ctx: NodeContext) -> ElementwiseActivation:
    _one_variable(ctx)
    return _two_piece(ctx, torch.abs, -1.0, 1.0)


def prelu_dual(ctx: NodeContext) -> ElementwiseActivation:
    """PRelu's slope is input 1, broadcast (numpy-style) to the input's per-example shape."""
    _one_variable(ctx)
    slope = ctx.constant(1)
    if slope is None:
        raise ctx.unsupported("a slope that depends on the network input is not supported")
    shape = ctx.input_shapes[0]
    while slope.dim() > len(shape) and slope.shape[0] == 1:  # a leading batch axis of 1
        slope = slope[0]
    if slope.dim() > len(shape):
        raise ctx.unsupported(f"slope of shape {tuple(slope.shape)} does not broadcast to {tuple(shape)}")
    alpha = slope.detach()
    lo, hi = min(float(alpha.min()), 1.0), max(float(alpha.max()), 1.0)

    def fn(x: Tensor) -> Tensor:
        return torch.where(x >= 0, x, slope.to(x.dtype) * x)

    # per-element slopes: the lower face starts from the chord, both faces move within the pieces' slopes
    return ElementwiseActivation(ctx, fn, (0.0,), slope_range=(lo, hi))


def hard_sigmoid_dual(ctx: NodeContext) -> ElementwiseActivation:
    """``max(0, min(1, alpha x + beta))``: kinks where the line meets 0 and 1."""
    _one_variable(ctx)
    alpha, beta = _float(ctx, "alpha", 0.2), _float(ctx, "beta", 0.5)
    if alpha == 0:
        kinks: tuple[float, ...] = ()
    else:
        kinks = tuple(sorted(((0 - beta) / alpha, (1 - beta) / alpha)))
    return ElementwiseActivation(ctx, lambda x: torch.clamp(alpha * x + beta, 0.0, 1.0), kinks,
                                 slope_range=(min(alpha, 0.0), max(alpha, 0.0)))


# -- smooth ------------------------------------------------------------------------------------------------
def _exponential_linear(scale: float, alpha: float, inner: float) -> Curve:
    """``scale * (x if x > 0 else alpha (exp(x / inner) - 1))``: Elu (scale 1, inner 1), Selu, Celu
    (inner = alpha). The exponential piece has the sign of ``scale * alpha / inner`` as curvature."""
    def fn(x: Tensor) -> Tensor:
        return scale * torch.where(x > 0, x, alpha * torch.expm1(torch.clamp(x, max=0.0) / inner))

    def derivative(x: Tensor) -> Tensor:
        inside = alpha / inner * torch.exp(torch.clamp(x, max=0.0) / inner)
        return scale * torch.where(x > 0, torch.ones_like(x), inside)

    curvature = 0 if alpha == 0 else int(math.copysign(1, scale * alpha / inner))
    kink = int(math.copysign(1, scale - scale * alpha / inner)) if scale != scale * alpha / inner else 0
    # globally convex: the exponential piece convex and f' rising at the kink (concave: both the other way)
    shape = 1 if min(curvature, kink) >= 0 else (-1 if max(curvature, kink) <= 0 else 0)
    return Curve(fn, derivative, breaks=(0.0,), convexity=(curvature, 0), shape=shape)


def elu_dual(ctx: NodeContext) -> SmoothDual:
    return smooth_dual(ctx, _exponential_linear(1.0, _float(ctx, "alpha", 1.0), 1.0))


def selu_dual(ctx: NodeContext) -> SmoothDual:
    gamma, alpha = _float(ctx, "gamma", SELU_GAMMA), _float(ctx, "alpha", SELU_ALPHA)
    return smooth_dual(ctx, _exponential_linear(gamma, alpha, 1.0))


def celu_dual(ctx: NodeContext) -> SmoothDual:
    alpha = _float(ctx, "alpha", 1.0)
    if alpha == 0:
        raise ctx.unsupported("alpha = 0 (a division by zero in the operator's definition)")
    return smooth_dual(ctx, _exponential_linear(1.0, alpha, alpha))


SOFTPLUS = Curve(lambda x: torch.logaddexp(x, torch.zeros_like(x)), torch.sigmoid, shape=1)


def softplus_dual(ctx: NodeContext) -> SmoothDual:
    return smooth_dual(ctx, SOFTPLUS)


def _hard_swish(x: Tensor) -> Tensor:
    return x * torch.clamp(x / 6 + 0.5, 0.0, 1.0)


def _hard_swish_derivative(x: Tensor) -> Tensor:
    return torch.where(x < -3, torch.zeros_like(x), torch.where(x > 3, torch.ones_like(x), x / 3 + 0.5))


#: 0, then x (x + 3) / 6 (convex), then x; both kinks are concave (f' drops from -0.5 to 0 and 1.5 to 1)
HARD_SWISH = Curve(_hard_swish, _hard_swish_derivative, breaks=(-3.0, 3.0), convexity=(0, 1, 0))


def hard_swish_dual(ctx: NodeContext) -> SmoothDual:
    return smooth_dual(ctx, HARD_SWISH)


_SQRT_HALF = math.sqrt(0.5)


def _gelu(x: Tensor) -> Tensor:
    return 0.5 * x * (1 + torch.erf(x * _SQRT_HALF))


def _gelu_derivative(x: Tensor) -> Tensor:
    return 0.5 * (1 + torch.erf(x * _SQRT_HALF)) + x * torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


#: f'' = phi(x) (2 - x^2): concave, convex on [-sqrt 2, sqrt 2], concave
GELU = Curve(_gelu, _gelu_derivative, breaks=(-math.sqrt(2), math.sqrt(2)), convexity=(-1, 1, -1))

_TANH_C = math.sqrt(2 / math.pi)


def _gelu_tanh(x: Tensor) -> Tensor:
    return 0.5 * x * (1 + torch.tanh(_TANH_C * (x + 0.044715 * x ** 3)))


def gelu_tanh_derivative(x: Tensor) -> Tensor:
    t = torch.tanh(_TANH_C * (x + 0.044715 * x ** 3))
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _TANH_C * (1 + 3 * 0.044715 * x * x)


def _inflection(derivative, lo: float, hi: float) -> float:
    """The zero of ``f''`` in ``[lo, hi]`` (``f''(lo) > 0 > f''(hi)``), by bisection in float64 on ``f''``
    from automatic differentiation of ``f'``: located to the last bit, so no piece is misclassified."""
    def second(x: float) -> float:
        with torch.enable_grad():  # layers are built under no_grad
            t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
            return float(torch.autograd.grad(derivative(t), t)[0])

    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if second(mid) > 0 else (lo, mid)
    return (lo + hi) / 2


@functools.lru_cache(maxsize=1)
def gelu_tanh_curve() -> Curve:
    # the tanh approximation has the same shape as Gelu; its inflection points have no closed form, so they
    # are located once in float64 (f'' > 0 between them, < 0 outside)
    right = _inflection(gelu_tanh_derivative, 0.5, 3.0)
    left = -_inflection(lambda x: -gelu_tanh_derivative(-x), 0.5, 3.0)
    return Curve(_gelu_tanh, gelu_tanh_derivative, breaks=(left, right), convexity=(-1, 1, -1))


def gelu_dual(ctx: NodeContext) -> SmoothDual:
    """Gelu-20; ``approximate`` is ``"none"`` (the erf form) or ``"tanh"``."""
    approximate = ctx.attributes.get("approximate", "none")
    approximate = approximate.decode() if isinstance(approximate, bytes) else str(approximate)
    if approximate not in ("none", "tanh"):
        raise ctx.unsupported(f"approximate={approximate!r} (ONNX defines 'none' and 'tanh')")
    return smooth_dual(ctx, GELU if approximate == "none" else gelu_tanh_curve())
