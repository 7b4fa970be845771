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

The roots are bounded with optimised faces and their own optimised intermediate bounds
(:mod:`onnxdual.engine.optimize`, :data:`BRANCH_OPTIMIZE`). Their descendants inherit those intermediate
bounds (a child lies inside its parent; the split unit is clamped) and only the objective is re-bounded,
a whole batch of domains per call, with per-domain, per-row slopes and multipliers warm-started from the
parent's (:mod:`onnxdual.verify.branching`); the batch size comes from a memory budget. Networks with
other activations than ReLU re-bound every domain from scratch (:meth:`ReluBranching.bound_domains`).
A child's margin is never below its parent's (the parent's bound holds on the child).

Falsification goes on during the search: every few batches the most promising domains (the lowest
bounds) are attacked from the input where their relaxation is lowest -- the input-set point minimising
``nu_1^T x`` for the dual variable ``nu_1`` at the input of the worst row (eq. 7's input term) -- by PGD on
the case's whole box; any confirmed witness answers ``sat`` (:class:`~onnxdual.verify.counterexamples.
WitnessFound`). The schedule counts batches, not seconds, so a seed gives the same search.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from onnxdual.duals.base import ActivationDual
from onnxdual.engine.adam import Adam
from onnxdual.engine.autodual import INPUT_DUAL
from onnxdual.engine.input_sets import Box, make_input_set
from onnxdual.engine.network import DualNetwork
from onnxdual.engine.optimize import OptimizeOptions
from onnxdual.errors import DeadlineExceeded
from onnxdual.verify.counterexamples import Counterexamples
from onnxdual.verify.branching import (FixedBounder, Warm, domain_bytes, intercept_scores, top_candidates,
                                       with_split)
from onnxdual.verify.problem import Problem
from onnxdual.verify.result import Deadline, SearchStats


#: optimisation per batch of domains: few iterations (the search bounds many batches), intermediate bounds
#: only in the first two, with a step size that decays slowly over so few steps
BRANCH_OPTIMIZE = OptimizeOptions(iterations=8, intermediate_iterations=2, decay=0.98)


@dataclass
class Domains:
    """A batch of domains: case index, open conjunctions, and per ReLU layer the phase of every unit
    (``int8``: ``1`` for ``x_j >= 0``, ``-1`` for ``x_j <= 0``, ``0`` undecided)."""

    cidx: Tensor  # (N,) case of each domain
    open: Tensor  # (N, D) bool: conjunctions still to prove
    phase: dict[str, Tensor]  # layer -> (N, n) int8
    inherited: Tensor  # (N, D) the parent's margins: a bound of the child too (the child is inside it)
    #: per layer ``(N, n)`` pre-activation bounds valid on the domain (the parent's, split units clamped);
    #: ``None`` for roots, which compute their own
    lo: dict[str, Tensor] | None = None
    hi: dict[str, Tensor] | None = None
    warm: Warm | None = None  # the parent's slopes and multipliers (a warm start)

    @property
    def priority(self) -> Tensor:
        """The parent's worst margin: the lowest are bounded first."""
        return self.inherited.amin(1)

    def __len__(self) -> int:
        return int(self.cidx.shape[0])

    def take(self, index: Tensor) -> Domains:
        sub = (lambda d: None if d is None else {k: v[index] for k, v in d.items()})
        return Domains(self.cidx[index], self.open[index], sub(self.phase), self.inherited[index],
                       sub(self.lo), sub(self.hi), None if self.warm is None else self.warm.take(index))

    @staticmethod
    def cat(parts: list[Domains]) -> Domains:
        parts = [p for p in parts if len(p)] or parts[:1]
        if len(parts) == 1:
            return parts[0]
        whole = (lambda get: None if any(get(p) is None for p in parts)
                 else {k: torch.cat([get(p)[k] for p in parts]) for k in get(parts[0])})
        warm = None if any(p.warm is None for p in parts) else Warm.cat([p.warm for p in parts])
        return Domains(torch.cat([p.cidx for p in parts]), torch.cat([p.open for p in parts]),
                       whole(lambda p: p.phase), torch.cat([p.inherited for p in parts]),
                       whole(lambda p: p.lo), whole(lambda p: p.hi), warm)

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
                 relaxation: str = "optimized", optimize: OptimizeOptions | None = None,
                 fast_steps: int = 5, fsb: int = 1, max_batch: int = 512, memory_budget: int = 1024**3,
                 attack_every: int = 4, attack_domains: int = 8, attack_steps: int = 20):
        self.problem, self.layers = problem, relu_layers
        self.attack_every, self.attack_domains, self.attack_steps = attack_every, attack_domains, attack_steps
        self.batch, self.beta_steps, self.beta_lr, self.max_domains = batch, beta_steps, beta_lr, max_domains
        self.fast_steps, self.fsb, self.max_batch, self.memory_budget = fast_steps, fsb, max_batch, memory_budget
        self._bounder: FixedBounder | None = None
        self._deadline = Deadline(math.inf)  # the running search's (for the filtered choice)
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
                           optimize=replace(self.optimize, stop=deadline.predicting()))
        # the multipliers' ascent calls the bound once per step: on the adaptive faces, one pass each
        tuned = dual if self.relaxation != "optimized" else DualNetwork(
            model.net, center_t, radius_t, splits=splits, relaxation="adaptive",
            optimize=replace(self.optimize, stop=deadline.predicting()))  # its pass stops in time too
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
        duals = {name: nus[name].reshape(n, -1).cpu() for name in (*self.layers, INPUT_DUAL) if name in nus}
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
        optimiser = Adam(beta.values(), self.beta_lr)
        for _ in range(steps):
            if deadline.passed():
                break
            with torch.enable_grad():
                inner = {name: (mask[name] * beta[name]).reshape(n, m, *shapes[name]) for name in beta}
                value = dual.lower_bound(c, inner=inner)
                for t in beta.values():
                    t.grad = None
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

    # -- bounding on inherited intermediate bounds (:mod:`onnxdual.verify.branching`) ------------------------
    def _fixed(self) -> FixedBounder | None:
        if self._bounder is None:
            model = self.problem.model
            probe = DualNetwork(model.net, torch.zeros((1, *model.example_shape), device=model.device), 0.0)
            self._bounder = FixedBounder(probe.built, self.layers)
        return self._bounder if self._bounder.usable else None

    def _batch_inputs(self, domains: Domains):
        model, cases = self.problem.model, self.problem.cases
        n = len(domains)
        a, b, rows = cases.a[domains.cidx], cases.b[domains.cidx], cases.rows[domains.cidx]
        _, center_t, radius_t = model.dual_inputs(cases.lower[domains.cidx], cases.upper[domains.cidx])
        c = a.reshape(n, a.shape[1] * a.shape[2], a.shape[3]).to(model.device, torch.float32)
        live = domains.open & cases.disjuncts[domains.cidx]
        tol = self.problem.tolerance(b, center_t, a.shape[3])
        return make_input_set(center_t, radius_t), c, b, rows, live, tol

    def _margins(self, best: Tensor, b: Tensor, rows: Tensor, live: Tensor, tol: Tensor
                 ) -> tuple[Tensor, Tensor]:
        """Margins ``(N, D)`` of the open conjunctions from row bounds ``(N, m)``, and the row deciding each
        domain's worst open conjunction ``(N,)``."""
        n, d, k = b.shape
        row_m = (best.reshape(n, d, k) - b).masked_fill(~rows, -math.inf)
        margin = (row_m.amax(2) - tol).masked_fill(~live, math.inf)
        worst_d = margin.argmin(1)
        return margin, worst_d * k + row_m[torch.arange(n), worst_d].argmax(1)

    def bound_fast(self, domains: Domains, deadline: Deadline, steps: int | None = None
                   ) -> tuple[Tensor, Tensor, Warm, dict[str, Tensor]]:
        """Margins ``(N, D)`` of domains with inherited bounds (:class:`FixedBounder`), the deciding row,
        the tuned slopes and multipliers, and the worst row's dual variables ``(N, n)`` per layer."""
        input_set, c, b, rows, live, tol = self._batch_inputs(domains)
        n, m = c.shape[:2]
        dev = c.device
        want = (live.unsqueeze(-1) & rows).reshape(n, m)
        lo = {k: v.to(dev) for k, v in domains.lo.items()}
        hi = {k: v.to(dev) for k, v in domains.hi.items()}
        proven = (lambda best: (self._margins(best, b, rows, live, tol)[0] > 0).all(1))
        steps = self.fast_steps if steps is None else steps
        best, warm, nus = self._fixed().bound(input_set, c, lo, hi, domains.phase, domains.warm, want, 0,
                                              deadline.passed)
        hard = (~proven(best)).nonzero().squeeze(1)
        if steps and hard.numel():  # the ascent only where the warm start does not prove the domain already
            sub = (lambda d: {k: v[hard.to(v.device)] for k, v in d.items()})
            sub_set = Box(input_set.lower[hard], input_set.upper[hard])
            sub_proven = (lambda sb: (self._margins(sb, b[hard], rows[hard], live[hard], tol[hard])[0] > 0).all(1))
            tuned, sub_warm, sub_nus = self._fixed().bound(
                sub_set, c[hard], sub(lo), sub(hi), sub(domains.phase), warm.take(hard), want[hard], steps,
                deadline.passed, sub_proven)
            best[hard] = torch.maximum(best[hard], tuned)
            for d, part in ((warm.alpha, sub_warm.alpha), (warm.beta, sub_warm.beta), (nus, sub_nus)):
                for k, v in part.items():
                    d[k][hard.to(v.device)] = v
        margin, worst_row = self._margins(best, b, rows, live, tol)
        duals = {k: v[torch.arange(n), worst_row.to(v.device)].cpu() for k, v in nus.items()}
        return margin, worst_row, warm, duals

    def _filtered_choice(self, domains: Domains, scores: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The split of each domain: among its ``fsb`` best intercept scores, the candidate whose worse
        child has the best bound (one pass per child at the parent's slopes and multipliers)."""
        names = list(self.layers)
        layer, unit, value = top_candidates(scores, self.fsb)
        n, k = layer.shape
        if k == 1 or domains.lo is None or self._fixed() is None:
            return layer[:, 0], unit[:, 0]
        rep = torch.arange(n).repeat_interleave(k)
        many = domains.take(rep)
        worse = None
        for side in (1, -1):
            lo, hi, ph = with_split(many.lo, many.hi, many.phase, names, layer.flatten(), unit.flatten(), side)
            child = replace(many, lo=lo, hi=hi, phase=ph)
            margin, *_ = self.bound_fast(child, self._deadline, steps=0)
            worst = margin.amin(1).reshape(n, k)
            worse = worst if worse is None else torch.minimum(worse, worst)
        worse = worse.masked_fill(value < 0, -math.inf)  # not a candidate
        pick = worse.argmax(1)
        return layer[torch.arange(n), pick], unit[torch.arange(n), pick]

    def bound_roots(self, roots: Domains, deadline: Deadline) -> tuple[Domains, Tensor, dict, dict]:
        """:meth:`bound_domains` of root domains, which then keep their intermediate bounds for their
        descendants (when the network's activations are all ReLUs)."""
        margin, bounds, duals = self.bound_domains(roots, deadline)
        if self._fixed() is not None:
            roots = replace(roots, lo={k: lo for k, (lo, _) in bounds.items()},
                            hi={k: hi for k, (_, hi) in bounds.items()})
        return roots, margin, bounds, duals

    # -- the search -----------------------------------------------------------------------------------------
    def run(self, start: Domains, deadline: Deadline, stats: SearchStats,
            counterexamples: Counterexamples | None = None, gen: torch.Generator | None = None) -> bool:
        """True when every domain is proven; False when the search cannot go on (a domain without an
        unstable ReLU left, or too many domains). Raises :class:`DeadlineExceeded` at the deadline (never
        starting a batch that the measured cost says cannot finish in time), and, with ``counterexamples``,
        :class:`~onnxdual.verify.counterexamples.WitnessFound` when an attack on the most promising domains
        (every ``attack_every`` batches, the roots' first) finds a witness.

        The roots are bounded with their own (optimised) intermediate bounds; their descendants inherit
        them (:meth:`bound_fast`) when every activation of the network is a ReLU."""
        fast = self._fixed() is not None
        self._deadline = deadline
        queue: list[Domains] = []
        for r0 in range(0, len(start), self.batch):  # the roots, with their own intermediate bounds
            deadline.check()
            roots = start.take(torch.arange(r0, min(r0 + self.batch, len(start))))
            roots, margin, bounds, duals = self.bound_roots(roots, deadline)
            if counterexamples is not None:
                self.attack_promising(roots, margin, duals, counterexamples, gen, deadline, stats)
            if not self._settle(roots, margin, bounds, duals, None, queue, deadline, stats):
                return False
        processed = len(start)
        per_domain = 0.0
        n_rows = int(self.problem.cases.a.shape[1] * self.problem.cases.a.shape[2])
        cap = max(self.batch, min(self.max_domains, self.memory_budget // max(domain_bytes(self.layers, n_rows), 1)))
        batch_size = self.batch if not fast else self.fast_batch(n_rows)
        batches = 0
        while queue:
            pending = Domains.cat(queue)
            order = pending.priority.argsort(stable=True)  # the worst domains first: they decide the answer
            take = min(batch_size, len(pending))
            if per_domain:
                fits = deadline.remaining() / per_domain
                if fits < 1:
                    raise DeadlineExceeded("the next batch of domains cannot finish in time")
                take = max(1, min(take, int(min(fits, take))))
            batch, rest = pending.take(order[:take]), pending.take(order[take:])
            queue = [rest] if len(rest) else []
            deadline.check()
            t0 = time.perf_counter()
            if batch.lo is not None:
                margin, _, warm, duals = self.bound_fast(batch, deadline)
                batch = replace(batch, warm=warm)
                bounds = {k: (batch.lo[k], batch.hi[k]) for k in self.layers}
            else:
                margin, bounds, duals = self.bound_domains(batch, deadline)
            batches += 1
            if counterexamples is not None and self.attack_every and batches % self.attack_every == 0:
                self.attack_promising(batch, margin, duals, counterexamples, gen, deadline, stats)
            ok = self._settle(batch, margin, bounds, duals, batch.inherited, queue, deadline, stats)
            per_domain = max(0.5 * per_domain, (time.perf_counter() - t0) / take)
            processed += take
            if not ok or sum(len(q) for q in queue) > cap or processed > 50 * self.max_domains:
                return False
        return True

    def attack_promising(self, batch: Domains, margin: Tensor, duals: dict[str, Tensor],
                         counterexamples: Counterexamples, gen: torch.Generator | None, deadline: Deadline,
                         stats: SearchStats) -> None:
        """PGD from the input where the relaxation of each of the ``attack_domains`` unproven domains with
        the lowest margins is lowest: the vertex of its case's float32 box minimising ``nu_1^T x``
        (``nu_1``: the worst row's dual variable at the input, ``duals[INPUT_DUAL]``; the centre where it is
        zero). The attack runs on the case's whole box: a witness anywhere there answers ``sat``."""
        nu = duals.get(INPUT_DUAL)
        cases = self.problem.cases
        if nu is None:
            return
        worst = margin.amin(1)
        unproven = (worst <= 0) & cases.has_points[batch.cidx]
        idx = unproven.nonzero().squeeze(1)
        if not idx.numel():
            return
        idx = idx[worst[idx].argsort(stable=True)[:self.attack_domains]]
        cidx = batch.cidx[idx]
        lo, hi = cases.inner_lo[cidx], cases.inner_hi[cidx]
        g = nu[idx].reshape(lo.shape).to(lo.device)
        x = torch.where(g > 0, lo, torch.where(g < 0, hi, lo + (hi - lo) / 2))
        counterexamples.attack_from(x, cidx, cases.disjuncts[cidx], self.attack_steps, gen, deadline, stats)

    def fast_batch(self, n_rows: int) -> int:
        """Domains per batch from the memory budget: a step keeps, per row, every value of the network
        for the backward pass (a few copies each)."""
        units = sum(math.prod(s) for s in self.layers.values()) + math.prod(self.problem.model.example_shape)
        per_domain = 16 * n_rows * units * 4
        return int(max(8, min(self.max_batch, self.memory_budget // 4 // max(per_domain, 1))))

    def _settle(self, batch: Domains, margin: Tensor, bounds: dict, duals: dict, inherited: Tensor | None,
                queue: list[Domains], deadline: Deadline, stats: SearchStats) -> bool:
        """Record a bounded batch: proven domains are done, the others split into ``queue``; False when a
        domain without an unstable ReLU cannot be proven."""
        if inherited is not None:
            margin = torch.maximum(margin, inherited)  # a parent's bound holds for its children
        stats.boxes += len(batch)
        open_now = batch.open & ~(margin > 0)
        todo = open_now.any(1)
        done = ~todo & torch.isfinite(margin.masked_fill(~batch.open, math.inf)).any(1)
        if bool(done.any()):  # the smallest proving margin, as for input splitting
            stats.leaf_margin = min(stats.leaf_margin,
                                    float(margin[done].masked_fill(~batch.open[done], math.inf).amin()))
        if not bool(todo.any()):
            return True
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
        if settled.lo is not None:
            margin, *_ = self.bound_fast(settled, deadline, steps=10 * self.fast_steps)
        else:
            margin, *_ = self.bound_domains(settled, deadline, beta_steps=10 * self.beta_steps)
        margin = torch.maximum(margin, settled.inherited)
        return bool(((margin > 0) | ~settled.open).all())

    def split(self, parents: Domains, still_open: Tensor, margins: Tensor, bounds: dict, duals: dict
              ) -> tuple[Domains | None, Domains | None]:
        """Two children per parent, split on the unstable ReLU with the best score (intercept score,
        filtered by re-bounding the ``fsb`` best candidates); and the parents with no unstable ReLU left
        (``settled``), which cannot be split. Children inherit the parent's bounds (the split unit
        clamped), margins, slopes and multipliers."""
        names = list(self.layers)
        lo = {k: bounds[k][0] for k in names}
        hi = {k: bounds[k][1] for k in names}
        scores = intercept_scores(lo, hi, parents.phase, duals)
        has_split = torch.cat(list(scores.values()), 1).amax(1) >= 0
        parents = replace(parents, open=still_open, inherited=margins,
                          lo=lo if parents.lo is not None else None, hi=hi if parents.lo is not None else None)
        settled = None
        if not bool(has_split.all()):
            settled = parents.take((~has_split).nonzero().squeeze(1))
        if not bool(has_split.any()):
            return None, settled
        keep = has_split.nonzero().squeeze(1)
        parents = parents.take(keep)
        layer, unit = self._filtered_choice(parents, {k: v[keep] for k, v in scores.items()})
        kept_lo, kept_hi = ({k: v[keep] for k, v in d.items()} for d in (lo, hi))
        fast = parents.lo is not None
        kids = []
        for side in (1, -1):
            clo, chi, cph = with_split(kept_lo, kept_hi, parents.phase, names, layer, unit, side)
            kids.append(replace(parents, phase=cph, lo=clo if fast else None, hi=chi if fast else None))
        return Domains.cat(kids), settled


def relu_layers(net, example_shape: tuple[int, ...]) -> dict[str, torch.Size]:
    """The ReLU nodes of ``net`` (by node name) with the per-example shapes of their inputs."""
    dual = DualNetwork(net, torch.zeros((1, *example_shape)), 0.0)
    return {s.node.name: s.input_shapes[0] for s in dual.built.steps
            if isinstance(s.layer, ActivationDual) and s.layer.ctx.op_type == "Relu"}


__all__ = ["Domains", "ReluBranching", "relu_layers"]
