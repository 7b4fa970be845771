"""ReLU branch and bound: proofs for properties whose input space is too large to split.

A *domain* is a case's input box plus a set of ReLU phase decisions ``x_j >= 0`` or ``x_j <= 0``. Its
bound is the dual bound of Theorem 1 computed with the decisions as limits on the pre-activation bounds
(:class:`onnxdual.DualNetwork` ``splits``): every relaxation stays valid on the domain, so the bound is a
bound there. The dual does not see the decisions themselves, so each one also enters the objective with a
Lagrange multiplier ``beta >= 0`` (``-beta x_j`` for ``x_j >= 0``, ``+beta x_j`` for ``x_j <= 0``: never
positive on the domain, so any ``beta`` keeps the bound sound), tuned by projected gradient ascent -- the
idea of beta-CROWN, here on the paper's dual network. A domain is proven when every open conjunction of
its case has a row with a positive margin; otherwise it is split on the unstable ReLU whose relaxation
gap costs the bound most (``gap * max(-nu, 0)``, ``nu`` the dual variable at the ReLU's output, eq. 8).
The two children cover the parent, so the case holds when every leaf is proven.

Every domain is bounded with optimised faces (:mod:`onnxdual.engine.optimize`, a few iterations per batch:
:data:`BRANCH_OPTIMIZE`); the multipliers are tuned on the adaptive faces (one pass per step), and a domain
keeps the better of the two bounds, both sound.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from onnxdual.duals.base import ActivationDual
from onnxdual.engine.network import DualNetwork
from onnxdual.engine.optimize import OptimizeOptions
from onnxdual.errors import DeadlineExceeded
from onnxdual.verify.problem import Problem
from onnxdual.verify.result import Deadline, SearchStats


#: optimisation per batch of domains: few iterations (the search bounds many batches), intermediate bounds
#: only in the first two
BRANCH_OPTIMIZE = OptimizeOptions(iterations=8, intermediate_iterations=2)


@dataclass
class Domains:
    """A batch of domains: case index, open conjunctions, and per ReLU layer the phase of every unit
    (``int8``: ``1`` for ``x_j >= 0``, ``-1`` for ``x_j <= 0``, ``0`` undecided)."""

    cidx: Tensor  # (N,) case of each domain
    open: Tensor  # (N, D) bool: conjunctions still to prove
    phase: dict[str, Tensor]  # layer -> (N, n) int8
    inherited: Tensor  # (N, D) the parent's margins: a bound of the child too (the child is inside it)

    @property
    def priority(self) -> Tensor:
        """The parent's worst margin: the lowest are bounded first."""
        return self.inherited.amin(1)

    def __len__(self) -> int:
        return int(self.cidx.shape[0])

    def take(self, index: Tensor) -> Domains:
        return Domains(self.cidx[index], self.open[index], {k: v[index] for k, v in self.phase.items()},
                       self.inherited[index])

    @staticmethod
    def cat(parts: list[Domains]) -> Domains:
        return Domains(torch.cat([p.cidx for p in parts]), torch.cat([p.open for p in parts]),
                       {k: torch.cat([p.phase[k] for p in parts]) for k in parts[0].phase},
                       torch.cat([p.inherited for p in parts]))

    def limits(self, name: str) -> tuple[Tensor, Tensor]:
        """The split limits of layer ``name``: ``(lower, upper)``, flat ``(N, n)`` float."""
        phase = self.phase[name]
        lower = torch.where(phase > 0, 0.0, -math.inf)
        upper = torch.where(phase < 0, 0.0, math.inf)
        return lower, upper


class ReluBranching:
    """Branch and bound over the ReLUs of one problem's network (see the module docstring).

    ``bound_domains`` is the workhorse; :meth:`run` is the search. ``relu_layers`` maps the ReLU node names
    to their per-example input shapes (:func:`relu_layers`)."""

    def __init__(self, problem: Problem | None, relu_layers: dict[str, torch.Size], *, batch: int = 64,
                 beta_steps: int = 20, beta_lr: float = 0.05, max_domains: int = 20000,
                 relaxation: str = "optimized", optimize: OptimizeOptions | None = None):
        self.problem, self.layers = problem, relu_layers
        self.batch, self.beta_steps, self.beta_lr, self.max_domains = batch, beta_steps, beta_lr, max_domains
        self.relaxation = relaxation
        self.optimize = optimize or BRANCH_OPTIMIZE

    # -- bounding -------------------------------------------------------------------------------------------
    def bound_domains(self, domains: Domains, deadline: Deadline, beta_steps: int | None = None
                      ) -> tuple[Tensor, dict, dict]:
        """Margins ``(N, D)`` of each open conjunction (+inf where closed or proven by emptiness), the
        (clamped) pre-activation bounds and the dual variables of the worst conjunction's best row, for
        choosing splits. ``beta_steps`` overrides the number of multiplier steps."""
        model, cases = self.problem.model, self.problem.cases
        n = len(domains)
        a, b, rows = cases.a[domains.cidx], cases.b[domains.cidx], cases.rows[domains.cidx]
        _, d, k, n_out = a.shape
        _, center_t, radius_t = model.dual_inputs(cases.lower[domains.cidx], cases.upper[domains.cidx])
        splits = {name: tuple(limit.reshape(n, *shape).to(model.device) for limit in domains.limits(name))
                  for name, shape in self.layers.items()}
        dual = DualNetwork(model.net, center_t, radius_t, splits=splits, relaxation=self.relaxation,
                           optimize=replace(self.optimize, stop=deadline.passed))
        # the multipliers' ascent calls the bound once per step: on the adaptive faces, one pass each
        tuned = dual if self.relaxation != "optimized" else DualNetwork(
            model.net, center_t, radius_t, splits=splits, relaxation="adaptive")
        c = a.reshape(n, d * k, n_out).to(model.device, torch.float32)
        # the Lagrange term's sign: -beta x_j for x_j >= 0, +beta x_j for x_j <= 0 (never positive there)
        signs = {name: -domains.phase[name].float() for name in self.layers}
        live = (domains.open & cases.disjuncts[domains.cidx])
        with torch.no_grad():
            lb = dual.lower_bound(c).double().cpu()
            if tuned is not dual:  # its pass, once, without a graph (the ascent then reuses it)
                lb = torch.maximum(lb, tuned.lower_bound(c).double().cpu())
        best = lb
        split_any = any(bool((s != 0).any()) for s in signs.values())
        steps = self.beta_steps if beta_steps is None else beta_steps
        if split_any and steps:
            best = self._tune_beta(tuned, c, signs, lb, rows, live, deadline, steps)
        row_m = (best.reshape(n, d, k) - b).masked_fill(~rows, -math.inf)
        tol = self.problem.tolerance(b, center_t, n_out)
        margin = (row_m.amax(2) - tol).masked_fill(~live, math.inf)
        # the row that decides the worst open conjunction: where the split should help
        worst_d = margin.argmin(1)
        worst_row = worst_d * k + row_m[torch.arange(n), worst_d].argmax(1)
        with torch.no_grad():
            _, nus = dual.activation_duals(c[torch.arange(n), worst_row].unsqueeze(1))
        bounds = {name: (ib.lower.reshape(n, -1).cpu(), ib.upper.reshape(n, -1).cpu())
                  for name, ib in dual.bounds().items() if name in self.layers}
        duals = {name: nus[name].reshape(n, -1).cpu() for name in self.layers}
        return margin, bounds, duals

    def _tune_beta(self, dual: DualNetwork, c: Tensor, signs: dict[str, Tensor], lb: Tensor, rows: Tensor,
                   live: Tensor, deadline: Deadline, steps: int) -> Tensor:
        """Ascent of every row's bound in the multipliers ``beta >= 0`` (Adam, projected onto
        ``beta >= 0``; the bound is concave in ``beta``); returns the best bound seen per row (each iterate
        is a sound bound)."""
        n, m = c.shape[:2]
        beta = {name: torch.zeros((n, m, s.shape[1]), device=c.device, requires_grad=True)
                for name, s in signs.items() if bool((s != 0).any())}
        mask = {name: signs[name].to(c.device).unsqueeze(1) for name in beta}
        shapes = {name: self.layers[name] for name in beta}
        best = lb.clone()
        want = (live.unsqueeze(-1) & rows).reshape(n, m).to(c.device)
        optimiser = torch.optim.Adam(list(beta.values()), lr=self.beta_lr)
        for _ in range(steps):
            if deadline.passed():
                break
            with torch.enable_grad():
                inner = {name: (mask[name] * beta[name]).reshape(n, m, *shapes[name]) for name in beta}
                value = dual.lower_bound(c, inner=inner)
                optimiser.zero_grad()
                (-value[want].sum()).backward()
            optimiser.step()
            with torch.no_grad():
                for t in beta.values():
                    t.clamp_(min=0.0)
            best = torch.maximum(best, value.detach().double().cpu())
        return best

    # -- the search -----------------------------------------------------------------------------------------
    def roots(self, case_ids: Tensor, open_mask: Tensor) -> Domains:
        n = case_ids.shape[0]
        phase = {name: torch.zeros((n, math.prod(s)), dtype=torch.int8) for name, s in self.layers.items()}
        unknown = torch.full(open_mask.shape, -math.inf, dtype=torch.float64)
        return Domains(case_ids, open_mask, phase, unknown)

    def run(self, start: Domains, deadline: Deadline, stats: SearchStats) -> bool:
        """True when every domain is proven; False when the search cannot go on (a domain without an
        unstable ReLU left, or too many domains). Raises :class:`DeadlineExceeded` at the deadline (never
        starting a batch that the measured cost says cannot finish in time)."""
        queue = [start]
        processed = 0
        per_domain = 0.0
        while queue:
            pending = Domains.cat(queue) if len(queue) > 1 else queue[0]
            order = pending.priority.argsort()  # the worst domains first: they decide the answer
            take = min(self.batch, len(pending))
            if per_domain:
                fits = int(deadline.remaining() / per_domain)
                if fits < 1:
                    raise DeadlineExceeded("the next batch of domains cannot finish in time")
                take = max(1, min(take, fits))
            batch, rest = pending.take(order[:take]), pending.take(order[take:])
            queue = [rest] if len(rest) else []
            deadline.check()
            t0 = time.perf_counter()
            margin, bounds, duals = self.bound_domains(batch, deadline)
            margin = torch.maximum(margin, batch.inherited)  # a parent's bound holds for its children
            per_domain = max(0.5 * per_domain, (time.perf_counter() - t0) / take)
            processed += take
            stats.boxes += take
            open_now = batch.open & ~(margin > 0)
            todo = open_now.any(1)
            done = ~todo & torch.isfinite(margin.masked_fill(~batch.open, math.inf)).any(1)
            if bool(done.any()):  # the smallest proving margin, as for input splitting
                stats.leaf_margin = min(stats.leaf_margin,
                                        float(margin[done].masked_fill(~batch.open[done], math.inf).amin()))
            if not bool(todo.any()):
                continue
            if processed + 2 * int(todo.sum()) > self.max_domains:
                return False
            idx = todo.nonzero().squeeze(1)
            children, settled = self.split(batch.take(idx), open_now[idx], margin[idx],
                                            {k: (lo[idx], hi[idx]) for k, (lo, hi) in bounds.items()},
                                            {k: nu[idx] for k, nu in duals.items()})
            if settled is not None and not self._prove_settled(settled, deadline):
                return False
            if children is not None:
                queue.append(children)
        return True

    def _prove_settled(self, settled: Domains, deadline: Deadline) -> bool:
        """Domains whose ReLUs are all decided are linear pieces of the network: there the relaxation is
        exact, and the bound with the best multipliers is the exact minimum (LP duality). Tune ``beta``
        much longer before giving up."""
        margin, *_ = self.bound_domains(settled, deadline, beta_steps=10 * self.beta_steps)
        margin = torch.maximum(margin, settled.inherited)
        return bool(((margin > 0) | ~settled.open).all())

    def split(self, parents: Domains, still_open: Tensor, margins: Tensor, bounds: dict, duals: dict
              ) -> tuple[Domains | None, Domains | None]:
        """Two children per parent, split on the unstable ReLU with the largest score; and the parents
        with no unstable ReLU left (``settled``), which cannot be split."""
        n = len(parents)
        best_score = torch.full((n,), -1.0, dtype=torch.float64)
        best_layer = [None] * n
        best_unit = torch.zeros(n, dtype=torch.long)
        for name in self.layers:
            lo, up = bounds[name][0].double(), bounds[name][1].double()
            free = parents.phase[name] == 0
            unstable = (lo < 0) & (up > 0) & free
            gap = torch.where(unstable, -lo * up / (up - lo).clamp(min=1e-30), torch.zeros_like(lo))
            nu = duals[name].double()
            score = gap * (torch.clamp(-nu, min=0) + 1e-3 * nu.abs()) + 1e-9 * gap
            score = score.masked_fill(~unstable, -1.0)
            value, unit = score.max(1)
            better = value > best_score
            best_score = torch.where(better, value, best_score)
            best_unit = torch.where(better, unit, best_unit)
            for i in better.nonzero().flatten().tolist():
                best_layer[i] = name
        has_split = torch.tensor([layer is not None for layer in best_layer])
        settled = None
        if not bool(has_split.all()):
            rest = (~has_split).nonzero().squeeze(1)
            settled = parents.take(rest)
            settled.open, settled.inherited = still_open[rest], margins[rest]
        if not bool(has_split.any()):
            return None, settled
        keep = has_split.nonzero().squeeze(1)
        parents, still_open, margins = parents.take(keep), still_open[keep], margins[keep]
        layers = [best_layer[i] for i in keep.tolist()]
        units = best_unit[keep]

        def child() -> Domains:
            phase = {k: v.clone() for k, v in parents.phase.items()}
            return Domains(parents.cidx, still_open, phase, margins)

        active, inactive = child(), child()
        for i, name in enumerate(layers):
            active.phase[name][i, units[i]] = 1
            inactive.phase[name][i, units[i]] = -1
        return Domains.cat([active, inactive]), settled


def relu_layers(net, example_shape: tuple[int, ...]) -> dict[str, torch.Size]:
    """The ReLU nodes of ``net`` (by node name) with the per-example shapes of their inputs."""
    dual = DualNetwork(net, torch.zeros((1, *example_shape)), 0.0)
    return {s.node.name: s.input_shapes[0] for s in dual.built.steps
            if isinstance(s.layer, ActivationDual) and s.layer.ctx.op_type == "Relu"}


__all__ = ["Domains", "ReluBranching", "relu_layers"]
