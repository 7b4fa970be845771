"""Deciding VNN-LIB properties with dual bounds, branch and bound, and attacks.

A property (:mod:`onnxdual.specs`) lists cases: an input box and the unsafe output region there, a disjunction
of conjunctions ``A y <= b``. The property holds (``unsat``) when no input of any box reaches any conjunction.

* **Proofs.** A conjunction is unreachable on a box when the dual bound (Theorem 1) proves that one of its
  rows can never be satisfied there, or that a non-negative combination ``lambda`` of its rows cannot:
  ``lb(lambda^T A y) - lambda^T b > 0`` implies that some row is violated for every reachable ``y``. This is
  sound for *every* ``lambda >= 0`` because :meth:`DualNetwork.lower_bound` is sound for any objective; we try
  each row, their (normalised) sum, and a few projected-gradient steps on ``lambda`` over the simplex
  (``lambda -> lb(lambda^T A y) - lambda^T b`` is concave: the dual objective is concave in its objective
  vector). Every case of the property is bounded in one batch.
* **Splitting.** Boxes that stay undecided are split in two along the input coordinate whose radius the dual
  bound is most sensitive to, when at most ``split_max_inputs`` coordinates are perturbed (small input
  spaces, where splitting pays off), until everything is proven or the time runs out. Larger input spaces
  are split on ReLU phases instead (split limits on the dual plus Lagrange multipliers, as beta-CROWN does
  for CROWN).
* **Counterexamples.** ``sat`` only for a float32 input inside the box (zero tolerance) whose output,
  recomputed by onnxruntime in float32, satisfies every row of a conjunction with zero tolerance. Candidates
  come from box centres and from PGD (:mod:`onnxdual.attack`). A box without float32 points (inputs fixed
  at decimals float32 cannot represent) can only have a real witness: ``sat`` there needs a dual bound proving
  that every real input around the box's centre reaches the unsafe region (``witness_proof="bounds"``).
  Otherwise ``unknown`` or ``timeout``.
* **Time.** The deadline (:class:`Deadline`) is checked inside every loop (attack steps, lambda steps,
  splitting batches); a run overruns it by at most one bound computation, and does not start one that its
  measured cost says cannot finish in time. Running out of time is :class:`onnxdual.errors.DeadlineExceeded`
  inside the search and the answer ``timeout`` outside.

Arithmetic: the input box handed to the dual network is rounded *outwards* to float32 (and checked), so the
bound covers every real input of the box; the network is analysed in real arithmetic on its float32 weights,
as VNN-COMP tools do (the bound itself is computed in float32). ``strict=True`` refuses a proof whose margin
is within a float32-rounding tolerance of zero (``unknown`` instead).

Modules, one concern each:

* :mod:`~onnxdual.verify.result` -- answers, :class:`VerifyResult`, the search's counters, :class:`Deadline`,
  :class:`QueryError`;
* :mod:`~onnxdual.verify.network` -- loading a possibly gzip-compressed ONNX network with its onnxruntime
  session, checked against the torch conversion;
* :mod:`~onnxdual.verify.problem` -- the property's cases batched, float32 rounding of boxes, the proof
  tolerance;
* :mod:`~onnxdual.verify.bounding` -- dual bounds of boxes and the row-combination (``lambda``) ascent;
* :mod:`~onnxdual.verify.counterexamples` -- candidates, PGD, confirmation by onnxruntime;
* :mod:`~onnxdual.verify.input_split` -- branch and bound on input boxes;
* :mod:`~onnxdual.verify.relu_split` -- branch and bound on ReLU phases where the inputs are too many to
  split;
* :mod:`~onnxdual.verify.verifier` -- :class:`Verifier`, the small procedure that runs them in order;
* :mod:`~onnxdual.verify.query` -- the VNN-LIB 2.0 standard's checks of a query against its networks
  (chapter 5, "error conditions for the verify command").

The query's declarations and the assignment formats live in :mod:`onnxdual.specs`.
"""

from onnxdual.verify.network import Network, load_network
from onnxdual.verify.query import check_element_types, match_networks
from onnxdual.verify.result import ANSWERS, SAT, TIMEOUT, UNKNOWN, UNSAT, Deadline, QueryError, VerifyResult
from onnxdual.verify.problem import dual_box
from onnxdual.verify.verifier import Verifier

__all__ = [
    "ANSWERS",
    "SAT",
    "TIMEOUT",
    "UNKNOWN",
    "UNSAT",
    "Deadline",
    "Network",
    "QueryError",
    "Verifier",
    "VerifyResult",
    "check_element_types",
    "dual_box",
    "load_network",
    "match_networks",
]
