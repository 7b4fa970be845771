"""The answers of the ``verify`` command, its result record, the search's counters, its deadline and its
query errors."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from onnxdual.errors import DeadlineExceeded, OnnxDualError

SAT, UNSAT, UNKNOWN, TIMEOUT = "sat", "unsat", "unknown", "timeout"
ANSWERS = (SAT, UNSAT, UNKNOWN, TIMEOUT)


class QueryError(OnnxDualError):
    """A query the ``verify`` command must refuse (VNN-LIB 2.0, chapter 5: network files that do not match
    the declarations, element types that do not match the ONNX model, or types onnxdual cannot analyse
    soundly). ``condition`` is the number of the standard's error condition (1, 2 or 3), 0 for others."""

    def __init__(self, message: str, condition: int = 0):
        super().__init__(message)
        self.condition = condition


@dataclass(frozen=True)
class VerifyResult:
    """The answer of :meth:`Verifier.decide`.

    ``best_margin``: for ``unsat`` the smallest proving margin over the sub-boxes (how much slack the proof
    had, in units of the normalised constraint rows); otherwise the margin at the root boxes (the best lower
    bound of ``max_i (a_i y - b_i)`` over the worst case and conjunction; ``<= 0`` means not proven there),
    ``None`` when no bound was computed."""

    answer: str
    seconds: float
    witness_x: np.ndarray | None = None  # flat input inside the box (float32; float64 when proven by bounds)
    witness_y: np.ndarray | None = None  # flat output computed by onnxruntime at witness_x (in float32)
    best_margin: float | None = None
    boxes: int = 0  # sub-boxes bounded
    case: int | None = None  # index of the property case the witness belongs to
    attack_steps: int = 0
    #: how the witness was confirmed: "onnxruntime" (replayed at a float32 input, zero tolerance) or
    #: "bounds" (a real input whose whole float32 box provably reaches the unsafe region; its box has no
    #: float32 point)
    witness_proof: str | None = None


@dataclass
class SearchStats:
    """What a search counts on its way (the numbers of :class:`VerifyResult`, and measured costs)."""

    boxes: int = 0  # sub-boxes (or ReLU domains) bounded
    attack_steps: int = 0  # network evaluations of the attacks
    bound_seconds: float = 0.0  # measured seconds of bound computations
    bound_boxes: int = 0
    root_margin: float | None = None  # the worst margin of the root boxes
    leaf_margin: float = math.inf  # the smallest proving margin


class Deadline:
    """A wall-clock deadline (``time.perf_counter``): ``seconds`` from ``start`` (default: now)."""

    def __init__(self, seconds: float, start: float | None = None):
        self.start = time.perf_counter() if start is None else start
        self.end = self.start + max(0.0, float(seconds))

    def remaining(self) -> float:
        return self.end - time.perf_counter()

    def passed(self) -> bool:
        return time.perf_counter() >= self.end

    def check(self) -> None:
        """Raise :class:`onnxdual.errors.DeadlineExceeded` once the deadline has passed."""
        if self.passed():
            raise DeadlineExceeded("the time limit was reached")

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def expire(self) -> None:
        """Move the deadline to now: every later check raises, every ``passed`` is true (to stop a
        computation that another thread has already answered for)."""
        self.end = min(self.end, time.perf_counter())

    def predicting(self):
        """A ``stop`` for a loop that asks it before each step (an engine pass, an optimisation): ``True``
        once the deadline has passed or 1.5 times the interval since its previous call (the last step,
        about the next one; steps vary under load) would end past it, so that a step that cannot finish
        in time is not started. Make a fresh one per computation (a pause between computations would
        count as a step)."""
        last: list[float] = []

        def stop() -> bool:
            now = time.perf_counter()
            step = now - last[0] if last else 0.0
            last[:] = [now]
            return now + 1.5 * step >= self.end

        return stop
