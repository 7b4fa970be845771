"""Counterexamples: ``sat`` only with a checked witness.

Candidates come from box centres and from PGD (:func:`onnxdual.attack.minimise` on each case's inner
float32 box, minimising the violation ``min_d max_i (a_i y - b_i)``). A candidate is a witness only when it
is a float32 input inside its case's box (zero tolerance) and the output that onnxruntime computes there in
float32, replaying the ONNX model, satisfies every row of one of the case's conjunctions with zero
tolerance: the torch network only proposes. A confirmed witness ends the search (:class:`WitnessFound`).

A box without float32 points (inputs fixed at decimal values that float32 cannot represent) has no float32
witness, but it can have a real one, and that can be *proven* instead of replayed
(:meth:`Counterexamples.prove_real_points`): when the dual bound (Theorem 1 for the objectives ``-a_i``) shows
that every real input of the float32 box around a real point ``p`` of the case's box meets every row of a
conjunction, by more than a float32-rounding allowance, then ``p`` is a witness in real arithmetic (the
semantics the proofs of ``unsat`` use too). Such a witness says so (``proven_by="bounds"``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from onnxdual.attack import AttackResult, box_starts, cosine_steps, minimise
from onnxdual.engine.input_sets import Box
from onnxdual.engine.network import DualNetwork
from onnxdual.errors import DeadlineExceeded
from onnxdual.specs.model import InputRegion, Property
from onnxdual.verify.problem import Model, Problem, batch_cases
from onnxdual.verify.result import UNKNOWN, Deadline, SearchStats


#: how a witness was confirmed: onnxruntime's float32 output at a float32 input (zero tolerance), or a dual
#: bound proving that every real input around a real (float64) input reaches the unsafe region
REPLAYED, PROVEN_BY_BOUNDS = "onnxruntime", "bounds"


class WitnessFound(Exception):
    """A confirmed counterexample: the flat input ``x`` (float32 when replayed, float64 when proven by
    bounds), onnxruntime's output ``y`` at ``x`` (at ``x`` rounded to float32 when proven by bounds), the
    index of its case in the property and how it was confirmed (``proven_by``)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, case: int, proven_by: str = REPLAYED):
        super().__init__(f"counterexample in case {case}")
        self.x, self.y, self.case, self.proven_by = x, y, case, proven_by


class OnnxReplay:
    """The network as onnxruntime computes it, on flat float32 inputs (``input_shape``: the shape the
    session expects, with its batch dimension, if any)."""

    def __init__(self, session, input_shape: tuple[int, ...]):
        self.session = session
        self.input_shape = tuple(input_shape)
        self.input_name = session.get_inputs()[0].name

    def __call__(self, flat: np.ndarray) -> np.ndarray:
        feed = {self.input_name: flat.reshape(self.input_shape).astype(np.float32)}
        return np.asarray(self.session.run(None, feed)[0]).reshape(-1)


class Counterexamples:
    """Candidate points and attacks on one problem's cases; raises :class:`WitnessFound` on a witness."""

    def __init__(self, problem: Problem, replay: OnnxReplay):
        self.problem = problem
        self.replay = replay

    # -- checking candidates ---------------------------------------------------------------------------
    def confirm(self, x: np.ndarray, j: int) -> None:
        """Raise :class:`WitnessFound` if the float32 point ``x`` lies in case ``j``'s box and onnxruntime's
        output there meets one of its conjunctions, both with zero tolerance."""
        cases = self.problem.cases
        flat = np.asarray(x, dtype=np.float32).reshape(-1)
        lo = np.asarray(cases.inner_lo[j].numpy(), dtype=np.float32)
        hi = np.asarray(cases.inner_hi[j].numpy(), dtype=np.float32)
        flat = np.minimum(np.maximum(flat, lo), hi)
        x64 = flat.astype(np.float64)
        if not cases.in_witness_box(j, x64):
            return
        y = self.replay(flat)
        if not np.all(np.isfinite(y)):
            return
        y64 = y.astype(np.float64)
        for c in cases.constraints[j]:
            if c.contains(y64):
                raise WitnessFound(flat.copy(), y.astype(np.float32).copy(), cases.index[j])

    def confirm_most_violating(self, x: Tensor, v: Tensor, cidx: Tensor) -> None:
        """Confirm with onnxruntime the (at most 8) points of ``x`` ``(N, n)`` whose violations ``v`` ``(N,)``
        (on the CPU) are the lowest, among those where the torch network (about) reaches the unsafe
        region."""
        candidates = (v <= 1e-6 * (1 + v.abs())).nonzero().squeeze(1)
        for i in candidates[v[candidates].argsort()][:8].tolist():
            self.confirm(x[i].cpu().numpy(), int(cidx[i]))

    def check_points(self, x: Tensor, cidx: Tensor, open_mask: Tensor) -> Tensor:
        """Evaluate float32 points ``(N, n)`` of cases ``cidx``; confirm the most violating ones with
        onnxruntime. Returns the violation of each point (``<= 0``: the torch network reaches the unsafe
        region)."""
        model = self.problem.model
        with torch.no_grad():
            v = self.problem.cases.violation(model.forward(x.to(model.device)), cidx, open_mask).cpu()
        self.confirm_most_violating(x, v, cidx)
        return v

    def trivial(self) -> None:
        """A conjunction without rows contains every output: any float32 point of its box is a witness."""
        cases = self.problem.cases
        for j, cs in enumerate(cases.constraints):
            if any(c.A.shape[0] == 0 for c in cs) and bool(cases.has_points[j]):
                x = ((cases.inner_lo[j].double() + cases.inner_hi[j].double()) / 2).float()
                self.confirm(x.numpy(), j)

    def prove_real_points(self, gen: torch.Generator, deadline: Deadline, stats: SearchStats) -> None:
        """For the cases whose boxes hold no float32 point: raise :class:`WitnessFound` (``proven_by``
        bounds) with a real point ``p`` of the box when the adaptive dual bound on the float32 box around
        ``p`` proves, for every row ``a_i y <= b_i`` of one conjunction, ``ub(a_i y) = -lb(-a_i y) < b_i`` by
        more than the rounding allowance of strict proofs (:meth:`Problem.rounding_allowance`): then every
        real input there, ``p`` included, reaches the unsafe region. The candidates: the box's real centre,
        then the deepest point a short attack finds (on the float32 box of the coordinates that vary, the
        fixed ones at their nearest float32 value), moved back onto the fixed coordinates' real values."""
        cases = self.problem.cases
        idx = (~cases.has_points).nonzero().squeeze(1)
        if not idx.numel():
            return
        deadline.check()
        lower, upper = cases.witness_lower[idx], cases.witness_upper[idx]
        centre = torch.minimum(torch.maximum((lower + upper) / 2, lower), upper)  # float64, in the witness box
        self._prove_points(idx, centre, stats)
        fixed = lower == upper
        if bool(fixed.all()):
            return
        lo32 = torch.where(fixed, lower.float(), cases.inner_lo[idx])
        hi32 = torch.where(fixed, lower.float(), cases.inner_hi[idx])
        varies = (lo32 <= hi32).all(1)  # a varying coordinate may itself hold no float32 value
        if not bool(varies.any()):
            return
        idx, lower, fixed = idx[varies], lower[varies], fixed[varies]
        found = self._deepest(lo32[varies], hi32[varies], idx, gen, deadline, stats)
        self._prove_points(idx, torch.where(fixed, lower, found.double()), stats)

    def _deepest(self, lo: Tensor, hi: Tensor, cidx: Tensor, gen: torch.Generator, deadline: Deadline,
                 stats: SearchStats) -> Tensor:
        """The points of float32 boxes ``lo <= x <= hi`` where a short PGD found the lowest violation."""
        found = self._pgd(lo, hi, cidx, self.problem.cases.disjuncts[cidx], 20, 4, gen, deadline, stats)
        return torch.minimum(torch.maximum(found.x.detach().cpu(), lo), hi)

    def _prove_points(self, idx: Tensor, p: Tensor, stats: SearchStats) -> None:
        """Raise :class:`WitnessFound` for the first real point ``p[i]`` (float64) of case ``idx[i]`` whose
        float32 box provably meets a conjunction (see :meth:`prove_real_points`)."""
        cases, model = self.problem.cases, self.problem.model
        _, center_t, radius_t = model.dual_inputs(p, p)
        a, b, rows = cases.a[idx], cases.b[idx], cases.rows[idx]
        n, d, k, n_out = a.shape
        dual = DualNetwork(model.net, center_t, radius_t, relaxation="adaptive")
        with torch.no_grad():
            lb = dual.lower_bound((-a).reshape(n, d * k, n_out).to(model.device, torch.float32))
        slack = lb.double().cpu().reshape(n, d, k) + b  # b_i - ub(a_i y), per row
        allowance = self.problem.rounding_allowance(b, center_t, n_out).unsqueeze(-1)
        met = ((slack > allowance) | ~rows).all(2) & cases.disjuncts[idx]  # a conjunction without rows too
        stats.boxes += n
        for i in met.any(1).nonzero().flatten().tolist():
            x, j = p[i].numpy().copy(), int(idx[i])
            if not cases.in_witness_box(j, x):
                continue  # cannot happen (the points are clamped to the box); never claim one outside it
            y = self.replay(x.astype(np.float32))
            raise WitnessFound(x, y.astype(np.float32), cases.index[j], proven_by=PROVEN_BY_BOUNDS)

    # -- attacks ---------------------------------------------------------------------------------------
    def attack(self, lo: Tensor, hi: Tensor, cidx: Tensor, open_mask: Tensor, steps: int, restarts: int,
               gen: torch.Generator, deadline: Deadline, stats: SearchStats) -> Tensor:
        """Batched PGD on float32 boxes ``lo <= x <= hi`` ``(N, n)``, minimising each box's violation;
        after each restart, confirms the best candidates. Returns the best violation per box."""
        def confirm_best(found: AttackResult) -> None:
            self.confirm_most_violating(found.x, found.value.cpu(), cidx)

        return self._pgd(lo, hi, cidx, open_mask, steps, restarts, gen, deadline, stats,
                         confirm_best).value.cpu()

    def attack_from(self, x: Tensor, cidx: Tensor, open_mask: Tensor, steps: int, gen: torch.Generator,
                    deadline: Deadline, stats: SearchStats) -> Tensor:
        """PGD on the float32 boxes of cases ``cidx`` started at the points ``x`` ``(N, n)`` (then at random
        vertices or points), after checking the points themselves; confirms the best candidates. For starts
        that something else suggests: the point where a ReLU domain's relaxation is lowest
        (:mod:`~onnxdual.verify.relu_split`). Returns the best violation per point."""
        cases = self.problem.cases
        lo, hi = cases.inner_lo[cidx], cases.inner_hi[cidx]
        x = torch.minimum(torch.maximum(x.to(lo.dtype), lo), hi)
        self.check_points(x, cidx, open_mask)

        def confirm_best(found: AttackResult) -> None:
            self.confirm_most_violating(found.x, found.value.cpu(), cidx)

        return self._pgd(lo, hi, cidx, open_mask, steps, 1, gen, deadline, stats, confirm_best,
                         first=x).value.cpu()

    def _pgd(self, lo: Tensor, hi: Tensor, cidx: Tensor, open_mask: Tensor, steps: int, restarts: int,
             gen: torch.Generator, deadline: Deadline, stats: SearchStats,
             after_restart: Callable[[AttackResult], None] | None = None,
             first: Tensor | None = None) -> AttackResult:
        """The attacks' PGD on boxes ``lo <= x <= hi`` of cases ``cidx`` (the midpoint first, or ``first``,
        then random vertices or points; a cosine step schedule in units of the box width)."""
        model, cases = self.problem.model, self.problem.cases
        box = Box(lo.to(model.device), hi.to(model.device))
        starts = box_starts(box, gen)
        if first is not None:
            first = first.to(model.device)
            starts = (lambda restart, rest=starts: first.clone() if restart == 0 else rest(restart))

        def violation(x: Tensor) -> Tensor:
            stats.attack_steps += 1
            return cases.violation(model.forward(x), cidx, open_mask)

        return minimise(violation, box, steps=steps, restarts=restarts, step_size=cosine_steps,
                        scale=box.upper - box.lower, starts=starts, count="iterates",
                        deadline=deadline, after_restart=after_restart)

    def quick_attack(self, gen: torch.Generator, deadline: Deadline, stats: SearchStats) -> None:
        """The box centres, then a short attack, on every case with float32 points."""
        cases = self.problem.cases
        attackable = cases.has_points
        if attackable.any():
            idx = torch.arange(cases.lower.shape[0])[attackable]
            self.check_points((cases.inner_lo[idx] + (cases.inner_hi[idx] - cases.inner_lo[idx]) / 2), idx,
                              cases.disjuncts[idx])
            self.attack(cases.inner_lo[idx], cases.inner_hi[idx], idx, cases.disjuncts[idx], steps=15,
                        restarts=1, gen=gen, deadline=deadline, stats=stats)

    def unwitnessable(self) -> bool:
        """A box without float32 points (inputs fixed at values float32 cannot represent) whose real centre
        clearly reaches the unsafe region: it can neither be proven safe nor given a float32 witness."""
        cases, model = self.problem.cases, self.problem.model
        if cases.has_points.all():
            return False
        idx = torch.arange(cases.lower.shape[0])[~cases.has_points]
        centre = ((cases.lower[idx] + cases.upper[idx]) / 2).float()
        with torch.no_grad():
            y = model.forward(centre.to(model.device))
            v = cases.violation(y, idx, cases.disjuncts[idx]).cpu()
        return bool((v < -1e-4 * (1 + v.abs())).any())

    def give_up(self, gen: torch.Generator, deadline: Deadline, stats: SearchStats) -> str:
        """Bounds cannot decide: stronger attacks with a bounded budget, else ``unknown``. First on every
        case at once, then targeted: each conjunction of each case attacked on its own (the minimum over
        conjunctions sends the gradient to one of them only)."""
        cases = self.problem.cases
        idx = torch.arange(cases.lower.shape[0])[cases.has_points]
        if not idx.numel():
            return UNKNOWN
        self.attack(cases.inner_lo[idx], cases.inner_hi[idx], idx, cases.disjuncts[idx], steps=50,
                    restarts=4, gen=gen, deadline=deadline, stats=stats)
        pairs = cases.disjuncts[idx].nonzero()  # (case position, conjunction)
        if pairs.shape[0] > 1:
            for chunk in pairs.split(64):
                cidx = idx[chunk[:, 0]]
                target = torch.zeros((chunk.shape[0], cases.disjuncts.shape[1]), dtype=torch.bool)
                target[torch.arange(chunk.shape[0]), chunk[:, 1]] = True
                self.attack(cases.inner_lo[cidx], cases.inner_hi[cidx], cidx, target, steps=50,
                            restarts=2, gen=gen, deadline=deadline, stats=stats)
        return UNKNOWN


def widened(prop: Property, tolerance: float) -> Property:
    """``prop`` with every case's box widened by ``tolerance`` on each side, rounded inward (one ulp) so that
    no point of the widened box lies more than ``tolerance`` outside the original one."""
    cases = [(InputRegion(np.nextafter(r.lower - tolerance, np.inf),
                          np.nextafter(r.upper + tolerance, -np.inf)), cs) for r, cs in prop.cases]
    return Property(prop.n_inputs, prop.n_outputs, cases, prop.input_shape, prop.output_shape,
                    prop.input_name, prop.output_name, prop.version, prop.source)


def outside_distance(prop: Property, found: WitnessFound) -> float:
    """How far (infinity norm) the witness lies outside its case's box in ``prop`` (0 inside)."""
    region = prop.cases[found.case][0]
    x = found.x.astype(np.float64)
    return float(max(0.0, np.max(region.lower - x), np.max(x - region.upper)))


def tolerant_witness(model: Model, replay: OnnxReplay, prop: Property, tolerance: float, deadline: Deadline,
                     seed: int = 0) -> WitnessFound | None:
    """A witness in the boxes of ``prop`` widened by ``tolerance`` (:func:`widened`), found by the box
    centres and the attacks of :meth:`Counterexamples.give_up`, confirmed by onnxruntime like any other
    (the output reaches the unsafe region exactly); ``None`` if there is none by ``deadline``."""
    gen = torch.Generator().manual_seed(seed)
    stats = SearchStats()
    try:
        with torch.no_grad():
            cases = batch_cases(widened(prop, tolerance), prop.n_inputs)
        if cases is None:
            return None
        search = Counterexamples(Problem(model, cases, False), replay)
        search.trivial()
        search.quick_attack(gen, deadline, stats)
        search.give_up(gen, deadline, stats)
    except WitnessFound as found:
        return found
    except DeadlineExceeded:
        return None
    return None


__all__ = ["PROVEN_BY_BOUNDS", "REPLAYED", "Counterexamples", "OnnxReplay", "WitnessFound", "outside_distance",
           "tolerant_witness", "widened"]
