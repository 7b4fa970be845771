"""Deciding VNN-LIB properties with dual bounds, input splitting and attacks.

A property (``onnxdual.specs``) lists cases: an input box and the unsafe output region there, a disjunction
of conjunctions ``A y <= b``. The property holds (``unsat``) when no input of any box reaches any conjunction.

* A conjunction is unreachable when the dual bound (Theorem 1) proves one of its rows, or a non-negative
  combination of its rows (the dual bound of ``lambda^T A y``), can never be satisfied on the box.
* Boxes that stay undecided are split along their widest input coordinate (for networks with few inputs,
  where splitting pays off) until everything is proven or the time runs out.
* ``sat`` only for an input inside the box whose output, recomputed by onnxruntime in float32, satisfies
  every row of a conjunction with zero tolerance. Otherwise ``unknown`` (or ``timeout``).

float32 networks are analysed in real arithmetic (as VNN-COMP tools do). ``strict=True`` refuses a proof
whose margin is within float32 rounding of zero and reports ``unknown`` instead.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from onnxdual.attack import pgd
from onnxdual.engine.input_sets import Box
from onnxdual.engine.network import DualNetwork

SAT, UNSAT, UNKNOWN, TIMEOUT = "sat", "unsat", "unknown", "timeout"


@dataclass(frozen=True)
class VerifyResult:
    answer: str
    seconds: float
    witness_x: np.ndarray | None = None  # flat input, float32
    witness_y: np.ndarray | None = None  # flat output computed by onnxruntime
    best_margin: float | None = None  # smallest proven margin over the pieces that were proven
    boxes: int = 0  # sub-boxes bounded


class _Deadline:
    def __init__(self, seconds: float):
        self.end = time.perf_counter() + max(0.0, seconds)

    def passed(self) -> bool:
        return time.perf_counter() > self.end


def _conjunction_rows(constraints) -> tuple[Tensor, Tensor]:
    """Stack the disjuncts ``A_d y <= b_d`` into padded tensors ``(D, k, n_out)`` and ``(D, k)``; padded rows
    are ``0 <= 1`` (always true, never proves anything)."""
    k = max(c.A.shape[0] for c in constraints)
    n_out = constraints[0].A.shape[1]
    a = torch.zeros((len(constraints), k, n_out), dtype=torch.float64)
    b = torch.ones((len(constraints), k), dtype=torch.float64)
    for d, c in enumerate(constraints):
        a[d, : c.A.shape[0]] = torch.as_tensor(c.A)
        b[d, : c.A.shape[0]] = torch.as_tensor(c.b)
    return a, b


class Verifier:
    """Decides properties of one network. ``ort_session``: an onnxruntime session to confirm witnesses."""

    def __init__(self, net: nn.Module, input_shape: tuple[int, ...], ort_session, *, strict: bool = False,
                 split_max_inputs: int = 16, batch_boxes: int = 256):
        self.net = net.eval()
        self.input_shape = tuple(input_shape)
        self.session = ort_session
        self.strict = strict
        self.split_max_inputs = split_max_inputs
        self.batch_boxes = batch_boxes

    # -- checks ----------------------------------------------------------------------------------------
    def _run_ort(self, x: np.ndarray) -> np.ndarray:
        name = self.session.get_inputs()[0].name
        return np.asarray(self.session.run(None, {name: x.reshape(self.input_shape).astype(np.float32)})[0])

    def _confirm(self, x: Tensor, lower: np.ndarray, upper: np.ndarray, constraints) -> tuple | None:
        """A float32 input inside the box whose onnxruntime output meets a conjunction exactly."""
        flat = np.clip(x.detach().cpu().numpy().reshape(-1).astype(np.float32), lower.astype(np.float32),
                       upper.astype(np.float32))
        if np.any(flat < lower) or np.any(flat > upper):  # rounding pushed it out: nudge inwards
            flat = np.where(flat < lower, np.nextafter(flat, np.float32(np.inf)), flat)
            flat = np.where(flat > upper, np.nextafter(flat, np.float32(-np.inf)), flat)
            if np.any(flat < lower) or np.any(flat > upper):
                return None
        y = self._run_ort(flat).reshape(-1).astype(np.float64)
        for c in constraints:
            if np.all(c.A @ y <= c.b):
                return flat, y
        return None

    def _attack(self, lower: np.ndarray, upper: np.ndarray, constraints, steps: int, restarts: int,
                seed: int) -> tuple | None:
        """PGD on every conjunction: minimise the largest violated row ``max_i (A_i y - b_i)``."""
        box = Box(torch.as_tensor(lower, dtype=torch.float32).reshape(1, *self.input_shape[1:]),
                  torch.as_tensor(upper, dtype=torch.float32).reshape(1, *self.input_shape[1:]))
        gen = torch.Generator().manual_seed(seed)
        for c in constraints:
            a = torch.as_tensor(c.A, dtype=torch.float32)
            b = torch.as_tensor(c.b, dtype=torch.float32)
            # min_j (c_j . f) form used by pgd: maximise -(A y - b) over rows => minimise -max(...)
            # pgd minimises min_j c_j . f; write max_i(A_i y - b_i) <= 0 as the smooth surrogate sum of
            # positive parts, minimised directly below
            x = self._pgd_conjunction(box, a, b, steps, restarts, gen)
            found = self._confirm(x, lower, upper, [c])
            if found is not None:
                return found
        return None

    def _pgd_conjunction(self, box: Box, a: Tensor, b: Tensor, steps: int, restarts: int,
                         gen: torch.Generator) -> Tensor:
        best_x, best = box.center.clone(), float("inf")
        scale = box.radius
        for restart in range(restarts):
            x = box.center.clone() if restart == 0 else box.sample(2, gen)[1]
            for i in range(steps):
                x.requires_grad_(True)
                y = self.net(x).reshape(-1)
                viol = a @ y - b
                loss = viol.max() + 0.1 * torch.relu(viol).sum()
                (grad,) = torch.autograd.grad(loss, x)
                with torch.no_grad():
                    value = viol.max().item()
                    if value < best:
                        best, best_x = value, x.detach().clone()
                    step = 2.0 * (1 - i / max(steps, 1)) / max(steps, 1) * 4
                    x = box.project(x - step * scale * grad.sign())
            with torch.no_grad():
                value = (a @ self.net(x).reshape(-1) - b).max().item()
                if value < best:
                    best, best_x = value, x.detach().clone()
        return best_x

    # -- proofs ----------------------------------------------------------------------------------------
    def _margins(self, lowers: Tensor, uppers: Tensor, a: Tensor, b: Tensor) -> Tensor:
        """For boxes ``(N, n_in)`` and disjuncts ``(D, k, n_out)``: for each box and disjunct the best proven
        margin ``max_i (lb(A_i y) - b_i)`` (> 0 proves the disjunct unreachable there). Returns ``(N, D)``."""
        n, (d, k, n_out) = lowers.shape[0], a.shape
        center = ((lowers + uppers) / 2).float().reshape(n, *self.input_shape[1:])
        radius = ((uppers - lowers) / 2).float().reshape(n, *self.input_shape[1:])
        rows = torch.cat([a, a.sum(1, keepdim=True)], 1)  # each row, and their sum (a simple combination)
        rhs = torch.cat([b, b.sum(1, keepdim=True)], 1)
        c = rows.reshape(1, d * (k + 1), n_out).expand(n, -1, -1).float()
        with torch.no_grad():
            lb = DualNetwork(self.net, center, radius).lower_bound(c).double().reshape(n, d, k + 1)
        margin = lb - rhs.unsqueeze(0)
        if self.strict:  # refuse proofs within float32 rounding of the threshold
            margin = margin - 1e-6 * (1 + rhs.abs().unsqueeze(0))
        return margin.max(2).values

    def decide(self, prop, timeout: float, seed: int = 0) -> VerifyResult:
        start = time.perf_counter()
        deadline = _Deadline(timeout)
        boxes_done = 0
        best_margin = math.inf
        # 1. a quick attack on every case
        for lower, upper, constraints in self._cases(prop):
            found = self._attack(lower, upper, constraints, steps=20, restarts=1, seed=seed)
            if found is not None:
                return VerifyResult(SAT, time.perf_counter() - start, found[0], found[1])
            if deadline.passed():
                return VerifyResult(TIMEOUT, time.perf_counter() - start)
        # 2. bound, and split undecided boxes
        for lower, upper, constraints in self._cases(prop):
            a, b = _conjunction_rows(constraints)
            queue = [(torch.as_tensor(lower, dtype=torch.float64), torch.as_tensor(upper, dtype=torch.float64),
                      torch.ones(a.shape[0], dtype=torch.bool))]
            splittable = lower.size <= self.split_max_inputs
            while queue:
                if deadline.passed():
                    return VerifyResult(TIMEOUT, time.perf_counter() - start, best_margin=None, boxes=boxes_done)
                batch, queue = queue[: self.batch_boxes], queue[self.batch_boxes:]
                lowers = torch.stack([q[0] for q in batch])
                uppers = torch.stack([q[1] for q in batch])
                open_mask = torch.stack([q[2] for q in batch])
                margins = self._margins(lowers, uppers, a, b)
                boxes_done += len(batch)
                proven = (margins > 0) | ~open_mask
                for i in range(len(batch)):
                    if proven[i].all():
                        best_margin = min(best_margin, margins[i][open_mask[i]].min().item())
                        continue
                    if not splittable:
                        return self._give_up(prop, start, deadline, seed, boxes_done)
                    width = uppers[i] - lowers[i]
                    dim = int(width.argmax())
                    if width[dim] <= 1e-7 * (1 + uppers[i].abs().max()):
                        return self._give_up(prop, start, deadline, seed, boxes_done)
                    mid = (lowers[i][dim] + uppers[i][dim]) / 2
                    left_upper, right_lower = uppers[i].clone(), lowers[i].clone()
                    left_upper[dim], right_lower[dim] = mid, mid
                    remaining = ~proven[i]
                    queue.append((lowers[i], left_upper, remaining))
                    queue.append((right_lower, uppers[i], remaining))
                    if len(queue) % 512 == 0:  # a deep search may be hiding a counterexample
                        found = self._attack(lowers[i].numpy(), uppers[i].numpy(), constraints, 20, 1, seed)
                        if found is not None:
                            return VerifyResult(SAT, time.perf_counter() - start, found[0], found[1],
                                                boxes=boxes_done)
        return VerifyResult(UNSAT, time.perf_counter() - start, best_margin=best_margin, boxes=boxes_done)

    def _give_up(self, prop, start: float, deadline: _Deadline, seed: int, boxes: int) -> VerifyResult:
        """Bounds failed: try harder to find a counterexample with the time left, else unknown."""
        for lower, upper, constraints in self._cases(prop):
            if deadline.passed():
                return VerifyResult(TIMEOUT, time.perf_counter() - start, boxes=boxes)
            found = self._attack(lower, upper, constraints, steps=100, restarts=5, seed=seed + 1)
            if found is not None:
                return VerifyResult(SAT, time.perf_counter() - start, found[0], found[1], boxes=boxes)
        return VerifyResult(UNKNOWN, time.perf_counter() - start, boxes=boxes)

    @staticmethod
    def _cases(prop):
        for region, constraints in prop.cases:
            if constraints:
                yield np.asarray(region.lower, dtype=np.float64), np.asarray(region.upper, dtype=np.float64), \
                    constraints
