"""Soundness of the dual bound over l-inf boxes, against independent oracles (``tests/oracles``).

On hundreds of random small networks (dense, with normalisation and Clip, convolutional, residual,
BatchNormalization/AveragePool/Pad) and random boxes (scalar radius, per-example and per-coordinate radii
with zeros, clip to [0, 1], tiny memory budgets that force chunking):

* ``lower_bound(C) <= exact minimum`` from a MILP (HiGHS), ``<= PGD`` and ``<= every sampled value``;
* every pre-activation bound from ``bounds()`` contains the actual values at sampled, PGD and MILP points;
* where the engine's bounds make every activation stable (radius 0, tiny radii), the bound is *exact* --
  a trivially-sound-but-useless engine cannot pass; and on ordinary boxes the bound is informative.

The oracles are tested too: descriptions against onnxruntime, the MILP against brute-force grids and
known minima, interval arithmetic (the MILP's big-M) against samples, and the checking harness against
deliberately wrong bounds, which it must flag.

Tolerance of every soundness comparison: ``1e-5 (1 + |value|)`` (float32 engine vs float64 oracles).
"""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
import torch

import onnxdual
from tests.oracles.attacks import box_samples, pgd_minimize, sample_minimize
from tests.oracles.fixtures import torch_one_thread  # noqa: F401  (fixture)
from tests.oracles.harness import (
    Case,
    assert_clean,
    check_box_case,
    random_box_case,
    random_large_case,
    run_engine,
)
from tests.oracles.milp import milp_minimize
from tests.oracles.networks import FAMILIES, INPUT, Layer, Network, conv_net, dense_net, random_network

pytestmark = pytest.mark.usefixtures("torch_one_thread")

#: random box cases (network x batch of 1-3 boxes x all rows of C; 2 MILP rows per box)
N_CASES = 180


# -- the main property ---------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(N_CASES))
def test_bound_is_sound_on_random_boxes(seed):
    case = random_box_case(seed)
    net = onnxdual.load(case.net.model)
    lb, bounds = run_engine(case, net)
    report = check_box_case(case, lb, bounds, net)
    assert_clean(report, case)
    assert report.milp_checks == sum(len(r) for r in case.milp_rows)


@pytest.mark.parametrize("seed", range(1, 60, 2))
def test_bound_is_sound_on_larger_networks(seed):
    """Deeper/wider networks, batches up to 8, radii up to 3: PGD and sampling only (no MILP)."""
    case = random_large_case(seed, "linf")
    net = onnxdual.load(case.net.model)
    lb, bounds = run_engine(case, net)
    assert_clean(check_box_case(case, lb, bounds, net, use_milp=False), case)


def test_random_cases_are_not_trivial():
    """The random cases must exercise crossing ReLUs and have a real gap to close (else they test nothing)."""
    unstable, gaps, families, modes = [], [], set(), set()
    for seed in range(0, N_CASES, 13):  # 14 cases, every family
        case = random_box_case(seed)
        net = onnxdual.load(case.net.model)
        lb, bounds = run_engine(case, net)
        report = check_box_case(case, lb, bounds, net, pgd_steps=10, restarts=2, samples=32)
        assert_clean(report, case)
        unstable.append(report.unstable)
        gaps += report.gaps
        families.add(case.net.family)
        modes.add(case.mode)
    assert families == {"dense", "conv", "residual", "bn_pool", "structured"}
    assert modes == {"scalar", "per_example", "per_coord", "clip"}
    assert np.mean(np.array(unstable) > 0) > 0.7, "most cases must have unstable activations"
    gaps = np.array(gaps)
    assert np.mean(gaps > 1e-3) > 0.5, "most bounds must be strictly below the exact minimum"
    # ... but informative: the paper's relaxation is not exact, yet it is not absurdly loose either
    assert np.median(gaps) < 0.5


# -- tightness: exact where the relaxation is exact -----------------------------------------------------
@pytest.mark.parametrize("seed", range(24))
def test_zero_radius_bound_is_exact(seed):
    """eps = 0 (scalar, or a zero tensor): the bound is ``C f(x)`` and every interval is the point value."""
    net = random_network(seed)
    rng = np.random.default_rng([seed, 3])
    x = rng.uniform(-1, 1, (2, *net.input_shape)).astype(np.float32)
    tnet = onnxdual.load(net.model)
    eps = 0.0 if seed % 2 else torch.zeros((2, *net.input_shape))
    dual = onnxdual.DualNetwork(tnet, torch.from_numpy(x), eps)
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


@pytest.mark.parametrize("seed", range(24))
def test_tiny_radius_bound_is_exact_where_stable(seed):
    """Radius 1e-3: (nearly) every activation is stable, the network is affine on the box and the bound
    must equal the MILP minimum (checked by the harness for every example whose activations are stable)."""
    case = random_box_case(seed)
    case.eps, case.clip, case.mode = 1e-3, None, "tiny"
    net = onnxdual.load(case.net.model)
    lb, bounds = run_engine(case, net)
    report = check_box_case(case, lb, bounds, net, pgd_steps=10, restarts=2, samples=32)
    assert_clean(report, case)
    assert report.exact_checks > 0 or report.unstable > 0


# -- cases the random generator does not reach ----------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_asymmetric_conv_padding_is_sound_or_rejected(seed):
    """Conv with asymmetric pads (common in TF exports; onnx2torch makes them Sequential(pad, conv))."""
    net = conv_net(np.random.default_rng([seed, 11]), asymmetric=True)
    case = random_box_case(seed)
    rng = np.random.default_rng(seed)
    case.net = net
    case.x = rng.uniform(-1, 1, (2, *net.input_shape)).astype(np.float32)
    case.eps, case.clip, case.mode = 0.05, None, "asymmetric-conv"
    case.c = rng.standard_normal((2, 2, net.n_out)).astype(np.float32)
    case.milp_rows = [[0, 1], [0, 1]]
    tnet = onnxdual.load(net.model)
    lb, bounds = run_engine(case, tnet)
    assert_clean(check_box_case(case, lb, bounds, tnet), case)


def test_batch_of_identical_boxes_gives_identical_bounds():
    """Batching must not mix examples: the same box repeated gives the same bound as alone."""
    case = random_box_case(5)
    net = onnxdual.load(case.net.model)
    x = case.x[:1]
    single = onnxdual.DualNetwork(net, torch.from_numpy(x), 0.2).lower_bound(torch.from_numpy(case.c[:1]))
    many = onnxdual.DualNetwork(net, torch.from_numpy(np.repeat(x, 3, 0)), 0.2).lower_bound(
        torch.from_numpy(np.repeat(case.c[:1], 3, 0)))
    np.testing.assert_allclose(many.detach().numpy(), np.repeat(single.detach().numpy(), 3, 0), rtol=1e-5,
                               atol=1e-5)


# -- the oracles themselves -----------------------------------------------------------------------------
@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("seed", range(5))
def test_descriptions_match_onnxruntime(family, seed):
    """The numpy description the MILP uses computes what onnxruntime (and the loaded torch net) computes."""
    net = random_network(seed, family)
    x = np.random.default_rng(seed).uniform(-2, 2, (9, *net.input_shape)).astype(np.float32)
    sess = ort.InferenceSession(net.model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = sess.run(None, {INPUT: x})[0].reshape(9, -1).astype(np.float64)
    np.testing.assert_allclose(net(x), expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        loaded = onnxdual.load(net.model)(torch.from_numpy(x)).reshape(9, -1).double().numpy()
    np.testing.assert_allclose(loaded, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(8))
def test_milp_matches_brute_force_grid(seed):
    """On 1- and 2-input networks the MILP minimum equals a fine grid search: never above any grid value,
    and below the best grid value by no more than the grid's resolution allows."""
    rng = np.random.default_rng([seed, 5])
    n_in = 1 + seed % 2
    net = dense_net(rng, n_in=n_in, hidden=[int(rng.integers(4, 9)), int(rng.integers(3, 7))], n_out=2,
                    normalise=seed % 3 == 0, clip=seed % 4 < 2)
    center = rng.uniform(-1, 1, n_in)
    eps = rng.uniform(0.3, 1.0)
    lo, hi = center - eps, center + eps
    c = rng.standard_normal(2)
    res = milp_minimize(net, c, lo, hi)
    k = 20001 if n_in == 1 else 201
    axes = [np.linspace(lo[i], hi[i], k) for i in range(n_in)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, n_in)
    values = net(grid) @ c
    best = values.min()
    assert res.value <= best + 1e-6 * (1 + abs(best)), "the MILP minimum is above a real value"
    # piecewise linear: the grid misses the minimum by at most |grad| * (half the cell diagonal)
    lipschitz = np.abs(np.einsum("o,boi->bi", c, net.jacobian(grid))).sum(1).max()
    spacing = (hi - lo).max() / (k - 1)
    assert best - res.value <= lipschitz * spacing + 1e-6, "the MILP minimum is below every real value"
    assert abs(res.value_at_x - res.value) <= 1e-6 * (1 + abs(res.value))


def _hand_network(layers: list[Layer], n_in: int, output: str) -> Network:
    return Network("hand", "hand", (n_in,), layers, output, model=None)


def test_milp_known_minima():
    """|x| = relu(x) + relu(-x) and clip on [-1, 2]: minima known in closed form."""
    w1 = np.array([[1.0], [-1.0]])
    layers = [Layer("a", "affine", (INPUT,), (2,), "Gemm", (w1,), np.zeros(2)),
              Layer("r", "relu", ("a",), (2,), "Relu"),
              Layer("cl", "clip", (INPUT,), (1,), "Clip", lo=-0.5, hi=0.5),
              Layer("out", "affine", ("r", "cl"), (2,), "Gemm",
                    (np.array([[1.0, 1.0], [0.0, 0.0]]), np.array([[0.0], [1.0]])), np.array([0.25, 0.0]))]
    net = _hand_network(layers, 1, "out")
    lo, hi = np.array([-1.0]), np.array([2.0])
    assert math.isclose(milp_minimize(net, np.array([1.0, 0.0]), lo, hi).value, 0.25, abs_tol=1e-7)
    assert math.isclose(milp_minimize(net, np.array([-1.0, 0.0]), lo, hi).value, -2.25, abs_tol=1e-7)
    assert math.isclose(milp_minimize(net, np.array([0.0, 1.0]), lo, hi).value, -0.5, abs_tol=1e-7)
    assert math.isclose(milp_minimize(net, np.array([0.0, -1.0]), lo, hi).value, -0.5, abs_tol=1e-7)
    # |x| - clip(x): minimum at x in [0, 0.5] where it is 0.25 + 0; at x = -0.5 it is 0.25 + 0.5 + 0.5
    assert math.isclose(milp_minimize(net, np.array([1.0, -1.0]), lo, hi).value, 0.25, abs_tol=1e-7)
    # lower-only and upper-only clips
    for clip_lo, clip_hi, c, expected in ((-0.5, math.inf, -1.0, -2.0), (-math.inf, 0.5, 1.0, -1.0),
                                          (-math.inf, 0.5, -1.0, -0.5)):
        layers = [Layer("cl", "clip", (INPUT,), (1,), "Clip", lo=clip_lo, hi=clip_hi)]
        res = milp_minimize(_hand_network(layers, 1, "cl"), np.array([c]), lo, hi)
        assert math.isclose(res.value, expected, abs_tol=1e-7)


@pytest.mark.parametrize("seed", range(12))
def test_interval_arithmetic_encloses_samples(seed):
    """The MILP's big-M constants come from interval arithmetic: it must contain every reachable value."""
    net = random_network(seed)
    rng = np.random.default_rng([seed, 9])
    center = rng.uniform(-1, 1, net.input_shape)
    eps = rng.uniform(0.05, 0.5)
    ibp = net.interval_bounds(center - eps, center + eps)
    values = net.evaluate(box_samples(center - eps, center + eps, 256, seed))
    for name, v in values.items():
        lo, hi = ibp[name]
        assert (v >= lo - 1e-9).all() and (v <= hi + 1e-9).all(), name


def test_attacks_stay_in_the_box_and_find_known_minima():
    rng = np.random.default_rng(0)
    net = dense_net(rng, n_in=3, hidden=[6], n_out=2, normalise=False, clip=False)
    tnet = onnxdual.load(net.model)
    lo, hi = np.array([-0.5, 0.0, 0.2]), np.array([0.5, 0.3, 0.9])
    c = np.array([[1.0, -1.0], [0.3, 0.8]])
    vals, pts = pgd_minimize(tnet, c, lo, hi, steps=40, restarts=8, seed=1, return_points=True)
    assert (pts >= lo - 1e-7).all() and (pts <= hi + 1e-7).all()
    np.testing.assert_allclose(vals, (net(pts) * c).sum(1), rtol=1e-5, atol=1e-5)
    exact = np.array([milp_minimize(net, row, lo, hi).value for row in c])
    assert (vals >= exact - 1e-5).all()
    assert (vals <= net(((lo + hi) / 2)[None])[0] @ c.T + 1e-6).all()  # never worse than its start
    sampled, points = sample_minimize(net, c, lo, hi, n=256, seed=0, return_points=True)
    assert (points >= lo).all() and (points <= hi).all() and len(points) == 256
    assert (sampled >= exact - 1e-9).all()
    # (PGD is a local method: on this network the minimum of row 1 sits in a narrow valley it may miss)


# -- the harness must catch wrong answers (a test of the tests) ------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_harness_flags_bound_just_above_the_minimum(seed):
    case = random_box_case(seed)
    net = onnxdual.load(case.net.model)
    lb, bounds = run_engine(case, net)
    lower, upper = case.box()
    wrong = lb.copy()
    for b in range(case.batch):
        for j in case.milp_rows[b]:
            m = milp_minimize(case.net, case.c[b, j], lower[b], upper[b]).value
            wrong[b, j] = m + 2e-4 * (1 + abs(m))  # a bound only an exact oracle can refute
    report = check_box_case(case, wrong, bounds, net, pgd_steps=5, restarts=1, samples=8)
    flagged = [v for v in report.violations if "MILP minimum" in v]
    assert len(flagged) == sum(len(r) for r in case.milp_rows)


@pytest.mark.parametrize("seed", range(6))
def test_harness_flags_bound_above_a_sampled_value_without_milp(seed):
    case = random_box_case(seed)
    net = onnxdual.load(case.net.model)
    lb, bounds = run_engine(case, net)
    lower, upper = case.box()
    wrong = lb.copy()
    row = case.c.shape[1] - 1  # the random row
    for b in range(case.batch):
        s = sample_minimize(case.net, case.c[b, row], lower[b], upper[b], n=96, seed=case.seed * 31 + b)
        wrong[b, row] = s + 1e-3 * (1 + abs(s))
    report = check_box_case(case, wrong, bounds, net, use_milp=False)
    assert sum(f"row {row}: lb" in v for v in report.violations) >= case.batch


@pytest.mark.parametrize("seed", range(6))
def test_harness_flags_too_narrow_intermediate_bounds(seed):
    """Shrink the (exact, first-layer) interval of every unit by 10% on each side: a vertex leaves it."""
    rng = np.random.default_rng([seed, 13])
    net_d = dense_net(rng, n_in=int(rng.integers(2, 5)), normalise=False, clip=False, sprinkle=False)
    case = random_box_case(seed)
    case.net, case.mode = net_d, "narrowed"
    case.x = rng.uniform(-1, 1, (1, *net_d.input_shape)).astype(np.float32)
    case.eps, case.clip = 0.3, None
    case.c = rng.standard_normal((1, 2, net_d.n_out)).astype(np.float32)
    case.milp_rows = [[0]]
    net = onnxdual.load(net_d.model)
    lb, bounds = run_engine(case, net)
    first = net_d.activations()[0].name
    l, u = bounds[first]
    width = u - l
    bounds[first] = (l + 0.1 * width, u - 0.1 * width)
    report = check_box_case(case, lb, bounds, net, use_milp=False, pgd_steps=5, restarts=1)
    assert any(first in v and "outside the engine's bounds" in v for v in report.violations)


def test_harness_flags_engine_run_on_a_smaller_box():
    """A realistic bug -- the radius divided somewhere -- must be caught on most random cases."""
    caught = 0
    seeds = range(0, 60, 5)
    for seed in seeds:
        case = random_box_case(seed)
        net = onnxdual.load(case.net.model)
        small = Case(**{**case.__dict__, "eps": case.eps * 0.25 if not isinstance(case.eps, float)
                        else case.eps * 0.25})
        lb, bounds = run_engine(small, net)
        report = check_box_case(case, lb, bounds, net, pgd_steps=10, restarts=2, samples=64)
        caught += bool(report.violations)
    assert caught >= 0.8 * len(seeds)


def test_harness_flags_a_loose_bound_where_it_must_be_exact():
    case = random_box_case(3)
    case.eps, case.clip = 0.0, None
    net = onnxdual.load(case.net.model)
    lb, bounds = run_engine(case, net)
    report = check_box_case(case, lb - 1e-2, bounds, net, pgd_steps=2, restarts=1, samples=4)
    assert any("must be exact" in v for v in report.violations)
    assert not check_box_case(case, lb, bounds, net, pgd_steps=2, restarts=1, samples=4).violations
