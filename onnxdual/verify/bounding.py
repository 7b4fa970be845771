"""Dual bounds of input boxes: a proven margin for every open conjunction ``A y <= b`` of each box's case.

A conjunction is unreachable on a box when the dual bound (Wong & Kolter 2018, Theorem 1:
:meth:`DualNetwork.lower_bound`) proves that one of its rows can never be satisfied there, or that a
non-negative combination ``lambda`` of its rows cannot: ``lb(lambda^T A y) - lambda^T b > 0`` implies that
some row is violated for every reachable ``y``. This is sound for *every* ``lambda >= 0`` because the dual
bound is sound for any objective; we try each row, their (normalised) sum, and a few projected-gradient
steps on ``lambda`` over the simplex (``lambda -> lb(lambda^T A y) - lambda^T b`` is concave: the dual
objective is concave in its objective vector).

Relaxations (:mod:`onnxdual.engine.optimize`): the first bound of a problem (its root boxes) uses the
``root`` relaxation (default: optimised faces, the tightest); the boxes of the input-splitting search and
the row-weight ascent use ``relaxation`` (default: adaptive, CROWN's faces), which costs one pass per call.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from onnxdual.engine.network import DualNetwork
from onnxdual.engine.optimize import OptimizeOptions
from onnxdual.errors import DeadlineExceeded
from onnxdual.verify.problem import Problem
from onnxdual.verify.result import Deadline, SearchStats


@dataclass(frozen=True)
class BoxBounds:
    """The bounds of a batch of ``N`` boxes (see :meth:`BoxBounder.bound`)."""

    margin: Tensor  # (N, D) proven margin of each open conjunction (closed or padded ones: +inf)
    direction: Tensor  # (N, n_out) the objective direction that came closest (for choosing split coordinates)
    weights: Tensor | None  # (N, D, k) the row weights lambda found, or None
    center: np.ndarray  # (N, n) float32 centres of the dual boxes: free attack points


#: the optimised roots of a search: the joint phase of ten slowly decaying steps (tighter intermediate bounds
#: on the networks of the VNN-COMP collection, where a root is bounded once and every domain inherits them)
ROOT_OPTIMIZE = OptimizeOptions(decay=0.98, intermediate_iterations=10)


class BoxBounder:
    """Bounds boxes of one problem's cases; ``lambda_steps`` projected-gradient steps on the row
    combination of a conjunction (0: rows and their sum only)."""

    def __init__(self, problem: Problem, lambda_steps: int = 20, relaxation: str = "adaptive",
                 root: str = "optimized", optimize: OptimizeOptions | None = None):
        self.problem = problem
        self.lambda_steps = lambda_steps
        self.relaxation, self.root, self.optimize = relaxation, root, optimize
        self._rooted = False

    def bound(self, lowers: Tensor, uppers: Tensor, cidx: Tensor, open_mask: Tensor, deadline: Deadline,
              stats: SearchStats, lam_init: Tensor | None = None) -> BoxBounds:
        """Bounds of boxes ``(N, n)`` (float64) of cases ``cidx``, for the conjunctions ``open_mask``
        ``(N, D)``; ``lam_init``: a parent box's row weights (negative: none yet), which warm-start the
        ascent. Does not start a computation its measured cost says cannot finish in time."""
        cases, model = self.problem.cases, self.problem.model
        n = lowers.shape[0]
        predicted = stats.bound_seconds / max(stats.bound_boxes, 1) * n
        if stats.bound_boxes and predicted > deadline.remaining():
            raise DeadlineExceeded("the next bound computation cannot finish in time")
        t0 = time.perf_counter()
        a, b, rows = cases.a[cidx], cases.b[cidx], cases.rows[cidx]
        live = open_mask & cases.disjuncts[cidx]
        _, d, k, n_out = a.shape
        center, center_t, radius_t = model.dual_inputs(lowers, uppers)
        first, self._rooted = not self._rooted, True
        dual = DualNetwork(model.net, center_t, radius_t, relaxation=self.root if first else self.relaxation,
                           optimize=replace(self.optimize or ROOT_OPTIMIZE, stop=deadline.predicting()))
        ascent = dual if not first or self.root == self.relaxation else DualNetwork(
            model.net, center_t, radius_t, relaxation=self.relaxation,
            optimize=replace(self.optimize or ROOT_OPTIMIZE, stop=deadline.predicting()))
        if ascent is not dual:
            with torch.no_grad():
                ascent.bounds()  # its pass, once, without a graph (the ascent reuses it)
        count = rows.sum(2, keepdim=True).clamp(min=1)
        sum_a = (a * rows.unsqueeze(-1)).sum(2) / count
        sum_b = (b * rows).sum(2) / count.squeeze(2)
        c = torch.cat([a.reshape(n, d * k, n_out), sum_a], 1)
        with torch.no_grad():
            lb = dual.lower_bound(c.to(model.device, torch.float32)).double().cpu()
        row_m = (lb[:, : d * k].reshape(n, d, k) - b).masked_fill(~rows, -math.inf)
        sum_m = lb[:, d * k:] - sum_b
        margin = torch.maximum(row_m.amax(2), sum_m.masked_fill(~rows.any(2), -math.inf))
        tol = self.problem.tolerance(b, center_t, n_out)
        # a strict row 'a y < b' is unreachable where lb(a y) >= b: margin 0 proves it (the smallest positive
        # margin stands for that), as margin > 0 does for 'a y <= b'
        at_edge = ((row_m >= 0) & cases.strict[cidx]).any(2) & (margin <= 0) & (tol <= 0)
        margin = torch.where(at_edge, torch.full_like(margin, math.ulp(0.0)), margin)
        direction = torch.where((row_m.amax(2) >= sum_m).unsqueeze(-1),
                                torch.gather(a, 2, row_m.argmax(2)[..., None, None].expand(n, d, 1, n_out))
                                .squeeze(2), sum_a)
        need = live & (margin <= tol) & (rows.sum(2) >= 2)
        lam = None
        if need.any() and self.lambda_steps > 0:
            lam_m, lam_dir, lam = self.optimise_lambda(ascent, a, b, rows, need, tol, deadline, lam_init)
            better = lam_m > margin
            margin = torch.where(better, lam_m, margin)
            direction = torch.where(better.unsqueeze(-1), lam_dir, direction)
        margin = margin - tol
        margin = margin.masked_fill(~live, math.inf)
        # the open conjunctions that came closest decide the split direction
        weight = (live & (margin <= 0)).double().unsqueeze(-1)
        stats.bound_seconds += time.perf_counter() - t0
        stats.bound_boxes += n
        stats.boxes += n
        return BoxBounds(margin, (direction * weight).sum(1), lam, center)

    def optimise_lambda(self, dual: DualNetwork, a: Tensor, b: Tensor, rows: Tensor, need: Tensor,
                        tol: Tensor, deadline: Deadline, lam_init: Tensor | None = None
                        ) -> tuple[Tensor, Tensor, Tensor]:
        """Projected gradient ascent of ``lb(lambda^T A y) - lambda^T b`` over the simplex, for the
        conjunctions in ``need`` ``(N, D)``, from ``lam_init`` (a parent box's weights; fewer steps) or the
        uniform weights. Every iterate is a sound bound; returns the best value per conjunction ``(N, D)``
        (``-inf`` where not optimised), its direction ``lambda^T A`` and its weights ``lambda``."""
        device = self.problem.model.device
        n, d, _, n_out = a.shape
        a_d = a.to(device, torch.float32)
        b_d = b.to(device, torch.float32)
        valid = rows.to(device)
        lam = valid.float() / valid.sum(2, keepdim=True).clamp(min=1)
        steps = self.lambda_steps
        if lam_init is not None:  # negative entries: no weights yet
            init = lam_init.to(device, torch.float32)
            known = (init >= 0).all(2, keepdim=True)
            lam = torch.where(known & valid, init, lam)
            if bool(known.squeeze(2)[need.to(device)].all()):
                steps = max(3, steps // 3)
        best = torch.full((n, d), -math.inf, dtype=torch.float64)
        best_dir = torch.zeros((n, d, n_out), dtype=torch.float64)
        best_lam = lam.detach().cpu().clone()
        need_d = need.to(device)
        stall = 0
        for step in range(steps):
            if deadline.passed():
                break
            lam = lam.detach().requires_grad_(True)
            with torch.enable_grad():
                direction = torch.einsum("ndk,ndko->ndo", lam, a_d)
                lb = dual.lower_bound(direction.reshape(n, d, n_out))
                value = lb - (lam * b_d).sum(2)
                (grad,) = torch.autograd.grad(value[need_d].sum(), lam)
            # the certified value, the constants in float64: lb(lambda^T A y) - lambda^T b
            value_c = lb.detach().double().cpu() - (lam.detach().double().cpu() * b).sum(2)
            better = value_c > best + 1e-9 * (1 + best.abs().nan_to_num(posinf=0.0, neginf=0.0))
            best = torch.where(better, value_c, best)
            best_dir = torch.where(better.unsqueeze(-1), direction.detach().double().cpu(), best_dir)
            best_lam = torch.where(better.unsqueeze(-1), lam.detach().cpu(), best_lam)
            if bool(((best > tol) | ~need).all()):
                break
            stall = 0 if bool((better & need).any()) else stall + 1
            if stall >= 4:
                break
            g = grad.masked_fill(~valid, 0.0)
            g = g / g.abs().amax(2, keepdim=True).clamp(min=1e-12)
            lam = project_simplex(lam.detach() + (0.5 / math.sqrt(step + 1)) * g, valid)
        best_lam = torch.where(need.unsqueeze(-1), best_lam, torch.full_like(best_lam, -1.0))
        return best.masked_fill(~need, -math.inf), best_dir, best_lam


def project_simplex(v: Tensor, valid: Tensor) -> Tensor:
    """Euclidean projection of each ``v[..., :]`` onto the probability simplex over its ``valid`` entries
    (the others are 0)."""
    k = v.shape[-1]
    masked = v.masked_fill(~valid, -math.inf)
    u, _ = masked.sort(-1, descending=True)
    u = torch.where(torch.isfinite(u), u, torch.zeros_like(u))
    css = u.cumsum(-1) - 1
    ks = torch.arange(1, k + 1, device=v.device, dtype=v.dtype)
    count = valid.sum(-1, keepdim=True)
    cond = (u - css / ks > 0) & (ks <= count)
    rho = cond.to(v.dtype).cumsum(-1).argmax(-1, keepdim=True)
    rho = torch.where(cond.any(-1, keepdim=True), rho, torch.zeros_like(rho))
    theta = torch.gather(css, -1, rho) / (rho + 1).to(v.dtype)
    return torch.clamp(v - theta, min=0).masked_fill(~valid, 0.0)
