"""What a certification run will cost, told before it starts: its time (measured on a probe of a few
examples), the memory of its exact pass (the one cost model, :func:`onnxdual.engine.cost.pass_bytes`), and
whether ``--probable`` is slower than exact bounds for the model at hand.

* Time: the first examples certified as batches of the run (:func:`~onnxdual.certify.batch.certify_batch`:
  bounds and PGD, every stage) at the largest eps, whose unstable units make it the costliest: after one
  example (which builds the dual networks), half of :data:`PROBE_EXAMPLES` and then all of them, which
  splits a batch's time into a fixed part and a part per example; the estimate is the fixed part per
  batch left plus the per-example part per example-eps pair left.
* Memory: the cost model's bound of the exact pass's largest state for one batch of ``batch_size``
  examples at the largest eps, the pass's own chunking under its memory budget included (optimised faces
  size their own sub-batches and are not counted).
* ``--probable`` against exact (measured, not modelled: the cost model sizes memory, and the two passes
  differ in kind): the probable bound per example on :data:`PROBE_EXAMPLES` examples against the exact
  bound of the paper's relaxation (the one a probable bound refines) on one example, which amortises
  nothing: faster even so settles it. Otherwise, when one exact example cost at most
  :data:`EXACT_PROBE_FACTOR` times a probable one, exact bounds are timed on as many examples as the
  probable ones (so the probe never spends much more on exact bounds than on the probable ones); a model
  whose exact bound is costlier still gets no warning.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from torch import Tensor, nn

from onnxdual.certify.batch import certify_batch
from onnxdual.certify.margins import worst_margins
from onnxdual.engine.cost import pass_bytes
from onnxdual.engine.input_sets import make_input_set
from onnxdual.engine.network import DEFAULT_MEMORY_BUDGET, DualNetwork

#: examples the time estimate certifies first
PROBE_EXAMPLES = 8
#: a run estimated to take at least this long, or to need this much memory, is "large": its estimate is shown
LARGE_SECONDS = 60.0
LARGE_BYTES = 1 << 30
#: exact bounds are timed on the whole probe when one exact example cost at most this many probable ones
EXACT_PROBE_FACTOR = 4.0


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} TiB"


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.3g} s"
    if s < 7200:
        return f"{s / 60:.3g} min"
    return f"{s / 3600:.3g} h"


@dataclass(frozen=True)
class RunEstimate:
    """The estimated time of what is left of a run and the memory of its exact pass."""

    seconds: float
    pairs: int  # example-eps pairs left
    probe: int  # examples timed
    eps: float  # the eps they were timed at
    peak_bytes: int | None  # None: no exact pass (a probable run)
    batch: int  # examples of one batch

    @property
    def large(self) -> bool:
        return self.seconds >= LARGE_SECONDS or (self.peak_bytes or 0) >= LARGE_BYTES

    def describe(self) -> str:
        memory = ("" if self.peak_bytes is None else f", memory up to {_size(self.peak_bytes)} for the exact "
                  f"pass of a {self.batch}-example batch (cost model)")
        return (f"about {_duration(self.seconds)} for {self.pairs} example-eps pairs (measured on "
                f"{self.probe} examples at eps {self.eps:g}, bounds and PGD){memory}")

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 3), "pairs": self.pairs, "probe_examples": self.probe,
                "probe_eps": self.eps, "peak_bytes": self.peak_bytes, "batch": self.batch}


@dataclass(frozen=True)
class ProbableCheck:
    """The probable bound's measured cost per example against the exact bound's."""

    probable_seconds: float
    exact_seconds: float

    @property
    def slower(self) -> bool:
        return self.probable_seconds > self.exact_seconds

    def describe(self) -> str:
        return (f"--probable is slower than exact bounds for this model ({self.probable_seconds:.3g} s vs "
                f"{self.exact_seconds:.3g} s per example, measured): exact bounds are a proof and faster "
                "here; drop --probable")


@dataclass(frozen=True)
class RunPlan:
    """What :func:`plan_run` found (either part ``None`` when not measured)."""

    estimate: RunEstimate | None
    probable: ProbableCheck | None


def exact_pass_bytes(nets: list[nn.Module], x: Tensor, settings: Any, eps: float) -> int:
    """The cost model's peak bytes of the exact pass over one batch, the largest over the stages."""
    xb = x[:settings.batch_size]
    peak = 0
    for net in nets:
        built = DualNetwork(net, xb[:1], eps, settings.norm, clip=settings.clip).built
        columns = make_input_set(xb, eps, settings.norm, settings.clip).column_range()
        peak = max(peak, pass_bytes(built, columns, xb.shape[0], xb.element_size(), DEFAULT_MEMORY_BUDGET)[1])
    return peak


def plan_run(nets: list[nn.Module], x: Tensor, y: Tensor, settings: Any, relaxation: str, num_classes: int,
             pairs_left: int, batches_left: int, clock: Callable[[], float] = time.perf_counter) -> RunPlan:
    """The estimate of a run with ``pairs_left`` example-eps pairs in ``batches_left`` batches to certify
    (``None`` when that is no more than twice the probe), and for a probable run the comparison with exact
    bounds (module docstring)."""
    n = min(PROBE_EXAMPLES, x.shape[0])
    probable = settings.probable is not None
    if n == 0 or (pairs_left <= 2 * n and not probable):
        return RunPlan(None, None)
    eps_index = max(range(len(settings.eps)), key=lambda i: settings.eps[i])
    eps = settings.eps[eps_index]

    def timed(k: int) -> float:
        t0 = clock()
        certify_batch(nets, x[:k], y[:k], eps, eps_index, 0, settings, relaxation, num_classes, clock)
        return clock() - t0

    timed(1)  # builds the dual networks, which the run does once
    estimate = None
    if pairs_left > 2 * n:
        half = max(1, n // 2)
        t_half, t_full = timed(half), timed(n)
        # a batch costs a + b * examples: a fixed part (the calls, PGD's steps) and a part per example
        per_example = max(0.0, (t_full - t_half) / (n - half)) if n > half else t_full / n
        per_batch = max(0.0, t_full - per_example * n)
        peak = None if probable else exact_pass_bytes(nets, x, settings, eps)
        estimate = RunEstimate(per_batch * batches_left + per_example * pairs_left, pairs_left, half + n, eps,
                               peak, min(settings.batch_size, x.shape[0]))
    check = None
    if probable:  # the first example above built the dual network: neither timing below pays for that
        t0 = clock()
        worst_margins(nets[0], x[:n], eps, settings.norm, settings.clip, settings.probable,
                      settings.projections, num_classes)
        t_probable = (clock() - t0) / n

        def exact(k: int) -> float:
            t0 = clock()
            worst_margins(nets[0], x[:k], eps, settings.norm, settings.clip, num_classes=num_classes)
            return (clock() - t0) / k

        t_exact = exact(1)
        if t_probable < t_exact <= EXACT_PROBE_FACTOR * t_probable and n > 1:
            t_exact = exact(n)  # as many examples as the probable bound had: the same amortisation
        check = ProbableCheck(t_probable, t_exact)
    return RunPlan(estimate, check)


__all__ = ["EXACT_PROBE_FACTOR", "LARGE_BYTES", "LARGE_SECONDS", "PROBE_EXAMPLES", "ProbableCheck",
           "RunEstimate", "RunPlan", "exact_pass_bytes", "plan_run"]
