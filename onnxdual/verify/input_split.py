"""Input splitting: branch and bound on the input boxes of a property's cases.

Every case is bounded in one batch (:class:`~onnxdual.verify.bounding.BoxBounder`); boxes that stay
undecided are split in two along the input coordinate whose radius the dual bound of the closest objective
is most sensitive to, when at most ``split_max_inputs`` coordinates are perturbed (small input spaces,
where splitting pays off), until everything is proven or the time runs out. The two halves cover their
parent, so the property holds when every leaf is proven. Box centres, and every few batches a short attack
on the worst boxes, look for counterexamples on the way (a deep search may be hiding one).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from onnxdual.engine.network import DualNetwork
from onnxdual.errors import DeadlineExceeded
from onnxdual.verify.bounding import BoxBounder
from onnxdual.verify.counterexamples import Counterexamples
from onnxdual.verify.problem import Problem, float32_points
from onnxdual.verify.result import Deadline, SearchStats


@dataclass(frozen=True)
class SplitOutcome:
    """How input splitting ended: ``proven`` (every leaf box proven), or not; then ``roots`` are the
    unproven root boxes (case ids ``(N,)``, open conjunctions ``(N, D)``) when their inputs were too many
    to split (for ReLU branching), ``None`` when the boxes became too narrow to split."""

    proven: bool
    roots: tuple[Tensor, Tensor] | None = None


class InputSplitting:
    """The input-split search of one problem (see the module docstring).

    Args:
        split_max_inputs: split input boxes only when at most this many coordinates are perturbed.
        batch_boxes: boxes bounded in one batch.
    """

    def __init__(self, problem: Problem, bounder: BoxBounder, counterexamples: Counterexamples, *,
                 split_max_inputs: int = 16, batch_boxes: int = 512):
        self.problem, self.bounder, self.counterexamples = problem, bounder, counterexamples
        self.split_max_inputs = split_max_inputs
        self.batch_boxes = max(1, batch_boxes)

    def run(self, deadline: Deadline, stats: SearchStats, gen: torch.Generator) -> SplitOutcome:
        """Bound every case, then split what stays open. Raises :class:`DeadlineExceeded` at the deadline
        (never starting a batch that the measured cost says cannot finish in time)."""
        cases = self.problem.cases
        all_cases = torch.arange(cases.lower.shape[0])
        perturbed = (cases.upper > cases.lower).sum(1)
        splittable = bool((perturbed <= self.split_max_inputs).all())
        split_cost = 0.0  # measured seconds per box of the split scores
        queue_lo, queue_hi = [cases.lower], [cases.upper]
        queue_c, queue_open = [all_cases], [cases.disjuncts.clone()]
        queue_lam = [torch.full(cases.rows.shape, -1.0)]  # row weights to warm-start each box with
        batches = 0
        per_box = 0.0  # measured seconds per box of a whole iteration (bounds, lambda, split scores)
        while queue_lo:
            lo_all, hi_all = torch.cat(queue_lo), torch.cat(queue_hi)
            c_all, open_all, lam_all = torch.cat(queue_c), torch.cat(queue_open), torch.cat(queue_lam)
            take = min(self.batch_boxes, lo_all.shape[0])
            if per_box:  # never start a batch the measured cost says cannot finish in time
                fits = deadline.remaining() / per_box
                if fits < 1:
                    raise DeadlineExceeded("the next batch of boxes cannot finish in time")
                take = int(min(take, fits))
            t_batch = time.perf_counter()
            lo, hi, cidx, open_mask = lo_all[-take:], hi_all[-take:], c_all[-take:], open_all[-take:]
            rest = lo_all.shape[0] - take
            queue_lo, queue_hi = ([lo_all[:rest]], [hi_all[:rest]]) if rest else ([], [])
            queue_c, queue_open = ([c_all[:rest]], [open_all[:rest]]) if rest else ([], [])
            lam_init, queue_lam = lam_all[-take:], ([lam_all[:rest]] if rest else [])
            deadline.check()
            bounds = self.bounder.bound(lo, hi, cidx, open_mask, deadline, stats, lam_init)
            margin = bounds.margin
            # box centres are free attack points
            x_center = torch.from_numpy(np.clip(bounds.center, cases.inner_lo[cidx].numpy(),
                                                cases.inner_hi[cidx].numpy()))
            self.counterexamples.check_points(x_center, cidx, open_mask & (margin <= 0))
            lam = lam_init if bounds.weights is None else bounds.weights
            batches += 1
            worst = margin.amin(1)
            if stats.root_margin is None:  # the first batch: the root boxes
                stats.root_margin = float(worst.min())
            proven = worst > 0
            if proven.any():
                stats.leaf_margin = min(stats.leaf_margin, float(worst[proven].min()))
            if proven.all():
                per_box = max(per_box, (time.perf_counter() - t_batch) / take)
                continue
            todo = (~proven).nonzero().squeeze(1)
            if not splittable:  # with the root boxes not bounded yet, if any
                return SplitOutcome(False, (torch.cat([cidx[todo], *queue_c]),
                                            torch.cat([open_mask[todo] & ~(margin[todo] > 0), *queue_open])))
            lo, hi, cidx = lo[todo], hi[todo], cidx[todo]
            still_open = open_mask[todo] & ~(margin[todo] > 0)
            width = hi - lo
            if bool((width.amax(1) <= 1e-9 * (1 + hi.abs().amax(1))).any()):
                return SplitOutcome(False)  # cannot split further
            if deadline.remaining() < split_cost * todo.numel():
                raise DeadlineExceeded("the split scores cannot be computed in time")
            t_split = time.perf_counter()
            score = self.split_scores(lo, hi, bounds.direction[todo]).masked_fill(width <= 0, 0.0)
            split_cost = max(0.5 * split_cost, (time.perf_counter() - t_split) / todo.numel())
            score = torch.where(score.amax(1, keepdim=True) > 0, score, width)
            dim = score.argmax(1)
            rows = torch.arange(todo.numel())
            mid = (lo[rows, dim] + hi[rows, dim]) / 2
            left_hi, right_lo = hi.clone(), lo.clone()
            left_hi[rows, dim], right_lo[rows, dim] = mid, mid
            queue_lo += [lo, right_lo]
            queue_hi += [left_hi, hi]
            queue_c += [cidx, cidx]
            queue_open += [still_open, still_open]
            queue_lam += [lam[todo], lam[todo]]
            per_box = max(0.5 * per_box, (time.perf_counter() - t_batch) / take)
            if batches % 8 == 0:  # a deep search may be hiding a counterexample: attack the worst boxes
                pick = worst[todo].argsort()[:16]
                ilo, ihi, ok = float32_points(lo[pick], hi[pick])
                if ok.any():
                    self.counterexamples.attack(ilo[ok], ihi[ok], cidx[pick][ok], still_open[pick][ok],
                                                steps=10, restarts=1, gen=gen, deadline=deadline, stats=stats)
        return SplitOutcome(True)

    def split_scores(self, lo: Tensor, hi: Tensor, direction: Tensor) -> Tensor:
        """How much splitting each input coordinate should help, for boxes ``(N, n)``: the sensitivity of the
        dual bound of ``direction . f`` to each coordinate's radius, ``|d lb / d r_i| * r_i`` (this accounts
        for the intermediate relaxations too, unlike a gradient of the network)."""
        model = self.problem.model
        _, c, r = model.dual_inputs(lo, hi)
        r.requires_grad_(True)
        with torch.enable_grad():
            rows = direction.to(model.device, torch.float32).unsqueeze(1)
            lb = DualNetwork(model.net, c, r).lower_bound(rows)
            (g,) = torch.autograd.grad(lb.sum(), r)
        return (g.abs() * r.detach()).reshape(lo.shape[0], -1).double().cpu()
