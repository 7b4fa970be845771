"""The decision procedure of the ``verify`` command (see :mod:`onnxdual.verify` for the method): the order in
which the parts of the search run and what their outcomes answer.

1. the property's cases, batched (:mod:`~onnxdual.verify.problem`); none left: ``unsat``;
2. trivial witnesses and a quick attack (:mod:`~onnxdual.verify.counterexamples`); for boxes without
   float32 points, a real witness proven by bounds;
3. input splitting with dual bounds (:mod:`~onnxdual.verify.input_split`, :mod:`~onnxdual.verify.bounding`):
   every leaf proven: ``unsat``;
4. otherwise stronger attacks, and where the inputs are too many to split, ReLU branching
   (:mod:`~onnxdual.verify.relu_split`), which also attacks its most promising domains: ``unsat`` when it
   proves every domain, else ``unknown``.

A confirmed witness anywhere answers ``sat``; the deadline passing anywhere answers ``timeout``. The search
stops itself at the deadline, but a step already running (a pass, an optimiser iteration) can take longer
than measured under load; so with a finite deadline it runs in a worker thread and :meth:`Verifier.decide`
answers ``timeout`` at the deadline itself when the worker is still busy (the worker then stops at its next
check: the deadline is moved to now).
"""

from __future__ import annotations

import atexit
import math
import threading

import torch
from torch import nn

from onnxdual.engine.autodual import RELAXATIONS
from onnxdual.errors import DeadlineExceeded, InvalidInputError, UnboundedRelaxationError
from onnxdual.verify.bounding import BoxBounder
from onnxdual.verify.counterexamples import Counterexamples, OnnxReplay, WitnessFound
from onnxdual.verify.input_split import InputSplitting
from onnxdual.verify.network import Network
from onnxdual.verify.problem import Model, Problem, batch_cases
from onnxdual.verify.relu_split import ReluBranching, relu_layers
from onnxdual.verify.result import SAT, TIMEOUT, UNSAT, Deadline, SearchStats, VerifyResult


class Verifier:
    """Decides VNN-LIB properties of one network.

    Args:
        net: the torch module (:func:`onnxdual.load`).
        input_shape: the input shape onnxruntime expects (with its batch dimension, if any).
        ort_session: an onnxruntime session of the same network, used to confirm counterexamples.
        example_shape: per-example input shape of ``net`` (default ``input_shape[1:]``).
        strict: refuse proofs whose margin is within a float32-rounding tolerance of zero.
        split_max_inputs: split input boxes only when at most this many coordinates are perturbed.
        relu_branching: otherwise, branch on ReLU phases (:mod:`onnxdual.verify.relu_split`) with the time
            the attacks leave.
        batch_boxes: boxes bounded in one batch.
        lambda_steps: projected-gradient steps on the row combination of a conjunction.
        relaxation: the relaxation of ReLU branch and bound, its roots and domains (``"optimized"``,
            ``"adaptive"`` or ``"paper"``); the input-splitting search bounds its boxes, root included, with
            ``"adaptive"`` unless this is ``"paper"``.
        device: where bounds and attacks are computed (default: the network's device).
        on_time: answer ``timeout`` at a finite deadline even while a step of the search runs late (the
            search runs in a worker thread; see the module docstring). Without it the answer comes at the
            search's first check after the deadline.
    """

    def __init__(self, net: nn.Module, input_shape: tuple[int, ...], ort_session, *,
                 example_shape: tuple[int, ...] | None = None, strict: bool = False,
                 split_max_inputs: int = 16, relu_branching: bool = True,
                 batch_boxes: int = 512, lambda_steps: int = 20, device: torch.device | str | None = None,
                 relaxation: str = "optimized", on_time: bool = True):
        if relaxation not in RELAXATIONS:
            raise InvalidInputError(f"relaxation must be one of {', '.join(RELAXATIONS)}, got {relaxation!r}")
        self.relaxation = relaxation
        self.on_time = on_time
        self.net = net.eval()
        self.input_shape = tuple(int(d) for d in input_shape)
        self.example_shape = tuple(example_shape) if example_shape is not None else self.input_shape[1:]
        self.session = ort_session
        self.strict = strict
        self.split_max_inputs = split_max_inputs
        self.relu_branching = relu_branching
        self.batch_boxes = batch_boxes
        self.lambda_steps = lambda_steps
        if device is None:
            p = next(iter(net.parameters()), None)
            device = p.device if p is not None else torch.device("cpu")
        self.device = torch.device(device)
        self.model = Model(self.net, self.example_shape, self.device)
        self.replay = OnnxReplay(ort_session, self.input_shape)

    @classmethod
    def for_network(cls, network: Network, **kwargs) -> Verifier:
        return cls(network.net, network.input_shape, network.session, example_shape=network.example_shape,
                   **kwargs)

    def decide(self, prop, deadline: Deadline, seed: int = 0) -> VerifyResult:
        """Decide ``prop`` by ``deadline``; ``seed`` seeds the attacks. Never raises for a timeout: the answer
        is ``timeout``, given at the deadline (see the module docstring)."""
        stats = SearchStats()
        if not self.on_time or not math.isfinite(deadline.remaining()):
            return self._decide(prop, deadline, seed, stats)
        outcome: dict = {}

        def work() -> None:
            try:
                outcome["result"] = self._decide(prop, deadline, seed, stats)
            except BaseException as error:  # re-raised by the caller's thread
                outcome["error"] = error

        worker = threading.Thread(target=work, name="onnxdual-verify", daemon=True)
        worker.start()
        try:
            worker.join(max(deadline.remaining(), 0.0))
        finally:
            if worker.is_alive():  # answered for (or interrupted): the worker's next check stops it
                deadline.expire()
                _finish_at_exit(worker)
        if worker.is_alive():
            return _result(TIMEOUT, deadline, stats)  # the counts so far
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]

    def _decide(self, prop, deadline: Deadline, seed: int, stats: SearchStats) -> VerifyResult:
        gen = torch.Generator().manual_seed(seed)
        try:
            deadline.check()
            with torch.no_grad():
                cases = batch_cases(prop, math.prod(self.input_shape))
            if cases is None:
                return _result(UNSAT, deadline, stats)
            problem = Problem(self.model, cases, self.strict)
            counterexamples = Counterexamples(problem, self.replay)
            counterexamples.trivial()
            answer = self._search(problem, counterexamples, deadline, stats, gen)
        except WitnessFound as found:
            return _result(SAT, deadline, stats, found)
        except DeadlineExceeded:
            return _result(TIMEOUT, deadline, stats)
        return _result(answer, deadline, stats)

    def _search(self, problem: Problem, counterexamples: Counterexamples, deadline: Deadline,
                stats: SearchStats, gen: torch.Generator) -> str:
        counterexamples.quick_attack(gen, deadline, stats)
        try:
            counterexamples.prove_real_points(gen, deadline, stats)
            if counterexamples.unwitnessable():
                return counterexamples.give_up(gen, deadline, stats)
            return self._prove(problem, counterexamples, deadline, stats, gen)
        except UnboundedRelaxationError:  # no finite bound on these boxes (a divisor around 0): attacks only
            return counterexamples.give_up(gen, deadline, stats)

    def _prove(self, problem: Problem, counterexamples: Counterexamples, deadline: Deadline,
               stats: SearchStats, gen: torch.Generator) -> str:
        # input splitting bounds many small boxes quickly: adaptive faces there, root included (an optimised
        # root cost seconds on networks that adaptive bounds prove in milliseconds); the optimised faces go
        # where the search is hard, to the roots and domains of ReLU branch and bound
        boxes = "paper" if self.relaxation == "paper" else "adaptive"
        bounder = BoxBounder(problem, self.lambda_steps, relaxation=boxes, root=boxes)
        splitting = InputSplitting(problem, bounder, counterexamples,
                                   split_max_inputs=self.split_max_inputs, batch_boxes=self.batch_boxes)
        outcome = splitting.run(deadline, stats, gen)
        if outcome.proven:
            return UNSAT
        answer = counterexamples.give_up(gen, deadline, stats)
        if outcome.roots is None or not self.relu_branching:
            return answer
        # ReLU branch and bound on the unproven root boxes (their inputs are too many to split)
        layers = relu_layers(self.net, self.example_shape)
        if not layers:  # nothing to branch on (e.g. Sigmoid networks): the tightest bound of the roots
            return UNSAT if self._optimized_roots(problem, outcome.roots, deadline, stats) else answer
        search = ReluBranching(problem, layers, relaxation=self.relaxation)
        proven = search.run(search.roots(*outcome.roots), deadline, stats, counterexamples, gen)
        return UNSAT if proven else answer

    def _optimized_roots(self, problem: Problem, roots, deadline: Deadline, stats: SearchStats) -> bool:
        """Whether the optimised faces (with the stop of the deadline) prove every open conjunction of the
        unproven root boxes ``roots`` (case ids, open conjunctions), where the adaptive ones could not."""
        if self.relaxation != "optimized":
            return False
        cidx, open_mask = roots
        cases = problem.cases
        bounder = BoxBounder(problem, self.lambda_steps, relaxation="adaptive", root="optimized")
        found = bounder.bound(cases.lower[cidx], cases.upper[cidx], cidx, open_mask, deadline, stats)
        return bool((found.margin > 0).all())


_LATE: list[threading.Thread] = []


def _finish_at_exit(worker: threading.Thread) -> None:
    """Let ``worker`` (a search answered for, stopping at its next check) end before the interpreter does:
    torch aborts the process when its thread pool is torn down under a running operation."""
    if not _LATE:
        atexit.register(lambda: [t.join() for t in _LATE])
    _LATE[:] = [t for t in _LATE if t.is_alive()] + [worker]


def _result(answer: str, deadline: Deadline, stats: SearchStats,
            found: WitnessFound | None = None) -> VerifyResult:
    if found is not None:
        return VerifyResult(SAT, deadline.elapsed(), found.x, found.y, None, stats.boxes, found.case,
                            stats.attack_steps, found.proven_by)
    margin = None
    if answer == UNSAT:
        margin = stats.leaf_margin if math.isfinite(stats.leaf_margin) else None
    elif stats.root_margin is not None:
        margin = stats.root_margin
    return VerifyResult(answer, deadline.elapsed(), None, None, margin, stats.boxes, None, stats.attack_steps)


__all__ = ["Verifier"]
