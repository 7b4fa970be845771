"""Random soundness cases and the checks run on them.

A case is a random network (:mod:`tests.oracles.networks`), a batch of inputs with a perturbation set
(an l-inf box, possibly with per-coordinate radii and a clip to [0, 1], or an l2 ball) and a matrix ``C``
of specifications. :func:`check_box_case` / :func:`check_l2_case` take the engine's answers (``lb`` and the
pre-activation bounds) and compare them with the oracles; they return a :class:`Report` whose
``violations`` list every soundness failure (empty when the engine is sound on the case) and whose
``oracle_errors`` list inconsistencies among the oracles themselves.

The checks receive the engine's numbers rather than calling the engine, so the tests can also feed them
a deliberately wrong bound and make sure it is caught.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

import onnxdual
from tests.oracles.attacks import ball_samples, box_samples, pgd_minimize, pgd_minimize_l2
from tests.oracles.milp import milp_minimize
from tests.oracles.networks import Network, random_network

F32 = np.float32


def tol(value) -> np.ndarray | float:
    """Tolerance of a comparison with ``value``: float32 rounding of the engine, ``1e-5 (1 + |value|)``."""
    return 1e-5 * (1 + np.abs(value))


# -- cases ----------------------------------------------------------------------------------------------
@dataclass
class Case:
    seed: int
    net: Network
    x: np.ndarray  # (B, *in_shape) float32
    eps: float | np.ndarray  # float, or float32 array broadcastable to x (l-inf) / of shape (B,) (l2)
    norm: str
    clip: tuple[float, float] | None
    c: np.ndarray  # (B, m, n_out) float32
    milp_rows: list[list[int]]  # per example, the rows of c checked against the MILP
    mode: str = ""
    memory_budget: int | None = None  # a tiny budget makes the engine chunk examples and backward rows

    @property
    def batch(self) -> int:
        return self.x.shape[0]

    def box(self) -> tuple[np.ndarray, np.ndarray]:
        """The l-inf box exactly as the engine forms it (float32 arithmetic), as float64 (B, *in_shape)."""
        x = torch.from_numpy(self.x)
        eps = torch.as_tensor(self.eps, dtype=torch.float32)
        lower, upper = x - eps, x + eps
        if self.clip is not None:
            lower, upper = lower.clamp(*self.clip), upper.clamp(*self.clip)
        return lower.double().numpy(), upper.double().numpy()

    def radii(self) -> np.ndarray:
        """Per-example l2 radii ``(B,)``."""
        return np.broadcast_to(np.asarray(self.eps, dtype=np.float64).reshape(-1), (self.batch,)).copy()

    def describe(self) -> str:
        return (f"seed={self.seed} net={self.net.name} ({self.net.family}) mode={self.mode} norm={self.norm} "
                f"clip={self.clip} B={self.batch} memory_budget={self.memory_budget}")


def _spec_matrix(rng: np.random.Generator, batch: int, n_out: int) -> tuple[np.ndarray, list[list[int]]]:
    """``C``: the margin rows ``e_y - e_j`` (row ``y`` is zero) and one random row, per example; the MILP
    checks one random margin row and the random row of each example."""
    y = rng.integers(0, n_out, batch)
    margins = onnxdual.margin_matrix(torch.from_numpy(y), n_out).numpy()
    extra = rng.standard_normal((batch, 1, n_out))
    c = np.concatenate([margins, extra], 1).astype(F32)
    rows = []
    for b in range(batch):
        j = int(rng.choice([k for k in range(n_out) if k != y[b]]))
        rows.append([j, n_out])
    return c, rows


def random_box_case(seed: int, family: str | None = None) -> Case:
    """A random network and a batch of 1-3 random boxes. Modes: ``scalar`` (a float or a 0-d tensor),
    ``per_example`` (shape (B, 1, ...), sometimes one 0), ``per_coord`` (some coordinates 0; per example,
    shared by the batch, or per channel (C, 1, 1)), ``clip`` (``clip=(0, 1)``, centres in [0, 1] with some
    on the edges, scalar or per-coordinate radii). A quarter of the cases use a memory budget of 1 byte,
    which makes the engine process one example and one backward row at a time."""
    net = random_network(seed, family)
    rng = np.random.default_rng([seed, 104729])
    batch = int(rng.integers(1, 4))
    shape = net.input_shape
    # image inputs have 16-50 coordinates: smaller radii keep the MILP small and the bounds informative
    top = 0.45 if net.n_in <= 9 else 0.12
    mode = str(rng.choice(["scalar", "per_example", "per_coord", "clip"], p=[0.3, 0.2, 0.3, 0.2]))
    x = rng.uniform(-1, 1, (batch, *shape)).astype(F32)
    clip = None
    if mode == "scalar":
        eps = float(F32(rng.uniform(0.02, top)))
        if rng.random() < 0.3:
            eps = np.array(eps, dtype=F32)  # a 0-d tensor
    elif mode == "per_example":
        e = rng.uniform(0.02, top, batch)
        if batch > 1 and rng.random() < 0.5:
            e[rng.integers(batch)] = 0.0
        eps = e.reshape(batch, *[1] * len(shape)).astype(F32)
    elif mode == "per_coord":
        e = rng.uniform(0.0, 1.5 * top, (batch, *shape)) * (rng.random((batch, *shape)) > 0.2)
        how = rng.random()
        if how < 0.25:
            e = e[:1]  # shared by the batch
        elif how < 0.45 and len(shape) == 3:
            e = e[0, :, :1, :1]  # one radius per channel, (C, 1, 1)
        eps = e.astype(F32)
    else:
        x = rng.uniform(0, 1, (batch, *shape))
        x[rng.random(x.shape) < 0.15] = 0.0
        x[rng.random(x.shape) < 0.15] = 1.0
        x = x.astype(F32)
        eps = float(F32(rng.uniform(0.05, 1.5 * top)))
        if rng.random() < 0.4:  # per-coordinate radii, clipped too
            keep = rng.random((batch, *shape)) > 0.2
            eps = (rng.uniform(0.0, 1.5 * top, (batch, *shape)) * keep).astype(F32)
        clip = (0.0, 1.0)
    c, rows = _spec_matrix(rng, batch, net.n_out)
    budget = 1 if rng.random() < 0.25 else None
    case = Case(seed, net, x, eps, "linf", clip, c, rows, mode, budget)
    # keep the MILP small: shrink the radii until interval arithmetic sees at most MAX_UNSTABLE crossing
    # units per example (the dual bounds are tighter, so the cases stay non-trivial; see the test's stats)
    while max(ibp_unstable(net, *case.box(), b) for b in range(batch)) > MAX_UNSTABLE:
        case.eps = case.eps * F32(0.7) if not isinstance(case.eps, float) else float(F32(case.eps * 0.7))
    return case


#: most activation units whose interval-arithmetic bounds cross a kink, per example of a random box case
MAX_UNSTABLE = 16


def ibp_unstable(net: Network, lower: np.ndarray, upper: np.ndarray, b: int) -> int:
    """Units of example ``b`` whose interval-arithmetic pre-activation bounds cross a kink (MILP binaries)."""
    ibp = net.interval_bounds(lower[b], upper[b])
    n = 0
    for layer in net.activations():
        l, u = ibp[layer.inputs[0]]
        for k in (0.0,) if layer.kind == "relu" else (layer.lo, layer.hi):
            n += int(((l < k) & (u > k)).sum()) if np.isfinite(k) else 0
    return n


def random_l2_case(seed: int, family: str | None = None) -> Case:
    """A random network and a batch of 1-3 l2 balls (one radius, or one per example)."""
    net = random_network(seed, family)
    rng = np.random.default_rng([seed, 1299709])
    batch = int(rng.integers(1, 4))
    shape = net.input_shape
    top = 0.7 if net.n_in <= 9 else 0.5
    x = rng.uniform(-1, 1, (batch, *shape)).astype(F32)
    if rng.random() < 0.5:
        eps, mode = float(F32(rng.uniform(0.05, top))), "scalar"
    else:
        eps, mode = rng.uniform(0.05, top, batch).astype(F32), "per_example"
    c, rows = _spec_matrix(rng, batch, net.n_out)
    budget = 1 if rng.random() < 0.25 else None
    return Case(seed, net, x, eps, "l2", None, c, rows, mode, budget)


def random_large_case(seed: int, norm: str) -> Case:
    """Larger and deeper networks (dense 3-5 hidden layers of 8-29 units, 3-11 inputs, up to 9 outputs;
    residual; conv/bn_pool/structured), batches of up to 8, radii from 0.01 to 3 and, for boxes, sometimes
    a clip to [0, 1] of centres that may lie outside it. Too big for the MILP: checked by PGD and sampling."""
    from tests.oracles.networks import bn_pool_net, conv_net, dense_net, residual_net, structured_net

    rng = np.random.default_rng([seed, 99])
    kind = seed % 3
    if kind == 0:
        net = dense_net(rng, n_in=int(rng.integers(3, 12)),
                        hidden=[int(rng.integers(8, 30)) for _ in range(int(rng.integers(3, 6)))],
                        n_out=int(rng.integers(2, 10)))
    elif kind == 1:
        net = residual_net(rng)
    else:
        net = [conv_net, bn_pool_net, structured_net][seed % 9 // 3](rng)
    batch = int(rng.integers(1, 9))
    x = rng.uniform(-1, 1, (batch, *net.input_shape)).astype(F32)
    eps = float(rng.choice([0.01, 0.1, 0.5, 1.0, 3.0]))
    c, rows = _spec_matrix(rng, batch, net.n_out)
    clip = (0.0, 1.0) if norm == "linf" and rng.random() < 0.3 else None
    budget = 1 if rng.random() < 0.3 else None
    return Case(seed, net, x, eps, norm, clip, c, rows, "large", budget)


# -- the engine ------------------------------------------------------------------------------------------
def run_engine(case: Case, torch_net=None, **options):
    """The engine's answers: ``lb (B, m)`` and ``{activation: (lower, upper)}`` flattened ``(B, size)``.
    ``options`` go to :class:`onnxdual.DualNetwork` (e.g. ``relaxation``)."""
    torch_net = onnxdual.load(case.net.model) if torch_net is None else torch_net
    eps = case.eps if isinstance(case.eps, float) else torch.from_numpy(np.asarray(case.eps))
    kwargs = {} if case.memory_budget is None else {"memory_budget": case.memory_budget}
    kwargs.update(options)
    dual = onnxdual.DualNetwork(torch_net, torch.from_numpy(case.x), eps, norm=case.norm, clip=case.clip,
                                **kwargs)
    with torch.no_grad():
        lb = dual.lower_bound(torch.from_numpy(case.c)).detach().double().numpy()
        bounds = {name: (ib.lower.detach().double().numpy().reshape(case.batch, -1),
                         ib.upper.detach().double().numpy().reshape(case.batch, -1))
                  for name, ib in dual.bounds().items()}
    return lb, bounds


# -- the checks ------------------------------------------------------------------------------------------
@dataclass
class Report:
    violations: list[str] = field(default_factory=list)
    oracle_errors: list[str] = field(default_factory=list)
    milp_checks: int = 0
    exact_checks: int = 0
    unstable: int = 0  # unstable activation units (by the engine's own bounds), over the batch
    gaps: list[float] = field(default_factory=list)  # oracle minimum - lb, per MILP check

    def fail_message(self, case: Case) -> str:
        lines = [case.describe()] + self.violations[:20] + self.oracle_errors[:20]
        return "\n".join(lines)


def _stable(net: Network, bounds, b: int) -> bool:
    """Whether every activation is exactly linear on the engine's pre-activation interval of example b."""
    for layer in net.activations():
        if layer.name not in bounds:
            return False
        l, u = bounds[layer.name][0][b], bounds[layer.name][1][b]
        if layer.kind == "relu":
            ok = (l >= 0) | (u <= 0)
        else:
            ok = (u <= layer.lo) | (l >= layer.hi) | ((l >= layer.lo) & (u <= layer.hi))
        if not ok.all():
            return False
    return True


def _count_unstable(net: Network, bounds) -> int:
    n = 0
    for layer in net.activations():
        if layer.name in bounds:
            l, u = bounds[layer.name]
            if layer.kind == "relu":
                n += int(((l < 0) & (u > 0)).sum())
            else:
                kinks = [k for k in (layer.lo, layer.hi) if np.isfinite(k)]
                n += int(sum(((l < k) & (u > k)).sum() for k in kinks))
    return n


def _check_containment(report: Report, net: Network, bounds, b: int, points: np.ndarray, what: str) -> None:
    """Every pre-activation value of every point lies in the engine's interval (with tolerance)."""
    pre = net.preactivations(points)
    for layer in net.activations():
        if layer.name not in bounds:
            continue
        v = pre[layer.name]
        l, u = bounds[layer.name][0][b], bounds[layer.name][1][b]
        below = (l - tol(l)) - v
        above = v - (u + tol(u))
        worst = max(below.max(), above.max())
        if worst > 0:
            k = np.unravel_index(np.argmax(np.maximum(below, above)), v.shape)
            report.violations.append(
                f"example {b}: pre-activation of {layer.name} unit {k[1]} = {v[k]:.8g} at a {what} point "
                f"outside the engine's bounds [{l[k[1]]:.8g}, {u[k[1]]:.8g}]")


def _check_activation_names(report: Report, net: Network, bounds) -> None:
    expected = {layer.name for layer in net.activations()}
    if set(bounds) != expected:
        report.violations.append(f"bounds() keys {sorted(bounds)} != activation nodes {sorted(expected)}")


def check_box_case(case: Case, lb: np.ndarray, bounds, torch_net, *, use_milp: bool = True,
                   pgd_steps: int = 25, restarts: int = 6, samples: int = 96) -> Report:
    """Compare the engine's ``lb`` and pre-activation ``bounds`` on an l-inf case with the oracles.

    * ``lb <= MILP minimum`` on ``case.milp_rows`` (exact), ``lb <= PGD`` and ``lb <= every sample`` on all
      rows;
    * every pre-activation value at the samples, the MILP minimisers and the PGD points lies in ``bounds``;
    * where the engine's bounds make every activation stable (e.g. radius 0), the network is affine on the
      box and the dual bound must be *exact*: ``lb == min`` within ``1e-4 (1 + |min|)``.
    """
    net, report = case.net, Report()
    _check_activation_names(report, net, bounds)
    report.unstable = _count_unstable(net, bounds)
    lower, upper = case.box()
    rows64 = case.c.astype(np.float64)
    for b in range(case.batch):
        c = rows64[b]
        nonzero = np.flatnonzero(np.abs(c).sum(1) > 0)
        points = [box_samples(lower[b], upper[b], samples, seed=case.seed * 31 + b)]
        sampled = (net(points[0]) @ c.T).min(0)  # (m,)
        pgd_vals, pgd_pts = pgd_minimize(torch_net, c[nonzero], lower[b], upper[b], steps=pgd_steps,
                                         restarts=restarts, seed=case.seed * 31 + b, return_points=True)
        points.append(pgd_pts)
        for name, values in (("sampled", sampled[nonzero]), ("PGD", pgd_vals)):
            for j, v in zip(nonzero, values):
                if lb[b, j] > v + tol(v):
                    report.violations.append(f"example {b} row {j}: lb {lb[b, j]:.8g} > {name} value {v:.8g}")
        for j in np.flatnonzero(np.abs(c).sum(1) == 0):  # the zero margin row: c . f = 0 everywhere
            if lb[b, j] > tol(0):
                report.violations.append(f"example {b} row {j} (zero row): lb {lb[b, j]:.8g} > 0")
        stable = _stable(net, bounds, b)
        if use_milp:
            for j in case.milp_rows[b]:
                res = milp_minimize(net, c[j], lower[b], upper[b])
                report.milp_checks += 1
                points.append(res.x[None])
                if abs(res.value - res.value_at_x) > 1e-4 * (1 + abs(res.value)):
                    report.oracle_errors.append(f"example {b} row {j}: MILP value {res.value:.8g} but "
                                                f"c.f(argmin) = {res.value_at_x:.8g}")
                others = min(sampled[j], pgd_vals[list(nonzero).index(j)] if j in nonzero else np.inf)
                if res.value > others + 1e-4 * (1 + abs(others)):
                    report.oracle_errors.append(f"example {b} row {j}: MILP minimum {res.value:.8g} above a "
                                                f"value found by sampling/PGD {others:.8g}")
                report.gaps.append(res.value - lb[b, j])
                if lb[b, j] > res.value + tol(res.value):
                    report.violations.append(f"example {b} row {j}: lb {lb[b, j]:.8g} > MILP minimum "
                                             f"{res.value:.8g} (c={c[j].tolist()})")
                if stable:
                    report.exact_checks += 1
                    if lb[b, j] < res.value - 1e-4 * (1 + abs(res.value)):
                        report.violations.append(f"example {b} row {j}: every activation is stable, so the "
                                                 f"bound must be exact, but lb {lb[b, j]:.8g} < minimum "
                                                 f"{res.value:.8g}")
        elif stable:
            _check_affine_exact(report, case, lb, b, c, nonzero)
        _check_containment(report, net, bounds, b, np.concatenate(points), "sampled/PGD/MILP")
    return report


def _check_affine_exact(report: Report, case: Case, lb: np.ndarray, b: int, c: np.ndarray, rows) -> None:
    """Stable activations: the network is affine on the set, whose exact minimum has a closed form."""
    net = case.net
    if case.norm == "l2":
        x0, radius = case.x[b:b + 1].astype(np.float64), None
    else:  # the centre of the (possibly clipped) box: x itself may lie outside a clipped box
        lower, upper = case.box()
        x0, radius = (lower[b:b + 1] + upper[b:b + 1]) / 2, ((upper[b] - lower[b]) / 2).reshape(-1)
    grad = net.jacobian(x0)[0]  # (n_out, n_in): the slope of the network, affine on the set
    base = net(x0)[0]
    for j in rows:
        g = c[j] @ grad
        if case.norm == "l2":
            exact = c[j] @ base - case.radii()[b] * np.linalg.norm(g)
        else:
            exact = c[j] @ base - np.abs(g) @ radius
        report.exact_checks += 1
        if abs(lb[b, j] - exact) > 1e-4 * (1 + abs(exact)):
            report.violations.append(f"example {b} row {j}: every activation is stable, so the bound must be "
                                     f"exact ({exact:.8g}), got lb {lb[b, j]:.8g}")


def check_l2_case(case: Case, lb: np.ndarray, bounds, torch_net, *, pgd_steps: int = 30, restarts: int = 8,
                  samples: int = 192) -> Report:
    """The l2 analogue of :func:`check_box_case` (no MILP: an l2 ball is not a polytope): ``lb`` below every
    sampled value (centre, ``+/- eps e_i``, sphere, interior) and every l2-PGD value; pre-activation values
    of all those points inside ``bounds``; exactness when every activation is stable."""
    net, report = case.net, Report()
    _check_activation_names(report, net, bounds)
    report.unstable = _count_unstable(net, bounds)
    radii = case.radii()
    rows64 = case.c.astype(np.float64)
    for b in range(case.batch):
        c = rows64[b]
        nonzero = np.flatnonzero(np.abs(c).sum(1) > 0)
        center = case.x[b].astype(np.float64)
        pts = ball_samples(center, radii[b], samples, seed=case.seed * 31 + b)
        sampled = (net(pts) @ c.T).min(0)
        pgd_vals, pgd_pts = pgd_minimize_l2(torch_net, c[nonzero], center, float(radii[b]), steps=pgd_steps,
                                            restarts=restarts, seed=case.seed * 31 + b, return_points=True)
        # the PGD points are inside the ball up to float32 rounding of the projection
        for name, values in (("sampled", sampled[nonzero]), ("PGD", pgd_vals)):
            for j, v in zip(nonzero, values):
                if lb[b, j] > v + tol(v):
                    report.violations.append(f"example {b} row {j}: lb {lb[b, j]:.8g} > {name} value {v:.8g}")
        for j in np.flatnonzero(np.abs(c).sum(1) == 0):
            if lb[b, j] > tol(0):
                report.violations.append(f"example {b} row {j} (zero row): lb {lb[b, j]:.8g} > 0")
        if _stable(net, bounds, b):
            _check_affine_exact(report, case, lb, b, c, nonzero)
        _check_containment(report, net, bounds, b, np.concatenate([pts, pgd_pts]), "sampled/PGD")
    return report


def assert_clean(report: Report, case: Case) -> None:
    """Fail with the case's story when the oracles disagree with each other or a bound is unsound."""
    assert not report.oracle_errors, "the oracles disagree:\n" + report.fail_message(case)
    assert not report.violations, "UNSOUND bound:\n" + report.fail_message(case)
