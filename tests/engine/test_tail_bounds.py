"""onnxdual.engine.tail_bounds: the tail exponents equal their Chernoff bounds (computed here numerically,
independently of the closed forms), the solved eps is the smallest that reaches the target, and the
resulting upper bounds of l1 / l2 norms fail no more often than promised on simulated projections."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from onnxdual.engine.tail_bounds import TailBound, l1_exponent, l2_exponent, smallest_eps


def chernoff_l1(eps: float) -> float:
    """max over lambda in (0, 1) of -(lambda log(1 - eps) - log cos(pi lambda / 2)): E|C|^-l = 1/cos(pi l/2)."""
    a = math.log1p(-eps)
    res = minimize_scalar(lambda lam: lam * a - math.log(math.cos(math.pi * lam / 2)), bounds=(0, 1 - 1e-12),
                          method="bounded", options={"xatol": 1e-12})
    return -res.fun


def chernoff_l2(eps: float) -> float:
    """max over lambda > 0 of -(lambda (1 - eps) + log E exp(-lambda g^2)) per column, E = (1 + 2 lambda)^-1/2."""
    res = minimize_scalar(lambda lam: lam * (1 - eps) - 0.5 * math.log1p(2 * lam), bounds=(0, 1e6),
                          method="bounded", options={"xatol": 1e-12})
    return -res.fun


@pytest.mark.parametrize("eps", [0.01, 0.1, 0.3, 0.6, 0.9, 0.99])
def test_exponents_are_the_chernoff_bounds(eps):
    assert l1_exponent(eps) == pytest.approx(chernoff_l1(eps), rel=1e-6, abs=1e-12)
    assert l2_exponent(eps) == pytest.approx(chernoff_l2(eps), rel=1e-6, abs=1e-12)


def test_smallest_eps_is_minimal_and_reaches_the_target():
    for target in (1e-4, 0.01, 0.3, 2.0):
        for exponent in (l1_exponent, l2_exponent):
            eps = smallest_eps(exponent, target)
            assert exponent(eps) >= target
            assert exponent(eps * (1 - 1e-9)) < target
    assert smallest_eps(l1_exponent, 0.0) == 0.0


def test_paper_example_needs_no_more_than_its_eps():
    """App. E.5: delta = 0.01, N = 6572, m = 10 -> per-group failure 0.26, reached with k = 200, eps = 0.22."""
    tail = TailBound.for_failure(0.01 / 6572, k=200, m=10)
    assert (0.01 / 6572) ** 0.1 == pytest.approx(0.26, abs=0.005)
    assert 1 < tail.l1_factor <= 1 / (1 - 0.22)


@pytest.mark.parametrize("norm", ["l1", "l2"])
@pytest.mark.parametrize("k,m,failure", [(10, 1, 0.2), (25, 2, 0.05)])
def test_upper_bounds_fail_no_more_often_than_promised(norm, k, m, failure):
    rng = np.random.default_rng(0)
    tail = TailBound.for_failure(failure, k, m)
    nu = rng.normal(size=40) * rng.uniform(0, 3, size=40)
    trials = 4000
    draws = rng.standard_cauchy((trials, m, k, nu.size)) if norm == "l1" else rng.normal(size=(trials, m, k, nu.size))
    x = draws @ nu  # (trials, m, k): projections of nu
    if norm == "l1":
        estimate = np.exp(np.log(np.abs(x)).mean(2)) * tail.l1_factor
        true = np.abs(nu).sum()
    else:
        estimate = np.sqrt((x ** 2).mean(2)) * tail.l2_factor
        true = np.linalg.norm(nu)
    rate = float((estimate.max(1) < true).mean())
    # binomial slack of 4 standard deviations above the promise
    assert rate <= failure + 4 * math.sqrt(failure * (1 - failure) / trials)
    # ... and the unscaled estimators do fail often: the test can tell a bound from an estimate
    unscaled = estimate.max(1) / (tail.l1_factor if norm == "l1" else tail.l2_factor)
    if m == 1:
        assert float((unscaled < true).mean()) > 2 * failure


def test_bad_parameters():
    with pytest.raises(ValueError):
        TailBound.for_failure(0.0, 10, 1)
    with pytest.raises(ValueError):
        TailBound.for_failure(0.1, 0, 1)
