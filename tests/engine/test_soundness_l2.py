"""Soundness of the dual bound over l2 balls, against sampling (centre, ``+/- eps e_i``, sphere, interior)
and l2 PGD (normalised-gradient steps, projection onto the ball) -- the oracles of ``tests/oracles``.

An l2 ball is not a polytope, so there is no MILP here; instead every bound is checked against every
sampled and attacked value, every pre-activation interval against the values at those points, and the bound
must be *exact* (``c f(x) - eps ||J^T c||_2``) where the engine's bounds make every activation stable.
Tolerance: ``1e-5 (1 + |value|)``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import onnxdual
from tests.oracles.attacks import ball_samples, pgd_minimize_l2, sample_minimize_l2
from tests.oracles.fixtures import torch_one_thread  # noqa: F401  (fixture)
from tests.oracles.harness import (
    Case,
    assert_clean,
    check_l2_case,
    random_l2_case,
    random_large_case,
    run_engine,
)
from tests.oracles.networks import dense_net, random_network

pytestmark = pytest.mark.usefixtures("torch_one_thread")

#: random l2 cases (network x batch of 1-3 balls x all rows of C)
N_CASES = 140


@pytest.mark.parametrize("seed", range(N_CASES))
def test_bound_is_sound_on_random_l2_balls(seed):
    case = random_l2_case(seed)
    net = onnxdual.load(case.net.model)
    lb, bounds = run_engine(case, net)
    assert_clean(check_l2_case(case, lb, bounds, net), case)


@pytest.mark.parametrize("seed", range(0, 60, 2))
def test_bound_is_sound_on_larger_networks_l2(seed):
    """Deeper/wider networks, batches up to 8, radii up to 3."""
    case = random_large_case(seed, "l2")
    net = onnxdual.load(case.net.model)
    lb, bounds = run_engine(case, net)
    assert_clean(check_l2_case(case, lb, bounds, net), case)


def test_l2_cases_are_not_trivial():
    """Most cases have crossing activations, and the bounds are informative: the gap to the best value
    the attacks find is mostly positive but not absurd."""
    unstable, gaps = [], []
    for seed in range(0, N_CASES, 10):
        case = random_l2_case(seed)
        net = onnxdual.load(case.net.model)
        lb, bounds = run_engine(case, net)
        report = check_l2_case(case, lb, bounds, net, pgd_steps=20, restarts=4, samples=64)
        assert_clean(report, case)
        unstable.append(report.unstable)
        for b in range(case.batch):
            c = case.c[b, -1].astype(np.float64)  # the random row
            found = min(sample_minimize_l2(case.net, c, case.x[b], case.radii()[b], n=64, seed=seed),
                        pgd_minimize_l2(net, c, case.x[b], float(case.radii()[b]), steps=20, restarts=4,
                                        seed=seed))
            gaps.append(found - lb[b, -1])
    gaps = np.array(gaps)
    assert np.mean(np.array(unstable) > 0) > 0.8
    assert np.mean(gaps > 1e-3) > 0.5
    assert np.median(gaps) < 1.0


@pytest.mark.parametrize("seed", range(12))
def test_zero_radius_l2_is_exact(seed):
    net = random_network(seed)
    rng = np.random.default_rng([seed, 21])
    x = rng.uniform(-1, 1, (2, *net.input_shape)).astype(np.float32)
    eps = 0.0 if seed % 2 else torch.zeros(2)
    dual = onnxdual.DualNetwork(onnxdual.load(net.model), torch.from_numpy(x), eps, norm="l2")
    c = rng.standard_normal((2, 3, net.n_out)).astype(np.float32)
    with torch.no_grad():
        lb = dual.lower_bound(torch.from_numpy(c)).double().numpy()
        bounds = dual.bounds()
    value = np.einsum("bmo,bo->bm", c.astype(np.float64), net(x))
    np.testing.assert_allclose(lb, value, rtol=1e-4, atol=1e-4)
    pre = net.preactivations(x)
    assert set(bounds) == set(pre)
    for name, ib in bounds.items():
        for side in (ib.lower, ib.upper):
            np.testing.assert_allclose(side.double().numpy().reshape(2, -1), pre[name], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("seed", range(12))
def test_tiny_l2_radius_is_exact_where_stable(seed):
    case = random_l2_case(seed)
    case.eps, case.mode = 1e-3, "tiny"
    net = onnxdual.load(case.net.model)
    lb, bounds = run_engine(case, net)
    report = check_l2_case(case, lb, bounds, net, pgd_steps=10, restarts=2, samples=32)
    assert_clean(report, case)
    assert report.exact_checks > 0 or report.unstable > 0


def test_l2_oracles_stay_in_the_ball():
    rng = np.random.default_rng(1)
    net = dense_net(rng, n_in=4, hidden=[7, 5], n_out=3)
    tnet = onnxdual.load(net.model)
    center, eps = rng.uniform(-1, 1, 4), 0.4
    pts = ball_samples(center, eps, 200, seed=3)
    norms = np.linalg.norm(pts - center, axis=1)
    assert (norms <= eps * (1 + 1e-12)).all()
    assert np.isclose(norms, eps).sum() >= 50 and (norms < eps * 0.9).any()  # sphere and interior
    c = rng.standard_normal((2, 3))
    vals, points = pgd_minimize_l2(tnet, c, center, eps, steps=30, restarts=6, seed=0, return_points=True)
    assert (np.linalg.norm(points - center, axis=1) <= eps * (1 + 1e-6)).all()
    np.testing.assert_allclose(vals, (net(points) * c).sum(1), rtol=1e-5, atol=1e-5)
    assert (vals <= net(center[None])[0] @ c.T + 1e-6).all()


# -- the harness must catch wrong answers --------------------------------------------------------------
def test_l2_harness_flags_engine_run_on_a_smaller_ball():
    caught, seeds = 0, range(0, 60, 5)
    for seed in seeds:
        case = random_l2_case(seed)
        net = onnxdual.load(case.net.model)
        small = Case(**{**case.__dict__, "eps": case.eps * 0.25})
        lb, bounds = run_engine(small, net)
        caught += bool(check_l2_case(case, lb, bounds, net, pgd_steps=10, restarts=2, samples=64).violations)
    assert caught >= 0.8 * len(seeds)


@pytest.mark.parametrize("seed", range(4))
def test_l2_harness_flags_bound_above_a_sampled_value(seed):
    case = random_l2_case(seed)
    net = onnxdual.load(case.net.model)
    lb, bounds = run_engine(case, net)
    wrong, row = lb.copy(), case.c.shape[1] - 1
    for b in range(case.batch):
        s = sample_minimize_l2(case.net, case.c[b, row], case.x[b], case.radii()[b], n=192,
                               seed=case.seed * 31 + b)
        wrong[b, row] = s + 1e-3 * (1 + abs(s))
    report = check_l2_case(case, wrong, bounds, net)
    assert sum(f"row {row}: lb" in v for v in report.violations) >= case.batch


@pytest.mark.parametrize("seed", range(4))
def test_l2_harness_flags_too_narrow_intermediate_bounds(seed):
    """First-layer l2 bounds are exact (``w x + b +/- eps ||w||``); shrunk 10% a side, samples leave them."""
    rng = np.random.default_rng([seed, 17])
    net_d = dense_net(rng, n_in=2, normalise=False, clip=False, sprinkle=False)
    case = random_l2_case(seed)
    case.net, case.mode, case.eps = net_d, "narrowed", 0.5
    case.x = rng.uniform(-1, 1, (1, 2)).astype(np.float32)
    case.c = rng.standard_normal((1, 2, net_d.n_out)).astype(np.float32)
    net = onnxdual.load(net_d.model)
    lb, bounds = run_engine(case, net)
    first = net_d.activations()[0].name
    l, u = bounds[first]
    bounds[first] = (l + 0.1 * (u - l), u - 0.1 * (u - l))
    report = check_l2_case(case, lb, bounds, net, pgd_steps=5, restarts=1)
    assert any(first in v and "outside the engine's bounds" in v for v in report.violations)
