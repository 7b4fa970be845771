"""High-probability upper bounds of norms from random projections (App. E).

A projected column ``x_j = sum_i nu_i R_ij`` with i.i.d. standard Cauchy ``R`` is ``||nu||_1`` times a
standard Cauchy variable (1-stability); with standard normal ``R`` it is ``||nu||_2`` times a standard normal.
The median estimator used for training (eq. 12) is right only about half of the time. For certificates
we need *upper* bounds that fail with a known, small probability:

* l1, geometric estimator (App. E.2, after Li et al., 2007): with ``k`` columns,
  ``P(prod_j |x_j|^(1/k) <= (1 - eps) ||nu||_1) <= exp(-k h1(eps))``, where, with
  ``t = (2/pi) log(1 - eps)``, ``h1(eps) = t atan(t) - log(1 + t^2) / 2``. This is the Chernoff bound of
  ``sum_j log|C_j|`` (``E|C|^-lambda = 1 / cos(pi lambda / 2)``, optimised at ``tan(pi lambda / 2) = -t``);
  it is eq. 55 of the paper with ``G_{L,gm}`` written out.
* l2, root mean square: ``P(mean_j x_j^2 <= (1 - eps) ||nu||_2^2) <= exp(-k h2(eps))`` with
  ``h2(eps) = -(eps + log(1 - eps)) / 2`` (Chernoff bound of the chi-square lower tail).

So ``||nu||_1 <= geo / (1 - eps)`` and ``||nu||_2 <= sqrt(mean / (1 - eps))`` fail with probability at most
``exp(-k h(eps))`` each. Taking the maximum of ``m`` independent such estimates (App. E.4) fails only if all
``m`` fail: probability ``exp(-k h(eps))^m``. With ``N`` estimates behind one certificate, each is given the
failure probability ``delta / N`` and the union bound makes the whole certificate fail with probability at
most ``delta`` (App. E.3, E.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def l1_exponent(eps: float) -> float:
    """``h1(eps)``: ``-log`` of the lower-tail probability of the geometric estimator, per column."""
    t = (2.0 / math.pi) * math.log1p(-eps)
    return t * math.atan(t) - 0.5 * math.log1p(t * t)


def l2_exponent(eps: float) -> float:
    """``h2(eps)``: ``-log`` of the lower-tail probability of the mean of squared normals, per column."""
    return -0.5 * (eps + math.log1p(-eps))


def smallest_eps(exponent, target: float) -> float:
    """The smallest ``eps`` in ``(0, 1)`` with ``exponent(eps) >= target`` (bisection, rounded up).
    ``exponent`` increases from 0 at ``eps = 0`` to infinity as ``eps -> 1``."""
    if target <= 0:
        return 0.0
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if exponent(mid) >= target:
            hi = mid
        else:
            lo = mid
    if hi >= 1.0 or not exponent(hi) >= target:
        raise ValueError("no estimate this tight is possible: use more projections")
    return hi


@dataclass(frozen=True)
class TailBound:
    """How projected norms become high-probability upper bounds: ``m`` groups of ``k`` columns, and the
    factors that turn a group's geometric mean (l1) or mean square (l2) into an upper bound that fails with
    probability at most ``failure ** (1 / m)`` (so the maximum over the groups fails with ``failure``)."""

    k: int
    m: int
    failure: float  # per estimate, after the maximum over the m groups
    l1_factor: float  # ||nu||_1 <= l1_factor * geometric mean of |x_j|
    l2_factor: float  # ||nu||_2 <= l2_factor * sqrt(mean of x_j^2)

    @property
    def columns(self) -> int:
        return self.k * self.m

    @classmethod
    def for_failure(cls, failure: float, k: int, m: int) -> TailBound:
        """Factors for estimates that each fail with probability at most ``failure``."""
        if not 0 < failure < 1:
            raise ValueError(f"the failure probability must lie in (0, 1), got {failure}")
        if k < 1 or m < 1:
            raise ValueError("k and m must be positive")
        target = math.log(1.0 / failure) / (m * k)  # per group and column: exp(-k h)^m <= failure
        eps1 = smallest_eps(l1_exponent, target)
        eps2 = smallest_eps(l2_exponent, target)
        return cls(k, m, failure, 1.0 / (1.0 - eps1), math.sqrt(1.0 / (1.0 - eps2)))
