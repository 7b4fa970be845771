"""The generic element-wise non-linearity: sound linear faces of any continuous function of one variable,
derived from its value, its derivative and where it is convex or concave.

A :class:`Curve` says, for ``f``, the points where its convexity changes or its derivative jumps
(``breaks``) and the sign of ``f''`` on each piece between them (``+1`` convex, ``-1`` concave, ``0``
linear); periodic functions (Sin, Cos) give one period of that pattern. That is all the math a new
function needs: :class:`SmoothDual` turns it into the dual layer of every relaxation.

Why it is sound by construction. For *any* slope ``a`` the faces ``a x + min g_a <= f(x) <= a x + max g_a``
with ``g_a = f - a x`` on ``[l, u]`` enclose ``f`` (the same argument as :class:`~onnxdual.SlopeFaces`), so
only the extremes of ``g_a`` must be right, and they are computed piece by piece. On a piece where ``f`` is
convex, ``g_a`` is convex: its maximum is at an end (exact), and its minimum lies in a bracket ``[lo, hi]``
found by bisection on the sign of ``g_a' = f' - a`` (monotone there); the bracket is never trusted to be
tight: the bound used is the tangent bound ``g_a(m) - |g_a'(m)| (hi - lo) / 2`` at its midpoint ``m``,
which a convex function cannot undercut on the bracket, and outside the bracket ``g_a`` only grows. Concave
pieces are the mirror image; linear pieces have both extremes at their ends. So every slope the optimiser may
choose gets true offsets, and the paper's parallelogram (the chord slope) and the separate faces (tangent
starts where ``f`` is convex or concave on ``[l, u]``, both slopes free within ``f'``'s range on
``[l, u]``) come from the same rule. A periodic function on an interval longer than the pieces listed falls
back to its global range, ``min f - max(a l, a u) <= g_a``, which is sound for every ``x``.

Functions defined on part of the line (Log, Sqrt, Reciprocal, fractional powers) declare their ``domain``
and ``poles``; bounds that reach outside it cannot be enclosed by any finite face, so the layer refuses
them with one clear :class:`~onnxdual.errors.UnboundedRelaxationError` rather than return a non-bound. The
same holds for bounds on which ``f`` overflows the floating-point type (Exp of 100 in float32).

As everywhere in onnxdual, bounds are computed in the working floating-point type without directed
rounding; the faces hold up to that rounding (the tests allow a few units in the last place).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from onnxdual.duals.base import ActivationDual, NodeContext, Relaxation, SlopeFaces, chord_slope
from onnxdual.errors import UnboundedRelaxationError

Fn = Callable[[Tensor], Tensor]

#: bisection steps per floating-point type: the bracket shrinks to ~2^-steps of its piece, below which
#: the type cannot resolve it anyway
_STEPS = {torch.float16: 12, torch.bfloat16: 10, torch.float32: 26, torch.float64: 50}


@dataclass(frozen=True)
class Curve:
    """A continuous ``f`` of one variable by its convexity pieces.

    Attributes:
        fn: ``f`` element-wise (broadcasting; it must not produce NaN gradients where it is finite).
        derivative: ``f'`` element-wise (either one-sided value at a kink).
        breaks: increasing points where ``f''`` changes sign or ``f'`` jumps; with ``period``, the ones in
            one period ``[breaks[0], breaks[0] + period)``.
        convexity: the sign of ``f''`` on each piece: ``len(breaks) + 1`` entries from ``-inf`` to ``+inf``;
            with ``period``, ``len(breaks)`` entries, entry ``i`` on ``[breaks[i], breaks[i + 1]]`` (cyclic).
        period: ``f`` repeats every ``period`` (its breaks and convexity do).
        value_range: global bounds of ``f`` (needed with ``period``: the fallback on long intervals).
        domain: the closed interval on which ``f`` is defined and finite.
        poles: points where ``f`` is undefined; a box ``[l, u]`` must not contain one.
        shape: ``+1`` if ``f`` is convex on its whole domain, ``-1`` if concave, ``0`` otherwise (decides
            which face the optimiser may move: the chord is already the best face on the other side).
    """

    fn: Fn
    derivative: Fn
    breaks: Sequence[float] = ()
    convexity: Sequence[int] = (1,)
    period: float | None = None
    value_range: tuple[float, float] | None = None
    domain: tuple[float, float] = (-math.inf, math.inf)
    poles: Sequence[float] = ()
    shape: int = 0

    def __post_init__(self):
        expected = len(self.breaks) if self.period else len(self.breaks) + 1
        if len(self.convexity) != expected:
            raise ValueError(f"a curve with {len(self.breaks)} breaks needs {expected} convexity signs")
        if self.period and self.value_range is None:
            raise ValueError("a periodic curve needs its value_range")


def _clamp(x: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
    return torch.minimum(torch.maximum(x, lower), upper)


#: pieces listed per periodic interval: ``[l, u]`` up to about two periods long is enclosed exactly
_PERIODIC_PIECES = 6


def _pieces(curve: Curve, lower: Tensor, upper: Tensor) -> tuple[list[tuple[Tensor, Tensor, int]], Tensor]:
    """The convexity pieces of ``curve`` clamped into ``[lower, upper]`` (pieces outside it collapse to an
    end point, which is harmless: its value is attained), and where they cover the whole interval."""
    if not curve.period:
        points = [-math.inf, *curve.breaks, math.inf]
        pieces = [(_clamp(torch.full_like(lower, points[k]), lower, upper),
                   _clamp(torch.full_like(lower, points[k + 1]), lower, upper), int(curve.convexity[k]))
                   for k in range(len(points) - 1)]
        return pieces, torch.ones_like(lower, dtype=torch.bool)
    n, period, first = len(curve.breaks), float(curve.period), float(curve.breaks[0])
    base = torch.floor((lower.detach() - first) / period) * period  # the period whose first break is <= l
    starts = [base + (float(curve.breaks[k % n]) + (k // n) * period) for k in range(_PERIODIC_PIECES + 1)]
    pieces = [(_clamp(starts[k], lower, upper), _clamp(starts[k + 1], lower, upper),
               int(curve.convexity[k % n])) for k in range(_PERIODIC_PIECES)]
    return pieces, upper <= starts[-1]


def _convex_minimum(curve: Curve, sign: int, slope: Tensor, p: Tensor, q: Tensor) -> Tensor:
    """A sound lower bound of the minimum of ``h = sign * (f - slope x)`` on ``[p, q]``, where ``h`` is
    convex.

    Bisection on the sign of ``h'`` keeps the minimiser in ``[lo, hi]`` (``h' < 0`` at ``lo`` unless it is
    ``p``, ``h' >= 0`` at ``hi`` unless it is ``q``; outside the bracket ``h`` only grows). On the bracket the
    tangent at its midpoint ``m`` lies below ``h`` (convexity), so ``h(m) - |h'(m)| (hi - lo) / 2`` is a
    bound whatever the bisection's accuracy. The bracket is kept as fractions of ``[p, q]`` (no gradient):
    the bound then follows ``p``, ``q`` and ``slope`` with the derivatives of the extreme (envelope theorem),
    which the optimiser uses."""
    width = q - p
    with torch.no_grad():
        w = width.detach()
        t_lo, t_hi = torch.zeros_like(w), torch.ones_like(w)
        for _ in range(_STEPS.get(w.dtype, 50)):
            t_mid = (t_lo + t_hi) / 2
            right = sign * (curve.derivative(p.detach() + t_mid * w) - slope.detach()) < 0
            t_lo, t_hi = torch.where(right, t_mid, t_lo), torch.where(right, t_hi, t_mid)
        t_mid = (t_lo + t_hi) / 2
        slack = (curve.derivative(p.detach() + t_mid * w) - slope.detach()).abs() * ((t_hi - t_lo) * w / 2)
        slack = torch.where((t_hi - t_lo) * w > 0, slack, torch.zeros_like(slack))
    m = p + t_mid * width
    return sign * (curve.fn(m) - slope * m) - slack


def curve_gaps(curve: Curve, slope: Tensor, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """``(min g, max g)`` of ``g = f - slope x`` over ``[lower, upper]`` element-wise, sound for every slope
    (tensors broadcast: ``(B, *shape)`` bounds with ``(B, K, *shape)`` per-row slopes)."""
    slope, lower, upper = torch.broadcast_tensors(slope, lower, upper)
    pieces, covered = _pieces(curve, lower, upper)
    lows, highs = [], []
    for p, q, sign in pieces:
        g_p, g_q = curve.fn(p) - slope * p, curve.fn(q) - slope * q
        low, high = torch.minimum(g_p, g_q), torch.maximum(g_p, g_q)
        if sign > 0:
            low = torch.minimum(low, _convex_minimum(curve, 1, slope, p, q))
        elif sign < 0:
            high = torch.maximum(high, -_convex_minimum(curve, -1, slope, p, q))
        lows.append(low)
        highs.append(high)
    low, high = torch.stack(lows).min(0).values, torch.stack(highs).max(0).values
    if curve.period:  # long intervals: the global range, sound for every x
        f_min, f_max = curve.value_range
        ends = torch.stack([slope * lower, slope * upper])
        low = torch.where(covered, low, f_min - ends.max(0).values)
        high = torch.where(covered, high, f_max - ends.min(0).values)
    return low, high


def derivative_range(curve: Curve, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """The smallest and largest ``f'`` on ``[lower, upper]``: ``f'`` is monotone on each convexity piece, so
    its extremes are at the piece ends (it clips the optimiser; soundness never depends on it)."""
    pieces, covered = _pieces(curve, lower, upper)
    values = torch.stack([curve.derivative(x) for p, q, _ in pieces for x in (p, q)])
    low, high = values.min(0).values, values.max(0).values
    if curve.period:
        every = torch.stack([curve.derivative(p) for p, _, _ in pieces])  # a long interval: every slope
        low = torch.where(covered, low, torch.minimum(low, every.min(0).values))
        high = torch.where(covered, high, torch.maximum(high, every.max(0).values))
    return low, high


def unbounded(ctx: NodeContext | None, why: str) -> UnboundedRelaxationError:
    """The error for input bounds on which a node (or, without ``ctx``, a function) has no finite bound."""
    return ctx.unsupported(why, UnboundedRelaxationError) if ctx is not None else UnboundedRelaxationError(why)


class SmoothDual(ActivationDual):
    """The dual layer of a :class:`Curve`: the paper's parallelogram (chord slope, exact offsets), separate
    faces whose slopes the optimiser moves (any slope is sound), interval bounds, and which units need
    tighter bounds (those not inside one linear piece)."""

    def __init__(self, ctx: NodeContext | None, curve: Curve, name: str | None = None):
        super().__init__(ctx)
        self.curve = curve
        self.name = name or (ctx.op_type if ctx is not None else "the function")

    def forward(self, x: Tensor) -> Tensor:
        return self.ctx.call(x) if self.ctx is not None else self.curve.fn(x)

    # -- checks -------------------------------------------------------------------------------------------
    def _check(self, lower: Tensor, upper: Tensor) -> None:
        lo, hi = self.curve.domain
        bad = (lower < lo) | (upper > hi)
        for pole in self.curve.poles:
            bad |= (lower <= pole) & (pole <= upper)
        if bool(bad.any()):
            where = tuple(bad.nonzero()[0].tolist())
            poles = (" without " + ", ".join(f"{p:g}" for p in self.curve.poles)) if self.curve.poles else ""
            box = f"[{float(lower[where]):.6g}, {float(upper[where]):.6g}]"
            raise unbounded(self.ctx, f"{self.name} is not finite on the input bounds {box} (defined on "
                          f"[{lo:g}, {hi:g}]{poles}); no finite linear bound encloses it there")
        ends = torch.stack([self.curve.fn(lower.detach()), self.curve.fn(upper.detach())])
        if not bool(torch.isfinite(ends).all()):
            dtype = str(lower.dtype).removeprefix("torch.")
            raise unbounded(self.ctx, f"{self.name} overflows {dtype} on the input bounds; no finite linear "
                          "bound encloses it there")

    # -- the contract ----------------------------------------------------------------------------------------
    def gaps(self, slope: Tensor, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        return curve_gaps(self.curve, slope, lower, upper)

    def _chord(self, lower: Tensor, upper: Tensor) -> Tensor:
        """The chord slope, clipped into ``f'``'s range (the mean value theorem puts it there; rounding on
        very narrow intervals may not)."""
        chord = chord_slope(lower, upper, self.curve.fn(lower), self.curve.fn(upper))
        d_low, d_high = derivative_range(self.curve, lower, upper)
        return _clamp(chord, d_low, d_high)

    def relax(self, lower: Tensor, upper: Tensor) -> Relaxation:
        self._check(lower, upper)
        slope = self._chord(lower, upper).detach()
        low, high = self.gaps(slope, lower, upper)
        return Relaxation(slope, low, high)

    def _piece_shape(self, lower: Tensor, upper: Tensor) -> Tensor:
        """Per unit: the convexity of ``f`` on all of ``[l, u]`` (``+1``, ``-1``; ``0``: mixed or unknown)."""
        if self.curve.shape:
            return torch.full_like(lower, float(self.curve.shape))
        shape = torch.zeros_like(lower)
        pieces, covered = _pieces(self.curve, lower, upper)
        for p, q, sign in pieces:  # [l, u] inside one piece: that piece's convexity
            inside = (p <= lower) & (q >= upper) & (lower < upper)
            shape = torch.where(inside, torch.full_like(lower, float(sign)), shape)
        return torch.where(covered, shape, torch.zeros_like(shape))

    def faces(self, lower: Tensor, upper: Tensor) -> SlopeFaces:
        self._check(lower, upper)
        lower_d, upper_d = lower.detach(), upper.detach()
        chord = self._chord(lower_d, upper_d)
        d_low, d_high = derivative_range(self.curve, lower_d, upper_d)
        tangent = _clamp(self.curve.derivative((lower_d + upper_d) / 2), d_low, d_high)
        shape = self._piece_shape(lower_d, upper_d)
        lower_slope = torch.where(shape > 0, tangent, chord)  # convex: a tangent lies below
        upper_slope = torch.where(shape < 0, tangent, chord)  # concave: a tangent lies above
        free = {1: ("lower",), -1: ("upper",)}.get(self.curve.shape, ("lower", "upper"))
        return SlopeFaces(self.gaps, lower, upper, lower_slope, upper_slope, free=free,
                          slope_range=(d_low, d_high))

    def interval(self, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        self._check(lower, upper)
        return self.gaps(torch.zeros_like(lower), lower, upper)

    def needs_bounds(self, lower: Tensor, upper: Tensor) -> Tensor:
        linear = torch.zeros_like(lower, dtype=torch.bool)
        pieces, covered = _pieces(self.curve, lower, upper)
        for p, q, sign in pieces:
            if sign == 0:
                linear |= (p <= lower) & (q >= upper)
        return (lower < upper) & ~(linear & covered)


def smooth_dual(ctx: NodeContext | None, curve: Curve) -> SmoothDual:
    """The dual layer of ``curve`` for the node ``ctx`` (one variable input)."""
    if ctx is not None and ctx.variable_positions != (0,):
        raise ctx.unsupported("only the first input may depend on the network input")
    return SmoothDual(ctx, curve)
