"""onnxdual.verify.verifier: answers on tiny networks (proofs, float32-checked witnesses, timeouts, row
combinations, several input boxes, strict mode) and the float32 rounding of the input box."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from onnxdual.engine.input_sets import Box
from onnxdual.errors import InvalidInputError
from onnxdual.specs import InputRegion, OutputConstraint, Property
from onnxdual.verify import SAT, TIMEOUT, UNKNOWN, UNSAT, Deadline, Verifier, dual_box
from tests.verify.conftest import output_range, prop_of, run_ort


def test_unsat_is_proven_with_a_positive_margin(mlp):
    lo, hi = [-1.0, -1.0], [1.0, 1.0]
    _, top = output_range(mlp, lo, hi, 0)
    prop = prop_of([(lo, hi, [([-1.0, 0.0], [-(top + 3.0)])])], 2, 2)  # unsafe: y0 >= top + 3
    result = Verifier.for_network(mlp).decide(prop, Deadline(10))
    assert result.answer == UNSAT
    assert result.best_margin > 0 and result.witness_x is None


def test_sat_has_a_float32_witness_in_the_box_confirmed_by_onnxruntime(mlp):
    lo, hi = [-1.0, -0.5], [1.0, 0.5]
    _, top = output_range(mlp, lo, hi, 0)
    a, b = np.array([[-1.0, 0.0]]), np.array([-(top - 0.05)])  # unsafe: y0 >= top - 0.05
    result = Verifier.for_network(mlp).decide(prop_of([(lo, hi, [(a, b)])], 2, 2), Deadline(10))
    assert result.answer == SAT
    x, y = result.witness_x, result.witness_y
    assert x.dtype == np.float32 and y.dtype == np.float32
    assert np.all(np.array(lo) <= x.astype(np.float64)) and np.all(x.astype(np.float64) <= np.array(hi))
    assert np.array_equal(run_ort(mlp, x), y)  # the very output onnxruntime computes, bit for bit
    assert np.all(a @ y.astype(np.float64) <= b)  # zero tolerance
    assert result.case == 0


class _ReadCountingClock:
    """A clock that advances 1 ms per reading: the deadline is measured in the verifier's own checks, not in
    the machine's speed, so a loaded machine cannot make these tests fail."""

    def __init__(self):
        self.now = 0.0
        self.after_deadline = 0
        self.end: float | None = None

    def perf_counter(self) -> float:
        self.now += 1e-3
        if self.end is not None and self.now >= self.end:
            self.after_deadline += 1
        return self.now


@pytest.fixture
def clock(monkeypatch):
    import onnxdual.verify.result as result_module

    fake = _ReadCountingClock()
    monkeypatch.setattr(result_module, "time", fake)
    return fake


def _decide_with(clock, mlp, prop, seconds):
    deadline = Deadline(seconds)
    clock.end = deadline.end
    # the search's own checks (on_time would answer by the machine's clock instead of the fake one)
    return Verifier.for_network(mlp, on_time=False).decide(prop, deadline)


def test_a_tiny_timeout_answers_timeout_quickly(mlp, clock):
    lo, hi = [-1.0, -1.0], [1.0, 1.0]
    _, top = output_range(mlp, lo, hi, 0, n=20000)
    prop = prop_of([(lo, hi, [([-1.0, 0.0], [-(top + 1e-4)])])], 2, 2)  # barely unsat: needs deep splitting
    result = _decide_with(clock, mlp, prop, 1e-3)
    assert result.answer == TIMEOUT
    assert clock.after_deadline <= 3  # it stops at the first check that sees the time is up


def test_the_deadline_holds_during_a_long_search(mlp, clock):
    lo, hi = [-1.0, -1.0], [1.0, 1.0]
    _, top = output_range(mlp, lo, hi, 0, n=20000)
    # unsafe: y0 >= top - 1e-9: (almost surely) sat but hard to hit, or unsat by a hair: a long search
    prop = prop_of([(lo, hi, [([-1.0, 0.0], [-(top + 1e-9)])])], 2, 2)
    result = _decide_with(clock, mlp, prop, 0.8)  # 800 clock readings
    assert result.answer in (TIMEOUT, SAT, UNSAT)
    assert result.answer != TIMEOUT or clock.after_deadline <= 3


def test_timeout_is_answered_at_the_deadline_while_a_step_runs_late(mlp, monkeypatch):
    # a search step that ignores the deadline (as a pass or optimiser iteration running late under load):
    # the answer still comes at the deadline, and the step's next check then stops the worker
    release, stopped = threading.Event(), threading.Event()

    def late_search(self, problem, counterexamples, deadline, stats, gen):
        release.wait()
        try:
            deadline.check()
        finally:
            stopped.set()
        return UNSAT

    monkeypatch.setattr(Verifier, "_search", late_search)
    prop = prop_of([([-1.0, -1.0], [1.0, 1.0], [([-1.0, 0.0], [-100.0])])], 2, 2)
    safety = threading.Timer(120, release.set)  # without the on-time answer, decide would wait for this
    safety.start()
    result = Verifier.for_network(mlp).decide(prop, Deadline(0.05))
    blocked = not release.is_set()
    release.set()
    safety.cancel()
    assert result.answer == TIMEOUT and blocked  # answered while the step was still running
    assert stopped.wait(60)  # and the worker ended at its next check, having seen the deadline passed


def test_errors_of_the_search_reach_the_caller(mlp, monkeypatch):
    def failing_search(self, *args):
        raise InvalidInputError("bad")

    monkeypatch.setattr(Verifier, "_search", failing_search)
    prop = prop_of([([-1.0, -1.0], [1.0, 1.0], [([-1.0, 0.0], [-100.0])])], 2, 2)
    with pytest.raises(InvalidInputError):
        Verifier.for_network(mlp).decide(prop, Deadline(60))


def test_a_row_combination_proves_what_no_single_row_or_their_sum_can(twin):
    # unsafe: y0 >= 0.6, y1 <= 0.4 and y0 <= 5 (always true): weights (1/2, 1/2, 0) prove it, the uniform
    # sum does not, and with splitting disabled nothing else can
    a = np.array([[-1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    b = np.array([-0.6, 0.4, 5.0])
    prop = prop_of([([-1.0], [2.0], [(a, b)])], 1, 2)
    assert Verifier.for_network(twin, split_max_inputs=0).decide(prop, Deadline(10)).answer == UNSAT
    no_lambda = Verifier.for_network(twin, split_max_inputs=0, lambda_steps=0)
    assert no_lambda.decide(prop, Deadline(10)).answer == UNKNOWN


def test_several_input_boxes_are_decided_together(mlp):
    lo1, hi1, lo2, hi2 = [-1.0, -1.0], [0.0, 1.0], [0.0, -1.0], [1.0, 1.0]
    _, top1 = output_range(mlp, lo1, hi1, 1)
    _, top2 = output_range(mlp, lo2, hi2, 1)
    cases = [(lo1, hi1, [([0.0, -1.0], [-(top1 + 2.0)])]), (lo2, hi2, [([0.0, -1.0], [-(top2 - 0.05)])])]
    result = Verifier.for_network(mlp).decide(prop_of(cases, 2, 2), Deadline(10))
    assert result.answer == SAT and result.case == 1
    assert np.all(np.array(lo2) <= result.witness_x) and np.all(result.witness_x <= np.array(hi2))
    cases[1] = (lo2, hi2, [([0.0, -1.0], [-(top2 + 2.0)])])
    assert Verifier.for_network(mlp).decide(prop_of(cases, 2, 2), Deadline(10)).answer == UNSAT


def test_strict_mode_refuses_a_margin_within_rounding(twin):
    # y0 = relu(x) <= 1 on [0, 1]; unsafe y0 >= 1 + 1e-5 is unreachable by 1e-5 only
    prop = prop_of([([0.0], [1.0], [([-1.0, 0.0], [-(1.0 + 1e-5)])])], 1, 2)
    assert Verifier.for_network(twin, split_max_inputs=0).decide(prop, Deadline(5)).answer == UNSAT
    strict = Verifier.for_network(twin, split_max_inputs=0, strict=True).decide(prop, Deadline(5))
    assert strict.answer == UNKNOWN


def test_no_proof_and_no_witness_for_a_point_without_a_float32_value(twin):
    # x = 0.1 exactly (no float32 equals it): y0 >= 0.1 holds in real arithmetic, so unsat would be wrong,
    # and no float32 input lies in the box, so there is no witness either
    prop = prop_of([([0.1], [0.1], [([-1.0, 0.0], [-0.1])])], 1, 2)
    assert Verifier.for_network(twin).decide(prop, Deadline(2)).answer in (UNKNOWN, TIMEOUT)


def test_an_empty_conjunction_is_sat_at_any_point_of_the_box(mlp):
    everything = OutputConstraint(np.zeros((0, 2)), [])
    prop = Property(2, 2, [(InputRegion([0.25, 0.5], [0.25, 0.75]), [everything])])
    result = Verifier.for_network(mlp).decide(prop, Deadline(5))
    assert result.answer == SAT and result.witness_x[0] == np.float32(0.25)


def test_no_case_means_unsat(mlp):
    assert Verifier.for_network(mlp).decide(Property(2, 2, []), Deadline(5)).answer == UNSAT


@pytest.mark.parametrize("scale", [1e-3, 1.0, 3e4])
def test_the_dual_box_contains_the_real_box(scale):
    rng = np.random.default_rng(int(scale * 10))
    center = rng.normal(size=(50, 7)) * scale
    width = np.abs(rng.normal(size=(50, 7))) * scale * np.array([0, 1e-12, 1e-9, 1e-7, 1e-3, 1, 10])
    lower, upper = center - width, center + width
    lower[0] = upper[0] = 0.1  # a point that float32 cannot represent
    c, r = dual_box(lower, upper)
    box = Box.ball(torch.from_numpy(c), torch.from_numpy(r))
    bc, br = box.center.double().numpy(), box.radius.double().numpy()
    assert np.all(bc - br <= lower) and np.all(bc + br >= upper)
    exact = (lower == upper) & (lower.astype(np.float32).astype(np.float64) == lower)
    assert np.all(r[exact] == 0)


def test_deadline():
    d = Deadline(3600.0)
    assert not d.passed() and 0 < d.remaining() <= 3600.0
    assert Deadline(0.05, start=time.perf_counter() - 1.0).passed()  # started a second ago
    assert Deadline(-1).passed()


@pytest.mark.parametrize("strict", [False, True])
def test_a_witness_meets_strict_rows_and_strict_input_bounds_strictly(twin, strict):
    """y = relu(x) >= 0: 'y0 < 0' has no witness (y0 = 0 only meets its closure); 'y0 >= 1' with x < 1 has
    none either (x = 1 lies outside). The closed forms are sat at those very points."""
    below = Property(1, 2, [(InputRegion([-1.0], [1.0]),
                             [OutputConstraint([[1.0, 0.0]], [0.0], strict=[strict])])])
    edge = Property(1, 2, [(InputRegion([0.0], [1.0], None, [np.nextafter(1.0, 0.0)] if strict else None),
                            [OutputConstraint([[-1.0, 0.0]], [-1.0])])])
    for prop in (below, edge):
        result = Verifier.for_network(twin, split_max_inputs=0).decide(prop, Deadline(10))
        assert (result.answer == SAT) == (not strict), result


def test_a_divisor_that_the_load_check_box_crosses_is_decided_on_the_propertys_boxes(tmp_path):
    """y = x0 / x1 (Slice on an input without a batch axis, as vnnlib-satisfactory's div01 writes it): the
    load-time check box around 0 has no finite bound, yet the network loads; on x1 in [2, 4] it is proven,
    and where x1 crosses 0 the attacks still find a witness (no finite bound exists there)."""
    from onnx import TensorProto, helper, numpy_helper

    from onnxdual.verify import load_network
    idx = {k: numpy_helper.from_array(np.array([v], np.int64), f"i{v}") for k, v in ((0, 0), (1, 1), (2, 2))}
    nodes = [helper.make_node("Slice", ["x", "i0", "i1", "i0"], ["a"]),
             helper.make_node("Slice", ["x", "i1", "i2", "i0"], ["b"]),
             helper.make_node("Div", ["a", "b"], ["y"])]
    graph = helper.make_graph(nodes, "div", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], list(idx.values()))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    path = tmp_path / "div.onnx"
    path.write_bytes(model.SerializeToString())
    network = load_network(str(path))
    verifier = Verifier.for_network(network)
    proven = prop_of([([4.0, 2.0], [8.0, 4.0], [([-1.0], [-4.5])])], 2, 1)  # y >= 4.5: max is 4
    assert verifier.decide(proven, Deadline(20)).answer == UNSAT
    crossing = prop_of([([1.0, -0.5], [2.0, 1.0], [([-1.0], [-5.0])])], 2, 1)  # y >= 5 near x1 = 0+
    result = verifier.decide(crossing, Deadline(20))
    assert result.answer == SAT and result.witness_y[0] >= 5.0, result


def test_a_network_undefined_on_part_of_the_load_probes_loads(tmp_path):
    """y = x ** -0.5 is NaN at the negative load probes, for onnxruntime and torch alike: that agrees, so the
    network loads, and on x in [1, 4] (y in [0.5, 1]) 'y <= 0.45' is proven unreachable."""
    from onnx import helper

    from onnxdual.verify import load_network
    from tests.onnx_builders import make_model
    model = make_model([helper.make_node("Pow", ["input", "p"], ["output"])], [1], [1],
                       {"p": np.float32(-0.5)}, opset=18)
    path = tmp_path / "pow.onnx"
    path.write_bytes(model.SerializeToString())
    verifier = Verifier.for_network(load_network(str(path)))
    assert verifier.decide(prop_of([([1.0], [4.0], [([1.0], [0.45])])], 1, 1), Deadline(20)).answer == UNSAT
    assert verifier.decide(prop_of([([1.0], [4.0], [([1.0], [0.55])])], 1, 1), Deadline(20)).answer == SAT


@pytest.mark.parametrize("to", [7, 9])  # INT64 (truncation), BOOL (x != 0)
def test_a_cast_to_an_integer_type_is_decided(tmp_path, to):
    """y = float(Cast(x, to)): a step, so the attacks get no gradient (their points are still tried) and the
    interval relaxation proves; x in [2.1, 2.4] gives y = 2 (INT64) or 1 (BOOL) exactly."""
    from onnx import TensorProto, helper

    from onnxdual.verify import load_network
    from tests.onnx_builders import make_model
    model = make_model([helper.make_node("Cast", ["input"], ["c"], to=to),
                        helper.make_node("Cast", ["c"], ["output"], to=TensorProto.FLOAT)], [1], [1])
    path = tmp_path / "cast.onnx"
    path.write_bytes(model.SerializeToString())
    verifier = Verifier.for_network(load_network(str(path)))
    value = 2.0 if to == 7 else 1.0
    above = prop_of([([2.1], [2.4], [([-1.0], [-(value + 0.05)])])], 1, 1)  # y >= value + 0.05
    at = prop_of([([2.1], [2.4], [([1.0], [value])])], 1, 1)  # y <= value
    assert verifier.decide(above, Deadline(20)).answer == UNSAT
    result = verifier.decide(at, Deadline(20))
    assert result.answer == SAT and result.witness_y[0] == value


def test_a_strict_row_is_proven_by_a_zero_margin(twin):
    """y0 = relu(x) on x in [-1, 1]: 'y0 < 0' is unsat (lb(y0) = 0 = b suffices for a strict row), while
    'y0 <= 0' is sat (x <= 0)."""
    for strict, answer in ((True, UNSAT), (False, SAT)):
        prop = Property(1, 2, [(InputRegion([-1.0], [1.0]),
                                [OutputConstraint([[1.0, 0.0]], [0.0], strict=[strict])])])
        assert Verifier.for_network(twin).decide(prop, Deadline(20)).answer == answer
    strict_mode = Verifier.for_network(twin, strict=True)  # --strict keeps its rounding allowance
    prop = Property(1, 2, [(InputRegion([-1.0], [1.0]), [OutputConstraint([[1.0, 0.0]], [0.0], strict=[True])])])
    assert strict_mode.decide(prop, Deadline(20)).answer != SAT
