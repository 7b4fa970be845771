"""Exact minimum of ``c . f(x')`` over a box by mixed-integer linear programming (scipy's HiGHS ``milp``).

The network is the DAG description of :mod:`tests.oracles.networks`: affine layers become equality rows,
every ReLU ``y = max(z, 0)`` whose interval ``[l, u]`` crosses zero gets a binary ``a`` and the exact big-M
encoding::

    y >= 0,   y >= z,   y <= u a,   y <= z - l (1 - a)

and a Clip ``min(max(z, lo), hi) = lo + relu(z - lo) - relu(z - hi)`` is two such ReLUs. ``l, u`` come from
plain interval arithmetic, which is sound (every reachable value lies in ``[l, u]``), so the encoding is
exact: the program's optimum is the network's minimum over the box, up to the solver's tolerances
(``mip_rel_gap = 0``; HiGHS's absolute gap and feasibility tolerances are ~1e-6 .. 1e-7).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from tests.oracles.networks import INPUT, Network


@dataclass(frozen=True)
class MilpResult:
    value: float  # the optimum of the program (= min c . f over the box, up to solver tolerances)
    x: np.ndarray  # a minimiser, shaped like one example and clipped into the box
    value_at_x: float  # c . f(x) recomputed with the description (a check of the encoding)
    binaries: int
    variables: int


class _Program:
    def __init__(self):
        self.lb: list[float] = []
        self.ub: list[float] = []
        self.integer: list[int] = []
        self.r: list[np.ndarray] = []
        self.c: list[np.ndarray] = []
        self.v: list[np.ndarray] = []
        self.row_lo: list[float] = []
        self.row_hi: list[float] = []

    def variables(self, lo: np.ndarray, hi: np.ndarray, integer: bool = False) -> np.ndarray:
        start = len(self.lb)
        self.lb.extend(np.asarray(lo, dtype=np.float64).tolist())
        self.ub.extend(np.asarray(hi, dtype=np.float64).tolist())
        self.integer.extend([int(integer)] * len(lo))
        return np.arange(start, len(self.lb))

    def rows(self, cols: np.ndarray, coefs: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
        """``lo <= coefs[k] @ x[cols[k]] <= hi`` for each row k (``cols``, ``coefs``: (rows, terms))."""
        cols, coefs = np.atleast_2d(cols), np.atleast_2d(coefs)
        start = len(self.row_lo)
        n = cols.shape[0]
        self.r.append(np.repeat(np.arange(start, start + n), cols.shape[1]))
        self.c.append(cols.reshape(-1))
        self.v.append(coefs.reshape(-1).astype(np.float64))
        self.row_lo.extend(np.broadcast_to(lo, (n,)).tolist())
        self.row_hi.extend(np.broadcast_to(hi, (n,)).tolist())

    def affine(self, y: np.ndarray, terms: list[tuple[np.ndarray, np.ndarray]], bias: np.ndarray) -> None:
        """``y - sum_i mats_i @ x[cols_i] = bias``: one row per entry of ``y``."""
        start = len(self.row_lo)
        rr, cc, vv = [np.arange(y.size)], [y], [np.ones(y.size)]
        for cols, mat in terms:
            r, k = np.nonzero(mat)
            rr.append(r)
            cc.append(cols[k])
            vv.append(-mat[r, k])
        self.r.append(start + np.concatenate(rr))
        self.c.append(np.concatenate(cc))
        self.v.append(np.concatenate(vv).astype(np.float64))
        self.row_lo.extend(bias.tolist())
        self.row_hi.extend(bias.tolist())

    def relu(self, z: np.ndarray, shift: np.ndarray, l: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Variables ``y = relu(x[z] - shift)``, exact, given ``l <= x[z] - shift <= u``; their indices."""
        dead, live = u <= 0, l >= 0
        cross = ~(dead | live)
        y = self.variables(np.where(dead, 0.0, np.maximum(l, 0.0)), np.where(dead, 0.0, np.maximum(u, 0.0)))
        # live: y - z = -shift
        k = np.flatnonzero(live)
        if k.size:
            self.rows(np.stack([y[k], z[k]], 1), np.tile([1.0, -1.0], (k.size, 1)), -shift[k], -shift[k])
        k = np.flatnonzero(cross)
        if k.size:
            a = self.variables(np.zeros(k.size), np.ones(k.size), integer=True)
            ones = np.ones(k.size)
            # y - z >= -shift
            self.rows(np.stack([y[k], z[k]], 1), np.stack([ones, -ones], 1), -shift[k], np.inf)
            # y - u a <= 0
            self.rows(np.stack([y[k], a], 1), np.stack([ones, -u[k]], 1), -np.inf, 0.0)
            # y - z - l a <= -shift - l      (y <= z - shift - l (1 - a))
            self.rows(np.stack([y[k], z[k], a], 1), np.stack([ones, -ones, -l[k]], 1), -np.inf,
                      -shift[k] - l[k])
        return y

    def solve(self, objective: np.ndarray, time_limit: float):
        n = len(self.lb)
        if self.r:
            a = coo_matrix((np.concatenate(self.v), (np.concatenate(self.r), np.concatenate(self.c))),
                           shape=(len(self.row_lo), n)).tocsr()
            constraints = [LinearConstraint(a, np.array(self.row_lo), np.array(self.row_hi))]
        else:
            constraints = []
        return milp(objective, integrality=np.array(self.integer),
                    bounds=Bounds(np.array(self.lb), np.array(self.ub)), constraints=constraints,
                    options={"mip_rel_gap": 0.0, "time_limit": time_limit, "presolve": True})


def _pad(l: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Widen interval bounds a little: still sound, and keeps the big-M rows clear of rounding."""
    slack = 1e-9 * (1 + np.abs(l) + np.abs(u))
    return l - slack, u + slack


def milp_minimize(net: Network, c: np.ndarray, lower: np.ndarray, upper: np.ndarray, *,
                  time_limit: float = 30.0) -> MilpResult:
    """``min c . f(x')`` over ``lower <= x' <= upper`` (one example; ``c`` of length ``n_out``)."""
    lower = np.asarray(lower, dtype=np.float64).reshape(-1)
    upper = np.asarray(upper, dtype=np.float64).reshape(-1)
    c = np.asarray(c, dtype=np.float64).reshape(-1)
    if lower.size != net.n_in or c.size != net.n_out or (lower > upper).any():
        raise ValueError("box or objective does not fit the network")
    ibp = net.interval_bounds(lower, upper)
    prog = _Program()
    var = {INPUT: prog.variables(lower, upper)}
    for layer in net.layers:
        l, u = _pad(*ibp[layer.name])
        if layer.kind == "affine":
            y = prog.variables(l, u)
            prog.affine(y, [(var[src], mat) for src, mat in zip(layer.inputs, layer.mats)], layer.bias)
            var[layer.name] = y
            continue
        z = var[layer.inputs[0]]
        zl, zu = _pad(*ibp[layer.inputs[0]])
        if layer.kind == "relu":
            var[layer.name] = prog.relu(z, np.zeros(layer.size), zl, zu)
            continue
        if layer.lo > layer.hi:  # ONNX: min(max(z, lo), hi) is the constant hi
            var[layer.name] = prog.variables(np.full(layer.size, layer.hi), np.full(layer.size, layer.hi))
            continue
        # clip = lo + relu(z - lo) - relu(z - hi)   (a missing limit drops its term)
        y = prog.variables(l, u)
        cols, coefs, const = [y, z], [np.ones(layer.size), -np.ones(layer.size)], np.zeros(layer.size)
        if np.isfinite(layer.lo):
            lo = np.full(layer.size, layer.lo)
            r1 = prog.relu(z, lo, zl - lo, zu - lo)
            cols, coefs, const = [y, r1], [np.ones(layer.size), -np.ones(layer.size)], lo
        if np.isfinite(layer.hi):
            hi = np.full(layer.size, layer.hi)
            r2 = prog.relu(z, hi, zl - hi, zu - hi)
            cols, coefs = cols + [r2], coefs + [np.ones(layer.size)]
        prog.rows(np.stack(cols, 1), np.stack(coefs, 1), const, const)
        var[layer.name] = y
    objective = np.zeros(len(prog.lb))
    objective[var[net.output]] = c
    res = prog.solve(objective, time_limit)
    if res.status != 0 or res.x is None:
        raise RuntimeError(f"MILP not solved to optimality on {net.name}: status {res.status} "
                           f"({res.message})")
    x = np.clip(res.x[var[INPUT]], lower, upper)
    value_at_x = float(net(x.reshape(1, *net.input_shape))[0] @ c)
    return MilpResult(float(res.fun), x.reshape(net.input_shape), value_at_x, int(sum(prog.integer)),
                      len(prog.lb))
